"""What bench/soak.py and bench/load.py share: a redis-server of their own,
the gateway under `--processes N`, its processes' resident memory and open
descriptors, and the load itself: hushcall.AsyncClient calls at a fixed
number in flight, every answer checked.

The gateway process and the percentiles are bench_gateway.py's.
"""

import asyncio
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_gateway  # noqa: E402  (its gateway process and percentile)

EHBP_KEYS = "/.well-known/hpke-keys"
REDIS_START_TIMEOUT = 30.0

# Each kind of request: the client options that make it, and how what its
# answer's _metadata says was spoken must begin (spoken() below).
KINDS = {
    "v1": {"protocol": "v1"},
    "v2-x25519": {"protocol": "v2"},  # and the X25519 config's pin, set per gateway
    "v2-xwing": {"require_pq": True},
}
SPOKEN = {"v1": "v1", "v2-x25519": "v2 ehbp-x25519", "v2-xwing": "v2 xwing-"}


# ---- the parts started -----------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class RedisProcess:
    """Debian's redis-server on a free loopback port, in its own directory,
    saving nothing to disk; `url` is the gateway's --replay-store."""

    def __init__(self, workdir):
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server not found: install the Debian package redis-server "
                     "(make deps)")
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = _free_port()
        self.log = open(os.path.join(self.dir, "redis.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while not _accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit("redis-server did not start on port %d" % self.port)
            time.sleep(0.02)
        self.url = "redis://127.0.0.1:%d/0" % self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_gateway(workdir, processes, in_flight, replay_store=None):
    """`serve --processes N` (echo backend) letting one client address open
    every connection in flight; keys in workdir/keys, kept across gateways."""
    args = ["--processes", str(processes),
            "--max-connections-per-ip", str(max(64, 2 * in_flight)),
            "--max-in-flight", str(max(512, 2 * in_flight))]
    if replay_store:
        args += ["--replay-store", replay_store]
    return bench_gateway.GatewayProcess(workdir, args)


def x25519_pin(url):
    """v2_key_fingerprint of the gateway's X25519 config (RFC 9458 §3: key_id,
    kem_id, a 32-byte key; docs/crypto.md): the gateway offers both suites
    and a client prefers X-Wing, so the pin is how it speaks EHBP's."""
    with urllib.request.urlopen(url + EHBP_KEYS, timeout=10) as r:
        config = r.read()
    return "sha256:" + hashlib.sha256(config[1:3] + config[3:35]).hexdigest()


# ---- the gateway's processes -------------------------------------------------------


def children(pid):
    """Pids whose parent is pid (from /proc/*/stat)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces, so split after it
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return sorted(out)


def gateway_pids(gateway, processes):
    """[parent, worker...] of a gateway started with --processes N > 1; [pid] for 1."""
    parent = gateway.proc.pid
    if processes == 1:
        return [parent]
    workers = children(parent)
    if len(workers) != processes:
        raise RuntimeError("expected %d workers under pid %d, found %r"
                           % (processes, parent, workers))
    return [parent] + workers


def _sockets_on_port(port):
    """Inodes of the TCP sockets whose local port is `port` (/proc/net/tcp*)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue  # no IPv6
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def usage(pid, port):
    """(resident kB, descriptors of sockets on `port`, other descriptors) of a
    process, from /proc. On the gateway's port they are its listener and the
    clients' connections, which come and go with the load; the others (logs,
    Redis, key files) are what a leak of descriptors would grow."""
    with open("/proc/%d/status" % pid) as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    fd_dir = "/proc/%d/fd" % pid
    targets = []
    for fd in os.listdir(fd_dir):
        try:
            targets.append(os.readlink(os.path.join(fd_dir, fd)))
        except OSError:
            continue  # closed meanwhile
    on_port = _sockets_on_port(port)  # after: every socket listed is in it
    connections = others = 0
    for target in targets:
        if target.startswith("socket:[") and target[8:-1] in on_port:
            connections += 1
        else:
            others += 1
    return rss, connections, others


def port_of(url):
    return int(url.rsplit(":", 1)[1].split("/")[0])


# ---- the load -------------------------------------------------------------------------


def spoken(metadata):
    """"v2 <suite>" for a v2 answer (its _metadata names both); "v1" for a
    NOMYO one, whose _metadata names its envelope's algorithm instead."""
    if metadata.get("protocol") == "v2":
        return "v2 %s" % metadata.get("suite")
    return "v1" if metadata.get("encryption_algorithm") else "unknown"


class Load:
    """`n` chat completions through hushcall.AsyncClient, at most `in_flight`
    at once, kinds taken in turn from `kinds` (one client per kind). Each
    prompt is unique; each answer must be its echo in the expected suite.
    `on_done(count)` runs after every completed request (answered or failed).
    `v1_key`, a hushcall.KeyPair, is the v1 client's RSA key: made once for
    every gateway, as a client keeps its key, rather than once per client."""

    def __init__(self, url, kinds, n, in_flight, on_done=None, v1_key=None):
        self.url, self.kinds, self.n, self.in_flight = url, kinds, n, in_flight
        self.v1_key = v1_key
        self.on_done = on_done or (lambda count: None)
        self.run_id = uuid.uuid4().hex[:12]
        self.latencies = []  # seconds, of the answers that were right
        self.failures = []   # (request number, kind, what went wrong)
        self.done = 0
        self.wall = 0.0
        self.cpu = 0.0       # seconds of CPU, every thread of this process
        self.loop_cpu = 0.0  # seconds of CPU of the event loop's thread alone

    def prompt(self, i):
        return "request %d of run %s: how warm is the sea today?" % (i, self.run_id)

    def clients(self):
        import hushcall

        out = {}
        for kind in self.kinds:
            options = dict(KINDS[kind])
            if kind == "v2-x25519":
                options["v2_key_fingerprint"] = x25519_pin(self.url)
            if kind == "v1" and self.v1_key is not None:
                options["client_key"] = self.v1_key
            out[kind] = hushcall.AsyncClient(self.url, allow_http=True, max_retries=0,
                                             **options)
        return out

    async def one(self, client, kind, i):
        """Send request i; None when its answer is right, else what was wrong."""
        prompt = self.prompt(i)
        resp = await client.create(model="bench", messages=[{"role": "user", "content": prompt}])
        content = str(resp["choices"][0]["message"]["content"])
        if content != "echo: " + prompt:
            return "not its echo: %r" % content[:80]
        said = spoken(resp["_metadata"])
        if not said.startswith(SPOKEN[kind]):
            return "spoke %r, not %s*" % (said, SPOKEN[kind])
        return None

    async def run(self):
        clients = self.clients()
        try:
            # the clients' key fetch (and v1 key generation), not measured
            for k, (kind, client) in enumerate(clients.items()):
                wrong = await self.one(client, kind, -1 - k)
                if wrong:
                    raise RuntimeError("warm-up %s: %s" % (kind, wrong))
            next_i = 0

            async def worker():
                nonlocal next_i
                while next_i < self.n:
                    i = next_i
                    next_i += 1
                    kind = self.kinds[i % len(self.kinds)]
                    t0 = time.perf_counter()
                    try:
                        wrong = await self.one(clients[kind], kind, i)
                    except Exception as e:  # counted and shown, never hidden
                        wrong = repr(e)[:200]
                    if wrong:
                        self.failures.append((i, kind, wrong))
                    else:
                        self.latencies.append(time.perf_counter() - t0)
                    self.done += 1
                    self.on_done(self.done)

            t0, cpu0, loop0 = time.perf_counter(), time.process_time(), time.thread_time()
            await asyncio.gather(*(worker() for _ in range(self.in_flight)))
            self.wall = time.perf_counter() - t0
            self.cpu = time.process_time() - cpu0
            self.loop_cpu = time.thread_time() - loop0
        finally:
            for client in clients.values():
                await client.aclose()
        return self

    def figures(self):
        """req/s over the run, latency p50/p99 in ms of the right answers, how
        many it held in flight on average, and the client's CPU: all its
        threads in cores, and how busy its event loop's thread was (near
        100%: the client, not the gateway, limits)."""
        lat = sorted(x * 1000.0 for x in self.latencies)
        wall = self.wall if self.wall > 0 else float("nan")
        return {"rps": self.done / wall, "p50": bench_gateway.percentile(lat, 50),
                "p99": bench_gateway.percentile(lat, 99), "client_cores": self.cpu / wall,
                "loop_busy": 100.0 * self.loop_cpu / wall,
                # the time-average of requests outstanding (Little's law): the
                # client really held this many in flight
                "held": sum(self.latencies) / wall}

    def print_failures(self, limit=10):
        for i, kind, wrong in self.failures[:limit]:
            print("  FAILED request %d (%s): %s" % (i, kind, wrong))
        if len(self.failures) > limit:
            print("  ... and %d more failures" % (len(self.failures) - limit))


machine_line = bench_gateway.machine_line  # for soak.py and load.py
