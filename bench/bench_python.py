#!/usr/bin/env python3
"""Client cost of hushcall's Python clients against the public `nomyo` client.

Starts the independent NOMYO peer (tests/interop/nomyo_peer.py, RSA-4096) and,
against that same peer, runs each client in a fresh worker process of its own
(so neither sees the other's threads, pools or caches):

  sequential   N requests awaited one after another
  gather       asyncio.gather of M requests at once

For each: client CPU per request (time.process_time() of the worker process
around the measured section; the peer is a separate process and not counted),
requests/s (wall clock), and for the gather the most threads seen in the
worker while it was in flight: threading.active_count() (Python threads) and
/proc/self/status Threads: (every native thread too). Each client is warmed up
with one request first, so key generation and the server key fetch are not
measured. Prints a table; asserts nothing.

  python3 bench/bench_python.py [--seq 50] [--gather 256] [--budget 60]

The issue's targets: >= 10x less client CPU per request than nomyo, and 256
calls in flight with no more than a handful of threads. nomyo's gather is
capped so that its estimated CPU time fits --budget seconds; the output says
when that happened.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEER = os.path.join(ROOT, "tests", "interop", "nomyo_peer.py")
PYTHON_DIR = os.path.join(ROOT, "python")


def native_threads():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def messages(i):
    return [{"role": "user", "content": "benchmark request %d: how warm is the sea today?" % i}]


def make_client(kind, url):
    if kind == "hushcall":
        import hushcall

        return hushcall.SecureChatCompletion(base_url=url, allow_http=True, key_bits=4096)
    if kind == "hushcall-async":
        import hushcall

        client = hushcall.AsyncClient(url, allow_http=True, key_bits=4096)
        client.create = client.chat.completions.create
        return client
    if kind == "nomyo":
        import logging

        import nomyo

        logging.getLogger("nomyo").setLevel(logging.ERROR)
        warnings.simplefilter("ignore")
        return nomyo.SecureChatCompletion(base_url=url, allow_http=True)
    raise SystemExit("unknown client %r" % kind)


def check(resp, i):
    content = resp["choices"][0]["message"]["content"]
    assert content == "echo: " + messages(i)[0]["content"], content


async def sample_threads(stop, peak):
    while not stop.is_set():
        peak["py"] = max(peak["py"], threading.active_count())
        peak["native"] = max(peak["native"], native_threads())
        try:
            await asyncio.wait_for(stop.wait(), 0.005)
        except asyncio.TimeoutError:
            pass


async def worker(kind, url, n_seq, n_gather, budget):
    client = make_client(kind, url)
    out = {"client": kind}
    # Warm-up: key generation, server key fetch, engine start, connection.
    t0 = time.perf_counter()
    check(await client.create(model="m", messages=messages(0)), 0)
    out["warmup_s"] = time.perf_counter() - t0

    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n_seq):
        check(await client.create(model="m", messages=messages(i)), i)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    out["seq"] = {"n": n_seq, "cpu_ms": 1000 * cpu / n_seq, "rps": n_seq / wall}

    n = n_gather
    if budget and cpu / n_seq * n_gather > budget:
        n = max(16, int(budget / (cpu / n_seq)))
    out["gather_requested"] = n_gather

    stop, peak = asyncio.Event(), {"py": 0, "native": 0}
    idle = {"py": threading.active_count(), "native": native_threads()}
    sampler = asyncio.ensure_future(sample_threads(stop, peak))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    results = await asyncio.gather(
        *(client.create(model="m", messages=messages(i)) for i in range(n)),
        return_exceptions=True,
    )
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    stop.set()
    await sampler
    failed = [r for r in results if isinstance(r, BaseException)]
    for i, r in enumerate(results):
        if not isinstance(r, BaseException):
            check(r, i)
    out["gather"] = {
        "n": n,
        "failed": len(failed),
        "first_error": repr(failed[0])[:200] if failed else None,
        "cpu_ms": 1000 * cpu / n,
        "rps": n / wall,
        "wall_s": wall,
        "threads_idle": idle,
        "threads_peak": peak,
    }
    del results
    close = getattr(client, "close", None)
    if close:
        close()
    print(json.dumps(out), flush=True)


def start_peer(bits):
    proc = subprocess.Popen(
        [sys.executable, PEER, "--port", "0", "--bits", str(bits)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit("the NOMYO peer did not start: %r" % line)
    return proc, "http://127.0.0.1:%d" % int(line.split()[1])


def rsa_private_op_ms(bits=4096, n=20):
    """The floor under any NOMYO client's CPU per request: one RSA-OAEP
    decryption with the client's private key (the response's AES key)."""
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
    except ImportError:
        return None
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    ct = key.public_key().encrypt(b"k" * 32, oaep)
    key.decrypt(ct, oaep)
    t0 = time.process_time()
    for _ in range(n):
        key.decrypt(ct, oaep)
    return 1000 * (time.process_time() - t0) / n


def run_worker(kind, url, args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([PYTHON_DIR] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--url", url,
           "--seq", str(args.seq), "--gather", str(args.gather),
           "--budget", str(args.budget if kind == "nomyo" else 0)]
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-2000:])
        raise SystemExit("%s worker failed (%d)" % (kind, r.returncode))
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=50, help="sequential requests (default 50)")
    ap.add_argument("--gather", type=int, default=256, help="requests in one gather (default 256)")
    ap.add_argument("--budget", type=float, default=60.0,
                    help="cap nomyo's gather to about this many CPU seconds (0: no cap)")
    ap.add_argument("--bits", type=int, default=4096, help="peer RSA key size (default 4096)")
    ap.add_argument("--clients", default="hushcall,hushcall-async,nomyo")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        asyncio.run(worker(args.worker, args.url, args.seq, args.gather, args.budget))
        return

    peer, url = start_peer(args.bits)
    try:
        started = time.perf_counter()
        rows = [run_worker(kind, url, args) for kind in args.clients.split(",")]
        total = time.perf_counter() - started
    finally:
        peer.terminate()
        peer.wait(timeout=10)

    print("NOMYO peer RSA-%d on loopback (separate process), %d CPUs, clients with RSA-4096 keys"
          % (args.bits, os.cpu_count()))
    print()
    hdr = "%-15s %-11s %5s %12s %9s %14s %14s" % (
        "client", "mode", "n", "CPU ms/req", "req/s", "py threads", "native thr.")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        s, g = r["seq"], r["gather"]
        print("%-15s %-11s %5d %12.2f %9.1f %14s %14s" % (
            r["client"], "sequential", s["n"], s["cpu_ms"], s["rps"], "", ""))
        print("%-15s %-11s %5d %12.2f %9.1f %14s %14s" % (
            r["client"], "gather", g["n"], g["cpu_ms"], g["rps"],
            "%d (idle %d)" % (g["threads_peak"]["py"], g["threads_idle"]["py"]),
            "%d (idle %d)" % (g["threads_peak"]["native"], g["threads_idle"]["native"])))
    print()
    for r in rows:
        g = r["gather"]
        notes = ["warm-up %.2f s" % r["warmup_s"]]
        if g["n"] < r["gather_requested"]:
            notes.append("gather capped at %d of %d to fit the %.0f s budget"
                         % (g["n"], r["gather_requested"], args.budget))
        if g["failed"]:
            notes.append("%d of the gather failed, first: %s" % (g["failed"], g["first_error"]))
        print("%s: %s" % (r["client"], "; ".join(notes)))
    if any(r["client"] == "nomyo" for r in rows):
        print("nomyo fetches the server key and opens a new httpx client for every request;"
              " that is part of its per-request cost as shipped.")

    by = {r["client"]: r for r in rows}
    if "nomyo" in by:
        print()
        for kind in ("hushcall", "hushcall-async"):
            if kind in by:
                for mode in ("seq", "gather"):
                    ratio = by["nomyo"][mode]["cpu_ms"] / by[kind][mode]["cpu_ms"]
                    print("CPU/request nomyo / %-14s %-10s %6.1fx  (target >= 10x)"
                          % (kind, "sequential" if mode == "seq" else "gather", ratio))
        for kind in ("hushcall", "hushcall-async"):
            if kind in by:
                g = by[kind]["gather"]
                print("%s: %d calls in flight on %d native threads (%d Python threads)"
                      % (kind, g["n"], g["threads_peak"]["native"], g["threads_peak"]["py"]))
    floor = rsa_private_op_ms()
    if floor is not None:
        print("one RSA-4096 private-key operation (OAEP decrypt, Python cryptography) on this CPU:"
              " %.2f ms, the floor under every client's CPU/request" % floor)
        if "nomyo" in by:
            print("so a 10x ratio needs nomyo at >= %.1f ms/request or a cheaper client key"
                  % (10 * floor))
    print("total %.1f s" % total)


if __name__ == "__main__":
    main()
