"""The gateway's defence against replayed v1 requests (docs/security.md).

A v1 answer is sealed to the key named in the request's clear X-Public-Key
header, so a captured request body sent again under another key would be
answered to whoever sent it. The gateway therefore remembers every request
it opens, by the digest of its wrapped message key (unique to the message),
with a binding digest of the client key and payload id it came with:

- the same request with the same binding is the client's own retry (nomyo
  re-sends the very same bytes after a 429/5xx or a dropped connection): it
  is answered, at most ``max_answers`` times, from the short answer cache
  when the first answer is still there;
- with another binding it is a replay, and is refused with 409.

A replay store is anything with ``check_and_remember(digest, binding,
expires) -> (verdict, answers)``, called from the gateway's worker threads
(so it must be thread-safe, and may block); ``InProcessReplayStore`` keeps
it in this process (the records live in the C core, about 48 bytes each).
``replay_redis.RedisReplayStore`` is shared by every gateway using one Redis;
a shared store that cannot decide raises ``ReplayStoreUnavailable``, which
the gateway answers with 503.
"""

import collections
import logging
import threading
import time
from typing import Callable, NamedTuple, Optional, Protocol, Tuple

from . import _core

__all__ = ["ReplayStore", "InProcessReplayStore", "ReplayStoreUnavailable", "AnswerCache",
           "Answered", "REFUSED_VERDICTS", "DEFAULT_WINDOW", "DEFAULT_MAX_ENTRIES", "MAX_ANSWERS",
           "DEFAULT_STORE_TIMEOUT"]

log = logging.getLogger("hushcall.gateway")

DEFAULT_WINDOW = 24 * 3600.0
DEFAULT_MAX_ENTRIES = 1_000_000
MAX_ANSWERS = 3
# The verdicts that are never answered.
REFUSED_VERDICTS = ("replayed", "exhausted")
DEFAULT_STORE_TIMEOUT = 1.0  # seconds a shared store may take to answer
DEFAULT_ANSWER_TTL = 300.0
DEFAULT_ANSWER_CACHE_BYTES = 64 * 1024 * 1024


class Answered(NamedTuple):
    """What became of one opened request: its sealed answer (None when it was
    refused as a replay), the core's timings (None when the answer came from
    the answer cache) and how many answers it has had."""
    package: Optional[bytes]
    timings: Optional[dict]
    answers: int


class ReplayStoreUnavailable(Exception):
    """A shared replay store could not decide (it is unreachable): the
    request is refused, never answered unchecked, unless the operator chose
    otherwise (--replay-store-fail-open)."""


class ReplayStore(Protocol):
    def check_and_remember(self, digest: bytes, binding: bytes,
                           expires: float) -> Tuple[str, int]:
        """Remember `digest` (32 bytes) with `binding` until `expires` (Unix
        time) and say what it was: ("new" | "retry" | "replayed" |
        "exhausted", the number of answers so far, this one included when
        it is to be answered)."""


class InProcessReplayStore:
    """The replay store of one gateway process: _core.ReplayCache, bounded
    by entries; when full the oldest go first, and the log says so once."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_answers: int = MAX_ANSWERS,
                 clock: Callable[[], float] = time.time):
        self.cache = _core.ReplayCache(max_entries, max_answers=max_answers)
        self.clock = clock  # Unix time; tests drive it
        self.max_entries = max_entries
        self.remembered = 0  # new entries so far: none is forgotten before there are max_entries
        self.warned_full = False
        self.lock = threading.Lock()

    def check_and_remember(self, digest: bytes, binding: bytes,
                           expires: float) -> Tuple[str, int]:
        verdict = self.cache.check_and_remember(digest, binding, self.clock(), expires)
        if verdict[0] == "new":
            self.remembered += 1  # under the GIL; an undercount only delays the check
        if not self.warned_full and self.remembered > self.max_entries:
            stats = self.cache.stats()
            with self.lock:
                warn = stats["evicted"] > 0 and not self.warned_full
                self.warned_full = self.warned_full or warn
            if warn:
                log.warning("replay cache full (%d entries): the oldest requests are now "
                            "forgotten before their window ends; raise --replay-max-entries "
                            "or shorten --replay-window", stats["max_entries"])
        return verdict

    def stats(self) -> dict:
        return self.cache.stats()


class AnswerCache:
    """Sealed answers (ciphertext only) kept a short while, so a client's
    retry of a request already answered gets the same answer without the
    backend running twice. Bounded by age and by total bytes; thread-safe."""

    def __init__(self, ttl: float = DEFAULT_ANSWER_TTL,
                 max_bytes: int = DEFAULT_ANSWER_CACHE_BYTES):
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.bytes = 0
        self.answers: "collections.OrderedDict[bytes, Tuple[float, bytes]]" = (
            collections.OrderedDict())
        self.lock = threading.Lock()

    def put(self, digest: bytes, package: bytes) -> None:
        if len(package) > self.max_bytes:
            return
        with self.lock:
            self.forget(digest)
            self.answers[digest] = (time.monotonic() + self.ttl, package)
            self.bytes += len(package)
            while self.bytes > self.max_bytes:
                self.forget(next(iter(self.answers)))

    def get(self, digest: bytes) -> Optional[bytes]:
        with self.lock:
            self.drop_expired()
            entry = self.answers.get(digest)
        return entry[1] if entry is not None else None

    def forget(self, digest: bytes) -> None:
        """(Under the lock.)"""
        entry = self.answers.pop(digest, None)
        if entry is not None:
            self.bytes -= len(entry[1])

    def drop_expired(self) -> None:
        """(Under the lock.)"""
        now = time.monotonic()
        while self.answers:
            digest, (expires, _) = next(iter(self.answers.items()))
            if expires > now:
                break
            self.forget(digest)
