"""`make demo`: the reference gateway with its echo backend on a free loopback
port, and encrypted round trips through it from Python and from Lua.

Starts `python -m hushcall serve --port 0` with a fresh key directory, sends
one completion with hushcall.Client over protocol v2 in the post-quantum
suite (require_pq: X-Wing, ChaCha20-Poly1305; the first call pays for
fetching the key configs), then a few more to show the steady cost, and
prints the reply, _metadata and timings; then the same over protocol v1
(NOMYO's: the client's RSA-4096 key is made first). Then examples/demo.lua
does it from Lua (the module CMake builds into build/lua; v2, require_pq).
Both also stream an answer (`stream=True`): the echo backend pauses
ECHO_DELAY_MS between words, so the words appear one by one, each its own
sealed frame, opened into its own locked chunk and wiped once printed.
Last, the gateway is stopped with SIGTERM and what it logged is shown:
sizes and timings, never the text.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import hushcall

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTION = "What does end-to-end encryption protect in a chat completion?"
WARM_ROUNDS = 5
ECHO_DELAY_MS = 60  # between the words of a streamed echo: streaming you can see


def start_gateway(key_dir, log_file):
    gateway = subprocess.Popen(
        [sys.executable, "-m", "hushcall", "serve", "--port", "0", "--key-dir", key_dir,
         "--echo-delay-ms", str(ECHO_DELAY_MS)],
        stdout=subprocess.PIPE, stderr=log_file, text=True)
    line = gateway.stdout.readline()
    if not line.startswith("listening on "):
        gateway.kill()
        raise SystemExit("demo: the gateway did not start (its log: %s)" % log_file.name)
    return gateway, line.split()[-1]


def round_trip(url, **options):
    messages = [{"role": "user", "content": QUESTION}]
    with hushcall.Client(url, allow_http=True, **options) as client:
        start = time.perf_counter()
        if options.get("protocol") == "v1":
            client.public_key_pem()  # waits for the client's own RSA-4096 key
        keygen_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        answer = client.create(model="demo", messages=messages)
        first_ms = (time.perf_counter() - start) * 1000
        print("reply:     ", answer["choices"][0]["message"]["content"])
        print("_metadata: ", json.dumps(answer["_metadata"].to_dict(), indent=2))
        answer.wipe()
        warm = []
        for _ in range(WARM_ROUNDS):
            start = time.perf_counter()
            client.create(model="demo", messages=messages).wipe()
            warm.append((time.perf_counter() - start) * 1000)
    print("timings:    client key generation %.0f ms; first call %.1f ms (fetches the"
          " server's key%s);\n            then %s ms"
          % (keygen_ms, first_ms, "" if options.get("protocol") == "v1" else " configs",
             ", ".join("%.1f" % t for t in warm)))


def stream(url):
    """A streamed answer, printed word by word as its sealed frames arrive."""
    messages = [{"role": "user", "content": QUESTION}]
    with hushcall.Client(url, allow_http=True, require_pq=True) as client:
        start = time.perf_counter()
        first_ms, chunks = None, 0
        print("streamed:   ", end="", flush=True)
        with client.chat.completions.create(model="demo", messages=messages,
                                            stream=True) as chunks_in:
            for chunk in chunks_in:
                if first_ms is None:
                    first_ms = (time.perf_counter() - start) * 1000
                chunks += 1
                if chunk["choices"]:
                    print(chunk["choices"][0]["delta"].get("content") or "", end="", flush=True)
                chunk.wipe()
        total_ms = (time.perf_counter() - start) * 1000
    print("\ntimings:    %d chunks; the first after %.1f ms, the last after %.0f ms (the echo"
          " waits %d ms between words)" % (chunks, first_ms, total_ms, ECHO_DELAY_MS))


def lua_round_trip(url, build_dir):
    env = dict(os.environ,
               LUA_CPATH=os.path.join(build_dir, "lua", "?.so") + ";;",
               LUA_PATH=os.path.join(ROOT, "lua", "?.lua") + ";;")
    start = time.perf_counter()
    done = subprocess.run(["lua5.4", os.path.join(ROOT, "examples", "demo.lua"), url], env=env)
    if done.returncode != 0:
        raise SystemExit("demo: the Lua round trip failed")
    print("timings:    %.0f ms for all of it (Lua start, 9 calls and a stream)"
          % ((time.perf_counter() - start) * 1000))


def main():
    build_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
    with tempfile.TemporaryDirectory(prefix="hushcall-demo-") as tmp, \
            open(os.path.join(tmp, "gateway.log"), "w+") as log_file:
        print("starting the gateway (echo backend; making its RSA-4096 key) ...")
        gateway, url = start_gateway(os.path.join(tmp, "keys"), log_file)
        try:
            print("gateway:    %s\n\n-- Python (hushcall.Client), protocol v2, post-quantum"
                  " (X-Wing, ChaCha20-Poly1305) --" % url)
            round_trip(url, require_pq=True)
            print("\n-- Python, streamed (stream=True), protocol v2, post-quantum --")
            stream(url)
            print("\n-- Python (hushcall.Client), protocol v1 (NOMYO's: RSA-4096, AES-256-GCM) --")
            round_trip(url, protocol="v1")
            print("\n-- Lua (require \"hushcall\") --")
            lua_round_trip(url, build_dir)
        finally:
            gateway.send_signal(signal.SIGTERM)
            code = gateway.wait(timeout=30)
        log_file.seek(0)
        print("\n-- what the gateway logged (no prompt or reply text) --")
        print(log_file.read().rstrip())
        if code != 0:
            raise SystemExit("demo: the gateway exited with %d" % code)


if __name__ == "__main__":
    main()
