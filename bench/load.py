#!/usr/bin/env python3
"""Load (issue 17): requests/s and latency p50/p99 of the gateway at
--in-flight requests at once, for every cell of

  processes {1, 2}  x  replay store {in-process, Redis}  x  protocol {v1, v2}

One gateway (`python -m hushcall serve`, echo backend) per (processes, store),
serving both protocols; the keys are made once and shared by all of them, and
the Redis is a redis-server of our own on a free loopback port. The requests
come from hushcall.AsyncClients in this process (one event loop holds 256 in
flight with room to spare: each row says how many it held on average and how
busy its loop was): v1 is NOMYO's protocol (RSA-4096 both ways, so much
slower: its cells send --v1-requests), v2 alternates X25519 (EHBP's suite)
and X-Wing. Every answer is checked (its echo, in the suite asked for);
failures are counted, the first ones printed, and make the exit status 1.
Timing is printed, never judged. Client and gateway share the machine's cores:
the figures are a floor, not the gateway's ceiling.

One row per cell:

  procs  store       proto  requests    req/s   p50 ms   p99 ms  failed  held  client

  python3 bench/load.py [--requests 10000] [--v1-requests 2000] [--in-flight 256]
  make load  (LOAD_REQUESTS, LOAD_V1_REQUESTS, LOAD_IN_FLIGHT)
"""

import argparse
import asyncio
import sys
import tempfile

import gateway_load

PROCESSES = (1, 2)
STORES = ("in-process", "redis")
PROTOCOLS = {"v1": ["v1"], "v2": ["v2-x25519", "v2-xwing"]}
V1_CLIENT_KEY_BITS = 4096  # NOMYO's
ROW = "%5s  %-10s  %-5s  %8s  %8s  %7s  %7s  %6s  %4s  %s"


def print_header():
    print(ROW % ("procs", "store", "proto", "requests", "req/s", "p50 ms", "p99 ms", "failed",
                 "held", "client (cores, loop busy)"))


def print_row(processes, store, protocol, load):
    f = load.figures()
    print(ROW % (processes, store, protocol, load.n, "%.1f" % f["rps"], "%.1f" % f["p50"],
                 "%.1f" % f["p99"], len(load.failures), "%.0f" % f["held"],
                 "%.2f, %.0f%%" % (f["client_cores"], f["loop_busy"])), flush=True)
    load.print_failures()


def run_cells(workdir, redis_url, args):
    """Every cell, in order; the number of failed requests and gateways that
    did not stop cleanly."""
    import hushcall

    v1_key = hushcall.KeyPair.generate(V1_CLIENT_KEY_BITS)
    failed = 0
    for processes in PROCESSES:
        for store in STORES:
            gateway = gateway_load.start_gateway(
                workdir, processes, args.in_flight, redis_url if store == "redis" else None)
            try:
                for protocol, kinds in PROTOCOLS.items():
                    n = args.v1_requests if protocol == "v1" else args.requests
                    load = asyncio.run(
                        gateway_load.Load(gateway.url, kinds, n, args.in_flight,
                                          v1_key=v1_key).run())
                    print_row(processes, store, protocol, load)
                    failed += len(load.failures)
            finally:
                status = gateway.stop()
            if status != 0:
                print("FAILED: the gateway (%d processes, %s) exited with status %s"
                      % (processes, store, status))
                failed += 1
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10000, help="requests per v2 cell")
    ap.add_argument("--v1-requests", type=int, default=2000, help="requests per v1 cell")
    ap.add_argument("--in-flight", type=int, default=256)
    args = ap.parse_args()

    print("load: %d in flight from hushcall.AsyncClient, echo backend; %d requests per v2 "
          "cell (X25519 and X-Wing in turn), %d per v1 cell (RSA-4096)"
          % (args.in_flight, args.requests, args.v1_requests))
    print(gateway_load.machine_line())
    print()
    print_header()
    with tempfile.TemporaryDirectory(prefix="hushcall-load-") as workdir:
        redis = gateway_load.RedisProcess(workdir)
        try:
            failed = run_cells(workdir, redis.url, args)
        finally:
            redis.stop()
    print()
    print("load: %s" % ("every answer right" if not failed else "FAILED (%d)" % failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
