"""The gateway's replay stores in Redis (--replay-store redis://HOST:PORT/DB),
so every gateway process and machine that shares one Redis refuses a request
another has already answered (docs/operations.md, "A shared replay store").

Each remembered request is one Redis hash, ``hushcall:replay:<v1|v2>:<hex of
its digest>``, holding its binding, its expiry and its answer count. One Lua
script decides and remembers at once (Redis runs a script alone, so two
gateways given the same request cannot both see it as new), with the rules
of the in-process store (_core.ReplayCache, replay.py):

- unseen, or seen but past its expiry: "new", remembered with this binding;
- the same binding: "retry" while it has had fewer than max_answers answers,
  then "exhausted";
- another binding: "replayed".

Expiries are kept in whole seconds rounded up, as the core keeps them, and
compared with the gateway's clock (the `now` it passes), not with Redis's,
so the decisions are the in-process store's exactly. Redis drops a key
itself KEY_GRACE seconds after its expiry, counted from the gateway's clock
too, so a little clock skew between machines does not shorten the window.
Unlike the in-process store there is no entry cap: Redis must have room
(maxmemory with the noeviction policy; operations.md).

The calls block (short socket timeouts) and run on the gateway's worker
threads. When Redis cannot answer, a decision raises
replay.ReplayStoreUnavailable (the gateway answers 503), or, with
fail_open, lets the request through unchecked; the outage is logged once
when it starts and once when it ends, and the next call after Redis is back
decides again, without a restart.
"""

import logging
import math
import threading
import time
import urllib.parse
from typing import Callable, Optional, Tuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .replay import DEFAULT_STORE_TIMEOUT, MAX_ANSWERS, ReplayStoreUnavailable

__all__ = ["RedisReplayStore", "Outage", "open_stores", "client_for", "describe_url",
           "KEY_PREFIX", "KEY_GRACE"]

log = logging.getLogger("hushcall.gateway")

KEY_PREFIX = "hushcall:replay:"
KEY_GRACE = 60  # seconds Redis keeps a key past its expiry
SCHEMES = ("redis", "rediss")
MAX_TIME = 4294967296.0  # the in-process store's bound, kept so both refuse the same times

# KEYS[1]: the request's key. ARGV: binding, now, expiry (whole seconds),
# max_answers, how long Redis keeps the key (ms). Returns {verdict, answers}.
CHECK_AND_REMEMBER = """
local binding, now, expires = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local max_answers = tonumber(ARGV[4])
local seen = redis.call('HMGET', KEYS[1], 'binding', 'expires', 'answers')
if not seen[1] or tonumber(seen[2]) <= now then
  redis.call('HSET', KEYS[1], 'binding', binding, 'expires', ARGV[3], 'answers', 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {'new', 1}
end
local answers = tonumber(seen[3])
if seen[1] ~= binding then
  return {'replayed', answers}
end
if answers >= max_answers then
  return {'exhausted', answers}
end
return {'retry', redis.call('HINCRBY', KEYS[1], 'answers', 1)}
"""


class Outage:
    """Whether Redis answers, as the latest decision found: one warning when
    it stops, one line when it is back. Shared by the v1 and v2 stores of a
    gateway. `unchecked` counts the requests let through unchecked (fail
    open), `refused` those refused with 503 (fail closed); `on_failed`, when
    set, is told of each (with fail_open), for the metrics."""

    def __init__(self, fail_open: bool):
        self.fail_open = fail_open
        self.on_failed: Optional[Callable[[bool], None]] = None
        self.down = False
        self.unchecked = 0
        self.refused = 0
        self.lock = threading.Lock()

    def failed(self, error: Exception) -> None:
        with self.lock:
            started, self.down = not self.down, True
            if self.fail_open:
                self.unchecked += 1
            else:
                self.refused += 1
        if self.on_failed is not None:
            self.on_failed(self.fail_open)
        if started:
            # redis-py's messages name the address and the failure, never a password.
            log.warning("replay store unavailable (%s: %.200s): %s", type(error).__name__, error,
                        "answering requests WITHOUT the replay check (--replay-store-fail-open)"
                        if self.fail_open else "refusing requests with 503")

    def answered(self) -> None:
        if not self.down:  # the common case, without the lock
            return
        with self.lock:
            ended, self.down = self.down, False
            unchecked, refused = self.unchecked, self.refused
        if ended:
            log.warning("replay store available again (so far %d requests answered unchecked, "
                        "%d refused)", unchecked, refused)


class RedisReplayStore:
    """A replay store (replay.ReplayStore) in Redis, its keys under
    KEY_PREFIX + `namespace` ("v1" or "v2"). Thread-safe: redis-py's client
    keeps a pool of connections."""

    def __init__(self, client: "redis.Redis", namespace: str, outage: Outage,
                 max_answers: int = MAX_ANSWERS, clock: Callable[[], float] = time.time):
        if not 1 <= max_answers <= 255:
            raise ValueError("max_answers must be between 1 and 255")
        self.script = client.register_script(CHECK_AND_REMEMBER)  # EVALSHA, loaded on NOSCRIPT
        self.prefix = KEY_PREFIX + namespace + ":"
        self.outage = outage
        self.max_answers = max_answers
        self.clock = clock  # Unix time; tests drive it

    def check_and_remember(self, digest: bytes, binding: bytes,
                           expires: float) -> Tuple[str, int]:
        now = self.clock()
        if not (math.isfinite(now) and math.isfinite(expires) and 0 <= now < expires < MAX_TIME):
            raise ValueError("times must satisfy 0 <= now < expires < 2^32 seconds")
        whole = math.ceil(expires)
        keep_ms = math.ceil((whole - now + KEY_GRACE) * 1000)
        try:
            verdict, answers = self.script(keys=[self.prefix + digest.hex()],
                                           args=[binding, repr(now), whole, self.max_answers,
                                                 keep_ms])
        except redis.RedisError as e:
            self.outage.failed(e)
            if self.outage.fail_open:
                return "new", 1
            raise ReplayStoreUnavailable("replay store unavailable") from e
        self.outage.answered()
        return verdict.decode("ascii"), int(answers)


def describe_url(url: str) -> str:
    """`url` without its user or password, fit for a log line."""
    parts = urllib.parse.urlsplit(url)
    return "%s://%s:%s%s" % (parts.scheme, parts.hostname, parts.port or 6379, parts.path or "/0")


def client_for(url: str, timeout: float = DEFAULT_STORE_TIMEOUT) -> "redis.Redis":
    """A client for `url` (redis:// or rediss://, ValueError otherwise) that
    waits at most `timeout` seconds for anything and retries once at once
    (a pooled connection may have died with a restarted Redis)."""
    if urllib.parse.urlsplit(url).scheme not in SCHEMES:
        raise ValueError("the replay store must be a redis:// or rediss:// URL")
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                retry=Retry(NoBackoff(), 1),
                                retry_on_error=[redis.ConnectionError, redis.TimeoutError])


def open_stores(url: str, fail_open: bool = False, timeout: float = DEFAULT_STORE_TIMEOUT,
                max_answers: int = MAX_ANSWERS, clock: Callable[[], float] = time.time
                ) -> Tuple[RedisReplayStore, RedisReplayStore]:
    """The v1 and v2 replay stores in the Redis at `url`, sharing one
    client and one outage record. Nothing is sent yet (this runs on the
    event loop): Redis need not be up, the first decision finds out."""
    client = client_for(url, timeout)
    outage = Outage(fail_open)
    log.info("replay store: %s, failing %s while it does not answer", describe_url(url),
             "open" if fail_open else "closed")
    return (RedisReplayStore(client, "v1", outage, max_answers, clock),
            RedisReplayStore(client, "v2", outage, max_answers, clock))

