#!/usr/bin/env python3
"""Soak (issue 17): many v2 requests through one gateway of two processes
sharing a Redis replay store; every answer checked, and each gateway
process's resident memory and open descriptors shown to stay flat.

It starts a redis-server of its own (Debian's, a free loopback port, its own
temporary directory, nothing saved) and `python -m hushcall serve --processes
2 --replay-store redis://127.0.0.1:PORT/0` (echo backend), then sends
--requests chat completions, --in-flight at once, alternating X25519 (EHBP's
suite, picked by pinning the gateway's X25519 config) and X-Wing, from two
hushcall.AsyncClients in this process. Each prompt is unique and each answer
must be its echo, in the suite asked for. One client process is enough: it
holds the 256 in flight (measured: the time-average of requests outstanding,
Little's law, 243-254 of 256 on 2 shared cores) while its event loop's
thread is <10% busy; the client line says both for every run (near 100% busy would mean
the client limits, not the gateway).

Every --sample-every requests it reads VmRSS (/proc/PID/status) and the
open descriptors (/proc/PID/fd) of the parent and both workers and prints a
row. The pids must not change: a worker restarted mid-run is a failure. At
the end, per process, the growth from the second sample (20,000 requests by
default: by then the allocator's arenas, the connections and the caches have
grown to their working size) to the last, and a verdict:

  flat  RSS grew less than 10% and the descriptors other than connections
        by at most 8.
        10% of a worker's ~60 MB is ~6 MB: over the 80,000 requests after the
        baseline a leak of 100 bytes a request (less than one request's
        plaintext) would exceed it, while the allocator's noise stays well
        below. Descriptors are counted apart: on the gateway's port (its
        listener and the client's connections, kept alive and reused, a few
        replaced now and then) at most 1 + 2 x in-flight in every sample; the
        others (logs, Redis, key files, the event loop's) were 14 per worker
        in every sample but a few where a socket pair lived for one request:
        the fewest of the last 3 samples is compared with the fewest since
        the baseline, and a leak of one per 8,000 requests (10 over the
        80,000) would exceed the slack.

Exit status 1 when not flat, when any answer was wrong or failed, when a
pid changed or the gateway did not stop cleanly. Timing is printed (req/s),
never judged.

  python3 bench/soak.py [--requests 100000] [--in-flight 256] [--sample-every 10000]
  make soak  (SOAK_REQUESTS, SOAK_IN_FLIGHT)
"""

import argparse
import asyncio
import sys
import tempfile
import time

import gateway_load

PROCESSES = 2
KINDS = ["v2-x25519", "v2-xwing"]
RSS_GROWTH_LIMIT = 0.10
FD_SLACK = 8
END_SAMPLES = 3


def connection_bound(in_flight):
    """Most descriptors a process may hold on the gateway's port: its listener,
    the connections in use (at most one a request in flight) and as many
    again being replaced (closed by the client, not yet by the gateway).
    Connections the gateway never closed would pile up past it."""
    return 1 + 2 * in_flight


class Sampler:
    """Samples the gateway's processes at every multiple of `every` requests
    done (and at the last one); notes a pid that changed."""

    def __init__(self, gateway, every, total):
        self.gateway, self.every, self.total = gateway, every, total
        self.pids = gateway_load.gateway_pids(gateway, PROCESSES)
        self.port = gateway_load.port_of(gateway.url)
        self.rows = []  # (requests done, seconds since start, [(rss kB, fds) per pid])
        self.problems = []
        self.t0 = time.perf_counter()

    def roles(self):
        return ["parent"] + ["worker %d" % k for k in range(1, len(self.pids))]

    def on_done(self, count):
        # after a problem the processes are no longer the ones measured so far
        if (count % self.every == 0 or count == self.total) and not self.problems:
            self.sample(count)

    def sample(self, count):
        try:
            now = gateway_load.gateway_pids(self.gateway, PROCESSES)
            if now != self.pids:
                self.problems.append("at %d requests the gateway's pids are %r, were %r; "
                                     "sampling stopped" % (count, now, self.pids))
                return
            row = [gateway_load.usage(pid, self.port) for pid in self.pids]
        except (OSError, RuntimeError, StopIteration) as e:
            self.problems.append("at %d requests: %r; sampling stopped" % (count, e))
            return
        self.rows.append((count, time.perf_counter() - self.t0, row))
        print_row(self.rows[-1])


COLUMN = "%7s %5s %5s"


def print_header(roles):
    print("%9s %8s  %s" % ("requests", "seconds", "  ".join("%-19s" % r for r in roles)))
    print("%9s %8s  %s" % ("", "", "  ".join(COLUMN % ("RSS MB", "conns", "fds")
                                             for _ in roles)))


def print_row(row):
    count, seconds, usage = row
    print("%9d %8.1f  %s" % (count, seconds, "  ".join(
        COLUMN % ("%.1f" % (rss / 1024.0), conns, fds) for rss, conns, fds in usage)),
        flush=True)


def growth(rows, roles, max_connections):
    """Print each process's growth from the baseline sample to the last; True
    when every one is flat. Descriptors that live for one request (a socket
    pair) show up in single samples, a leak stays: the fewest of the last
    END_SAMPLES samples is compared with the fewest since the baseline."""
    at = 1 if len(rows) > 2 else 0
    base, last = rows[at], rows[-1]
    end = rows[max(at + 1, len(rows) - END_SAMPLES):] or [last]
    print("growth from the sample at %d requests to the one at %d (flat: RSS < +%d%%, "
          "fds <= +%d, conns <= %d in every sample):"
          % (base[0], last[0], RSS_GROWTH_LIMIT * 100, FD_SLACK, max_connections))
    flat = True
    for k, (role, (rss0, _, _), (rss1, _, _)) in enumerate(zip(roles, base[2], last[2])):
        rss_growth = (rss1 - rss0) / rss0
        fds0 = min(row[2][k][2] for row in rows[at:])
        fds1 = min(row[2][k][2] for row in end)
        most = max(row[2][k][1] for row in rows)
        ok = (rss_growth < RSS_GROWTH_LIMIT and fds1 - fds0 <= FD_SLACK
              and most <= max_connections)
        flat = flat and ok
        print("  %-9s RSS %+7.1f MB (%+5.1f%%)  fds %+4d  conns at most %4d  %s" % (
            role, (rss1 - rss0) / 1024.0, 100.0 * rss_growth, fds1 - fds0, most,
            "flat" if ok else "NOT FLAT"))
    return flat


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=100000)
    ap.add_argument("--in-flight", type=int, default=256)
    ap.add_argument("--sample-every", type=int, default=10000)
    args = ap.parse_args()

    print("soak: %d v2 requests (X25519 and X-Wing in turn) at %d in flight, one gateway of "
          "%d processes sharing a Redis replay store, echo backend"
          % (args.requests, args.in_flight, PROCESSES))
    print(gateway_load.machine_line())
    with tempfile.TemporaryDirectory(prefix="hushcall-soak-") as workdir:
        redis = gateway_load.RedisProcess(workdir)
        try:
            gateway = gateway_load.start_gateway(workdir, PROCESSES, args.in_flight, redis.url)
            try:
                ok = soak(gateway, args)
            finally:
                status = gateway.stop()
        finally:
            redis.stop()
    if status != 0:
        print("FAILED: the gateway exited with status %s" % status)
        ok = False
    print("soak: %s" % ("passed" if ok else "FAILED"))
    return 0 if ok else 1


def soak(gateway, args):
    """Run the load and print the table and the verdict; True when it passed."""
    sampler = Sampler(gateway, args.sample_every, args.requests)
    print("gateway %s: pids %s" % (gateway.url, ", ".join(
        "%s %d" % (role, pid) for role, pid in zip(sampler.roles(), sampler.pids))))
    print()
    print_header(sampler.roles())
    load = gateway_load.Load(gateway.url, KINDS, args.requests, args.in_flight,
                             on_done=sampler.on_done)
    asyncio.run(load.run())
    print()
    f = load.figures()
    print("%d requests: %d answered right, %d failed; %.1f req/s, p50 %.1f ms, p99 %.1f ms"
          % (load.done, len(load.latencies), len(load.failures), f["rps"], f["p50"], f["p99"]))
    print("client: %.0f requests held in flight on average, %.2f cores in all its threads, "
          "its event loop's thread %.0f%% busy" % (f["held"], f["client_cores"], f["loop_busy"]))
    load.print_failures()
    for problem in sampler.problems:
        print("FAILED: %s" % problem)
    flat = bool(sampler.rows) and growth(sampler.rows, sampler.roles(),
                                                   connection_bound(args.in_flight))
    print("verdict: %s" % ("flat" if flat else "NOT flat"))
    return flat and not load.failures and not sampler.problems


if __name__ == "__main__":
    sys.exit(main())
