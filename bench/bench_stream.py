#!/usr/bin/env python3
"""Streamed completions (issue 15, "Speed"): one run, one machine. Prints a
table; asserts nothing.

The gateway (`python -m hushcall serve`, echo backend, --echo-delay-ms 0 by
default, --allow-plaintext) streams back a 200-word question as its echo: a
role chunk, one chunk per word, a finish_reason chunk, `data: [DONE]`. Each
row reads that stream sequentially --streams times (after one warm-up stream,
once its process is idle) in a worker process that runs only that client,
reading every chunk's delta content:

  hushcall v2 X-Wing     hushcall.Client.request(..., stream=True), require_pq=True
  hushcall v2 X25519     the same, pinned (v2_key_fingerprint) to the gateway's X25519 config
  httpx over hushcall    plain httpx over hushcall.httpx.Transport (X-Wing), events parsed here
  openai over hushcall   the openai package over hushcall.httpx.Transport (X-Wing)
  tinfoil-ehbp           tinfoil-ehbp 0.4.1's Client.stream (X25519), events cut and parsed here
  plaintext              the gateway's --allow-plaintext pass-through of the same stream,
                         read with plain httpx streaming and json.loads per event

Figures per row: time to first chunk (from the call to the first chunk in
hand) and total time per stream, medians over the streams; client CPU per
chunk, the median over 5 rounds of (CPU time of the rounds' streams) /
(chunks received): "process" is time.process_time() of the worker process,
every thread of it (the consuming thread, and hushcall's I/O thread and crypto
workers, or httpx's nothing-else), "consumer" the consuming thread alone
(time.thread_time()); the difference is what the core's own threads spent.
The per-stream costs (sealing the request, the HTTP exchange) are in both,
spread over the stream's chunks; "marginal" leaves them out: the process CPU
per stream of the long streams less that of 10-word ones, over the chunks
between. The gateway is another process and is not counted. Targets: time to first chunk <= 2 ms over the plaintext pass-through,
client CPU <= 20 us per chunk.

  python3 bench/bench_stream.py [--words 200] [--streams 30] [--echo-delay-ms 0]
"""

import argparse
import hashlib
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PYTHON_DIR = os.path.join(ROOT, "python")
CHAT = "/v1/chat/completions"
ROUNDS = 5
SHORT_WORDS = 10  # the short streams that separate per-chunk from per-stream CPU
TARGET_TTFC_OVERHEAD_MS = 2.0
TARGET_CPU_US_PER_CHUNK = 20.0

sys.path.insert(0, HERE)
sys.path.insert(0, PYTHON_DIR)
import bench_gateway  # noqa: E402  (the gateway process)
import bench_v2  # noqa: E402  (v2_configs, settle)


def question(i, words):
    return " ".join("w%d-%d" % (i, k) for k in range(words))


def chat(i, words):
    return {"model": "bench", "messages": [{"role": "user", "content": question(i, words)}],
            "stream": True}


# ---- one client per row: a function streaming request i, yielding delta contents ----


def hushcall_stream(url, **options):
    import hushcall

    client = hushcall.Client(url, allow_http=True, max_retries=0, **options)

    def stream(i, words):
        for chunk in client.request("POST", CHAT, json=chat(i, words), stream=True):
            choices = chunk.get("choices")
            content = choices[0]["delta"].get("content") if choices else None
            chunk.wipe()
            yield content or ""
    return stream


def httpx_hushcall_stream(url):
    """hushcall.httpx.Transport under plain httpx: the transport's own share of
    the openai row."""
    import httpx

    import hushcall.httpx

    http = httpx.Client(transport=hushcall.httpx.Transport(url, allow_http=True, require_pq=True,
                                                           max_retries=0))

    def stream(i, words):
        with http.stream("POST", url + CHAT, json=chat(i, words)) as answer:
            if answer.status_code != 200:
                raise RuntimeError("HTTP %d" % answer.status_code)
            yield from sse_contents(answer.iter_bytes())
    return stream


def openai_stream(url):
    import httpx
    import openai

    import hushcall.httpx

    transport = hushcall.httpx.Transport(url, allow_http=True, require_pq=True, max_retries=0)
    client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0,
                           http_client=httpx.Client(transport=transport))

    def stream(i, words):
        request = chat(i, words)
        del request["stream"]
        for chunk in client.chat.completions.create(**request, stream=True):
            yield (chunk.choices[0].delta.content or "") if chunk.choices else ""
    return stream


def sse_contents(pieces):
    """The delta contents of a text/event-stream arriving as byte pieces."""
    pending = b""
    for piece in pieces:
        pending += piece
        *events, pending = pending.split(b"\n\n")
        for event in events:
            data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n")
                              if line.startswith(b"data:"))
            if data == b"[DONE]":
                return
            choices = json.loads(data).get("choices")
            yield (choices[0]["delta"].get("content") or "") if choices else ""


def tinfoil_stream(url):
    import ehbp

    client = ehbp.Client.discover(url)

    def stream(i, words):
        with client.stream("POST", CHAT, json_body=chat(i, words)) as answer:
            if answer.status_code != 200:
                raise RuntimeError("HTTP %d" % answer.status_code)
            yield from sse_contents(answer.iter_bytes())
    return stream


def plaintext_stream(url):
    import httpx

    http = httpx.Client(timeout=60)

    def stream(i, words):
        with http.stream("POST", url + CHAT, json=chat(i, words)) as answer:
            if answer.status_code != 200:
                raise RuntimeError("HTTP %d: %s" % (answer.status_code, answer.read()[:120]))
            if "ehbp-response-nonce" in answer.headers:
                raise RuntimeError("the pass-through answered sealed")
            yield from sse_contents(answer.iter_bytes())
    return stream


def x25519_pin(url):
    """v2_key_fingerprint of the gateway's X25519 config (docs/crypto.md)."""
    configs = bench_v2.v2_configs(url)
    if "ehbp" not in configs:
        raise RuntimeError("the gateway publishes no X25519 key config")
    _, kem_id, public, _, _ = configs["ehbp"]
    return "sha256:" + hashlib.sha256(struct.pack(">H", kem_id) + public).hexdigest()


def make_stream(kind, url):
    if kind == "hushcall-v2-pq":
        return hushcall_stream(url, require_pq=True)
    if kind == "hushcall-v2-x25519":
        return hushcall_stream(url, protocol="v2", v2_key_fingerprint=x25519_pin(url))
    if kind == "httpx-hushcall":
        return httpx_hushcall_stream(url)
    if kind == "openai-hushcall":
        return openai_stream(url)
    if kind == "tinfoil-ehbp":
        return tinfoil_stream(url)
    if kind == "plaintext":
        return plaintext_stream(url)
    raise SystemExit("unknown client %r" % kind)


# ---- the worker: one client, sequential streams ----------------------------------------


def read_one(stream, i, words):
    """(seconds to the first chunk, seconds in all, chunks) of stream i, its echo checked."""
    parts = []
    t0 = time.perf_counter()
    first = None
    for content in stream(i, words):
        if first is None:
            first = time.perf_counter()
        parts.append(content)
    end = time.perf_counter()
    if "".join(parts) != "echo: " + question(i, words):
        raise AssertionError("stream %d: the echo came back wrong" % i)
    return first - t0, end - t0, len(parts)


def measure(stream, streams, words, first_index):
    """Sequential streams of `words` words in ROUNDS rounds: the time to the
    first chunk and the total of each stream, and per round the process and
    consuming-thread CPU seconds per stream and the chunks per stream."""
    per_round = max(1, streams // ROUNDS)
    ttfc, total, process_s, consumer_s, chunks = [], [], [], [], 0
    for r in range(ROUNDS):
        cpu0, thread0 = time.process_time(), time.thread_time()
        for i in range(first_index + r * per_round, first_index + (r + 1) * per_round):
            first, whole, chunks = read_one(stream, i, words)
            ttfc.append(first)
            total.append(whole)
        process_s.append((time.process_time() - cpu0) / per_round)
        consumer_s.append((time.thread_time() - thread0) / per_round)
    return {"ttfc": ttfc, "total": total, "chunks": chunks, "n": per_round * ROUNDS,
            "process_s": statistics.median(process_s), "consumer_s": statistics.median(consumer_s)}


def worker(kind, url, streams, words):
    stream = make_stream(kind, url)
    read_one(stream, -1, words)  # warm-up: keys, connection, not measured
    bench_v2.settle()
    long = measure(stream, streams, words, 0)
    short = measure(stream, streams, SHORT_WORDS, streams)
    extra_chunks = long["chunks"] - short["chunks"]
    print(json.dumps({
        "ttfc_ms": 1000 * statistics.median(long["ttfc"]),
        "total_ms": 1000 * statistics.median(long["total"]),
        "process_us": 1e6 * long["process_s"] / long["chunks"],
        "consumer_us": 1e6 * long["consumer_s"] / long["chunks"],
        "marginal_us": 1e6 * (long["process_s"] - short["process_s"]) / extra_chunks,
        "chunks": long["chunks"], "n": long["n"]}), flush=True)


def run_worker(kind, url, streams, words):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PYTHON_DIR, env.get("PYTHONPATH")) if p)
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", kind, "--url", url,
                        "--streams", str(streams), "--words", str(words)],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]
        return {"unavailable": "the worker failed: %s" % last[:160]}
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---- the run ---------------------------------------------------------------------------

ROWS = (
    ("hushcall v2 X-Wing", "hushcall-v2-pq"),
    ("hushcall v2 X25519", "hushcall-v2-x25519"),
    ("httpx over hushcall", "httpx-hushcall"),
    ("openai over hushcall", "openai-hushcall"),
    ("tinfoil-ehbp 0.4.1", "tinfoil-ehbp"),
    ("plaintext pass-through", "plaintext"),
)


def print_rows(results, words, delay_ms):
    print("Streamed echo of %d words from the gateway (echo backend, --echo-delay-ms %d)."
          % (words, delay_ms))
    print("TTFC: time to the first chunk. CPU us/chunk: the worker process (all threads), the")
    print("per-stream costs included; consumer: the consuming thread alone; marginal: what one")
    print("more chunk costs the process (%d-word streams against %d-word ones). Medians."
          % (words, SHORT_WORDS))
    hdr = "%-24s %8s %9s %7s %13s %12s %13s %4s" % (
        "client", "TTFC ms", "total ms", "chunks", "CPU us/chunk", "consumer us", "marginal us",
        "n")
    print(hdr)
    print("-" * len(hdr))
    for title, _ in ROWS:
        r = results[title]
        if "unavailable" in r:
            print("%-24s not available: %s" % (title, r["unavailable"]))
            continue
        print("%-24s %8.2f %9.2f %7d %13.1f %12.1f %13.1f %4d" % (
            title, r["ttfc_ms"], r["total_ms"], r["chunks"], r["process_us"], r["consumer_us"],
            r["marginal_us"], r["n"]))
    plain = results["plaintext pass-through"]
    for title in ("hushcall v2 X-Wing", "hushcall v2 X25519"):
        r = results[title]
        if "unavailable" in r:
            continue
        if "unavailable" not in plain:
            over = r["ttfc_ms"] - plain["ttfc_ms"]
            print("%s: TTFC %+.2f ms over the plaintext pass-through (target <= %.0f ms): %s"
                  % (title, over, TARGET_TTFC_OVERHEAD_MS,
                     "met" if over <= TARGET_TTFC_OVERHEAD_MS else "NOT met"))
        print("%s: client CPU %.1f us per chunk, %.1f us marginal (target <= %.0f us): %s"
              % (title, r["process_us"], r["marginal_us"], TARGET_CPU_US_PER_CHUNK,
                 "met" if r["process_us"] <= TARGET_CPU_US_PER_CHUNK else "NOT met"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--words", type=int, default=200, help="words in the streamed question")
    ap.add_argument("--streams", type=int, default=30, help="measured streams per row")
    ap.add_argument("--echo-delay-ms", type=int, default=0, help="the gateway's pause per word")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.url, args.streams, args.words)
        return
    print("bench_stream: %d CPUs; the clients and the gateway share them" % os.cpu_count())
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as workdir:
        gateway = bench_gateway.GatewayProcess(
            workdir, ["--echo-delay-ms", str(args.echo_delay_ms), "--allow-plaintext"])
        try:
            results = {title: run_worker(kind, gateway.url, args.streams, args.words)
                       for title, kind in ROWS}
        finally:
            gateway.stop()
    print_rows(results, args.words, args.echo_delay_ms)


if __name__ == "__main__":
    main()
