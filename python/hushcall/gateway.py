"""The reference gateway: a NOMYO-compatible secure endpoint, and protocol
v2 (EHBP) beside it in the same process (docs/gateway.md).

Python here sees only ciphertext, headers and sizes. Each sealed request is
handed whole to ``_core.Server`` on a worker thread, which opens it into
locked memory, runs the backend there and seals the answer; the plaintext
never becomes a Python object. v2's part is in gateway_v2.py.
"""

import asyncio
import concurrent.futures
import dataclasses
import functools
import hmac
import json
import logging
import math
import os
import re
import signal
import ssl
import sys
import time
import urllib.parse
from typing import Dict, List, Optional, Tuple, Union

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from . import (_core, gateway_attest, gateway_metrics, gateway_reload, gateway_v2, keyring,
               memory_lock, replay)
from .errors import HushcallError
from .gateway_limits import (DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT,
                             DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_CONNECTIONS_PER_IP,
                             LimitedAppRunner, Limits, continue_upload, expect_later)

__all__ = ["GatewayConfig", "Gateway", "load_server_key", "run"]

log = logging.getLogger("hushcall.gateway")

TIERS = ("standard", "high", "maximum")
DEFAULT_PORT = 12434
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_KEY_DIR = os.path.join("~", ".hushcall", "gateway")
V2_KEY_DIR_NAME = "v2-keys"  # the v2 key ring's default directory, inside the key dir
KEY_PASSWORD_ENV = "HUSHCALL_GATEWAY_KEY_PASSWORD"
UPSTREAM_API_KEY_ENV = "HUSHCALL_UPSTREAM_API_KEY"
# What may be logged of a client-chosen payload id; anything else is "-".
LOGGABLE_PAYLOAD_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
READ_CHUNK = 64 * 1024
DEFAULT_MAX_IN_FLIGHT = 512
# Buckets kept before the full ones are forgotten (callers without API keys
# are addresses, of which there may be many).
MAX_BUCKETS = 10000

REPLAYED_REQUEST = "replayed request"
# Tiers whose answers are quoted; others only with "X-Attestation: required".
QUOTED_TIERS = ("high", "maximum")
ATTESTATION_REQUIRED = "required"
DEFAULT_TPM_QUOTES_PER_SECOND = 20.0
# The headers the gateway reads; each must come at most once, as UTF-8 text.
CHECKED_HEADERS = ("Authorization", "X-Payload-ID", "X-Public-Key", "X-Security-Tier")
V2_HEADERS = ("Authorization", gateway_v2.ENC_HEADER, gateway_v2.CONFIG_HEADER,
              "X-Security-Tier", "X-Attestation")
PLAINTEXT_REFUSED = ("Encrypted request required: send Ehbp-Encapsulated-Key "
                     "(this gateway serves no plaintext completions)")

WORKER_HEADER = "Hushcall-Worker"

MAXIMUM_TIER_REFUSED = (
    "Security tier 'maximum' requires TPM attestation, which this gateway does not offer"
)


@dataclasses.dataclass
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    backend: str = "echo"  # "echo" or "openai:<base URL>"
    key_dir: str = DEFAULT_KEY_DIR
    api_keys: List[str] = dataclasses.field(default_factory=list)
    api_key_file: Optional[str] = None  # more keys, one a line; reread on SIGHUP
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    rate_limit: Optional[float] = None  # requests per second per key; None is off
    rate_burst: Optional[int] = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections_per_ip: int = DEFAULT_MAX_CONNECTIONS_PER_IP
    log_format: str = "text"  # or "json"
    upstream_timeout: Optional[float] = None
    upstream_ca_file: Optional[str] = None
    allow_http_upstream: bool = False  # an http:// upstream that is not loopback
    workers: Optional[int] = None
    shutdown_timeout: float = 30.0
    tpm: Optional[str] = None  # a tss2 TCTI: answers are quoted when asked, maximum allowed
    tpm_quotes_per_second: float = DEFAULT_TPM_QUOTES_PER_SECOND  # each is a TPM round trip
    tpm_pcrs: Optional[str] = None
    tpm_key_alg: str = "ecc"
    tpm_handle: int = 0
    replay_window: float = replay.DEFAULT_WINDOW  # seconds a request is remembered
    replay_max_entries: int = replay.DEFAULT_MAX_ENTRIES
    v2: bool = True  # serve protocol v2 beside v1
    v2_key_dir: Optional[str] = None  # default: <key_dir>/v2-keys
    key_lifetime: float = keyring.DEFAULT_KEY_LIFETIME
    key_overlap: float = keyring.DEFAULT_KEY_OVERLAP
    echo_delay_ms: int = 0  # echo: the pause between the words of a streamed answer
    # Answer unsealed POSTs in plaintext, for benchmarks only (docs/gateway.md).
    allow_plaintext: bool = False
    # /metrics on its own loopback listener (None: on the main port, for API-key holders).
    metrics_port: Optional[int] = None
    # The replay stores shared in Redis (redis:// or rediss:// URL); None: this process's own.
    replay_store: Optional[str] = None
    replay_store_fail_open: bool = False  # Redis down: answer unchecked instead of 503
    replay_store_timeout: float = replay.DEFAULT_STORE_TIMEOUT  # seconds, per Redis call
    # Several processes (gateway_processes.py, docs/operations.md)
    processes: int = 1  # more than 1: a parent serving the port from that many workers
    key_publish_lead: Optional[float] = None  # default: keyring's
    worker_index: Optional[int] = None  # set by the parent in each worker


def replay_stores(config: GatewayConfig) -> Tuple[replay.ReplayStore, replay.ReplayStore]:
    """The v1 and v2 replay stores: in this process, or shared in Redis."""
    if config.replay_store is None:
        return (replay.InProcessReplayStore(config.replay_max_entries),
                replay.InProcessReplayStore(config.replay_max_entries))
    from . import replay_redis  # redis-py is needed only here
    return replay_redis.open_stores(config.replay_store, config.replay_store_fail_open,
                                    config.replay_store_timeout)


def replay_store_health(store: replay.ReplayStore) -> dict:
    """/healthz's view of the replay store: where it is, and for Redis
    whether it answers and what its outages cost."""
    outage = getattr(store, "outage", None)
    if outage is None:
        return {"shared": False}
    return {"shared": True, "available": not outage.down,
            "answered_unchecked": outage.unchecked, "refused_unavailable": outage.refused}


def take_secret_env(name: str) -> Optional[str]:
    """A secret from the environment, removed from it once read: children no
    longer inherit it, and its value is zeroed where the C environment (and
    /proc/<pid>/environ) held it. Python's own copy of the text is freed, not
    wiped (docs/gateway.md)."""
    value = os.environ.get(name)
    _core.wipe_environment_variable(name)
    os.environ.pop(name, None)
    return value or None


def load_server_key(key_dir: str, password: Optional[str] = None) -> "_core.KeyPair":
    """The gateway's key from key_dir, made and saved there (0600) on first start."""
    key_dir = os.path.expanduser(key_dir)
    private = os.path.join(key_dir, "private_key.pem")
    if os.path.lexists(private):
        return _core.KeyPair.load(private, password)
    parent = os.path.dirname(os.path.abspath(key_dir))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    key = _core.KeyPair.generate(4096)
    key.save(key_dir, password)
    log.info("made a new server key in %s: %s", key_dir, key.fingerprint)
    return key


class TokenBuckets:
    """One token bucket per caller: `rate` tokens a second, at most `burst`."""

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self.buckets: Dict[str, Tuple[float, float]] = {}  # caller -> (tokens, at)

    def take(self, caller: str) -> float:
        """0 when a token was taken, else the seconds until there is one."""
        now = time.monotonic()
        if len(self.buckets) > MAX_BUCKETS:
            self.forget_full(now)
        tokens, at = self.buckets.get(caller, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self.buckets[caller] = (tokens - 1.0, now)
            return 0.0
        self.buckets[caller] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled: a new one starts full anyway."""
        self.buckets = {caller: (tokens, at) for caller, (tokens, at) in self.buckets.items()
                        if tokens + (now - at) * self.rate < self.burst}


def error(status: int, detail: str, headers: Optional[Dict[str, str]] = None) -> web.Response:
    return web.json_response({"detail": detail}, status=status, headers=headers)


def replay_store_unavailable() -> web.Response:
    """Fail closed: without the shared replay check nothing is answered."""
    return error(503, "Replay store unavailable", {"Retry-After": "1"})


def over_budget() -> web.Response:
    return error(503, "Gateway busy: too many request bytes buffered",
                 {"Retry-After": "1", "Connection": "close"})


class BadHeader(Exception):
    """A header the gateway cannot use; args[0] is the fixed detail to answer 400 with."""


def checked_header(request: web.Request, name: str) -> Optional[str]:
    """The value of header `name` (None when absent), refused when it comes twice or is
    not UTF-8 text without NUL. aiohttp keeps undecodable bytes as lone surrogates,
    which nothing downstream can encode."""
    values = request.headers.getall(name, [])
    if len(values) > 1:
        raise BadHeader("Duplicate %s header" % name)
    if not values:
        return None
    try:
        values[0].encode("utf-8")
    except UnicodeEncodeError:
        raise BadHeader("%s header is not valid UTF-8" % name) from None
    if "\x00" in values[0]:
        raise BadHeader("%s header contains a NUL character" % name)
    return values[0]


def load_key_ring(config: GatewayConfig, password: Optional[str]) -> keyring.KeyRing:
    """The v2 key ring, protected by the same password as the v1 key."""
    key_dir = config.v2_key_dir or os.path.join(config.key_dir, V2_KEY_DIR_NAME)
    return keyring.KeyRing(os.path.expanduser(key_dir), key_lifetime=config.key_lifetime,
                           key_overlap=config.key_overlap,
                           key_publish_lead=config.key_publish_lead, password=password)


class Gateway:
    """The aiohttp application around one _core.Server."""

    def __init__(self, config: GatewayConfig, key: "_core.KeyPair",
                 ring: Optional[keyring.KeyRing] = None):
        self.config = config
        self.key = key
        self.public_pem = key.public_pem()
        backend, _, upstream = config.backend.partition(":")
        if backend not in ("echo", "openai") or (backend == "openai") != bool(upstream):
            raise ValueError("backend must be echo or openai:URL")
        self.backend = backend
        self.tpm = None
        if config.tpm:
            self.tpm = _core.Tpm(config.tpm, pcrs=config.tpm_pcrs, key_alg=config.tpm_key_alg,
                                 persistent_handle=config.tpm_handle)
        self.server = _core.Server(
            key,
            backend=backend,
            upstream_url=upstream or None,
            upstream_api_key=take_secret_env(UPSTREAM_API_KEY_ENV),
            upstream_ca_file=config.upstream_ca_file,
            allow_http_upstream=config.allow_http_upstream,
            upstream_timeout=config.upstream_timeout,
            max_package_bytes=config.max_body_bytes,
            tpm=self.tpm,
            echo_delay_ms=config.echo_delay_ms,
        )
        # Labels, never the keys themselves, go into logs and rate-limit tables.
        self.api_keys = gateway_reload.labelled_api_keys(config.api_keys, config.api_key_file)
        # One bucket for the whole gateway: the TPM is one device behind one lock.
        rate = config.tpm_quotes_per_second
        self.quotes = TokenBuckets(rate, max(1, int(rate)))
        self.metrics = gateway_metrics.GatewayMetrics()
        self.memory_lock = memory_lock.LockFailureWatch(log)
        self.take_quote = self.metrics.counted_refusals(functools.partial(self.quotes.take, "tpm"))
        self.buckets = None
        if config.rate_limit:
            burst = config.rate_burst or max(1, int(config.rate_limit))
            self.buckets = TokenBuckets(config.rate_limit, burst)
        # RSA is CPU work; an upstream round trip is waiting.
        workers = config.workers or ((os.cpu_count() or 2) if backend == "echo" else 32)
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="hushcall-gateway")
        self.replay_store, v2_replay_store = replay_stores(config)
        outage = getattr(self.replay_store, "outage", None)  # Redis's, shared by v1 and v2
        if outage is not None:
            outage.on_failed = self.metrics.replay_store_failed
        self.answer_cache = replay.AnswerCache()
        self.v2 = None
        if ring is not None:
            self.v2 = gateway_v2.V2(self.server, ring, v2_replay_store)
        self.attestation = None
        if self.tpm is not None:
            self.attestation = gateway_attest.TpmAttestation(
                self.tpm, self.executor, self.take_quote,
                self.v2.key_config_list if self.v2 is not None else None, config.body_timeout)
            # Its quotes are counted where they are made.
            self.attestation.quote_configs = self.metrics.counted_quote(
                self.attestation.quote_configs)
        self.limits = Limits(
            max_in_flight=config.max_in_flight, max_buffered_bytes=config.max_buffered_bytes,
            header_timeout=config.header_timeout,
            max_connections_per_ip=config.max_connections_per_ip, log_format=config.log_format)
        self.stopping = False
        self.streams: set = set()  # the channels of the streams being answered

    @property
    def in_flight(self) -> int:
        return self.limits.in_flight

    def app(self) -> web.Application:
        # The access log runs inside hold_until_sent: a request is logged
        # before its answer goes out, so whoever reads the answer finds its line.
        app = web.Application(client_max_size=self.config.max_body_bytes + 1,
                              middlewares=[self.limits.hold_until_sent, self.access_log,
                                           self.metrics.count_in_flight])
        app.add_routes([
            web.get("/pki/public_key", self.public_key),
            web.post("/v1/chat/secure_completion", self.secure_completion,
                     expect_handler=expect_later),
            web.get("/healthz", self.healthz),
            *gateway_attest.routes(self.attestation),
        ])
        if self.config.metrics_port is None:
            app.add_routes([web.get("/metrics", self.metrics_for_api_key_holders)])
        if self.config.worker_index is not None:
            app.on_response_prepare.append(self.name_worker)
        if self.v2 is not None:
            app.add_routes([
                web.get(gateway_v2.EHBP_KEYS_PATH, self.v2.ehbp_keys),
                web.get(gateway_v2.HUSHCALL_KEYS_PATH, self.v2.hushcall_keys),
                web.get("/v1/models", self.models),
                # Every other sealed POST /v1/...; the v1 route above matches first.
                web.post("/v1/{endpoint:.+}", self.v2_post, expect_handler=expect_later),
            ])
        return app

    async def name_worker(self, request: web.Request, response: web.StreamResponse) -> None:
        """Which of --processes answered: its index, not its pid."""
        response.headers[WORKER_HEADER] = str(self.config.worker_index)

    # ---- handlers --------------------------------------------------------

    async def public_key(self, request: web.Request) -> web.Response:
        return web.Response(text=self.public_pem)

    async def metrics_for_api_key_holders(self, request: web.Request) -> web.Response:
        """/metrics on the main port: other callers' traffic, so only for a
        caller with an API key; without API keys nobody is one (404)."""
        if not self.api_keys:
            return error(404, "Not Found")
        if self.authenticate(request) is None:
            return error(401, "Invalid API key")
        return await gateway_metrics.metrics_response(self.metrics, self.executor)

    async def metrics_for_loopback(self, request: web.Request) -> web.Response:
        return await gateway_metrics.metrics_response(self.metrics, self.executor)

    async def healthz(self, request: web.Request) -> web.Response:
        status = "stopping" if self.stopping else "ok"
        # The details tell of other callers' traffic (in_flight, memory in use): only a
        # caller presenting an API key gets them. With no keys configured nobody is a
        # known caller, so they are never served.
        if not self.api_keys or self.authenticate(request) is None:
            return web.json_response({"status": status})
        return web.json_response({
            "status": status,
            "backend": self.backend,
            "tpm": self.tpm.pcr_banks if self.tpm is not None else None,
            "key_fingerprint": self.key.fingerprint,
            "in_flight": self.in_flight,
            "memory_protection": _core.get_memory_protection_info(),
            "replay_store": replay_store_health(self.replay_store),
        })

    def admit_caller(self, request: web.Request) -> Optional[web.Response]:
        """None when the caller may go on: authenticated, within its rate and
        the gateway's in-flight limit; else the refusal."""
        caller = self.authenticate(request)
        if caller is None:
            return error(401, "Invalid API key")
        request["caller"] = caller
        if self.buckets is not None:
            wait = self.buckets.take(caller)
            if wait > 0:
                return error(429, "Rate limit exceeded",
                             {"Retry-After": str(max(1, math.ceil(wait)))})
        if not self.limits.admit(request):
            return error(503, "Gateway busy", {"Retry-After": "1"})
        return None

    async def secure_completion(self, request: web.Request) -> web.StreamResponse:
        if self.stopping:
            return error(503, "Gateway is shutting down", {"Connection": "close"})
        try:
            headers = {name: checked_header(request, name) for name in CHECKED_HEADERS}
            public_key = urllib.parse.unquote(headers["X-Public-Key"] or "")
            if "\x00" in public_key:
                raise BadHeader("X-Public-Key header contains a NUL character")
        except BadHeader as e:
            return error(400, e.args[0])
        refused = self.admit_caller(request)
        if refused is not None:
            return refused
        payload_id = headers["X-Payload-ID"]
        if not payload_id:
            return error(400, "Missing X-Payload-ID header")
        if not public_key:
            return error(400, "Missing X-Public-Key header")
        tier = headers["X-Security-Tier"]
        quoted = await self.quoted_body(request, tier, request.headers.get("X-Attestation"))
        if isinstance(quoted, web.Response):
            return quoted
        attest, body = quoted

        try:
            return await self.answer(request, body, public_key, payload_id, tier, attest)
        except replay.ReplayStoreUnavailable:
            return replay_store_unavailable()
        except HushcallError as e:
            gateway_metrics.note_failure(request, e)
            return error(getattr(e, "http_status", 500), e.args[0] if e.args else "error")

    async def quoted_body(self, request: web.Request, tier: Optional[str],
                          attestation: Optional[str]) -> Union[Tuple[bool, bytes], web.Response]:
        """(whether the answer is quoted, the body), or the refusal of the
        tier, the X-Attestation header or the body (too large, over the byte
        budget, or too slow)."""
        attest = self.answer_quoted(request, tier, attestation)
        if isinstance(attest, web.Response):
            return attest
        if (request.content_length or 0) > self.config.max_body_bytes:
            return error(413, "Request body too large", {"Connection": "close"})
        body = await self.read_body(request)
        if not isinstance(body, bytes):
            return body
        return attest, body

    def answer_quoted(self, request: web.Request, tier: Optional[str],
                      attestation: Optional[str]) -> Union[bool, web.Response]:
        """Whether the answer is quoted (a token of the quote bucket taken),
        or the refusal of the tier or X-Attestation header: before the body
        is read."""
        if tier is not None and tier not in TIERS:
            return error(400, "Invalid security tier")
        request["tier"] = tier or "standard"
        if tier == "maximum" and self.tpm is None:
            return error(503, MAXIMUM_TIER_REFUSED)
        if attestation is not None and attestation != ATTESTATION_REQUIRED:
            return error(400, "Invalid X-Attestation header")
        attest = self.tpm is not None and (tier in QUOTED_TIERS or attestation is not None)
        if attest:
            request["attest"] = True
            wait = self.take_quote()
            if wait > 0:
                return error(503, "TPM quote rate exceeded",
                             {"Retry-After": str(max(1, math.ceil(wait)))})
        return attest

    async def answer(self, request: web.Request, body: bytes, public_key: str,
                     payload_id: str, tier: Optional[str], attest: bool) -> web.Response:
        """The request answered on a worker thread (one hop: each costs the
        loop a wake-up), or refused as a replay."""
        loop = asyncio.get_running_loop()
        answered = await loop.run_in_executor(self.executor, functools.partial(
            self.open_and_answer, body, public_key, payload_id, tier, attest))
        if answered.answers > 1:
            request["answers"] = answered.answers
        if answered.package is None:
            request["replay"] = 1
            return error(409, REPLAYED_REQUEST)
        if answered.timings is not None:
            request["core"] = answered.timings
        return web.Response(body=answered.package, content_type="application/octet-stream")

    def open_and_answer(self, body: bytes, public_key: str, payload_id: str,
                        tier: Optional[str], attest: bool) -> replay.Answered:
        """On a worker thread: open the request, refuse it if it is a replay,
        else answer it, from the answer cache for a retry already answered,
        else by the backend. Failures raise HushcallError."""
        exchange = self.server.open(body, public_key, payload_id, tier, attest=attest)
        try:
            digest, binding = exchange.replay_key
            verdict, answers = self.replay_store.check_and_remember(
                digest, binding, time.time() + self.config.replay_window)
            if verdict in replay.REFUSED_VERDICTS:
                return replay.Answered(None, None, answers)
            package = self.answer_cache.get(digest) if verdict == "retry" else None
            if package is not None:
                return replay.Answered(package, None, answers)
            package, timings = exchange.answer()
            self.answer_cache.put(digest, package)
            return replay.Answered(package, timings, answers)
        finally:
            exchange.close()

    async def v2_post(self, request: web.Request) -> web.StreamResponse:
        """Protocol v2: an EHBP (or post-quantum) sealed request to any
        /v1/ path, answered whole or (it asks for "stream": true) as a
        stream; or, with --allow-plaintext, an unsealed one."""
        if self.stopping:
            return error(503, "Gateway is shutting down", {"Connection": "close"})
        try:
            headers = {name: checked_header(request, name) for name in V2_HEADERS}
        except BadHeader as e:
            return error(400, e.args[0])
        refused = self.admit_caller(request)
        if refused is not None:
            return refused
        enc = headers[gateway_v2.ENC_HEADER]
        if enc is None and not self.config.allow_plaintext:
            return error(400, PLAINTEXT_REFUSED)
        request["protocol"] = "v2" if enc is not None else "plaintext"
        quoted = await self.quoted_body(request, headers["X-Security-Tier"],
                                        headers["X-Attestation"])
        if isinstance(quoted, web.Response):
            return quoted
        attest, body = quoted
        request["bytes_in"] = len(body)  # EHBP bodies come chunked, without a length
        loop = asyncio.get_running_loop()
        # A quote binds the request's enc: an unsealed request has none to bind.
        quote = (self.metrics.counted_quote(
            functools.partial(gateway_attest.answer_attestation, self.tpm, enc))
                 if attest and enc is not None else None)
        try:
            if enc is None:
                return await self.plaintext(request, body)
            answered = await loop.run_in_executor(self.executor, functools.partial(
                self.v2.open_and_answer, enc, headers[gateway_v2.CONFIG_HEADER], body,
                request.path, quote))
            if answered is None:
                request["replay"] = 1
                return error(409, REPLAYED_REQUEST)
            if not isinstance(answered, gateway_v2.Answer):  # an exchange asking for a stream
                return await gateway_v2.stream_answer(request, self.executor, answered,
                                                      self.streams, quote=quote)
        except replay.ReplayStoreUnavailable:
            return replay_store_unavailable()
        except HushcallError as e:
            gateway_metrics.note_failure(request, e)
            status = getattr(e, "http_status", 500)
            if status == 422:
                return gateway_v2.key_config_problem()
            return error(status, e.args[0] if e.args else "error")
        request["core"] = answered.timings
        return await gateway_v2.send_frames(request, answered)

    async def plaintext(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """--allow-plaintext: the same backend and stream, nothing sealed (for
        comparison only: this plaintext passes through Python's heap)."""
        loop = asyncio.get_running_loop()
        exchange = await loop.run_in_executor(self.executor, functools.partial(
            self.server.open_plaintext, request.path, body))
        if exchange.is_stream:
            return await gateway_v2.stream_answer(request, self.executor, exchange,
                                                  self.streams, nonce_header=False)
        try:
            (_, answer), timings = await loop.run_in_executor(self.executor, exchange.answer)
        finally:
            exchange.close()
        request["core"] = timings
        return web.Response(body=answer, content_type="application/json")

    async def models(self, request: web.Request) -> web.Response:
        """GET /v1/models in plaintext, as EHBP §7.4 has bodyless requests:
        the echo's model list, or the upstream's own (the core asks it)."""
        refused = self.admit_caller(request)
        if refused is not None:
            return refused
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(self.executor, self.server.models)
        except HushcallError as e:
            gateway_metrics.note_failure(request, e)
            return error(getattr(e, "http_status", 500), e.args[0] if e.args else "error")
        return web.Response(body=body, content_type="application/json")

    def authenticate(self, request: web.Request) -> Optional[str]:
        """The caller's rate-limit and log label, or None when refused."""
        if not self.api_keys:
            return request.remote or "-"
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        # surrogateescape: undecodable bytes (kept so by aiohttp) compare as what they were.
        token_bytes = token.strip().encode("utf-8", "surrogateescape")
        found = None
        # Every key is compared, each in constant time: no timing tells how close a guess was.
        for key, label in self.api_keys:
            if hmac.compare_digest(token_bytes, key):
                found = label
        return found

    async def read_body(self, request: web.Request) -> Union[bytes, web.Response]:
        """The body, or the answer refusing it: past --max-body-bytes, past the
        byte budget, or not all sent within --body-timeout (then cut off)."""
        # A declared length is reserved whole before any of it is read.
        if not self.limits.reserve(request, request.content_length or 0):
            return over_budget()
        await continue_upload(request)
        try:
            # asyncio.timeout, not wait_for: no task of its own for every body.
            async with asyncio.timeout(self.config.body_timeout):
                return await self.read_chunks(request)
        except TimeoutError:
            return await self.limits.cut_off(request, "body", error(
                408, "Request body not received in time", {"Connection": "close"}))

    async def read_chunks(self, request: web.Request) -> Union[bytes, web.Response]:
        """The body read to its end; a chunked one reserves each chunk as it comes."""
        undeclared = request.content_length is None
        chunks, size = [], 0
        while True:
            chunk = await request.content.read(READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.config.max_body_bytes:
                return error(413, "Request body too large", {"Connection": "close"})
            if undeclared and not self.limits.reserve(request, len(chunk)):
                return over_budget()
            chunks.append(chunk)

    # ---- logging ---------------------------------------------------------

    @web.middleware
    async def access_log(self, request: web.Request, handler) -> web.StreamResponse:
        start = time.monotonic()
        status, size = 500, 0
        try:
            response = await handler(request)
            status = response.status
            if isinstance(response, web.Response) and isinstance(response.body, bytes):
                size = len(response.body)
            size = request.get("bytes_out", size)
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            self.log_request(request, status, size, (time.monotonic() - start) * 1000)

    def log_request(self, request: web.Request, status: int, bytes_out: int, ms: float) -> None:
        payload_id = request.headers.get("X-Payload-ID")
        if payload_id is not None and not LOGGABLE_PAYLOAD_ID.match(payload_id):
            payload_id = "-"
        core = request.get("core") or {}
        record = {
            "ts": round(time.time(), 3),
            "method": request.method,
            "path": request.path,
            "status": status,
            "bytes_in": request.get("bytes_in", request.content_length or 0),
            "bytes_out": bytes_out,
            "ms": round(ms, 2),
            "open_ms": round(core["open_ms"], 2) if "open_ms" in core else None,
            "backend_ms": round(core["backend_ms"], 2) if "backend_ms" in core else None,
            "seal_ms": round(core["seal_ms"], 2) if "seal_ms" in core else None,
            "upstream_status": core.get("upstream_status") or None,
            "error": core.get("error"),
            "replay": request.get("replay"),
            "answers": request.get("answers"),
            "payload_id": payload_id,
            "tier": request.get("tier"),
            "protocol": request.get("protocol"),
            "caller": request.get("caller") if self.api_keys else None,
            "client": request.remote,
        }
        self.metrics.observe(request, status, ms)
        self.metrics.memory_lock_failures.inc(self.memory_lock.new_failures())
        if self.config.worker_index is not None:
            record["worker"] = self.config.worker_index
        if self.config.log_format == "json":
            log.info("%s", json.dumps(record, separators=(",", ":")))
        else:
            log.info("%s", " ".join(
                "%s=%s" % (k, v) for k, v in record.items()
                if v is not None and k not in ("ts",)))

    # ---- running ---------------------------------------------------------

    def ssl_context(self) -> Optional[ssl.SSLContext]:
        if not self.config.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return context

    async def serve_metrics_port(self) -> Optional[web.AppRunner]:
        """--metrics-port: /metrics, unauthenticated, on its own listener bound
        to loopback only (a scraper on the same host, or one behind a tunnel)."""
        if self.config.metrics_port is None:
            return None
        app = web.Application()
        app.add_routes([web.get("/metrics", self.metrics_for_loopback)])
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        # Several processes sharing a multiprocess directory share the port too:
        # any of them answers for all.
        shared = gateway_metrics.multiprocess_dir() is not None
        await web.TCPSite(runner, "127.0.0.1", self.config.metrics_port,
                          reuse_port=shared).start()
        log.info("metrics on http://127.0.0.1:%d/metrics", runner.addresses[0][1])
        return runner

    async def serve(self, stop: asyncio.Event) -> None:
        runner = LimitedAppRunner(self.app(), self.limits, access_log=None,
                                  handle_signals=False,
                                  shutdown_timeout=self.config.shutdown_timeout)
        await runner.setup()
        context = self.ssl_context()
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGHUP, gateway_reload.reload, self, context)
        # A worker of --processes binds the parent's port beside its siblings.
        site = web.TCPSite(runner, self.config.host, self.config.port, ssl_context=context,
                           reuse_port=self.config.worker_index is not None)
        await site.start()
        host, port = runner.addresses[0][:2]
        scheme = "https" if context else "http"
        host = "[%s]" % host if ":" in host else host
        # The operator's view of what /healthz keeps to callers with an API key,
        # logged before the line that says the gateway is ready.
        log.info("backend=%s key=%s tpm=%s memory_protection=%s", self.config.backend,
                 self.key.fingerprint, self.tpm.pcr_banks if self.tpm is not None else "-",
                 json.dumps(_core.get_memory_protection_info()))
        self.metrics.memory_lock_failures.inc(self.memory_lock.new_failures())
        maintainer = None
        if self.v2 is not None:
            maintainer = asyncio.create_task(self.v2.maintain_forever(
                self.executor, on_rotated=self.metrics.key_rotated))
        metrics_runner = await self.serve_metrics_port()
        print("listening on %s://%s:%d" % (scheme, host, port), flush=True)
        await stop.wait()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        if maintainer is not None:
            maintainer.cancel()
        log.info("shutting down: %d in flight", self.in_flight)
        self.stopping = True
        try:
            # Closes the listeners, then waits for the requests in flight.
            await runner.cleanup()
        finally:
            # Streams still running past the shutdown timeout stop at their
            # next emit, so the workers end and the executor can be joined.
            for channel in list(self.streams):
                channel.close()
            self.executor.shutdown(wait=True)
        log.info("stopped")


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request its parser refuses with a traceback quoting the raw
    header line, an Authorization one included: keep one line naming the error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            client = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
            record.msg = "refused a malformed request from %s: %s"
            record.args = (client, type(exc).__name__)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure_logging(log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(message)s" if log_format == "json" else "%(asctime)s %(name)s %(message)s"))
    root = logging.getLogger("hushcall")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # aiohttp's own loggers may quote request lines; keep them to warnings.
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())


async def _main(config: GatewayConfig, password: Optional[str] = None,
                lifeline: Optional[int] = None) -> None:
    """Serve `config`; a worker of --processes gets the password from its
    parent, and stops when `lifeline` (a pipe from the parent) closes."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway_reload.before_serving)
    if lifeline is not None:
        def parent_gone() -> None:  # the pipe reads as its end: once is enough
            loop.remove_reader(lifeline)
            stop.set()
        loop.add_reader(lifeline, parent_gone)
    else:
        password = take_secret_env(KEY_PASSWORD_ENV)
    key = await loop.run_in_executor(None, load_server_key, config.key_dir, password)
    ring = None
    if config.v2:
        ring = await loop.run_in_executor(None, load_key_ring, config, password)
    await Gateway(config, key, ring).serve(stop)


def run(config: GatewayConfig) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully; with
    config.processes > 1, from that many worker processes. SIGHUP rereads
    the files that may change while it serves (gateway_reload)."""
    configure_logging(config.log_format)
    signal.signal(signal.SIGHUP, gateway_reload.before_serving)
    gateway_reload.check_api_key_file(config.api_key_file)
    if config.processes > 1:
        from . import gateway_processes
        gateway_processes.run_parent(config)
        return
    asyncio.run(_main(config))
