"""``serve --processes N``: one port served by N gateway processes
(docs/operations.md, "Several processes and machines").

The parent reserves the port (a socket bound with SO_REUSEPORT that never
listens, so the port stays ours while workers come and go), makes the keys
once, and starts each worker as a fresh interpreter
(``python -m hushcall.gateway_processes``) that binds the same port with
SO_REUSEPORT: the kernel spreads new connections over the workers' listeners.
A worker gets its configuration, the key password and the upstream API key
as one JSON line on its stdin, never in argv or the environment; the pipe
stays open as its lifeline (the worker stops when the parent is gone). The
parent restarts a worker that dies, after a backoff that grows while workers
die young, forwards SIGTERM and SIGINT for a graceful stop, and SIGHUP
for each worker to reload its certificate and API keys (gateway_reload).
"""

import asyncio
import dataclasses
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional

from . import gateway
from .errors import HushcallError

__all__ = ["run_parent", "WorkerStartError"]

log = logging.getLogger("hushcall.gateway")

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# A worker that served this long died of something else than its start: back off afresh.
STABLE_AFTER = 30.0


class WorkerStartError(HushcallError):
    """A worker did not start at all (the parent then stops every worker)."""


class Worker:
    """One worker process: its slot, its child, when it started."""

    def __init__(self, index: int):
        self.index = index
        self.proc: Optional[subprocess.Popen] = None
        self.started = 0.0
        self.backoff = 0.0
        self.restart_at: Optional[float] = None  # set while it waits to be restarted
        self.listening = False  # until then SIGHUP would end it: it is sent after
        self.reload_when_listening = False


class Parent:
    """The pre-fork parent: starts, watches and stops the workers."""

    def __init__(self, config: gateway.GatewayConfig, password: Optional[str],
                 upstream_api_key: Optional[str]):
        self.config = config
        self.secrets = {"password": password, "upstream_api_key": upstream_api_key}
        self.workers = [Worker(i) for i in range(config.processes)]
        self.stopping: Optional[int] = None  # the signal being forwarded
        self.wakeup_r, self.wakeup_w = socket.socketpair()
        self.metrics = None  # gateway_metrics, when the metrics part is installed

    # ---- one worker ----------------------------------------------------------

    def start(self, worker: Worker, port: int) -> bool:
        """Start `worker` and wait until it listens (True); a worker that
        dies before is left for watch() to restart."""
        config = dataclasses.replace(self.config, port=port, processes=1,
                                     worker_index=worker.index)
        worker.proc = subprocess.Popen(
            [sys.executable, "-m", "hushcall.gateway_processes"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        worker.started = time.monotonic()
        worker.restart_at = None
        try:
            worker.proc.stdin.write(json.dumps({"config": dataclasses.asdict(config),
                                                **self.secrets}) + "\n")
            worker.proc.stdin.flush()  # the pipe stays open: it is the worker's lifeline
        except BrokenPipeError:
            pass  # it died at once: its status tells watch() why
        line = worker.proc.stdout.readline()
        worker.proc.stdout.close()  # the worker prints nothing after its first line
        if not line.startswith("listening on "):
            return False
        log.info("worker %d started: pid %d", worker.index, worker.proc.pid)
        worker.listening = True
        if worker.reload_when_listening:  # it may have read the files before they changed
            worker.reload_when_listening = False
            worker.proc.send_signal(signal.SIGHUP)
        return True

    def exited(self, worker: Worker, status: int) -> None:
        """Log a worker's end, tell the metrics, and schedule its restart."""
        pid = worker.proc.pid
        try:
            worker.proc.stdin.close()
        except BrokenPipeError:
            pass  # orders it never read: the pipe is closed all the same
        worker.proc = None
        worker.listening = False
        if self.metrics is not None:
            self.metrics.worker_exited(pid)
        if self.stopping is not None:
            log.info("worker %d (pid %d) stopped with status %d", worker.index, pid, status)
            return
        young = time.monotonic() - worker.started < STABLE_AFTER
        worker.backoff = min(MAX_BACKOFF, worker.backoff * 2) if young and worker.backoff \
            else FIRST_BACKOFF
        worker.restart_at = time.monotonic() + worker.backoff
        log.warning("worker %d (pid %d) exited with status %d; restarting in %.1f s",
                    worker.index, pid, status, worker.backoff)

    # ---- all of them ---------------------------------------------------------

    def on_signal(self, signum: int, frame) -> None:
        """SIGTERM, SIGINT: stop; SIGHUP: reload; SIGCHLD: only wakes watch()
        (the wakeup fd)."""
        if signum == signal.SIGHUP and self.stopping is None:
            self.forward_reload()
        if signum in (signal.SIGTERM, signal.SIGINT) and self.stopping is None:
            self.stopping = signum
            for worker in self.workers:
                if worker.proc is not None and worker.proc.poll() is None:
                    worker.proc.send_signal(signum)

    def forward_reload(self) -> None:
        """SIGHUP to every worker listening; one still starting gets it once it listens."""
        for worker in self.workers:
            if worker.listening and worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGHUP)
            elif worker.proc is not None:
                worker.reload_when_listening = True
        log.info("SIGHUP: forwarded to the workers")

    def watch(self, port: int) -> None:
        """Until every worker has stopped: reap, restart when due, sleep until
        a signal or the next restart."""
        while True:
            for worker in self.workers:
                status = worker.proc.poll() if worker.proc is not None else None
                if status is not None:
                    self.exited(worker, status)
            now = time.monotonic()
            if self.stopping is None:
                for worker in self.workers:
                    if worker.restart_at is not None and now >= worker.restart_at:
                        self.start(worker, port)
            elif all(worker.proc is None for worker in self.workers):
                return
            waits = [w.restart_at - now for w in self.workers
                     if w.restart_at is not None and self.stopping is None]
            select.select([self.wakeup_r], [], [], max(0.0, min(waits)) if waits else None)
            while select.select([self.wakeup_r], [], [], 0)[0]:
                self.wakeup_r.recv(4096)

    def run(self) -> None:
        self.wakeup_r.setblocking(False)
        self.wakeup_w.setblocking(False)
        signal.set_wakeup_fd(self.wakeup_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, self.on_signal)
        reserved = reserve_port(self.config.host, self.config.port)
        metrics_dir = tempfile.mkdtemp(prefix="hushcall-metrics-")  # 0700, ours alone
        os.environ[METRICS_DIR_ENV] = metrics_dir  # for the workers, and read at import
        try:
            self.metrics = _metrics_module()
            port = reserved.getsockname()[1]
            if not all(self.start(worker, port) for worker in self.workers):
                self.on_signal(signal.SIGTERM, None)
                self.watch(port)
                raise WorkerStartError("a worker did not start (its log is above)")
            print("listening on %s" % origin(self.config, port), flush=True)
            self.watch(port)
        finally:
            reserved.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
        log.info("stopped")


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket holding (host, port) for the workers: bound with
    SO_REUSEPORT, never listening, so no connection is queued on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def origin(config: gateway.GatewayConfig, port: int) -> str:
    host = "[%s]" % config.host if ":" in config.host else config.host
    return "%s://%s:%d" % ("https" if config.tls_cert else "http", host, port)


def _metrics_module():
    """gateway_metrics (the metrics part of issue 17) when it is there."""
    try:
        from . import gateway_metrics
    except ImportError:
        return None
    return gateway_metrics if hasattr(gateway_metrics, "worker_exited") else None


def run_parent(config: gateway.GatewayConfig) -> None:
    """Make the keys once (so workers never race to make them), then serve
    the port from config.processes workers until SIGTERM or SIGINT."""
    password = gateway.take_secret_env(gateway.KEY_PASSWORD_ENV)
    upstream_api_key = gateway.take_secret_env(gateway.UPSTREAM_API_KEY_ENV)
    gateway.load_server_key(config.key_dir, password)
    if config.v2:
        gateway.load_key_ring(config, password)
    Parent(config, password, upstream_api_key).run()


def _worker_main() -> None:
    """A worker: its orders from stdin, then serve until a signal or the parent's end."""
    orders = json.loads(sys.stdin.buffer.readline())
    config = gateway.GatewayConfig(**orders["config"])
    if orders["upstream_api_key"] is not None:
        os.environ[gateway.UPSTREAM_API_KEY_ENV] = orders["upstream_api_key"]  # Gateway takes it
    gateway.configure_logging(config.log_format)
    try:
        asyncio.run(gateway._main(config, orders["password"], lifeline=sys.stdin.fileno()))
    except (HushcallError, OSError) as e:
        # As serve says it: a certificate that will not load, without a traceback.
        print("hushcall serve: worker %d: %s: %s" % (config.worker_index, type(e).__name__, e),
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    _worker_main()
