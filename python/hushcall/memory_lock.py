"""Telling, once per process, that plaintext memory could not be locked.

When the kernel refuses mlock (RLIMIT_MEMLOCK too small, no CAP_IPC_LOCK)
the core keeps going with memory that is still guarded, wiped and excluded
from core dumps, but may be swapped to disk. The client layer warns with
``MemoryLockWarning`` the first time an answer or an encoded request is not
locked; the gateway logs it instead (``LockFailureWatch``).
"""

import functools
import logging
import threading
import warnings
from typing import Any, TypeVar

from . import _core

__all__ = ["MemoryLockWarning", "MESSAGE", "checked", "encode", "LockFailureWatch"]

MESSAGE = (
    "hushcall could not lock plaintext memory (mlock refused: RLIMIT_MEMLOCK too small "
    "or no CAP_IPC_LOCK). It is still guarded, wiped and excluded from core dumps, but "
    "the kernel may swap it to disk. Raise the limit (`ulimit -l`, LimitMEMLOCK= in a "
    "systemd unit) or grant CAP_IPC_LOCK."
)

T = TypeVar("T")


class MemoryLockWarning(RuntimeWarning):
    """Plaintext memory could not be mlock'ed; issued once per process."""


_warn_lock = threading.Lock()
_warned = False


def _warn_once() -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    # Two frames above checked(): encode()'s caller, or the client method that called.
    warnings.warn(MESSAGE, MemoryLockWarning, stacklevel=4)


def checked(held: T) -> T:
    """`held` (a Response or a SecureBuffer), after warning once per process
    if its memory is not locked. The flag is read without the lock first:
    once set it never clears, so the common path takes no lock."""
    if not _warned and not held.locked:  # type: ignore[attr-defined]
        _warn_once()
    return held


@functools.wraps(_core.encode)
def encode(obj: Any, **limits: Any) -> "_core.SecureBuffer":
    return checked(_core.encode(obj, **limits))


class LockFailureWatch:
    """The gateway's view of the core's lock_failures counter: how many
    regions failed to lock since the last look, logging the first failure
    once. Several processes each count their own; a metric fed with these
    deltas sums correctly across them."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._seen = 0
        self._logged = False

    def new_failures(self) -> int:
        """Regions that failed to lock since the last call (made on the
        event loop's thread only)."""
        counter = _core.get_memory_protection_info()["lock_failures"]
        new, self._seen = counter - self._seen, counter
        if new > 0 and not self._logged:
            self._logged = True
            self._log.warning("%s (%d secure regions not locked so far)", MESSAGE, counter)
        return new
