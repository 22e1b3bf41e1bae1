"""The gateway's Prometheus metrics (docs/operations.md "Metrics"): what
each request came to, the core's open, backend and seal times, replay
refusals, cryptographic and upstream failures, key rotations, TPM
quotes and replay checks the shared replay store could not make. Every
label takes values from a fixed set: never a path, a caller or anything a
client wrote. With PROMETHEUS_MULTIPROC_DIR set (several
gateway processes on one port) prometheus_client keeps the values in files
there, and a scrape sums every process's. prometheus_client reads the
variable when it is first imported: a parent that forks its workers sets it
before it imports this module.
"""

import asyncio
import functools
import os
import re
from typing import Callable, Optional, TypeVar

from aiohttp import web
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest, multiprocess)

from . import gateway_attest, gateway_v2, keyring
from .errors import HushcallError

__all__ = ["GatewayMetrics", "MULTIPROC_ENV", "ROUTES", "worker_exited", "failure_of",
           "note_failure", "metrics_response", "multiprocess_dir"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "hushcall_gateway_"

# A route's canonical path -> its label; any other path (a 404, a 405) is "other".
ROUTES = {
    "/pki/public_key": "public_key",
    "/v1/chat/secure_completion": "secure_completion",
    "/healthz": "healthz",
    "/metrics": "metrics",
    "/v1/models": "models",
    "/v1/{endpoint}": "api_post",
    gateway_v2.EHBP_KEYS_PATH: "hpke_keys",
    gateway_v2.HUSHCALL_KEYS_PATH: "hushcall_hpke_keys",
    gateway_attest.ATTESTATION_PATH: "attestation",
    gateway_attest.ENROLLMENT_PATH: "enrollment",
    gateway_attest.ACTIVATION_PATH: "activation",
}
OTHER_ROUTE = "other"
PROTOCOLS = ("v1", "v2", "plaintext", "none")
SUITES = ("x25519", "xwing", "rsa", "none")
# The key ring's suite names -> the suite label.
RING_SUITES = {"ehbp": "x25519", "pq": "xwing"}
# Hushcall-Key-Config is the 7-byte config header in hex: key id, KEM id, KDF id, AEAD id.
KEY_CONFIG = re.compile(r"[0-9a-f]{14}\Z")
KEM_SUITES = {keyring.SUITES["ehbp"][0]: "x25519", keyring.SUITES["pq"][0]: "xwing"}

# What a failed request came to (failure_of); None is any other failure.
CRYPTO, TPM = "crypto", "tpm"
UPSTREAM_ERROR, UPSTREAM_TIMEOUT = "upstream_error", "upstream_timeout"
# The core's one answer to every request that does not open (HUSH_SERVER_INVALID_PACKAGE).
INVALID_PACKAGE = "Invalid encrypted payload"
UPSTREAM_KINDS = ("http", "unavailable")
TPM_ANSWER_FAILED = "TPM attestation failed"  # a v1 answer's quote failed in the core
QUOTE_OUTCOMES = ("made", "failed", "rate_refused")
# A replay-store decision Redis could not make: refused (503, fail closed) or answered
# without the check (--replay-store-fail-open).
REPLAY_STORE_OUTCOMES = ("refused", "answered_unchecked")

# Request latencies run from a key fetch (sub-millisecond) to an upstream's minutes.
REQUEST_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120,
                   300)
CORE_BUCKETS = (.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5,
                5, 10, 30, 60, 120)
# The core's timings (request["core"]) and the phase label each becomes.
PHASES = (("open_ms", "open"), ("backend_ms", "backend"), ("seal_ms", "seal"))

T = TypeVar("T")


def multiprocess_dir() -> Optional[str]:
    return os.environ.get(MULTIPROC_ENV) or None


def worker_exited(pid: int) -> None:
    """Tell the shared metrics a worker process is gone: its live gauges
    (requests in flight) stop counting. The parent of several gateway
    processes calls it when it reaps one; without multiprocess mode it does
    nothing."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)


def failure_of(e: HushcallError) -> Optional[str]:
    """What the core's failure of one request came to: CRYPTO (the opaque
    400 of a request that does not open), UPSTREAM_ERROR, UPSTREAM_TIMEOUT,
    TPM (a v1 answer's quote) or None. Decided by the kind and the fixed
    message the core answers with, never by anything the client sent."""
    status = getattr(e, "http_status", None)
    detail = e.args[0] if e.args else None
    if status == 400 and detail == INVALID_PACKAGE:
        return CRYPTO
    if detail == TPM_ANSWER_FAILED:
        return TPM
    if e.kind == "timeout":
        return UPSTREAM_TIMEOUT
    if e.kind in UPSTREAM_KINDS and isinstance(detail, str) and detail.startswith("Upstream"):
        return UPSTREAM_ERROR
    return None


def note_failure(request: web.Request, e: HushcallError) -> None:
    """Record a failure of the core on the request, for the log and the metrics."""
    request["core"] = {"error": e.kind}
    request["failure"] = failure_of(e)


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return ROUTES.get(resource.canonical, OTHER_ROUTE) if resource is not None else OTHER_ROUTE


def protocol_of(request: web.Request, route: str) -> str:
    protocol = request.get("protocol")
    if protocol in PROTOCOLS:
        return protocol
    return "v1" if route == "secure_completion" else "none"


def suite_of(request: web.Request, protocol: str) -> str:
    """rsa for v1; for v2 the KEM its Hushcall-Key-Config names, or x25519
    for an EHBP request, which names none."""
    if protocol == "v1":
        return "rsa"
    if protocol != "v2":
        return "none"
    config = request.headers.get(gateway_v2.CONFIG_HEADER)
    if config is None:
        return "x25519"
    if not KEY_CONFIG.match(config):
        return "none"
    return KEM_SUITES.get(int(config[2:6], 16), "none")


class GatewayMetrics:
    """One gateway's metrics, in a registry of their own (several gateways
    may run in one process, as in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        metric = functools.partial(self._metric, registry=self.registry)
        self.requests = metric(Counter, "requests", "Requests answered",
                               ["route", "protocol", "suite", "code"])
        self.request_seconds = metric(Histogram, "request_seconds",
                                      "Whole-request latency, to the answer's end",
                                      ["route"], buckets=REQUEST_BUCKETS)
        self.core_seconds = metric(Histogram, "core_seconds",
                                   "The core's time opening a request, running the backend "
                                   "and sealing the answer", ["phase", "protocol"],
                                   buckets=CORE_BUCKETS)
        self.in_flight = metric(Gauge, "requests_in_flight", "Requests being handled",
                                multiprocess_mode="livesum")
        self.replays = metric(Counter, "replay_refusals", "Requests refused as replays (409)",
                              ["protocol"])
        self.crypto_failures = metric(Counter, "crypto_failures",
                                      "Requests that did not open (the opaque 400)",
                                      ["protocol"])
        self.upstream_errors = metric(Counter, "upstream_errors",
                                      "Upstream failures other than timeouts (502, 503)",
                                      ["protocol"])
        self.upstream_timeouts = metric(Counter, "upstream_timeouts",
                                        "Upstream requests past --upstream-timeout (504)",
                                        ["protocol"])
        self.key_rotations = metric(Counter, "key_rotations", "v2 keys made by rotation",
                                    ["suite"])
        self.tpm_quotes = metric(Counter, "tpm_quotes",
                                 "TPM quotes made or failed, and TPM calls refused by "
                                 "--tpm-quotes-per-second", ["outcome"])
        # A counter fed with each process's new failures, not a gauge of the
        # core's figure: a gauge set from a callback has no multiprocess mode.
        self.memory_lock_failures = metric(Counter, "memory_lock_failures",
                                           "Secure-memory regions the kernel refused to mlock "
                                           "(RLIMIT_MEMLOCK): plaintext that may be swapped")
        self.replay_store_unavailable = metric(
            Counter, "replay_store_unavailable",
            "Replay checks that found the shared replay store (Redis) unavailable: refused "
            "(503) or answered unchecked (--replay-store-fail-open)", ["outcome"])
        self._zero_the_bounded_counters()

    @staticmethod
    def _metric(kind, name, documentation, labels=(), registry=None, **options):
        return kind(PREFIX + name, documentation, labels, registry=registry, **options)

    def _zero_the_bounded_counters(self) -> None:
        """Every small label set shown from the start, so an alert on a rate
        has a series before the first event."""
        for protocol in ("v1", "v2"):
            for counter in (self.replays, self.crypto_failures, self.upstream_errors,
                            self.upstream_timeouts):
                counter.labels(protocol)
        for suite in RING_SUITES.values():
            self.key_rotations.labels(suite)
        for outcome in QUOTE_OUTCOMES:
            self.tpm_quotes.labels(outcome)
        for outcome in REPLAY_STORE_OUTCOMES:
            self.replay_store_unavailable.labels(outcome)

    # ---- what the gateway reports ------------------------------------------

    @web.middleware
    async def count_in_flight(self, request: web.Request, handler) -> web.StreamResponse:
        with self.in_flight.track_inprogress():
            return await handler(request)

    def observe(self, request: web.Request, status: int, ms: float) -> None:
        """One request done (from the gateway's access log): status `status`
        after `ms` milliseconds."""
        route = route_of(request)
        protocol = protocol_of(request, route)
        self.requests.labels(route, protocol, suite_of(request, protocol), str(status)).inc()
        self.request_seconds.labels(route).observe(ms / 1000.0)
        core = request.get("core") or {}
        for field, phase in PHASES:
            if field in core:
                self.core_seconds.labels(phase, protocol).observe(core[field] / 1000.0)
        if request.get("replay"):
            self.replays.labels(protocol).inc()
        failure = request.get("failure")
        counter = {CRYPTO: self.crypto_failures, UPSTREAM_ERROR: self.upstream_errors,
                   UPSTREAM_TIMEOUT: self.upstream_timeouts}.get(failure)
        if counter is not None:
            counter.labels(protocol).inc()
        self._observe_v1_quote(request, route, status, core, failure)

    def _observe_v1_quote(self, request: web.Request, route: str, status: int, core: dict,
                          failure: Optional[str]) -> None:
        """A v1 answer is quoted inside the core: made when it was answered
        afresh (an answer-cache retry quotes nothing), failed as the core said."""
        if route != "secure_completion" or not request.get("attest"):
            return
        if status == 200 and "open_ms" in core:
            self.tpm_quotes.labels("made").inc()
        elif failure == TPM:
            self.tpm_quotes.labels("failed").inc()

    def counted_quote(self, quote: Callable[..., T]) -> Callable[..., T]:
        """`quote` (a call making one TPM quote), counting what became of it."""
        @functools.wraps(quote)
        def counted(*args, **kwargs):
            try:
                result = quote(*args, **kwargs)
            except HushcallError:
                self.tpm_quotes.labels("failed").inc()
                raise
            self.tpm_quotes.labels("made").inc()
            return result
        return counted

    def counted_refusals(self, take: Callable[[], float]) -> Callable[[], float]:
        """The quote bucket's `take`, counting its refusals."""
        def counted() -> float:
            wait = take()
            if wait > 0:
                self.tpm_quotes.labels("rate_refused").inc()
            return wait
        return counted

    def replay_store_failed(self, fail_open: bool) -> None:
        """One replay check Redis did not answer (replay_redis.Outage.failed)."""
        self.replay_store_unavailable.labels(
            "answered_unchecked" if fail_open else "refused").inc()

    def key_rotated(self, ring_suite: str) -> None:
        self.key_rotations.labels(RING_SUITES.get(ring_suite, "none")).inc()

    # ---- exposition --------------------------------------------------------

    def exposition(self) -> bytes:
        """The text a scrape gets: this registry, or with several processes
        every process's values summed."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=directory)
        return generate_latest(merged)


async def metrics_response(metrics: GatewayMetrics, executor) -> web.Response:
    """The scrape's answer; the files of every process are read on `executor`."""
    body = await asyncio.get_running_loop().run_in_executor(executor, metrics.exposition)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
