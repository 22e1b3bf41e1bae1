#!/usr/bin/env python3
"""Throughput and latency of the reference gateway (`python -m hushcall serve`,
echo backend, RSA-4096 server key). Prints figures; asserts nothing.

  (a) end to end   N completions at concurrency C from one hushcall.AsyncClient:
                   the client seals each request, the gateway opens, answers and
                   seals, the client opens the answer.
  (b) gateway alone  N distinct requests sealed up front (with the `cryptography`
                   package, as tests/interop/v1_envelope.py does; the gateway
                   refuses a body it has answered, so none is sent twice),
                   POSTed with aiohttp at concurrency C; answers are counted,
                   not opened (one is opened at the end to check it). This
                   isolates the gateway's own cost: an RSA-4096 decryption and
                   the answer's sealing per request.
  (c) replay cache   the in-process replay store filled to its default cap of
                   1,000,000 entries: resident bytes per entry and the cost of
                   one check_and_remember.

For each: requests/s (wall clock) and latency p50/p90/p99/max in ms; then
the core's own time per request (open, backend, seal) from the gateway's
JSON access log. Client and gateway run on the same machine and share its
cores: the figures are a floor, not the gateway's ceiling.

  python3 bench/bench_gateway.py [--requests 2000] [--concurrency 64]
                                 [--skip-e2e] [--workers N] [--replay-entries N]
"""

import argparse
import asyncio
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PYTHON_DIR = os.path.join(ROOT, "python")
ENVELOPE = os.path.join(ROOT, "tests", "interop", "v1_envelope.py")
PATH = "/v1/chat/secure_completion"

sys.path.insert(0, PYTHON_DIR)


# ---- the gateway, as a child process --------------------------------------


class GatewayProcess:
    def __init__(self, workdir, extra_args=()):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PYTHON_DIR, env.get("PYTHONPATH")) if p)
        self.log_path = os.path.join(workdir, "gateway.log")
        self._log = open(self.log_path, "w")
        argv = [sys.executable, "-m", "hushcall", "serve", "--port", "0",
                "--key-dir", os.path.join(workdir, "keys"), "--log-format", "json",
                *extra_args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=env)
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            self.stop()
            sys.exit("the gateway did not start (%r):\n%s" % (line, self.log()))
        self.url = line.split()[-1]

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def records(self):
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                if r.get("path") == PATH:
                    out.append(r)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


# ---- figures -----------------------------------------------------------------


def percentile(sorted_values, p):
    """Nearest-rank percentile of a sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def report(title, latencies_s, wall_s, errors):
    lat = sorted(x * 1000.0 for x in latencies_s)
    print("%s" % title)
    print("  requests   %d ok, %d errors, %.2f s wall" % (len(lat), errors, wall_s))
    print("  throughput %.1f requests/s" % (len(lat) / wall_s if wall_s > 0 else float("nan")))
    print("  latency ms p50 %.1f  p90 %.1f  p99 %.1f  max %.1f" % (
        percentile(lat, 50), percentile(lat, 90), percentile(lat, 99), lat[-1] if lat else 0))


def report_core(records):
    """The core's own milliseconds per request, from the gateway's access log."""
    ok = [r for r in records if r.get("status") == 200 and r.get("open_ms") is not None]
    if not ok:
        print("  core ms    (no timings in the log)")
        return
    parts = []
    for name in ("open_ms", "backend_ms", "seal_ms", "ms"):
        values = sorted(r[name] for r in ok if r.get(name) is not None)
        parts.append("%s p50 %.2f p99 %.2f" % (
            "gateway total" if name == "ms" else name[:-3], percentile(values, 50),
            percentile(values, 99)))
    print("  core ms    " + "; ".join(parts) + "  (%d logged)" % len(ok))


async def run_concurrently(n, concurrency, one):
    """Run one(i) for i in range(n), at most `concurrency` at once; latencies and errors."""
    latencies, errors = [], []
    next_i = 0

    async def worker():
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            t0 = time.perf_counter()
            try:
                await one(i)
            except Exception as e:  # counted and shown, never hidden
                errors.append(e)
                continue
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - t0


# ---- (a) end to end -------------------------------------------------------------


def question(i):
    return "benchmark question %d: how warm is the sea today?" % i


async def end_to_end(url, n, concurrency):
    import hushcall

    client = hushcall.AsyncClient(url, allow_http=True, max_retries=0)
    try:
        async def one(i):
            resp = await client.create(model="bench",
                                       messages=[{"role": "user", "content": question(i)}])
            content = str(resp["choices"][0]["message"]["content"])
            if content != "echo: " + question(i):
                raise AssertionError("wrong answer to request %d" % i)

        await one(-1)  # client key generation and the server key fetch, not measured
        return await run_concurrently(n, concurrency, one)
    finally:
        await client.aclose()


# ---- (b) the gateway alone ---------------------------------------------------


def load_envelope():
    spec = importlib.util.spec_from_file_location("v1_envelope", ENVELOPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def gateway_alone(url, n, concurrency):
    import aiohttp
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    envelope = load_envelope()
    client_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    client_pem = client_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    quoted_pem = urllib.parse.quote(client_pem)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(url + "/pki/public_key") as r:
            server_key = serialization.load_pem_public_key((await r.read()))
        packages = [
            envelope.seal(server_key, json.dumps(
                {"model": "bench", "messages": [{"role": "user", "content": question(i)}]}
            ).encode())
            for i in range(n + 1)
        ]
        last = {}

        async def one(i):
            headers = {"X-Payload-ID": str(uuid.uuid4()), "X-Public-Key": quoted_pem,
                       "Content-Type": "application/octet-stream"}
            async with session.post(url + PATH, data=packages[i + 1], headers=headers) as r:
                body = await r.read()
                if r.status != 200:
                    raise RuntimeError("HTTP %d: %r" % (r.status, body[:200]))
                last[i + 1] = body

        await one(-1)  # a warm connection and a warm gateway, not measured
        result = await run_concurrently(n, concurrency, one)

    # one answer opened, to show the requests were answered, not refused
    k = sorted(last)[-1]
    answer = json.loads(envelope.open_package(client_key, last[k]))
    ok = answer["choices"][0]["message"]["content"] == "echo: " + question(k)
    return result, ok


# ---- (c) the replay cache ----------------------------------------------------------


def resident_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def replay_cache(entries):
    """Resident bytes per entry of a full InProcessReplayStore, and its speed."""
    from hushcall import replay

    digests = [os.urandom(32) for _ in range(entries)]
    binding = os.urandom(32)
    expires = time.time() + replay.DEFAULT_WINDOW
    before = resident_bytes()
    store = replay.InProcessReplayStore(max_entries=entries)
    t0 = time.perf_counter()
    for digest in digests:
        store.check_and_remember(digest, binding, expires)
    fill = time.perf_counter() - t0
    grown = resident_bytes() - before
    t0 = time.perf_counter()
    for digest in digests[:100000]:
        store.check_and_remember(digest, binding, expires)  # retries: found, counted
    lookup = time.perf_counter() - t0
    stats = store.stats()
    print("(c) replay cache: %d entries (default cap), reserved %.1f MB = %.1f bytes/entry"
          % (stats["entries"], stats["bytes_reserved"] / 1e6,
             stats["bytes_reserved"] / stats["max_entries"]))
    print("  resident growth %.1f MB = %.1f bytes/entry" % (grown / 1e6, grown / entries))
    print("  check_and_remember from Python: %.2f us new, %.2f us found"
          % (fill / entries * 1e6, lookup / min(entries, 100000) * 1e6))


# ---- main --------------------------------------------------------------------


def machine_line():
    """The cores the figures were measured on, and why they are a floor."""
    cpus = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cpus
    return ("machine: %s CPUs (%s usable by this process); the client and the gateway share "
            "these cores, so every figure is a floor" % (cpus, usable))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--skip-e2e", action="store_true", help="run (b) only")
    parser.add_argument("--replay-entries", type=int, default=1000000,
                        help="entries for (c)")
    parser.add_argument("--workers", type=int, help="the gateway's --workers")
    args = parser.parse_args()

    print("bench_gateway: echo backend, RSA-4096 server key, %d requests at concurrency %d"
          % (args.requests, args.concurrency))
    print(machine_line())

    extra = ["--workers", str(args.workers)] if args.workers else []
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as workdir:
        t0 = time.perf_counter()
        gw = GatewayProcess(workdir, extra)
        print("gateway: %s, started in %.1f s (server key generation included)%s" % (
            gw.url, time.perf_counter() - t0,
            ", --workers %d" % args.workers if args.workers else ""))
        print()
        try:
            if not args.skip_e2e:
                before = len(gw.records())
                latencies, errors, wall = asyncio.run(
                    end_to_end(gw.url, args.requests, args.concurrency))
                report("(a) end to end: hushcall.AsyncClient -> gateway -> echo", latencies,
                       wall, len(errors))
                if errors:
                    print("  first error: %r" % (errors[0],))
                time.sleep(0.2)
                report_core(gw.records()[before + 1:])
                print()
            before = len(gw.records())
            (latencies, errors, wall), ok = asyncio.run(
                gateway_alone(gw.url, args.requests, args.concurrency))
            report("(b) gateway alone: distinct pre-sealed requests via aiohttp, answers not "
                   "opened", latencies, wall, len(errors))
            if errors:
                print("  first error: %r" % (errors[0],))
            print("  sample answer opened and checked: %s" % ("ok" if ok else "WRONG"))
            time.sleep(0.2)
            report_core(gw.records()[before + 1:])
        finally:
            status = gw.stop()
        print()
        print("gateway exited with status %s" % status)
    print()
    replay_cache(args.replay_entries)


if __name__ == "__main__":
    main()
