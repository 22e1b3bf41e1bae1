"""The gateway's key ring for protocol v2 (docs/gateway.md, "v2 keys and
rotation"; the wire is docs/protocol-v2.md).

Per suite ("ehbp": X25519, the config EHBP clients read; "pq": X-Wing) the
ring holds a current key and, ``key_overlap`` before that key expires, the
next one, so a client that fetched the old config has the overlap to use
it. Every key lives ``key_lifetime`` from its creation. On expiry the ring
drops its handle (the core wipes the private key when the last request
using it is done) and deletes the key file, so past requests can never be
opened again.

Key ids (0..255) are unique among the live keys of both suites and are
handed out round-robin. An expired key leaves a tombstone (its public
metadata file without the key file) for one more ``key_lifetime``, and its
id is not reused before the tombstone goes: a client may still hold the old
config, and must get the key-config error rather than a failure to open.

The directory holds, per key, ``key-NNN.hpke`` (the private key, written
0600 and atomically by the core: _core.HpkeKeypair.save) and
``key-NNN.json`` (public metadata, written atomically after the key file:
the metadata is what publishes a key). A restart loads both and serves the
same keys. Anything else in the directory, or a file that does not match
its partner, is refused at start with KeyRingError naming the file; the
leftovers of an interrupted write (a staged dotfile, or a key file whose
metadata was never written: never published, never used) are removed.

Several processes and machines may share the directory (docs/operations.md,
"Several processes and machines"). Whoever changes it holds ``rotation.lock``
(flock, never waited for while serving): one process rotates at a time, and
it reloads the directory under the lock first, so a key already made by
another is not made twice. A next key is written ``key_publish_lead`` before
its ``not_before``, so every process, rereading the directory every
``reload_interval`` (when its listing changed), has it before any publishes
it; each drops an expired key from memory by its own clock, only the lock
holder deletes files.

The clock is injectable (``clock``: a callable returning Unix time), so
tests advance it instead of sleeping. Every method is thread-safe.
"""

import fcntl
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

from . import _core
from .errors import HushcallError

__all__ = ["KeyRing", "KeyRingError", "LiveKey", "SUITES", "DEFAULT_KEY_LIFETIME",
           "DEFAULT_KEY_OVERLAP", "DEFAULT_KEY_PUBLISH_LEAD"]

log = logging.getLogger("hushcall.gateway")

DEFAULT_KEY_LIFETIME = 24 * 3600.0
DEFAULT_KEY_OVERLAP = 3600.0
# How long before it is published a next key is on disk (at most half the
# time between a key's publication and its successor's), and how often at
# most the directory is reread (at most a quarter of the lead).
DEFAULT_KEY_PUBLISH_LEAD = 60.0
DEFAULT_RELOAD_INTERVAL = 2.0

KDF_HKDF_SHA256 = 0x0001
AEAD_AES_256_GCM = 0x0002
AEAD_CHACHA20_POLY1305 = 0x0003

# suite name -> (KEM id, the (KDF, AEAD) pairs its key config lists, preferred first)
SUITES: Dict[str, Tuple[int, Tuple[Tuple[int, int], ...]]] = {
    "ehbp": (_core.HPKE_KEM_X25519_SHA256, ((KDF_HKDF_SHA256, AEAD_AES_256_GCM),)),
    "pq": (_core.HPKE_KEM_XWING, ((KDF_HKDF_SHA256, AEAD_CHACHA20_POLY1305),
                                  (KDF_HKDF_SHA256, AEAD_AES_256_GCM))),
}

KEY_IDS = 256
METADATA_VERSION = 1
METADATA_FIELDS = {"version", "key_id", "suite", "kem", "not_before", "expires", "fingerprint"}
KEY_FILE = re.compile(r"^key-(\d{3})\.hpke$")
METADATA_FILE = re.compile(r"^key-(\d{3})\.json$")
# What an interrupted write leaves: the core's staged ".<name>.<12 hex>" files and ours.
STAGED_FILE = re.compile(r"^\.key-\d{3}\.(hpke|json)\.[0-9a-f]{12}$")
ROTATION_LOCK = "rotation.lock"


class KeyRingError(HushcallError):
    """The key directory cannot be used as it is (names the file), or the
    ring was configured wrongly."""


class LiveKey(NamedTuple):
    """A live key as the gateway publishes it; nothing secret."""
    key_id: int
    suite: str
    kem: int
    suites: Tuple[Tuple[int, int], ...]  # (KDF id, AEAD id), preferred first
    public_bytes: bytes
    fingerprint: str
    not_before: float
    expires: float


class _Key:
    """One key of the ring: its metadata and, while it lives, its handle."""

    def __init__(self, key_id: int, suite: str, not_before: float, expires: float,
                 fingerprint: str, keypair: Optional["_core.HpkeKeypair"]):
        self.key_id = key_id
        self.suite = suite
        self.not_before = not_before
        self.expires = expires
        self.fingerprint = fingerprint
        self.keypair = keypair  # None once expired: a tombstone

    def metadata(self) -> dict:
        return {"version": METADATA_VERSION, "key_id": self.key_id, "suite": self.suite,
                "kem": SUITES[self.suite][0], "not_before": self.not_before,
                "expires": self.expires, "fingerprint": self.fingerprint}

    def live_at(self, now: float) -> bool:
        return self.keypair is not None and self.not_before <= now < self.expires

    def usable_at(self, now: float) -> bool:
        """Live, or written ahead and waiting for its not_before."""
        return self.keypair is not None and now < self.expires

    def public(self) -> LiveKey:
        kem, suites = SUITES[self.suite]
        return LiveKey(self.key_id, self.suite, kem, suites, self.keypair.public_bytes(),
                       self.fingerprint, self.not_before, self.expires)


class KeyRing:
    """The v2 keys of one gateway, persisted in `key_dir` (module docstring).
    Made ready to serve: the directory is loaded (or refused) and maintained
    once before the constructor returns."""

    def __init__(self, key_dir: "os.PathLike[str] | str", *,
                 key_lifetime: float = DEFAULT_KEY_LIFETIME,
                 key_overlap: float = DEFAULT_KEY_OVERLAP,
                 key_publish_lead: Optional[float] = None,
                 password: Optional[str] = None,
                 clock: Callable[[], float] = time.time):
        if not 0 < key_overlap < key_lifetime:
            raise KeyRingError("key_overlap must be positive and shorter than key_lifetime")
        if key_publish_lead is None:
            key_publish_lead = min(DEFAULT_KEY_PUBLISH_LEAD, (key_lifetime - key_overlap) / 2)
        if not 0 < key_publish_lead < key_lifetime - key_overlap:
            raise KeyRingError("key_publish_lead must be positive and shorter than "
                               "key_lifetime - key_overlap")
        self.key_dir = os.fspath(key_dir)
        self.key_lifetime = float(key_lifetime)
        self.key_overlap = float(key_overlap)
        self.key_publish_lead = float(key_publish_lead)
        self.reload_interval = min(DEFAULT_RELOAD_INTERVAL, self.key_publish_lead / 4)
        self.password = password
        self.clock = clock
        self.lock = threading.Lock()           # guards keys and last_key_id
        self.maintain_lock = threading.Lock()  # one maintain() at a time
        self.keys: Dict[int, _Key] = {}  # by key id: live keys and tombstones
        self.last_key_id = KEY_IDS - 1   # the round-robin starts at 0
        self.listing: Optional[tuple] = None  # the directory as last read
        # Told the suite of each key this process makes after start (a rotation).
        self.on_created: Optional[Callable[[str], None]] = None
        os.makedirs(self.key_dir, mode=0o700, exist_ok=True)
        _check_directory(self.key_dir)
        _refuse_strangers(self.key_dir)
        self._reload(self.clock())
        # At start the lock is waited for: another process may be making the first keys.
        self.maintain(wait_for_lock=True)

    # ---- the gateway's view ------------------------------------------------

    def live_keys(self) -> List[LiveKey]:
        """Every live key, newest first."""
        now = self.clock()
        with self.lock:
            return [k.public() for k in self._newest_first() if k.live_at(now)]

    def lookup(self, key_id: int) -> Optional["_core.HpkeKeypair"]:
        """The key pair of a live key, or None (unknown or expired, even if
        maintain() has not run since)."""
        now = self.clock()
        with self.lock:
            key = self.keys.get(key_id)
            return key.keypair if key is not None and key.live_at(now) else None

    def x25519_candidates(self) -> List[Tuple[int, "_core.HpkeKeypair"]]:
        """(key id, key pair) of the live EHBP keys, newest first: the keys an
        EHBP request, which names none, may have been sealed to."""
        now = self.clock()
        with self.lock:
            return [(k.key_id, k.keypair) for k in self._newest_first()
                    if k.suite == "ehbp" and k.live_at(now)]

    def maintain(self, now: Optional[float] = None, wait_for_lock: bool = False) -> float:
        """Pick up what other processes wrote, then expire, retire and rotate
        as of `now` (default: the clock), the directory's changes only while
        holding its rotation lock (taken without waiting unless
        `wait_for_lock`). Returns when the next change is due, for the
        gateway's timer. A new key is made and saved (a password derivation:
        up to a second) without holding up the readers; calls to maintain()
        take turns."""
        now = self.clock() if now is None else now
        with self.maintain_lock, _RotationLock(self.key_dir, wait_for_lock) as holder:
            self._reload(now, force=holder)
            with self.lock:
                for key in list(self.keys.values()):
                    if key.keypair is not None and now >= key.expires:
                        self._expire(key, holder)
                    if holder and key.keypair is None and now >= self._retired_at(key):
                        self._forget(key)
                due = [s for s in SUITES if self._rotation_due(s, now)] if holder else []
            if holder:
                self._remove_leftovers()
            for suite in due:
                key = self._create(suite, now)  # only maintain() adds keys or takes ids
                with self.lock:
                    self.keys[key.key_id] = key
                    self.last_key_id = key.key_id
            if holder:
                self.listing = _listing(self.key_dir)  # our own writes need no reload
            with self.lock:
                due_at = self._next_due(now)
            if holder or now < due_at < now + self.reload_interval:
                return due_at
            return now + self.reload_interval  # another rotates: read its keys at the next poll

    # ---- schedule ----------------------------------------------------------

    def _rotation_due(self, suite: str, now: float) -> bool:
        """A suite needs a key: it has none usable, or its newest is due to
        be followed (the next one is written ahead by key_publish_lead)."""
        newest = self._newest_usable(suite, now)
        return newest is None or now >= self._rotation_at(newest) - self.key_publish_lead

    def _rotation_at(self, key: _Key) -> float:
        return key.expires - self.key_overlap

    def _retired_at(self, key: _Key) -> float:
        return key.expires + self.key_lifetime

    def _next_due(self, now: float) -> float:
        due = []
        for key in self.keys.values():
            if key.keypair is None:
                due.append(self._retired_at(key))
            else:
                due.extend((key.not_before, key.expires))  # published, expired
        for suite in SUITES:
            newest = self._newest_of(suite, None)
            if newest is not None:
                due.append(self._rotation_at(newest) - self.key_publish_lead)
        later = [t for t in due if t > now]
        return min(later) if later else min(due)

    def _newest_first(self) -> List[_Key]:
        return sorted(self.keys.values(), key=lambda k: k.not_before, reverse=True)

    def _newest_of(self, suite: str, now: Optional[float]) -> Optional[_Key]:
        for key in self._newest_first():
            if key.suite == suite and key.keypair is not None and \
                    (now is None or key.live_at(now)):
                return key
        return None

    def _newest_usable(self, suite: str, now: float) -> Optional[_Key]:
        for key in self._newest_first():
            if key.suite == suite and key.usable_at(now):
                return key
        return None

    def _next_key_id(self) -> int:
        for step in range(1, KEY_IDS + 1):
            candidate = (self.last_key_id + step) % KEY_IDS
            if candidate not in self.keys:
                return candidate
        raise KeyRingError("all 256 key ids are live or retiring: lengthen key_lifetime")

    # ---- changes: maintain() only; _expire and _forget under the lock -----

    def _create(self, suite: str, now: float) -> _Key:
        """A new key, saved to be published at the current key's rotation
        time (now, when there is none or that time has passed); the caller
        adds it to the ring."""
        key_id = self._next_key_id()
        newest = self._newest_usable(suite, now)
        not_before = now if newest is None else max(now, self._rotation_at(newest))
        keypair = _core.HpkeKeypair.generate(SUITES[suite][0])
        key = _Key(key_id, suite, not_before, not_before + self.key_lifetime,
                   keypair.fingerprint, keypair)
        keypair.save(self._path(key_id, "hpke"), self.password)
        try:
            self._write_metadata(key)  # the commit point: now the key exists
        except BaseException:
            _shred(self._path(key_id, "hpke"))
            raise
        log.info("v2 key %d (%s, %s) created, published %s, expires %s", key_id, suite,
                 key.fingerprint, _iso(key.not_before), _iso(key.expires))
        if self.on_created is not None:
            self.on_created(suite)
        return key

    def _expire(self, key: _Key, holder: bool) -> None:
        """Drop an expired key; its file is deleted by the lock holder."""
        key.keypair = None  # the core wipes it when no request holds it any more
        if holder:
            _shred(self._path(key.key_id, "hpke"))
            log.info("v2 key %d (%s) expired: private key deleted", key.key_id, key.suite)

    def _forget(self, key: _Key) -> None:
        _remove(self._path(key.key_id, "json"))
        del self.keys[key.key_id]

    # ---- files -------------------------------------------------------------

    def _path(self, key_id: int, ext: str) -> str:
        return os.path.join(self.key_dir, "key-%03d.%s" % (key_id, ext))

    def _write_metadata(self, key: _Key) -> None:
        path = self._path(key.key_id, "json")
        staged = os.path.join(self.key_dir, ".%s.%s" % (os.path.basename(path),
                                                        secrets.token_hex(6)))
        data = json.dumps(key.metadata(), sort_keys=True).encode() + b"\n"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(staged, path)
        except BaseException:
            _remove(staged)
            raise
        _sync_dir(self.key_dir)

    def _reload(self, now: float, force: bool = False) -> None:
        """Bring the ring in line with the directory, when its listing changed
        since it was last read (always with `force`). Keys already held are
        kept; new ones are loaded, ones gone from disk are dropped. A key file
        without metadata is another process's write in progress."""
        listing = _listing(self.key_dir)
        if listing == self.listing and not force:
            return
        with self.lock:
            held = dict(self.keys)
        keys = {}
        for name, *_ in listing:
            match = METADATA_FILE.match(name)
            if match:
                key_id = int(match.group(1))
                keys[key_id] = self._reloaded(key_id, held.get(key_id), now)
        with self.lock:
            self.keys = keys
            if keys and held.keys() != keys.keys():
                self.last_key_id = self._newest_first()[0].key_id
        self.listing = listing

    def _reloaded(self, key_id: int, held: Optional[_Key], now: float) -> _Key:
        """Key `key_id` as the directory has it now; `held` if it is the same
        key (its file deleted by the lock holder: a tombstone now)."""
        if held is None or held.fingerprint != _read_metadata(
                self._path(key_id, "json"), key_id)["fingerprint"]:
            return self._load_key(key_id, now)
        if held.keypair is not None and not os.path.lexists(self._path(key_id, "hpke")):
            held.keypair = None
        return held

    def _remove_leftovers(self) -> None:
        """Lock holder only: files of interrupted writes (a staged dotfile, a
        key file whose metadata was never written: never published, never
        used) and key files of expired keys (restored from a backup, say)."""
        for name in os.listdir(self.key_dir):
            path = os.path.join(self.key_dir, name)
            match = KEY_FILE.match(name)
            if STAGED_FILE.match(name):
                log.warning("removing %s, left by an interrupted write", name)
                _remove(path)
            elif match and int(match.group(1)) not in self.keys:
                log.warning("removing %s: its metadata was never written, so it was never "
                            "published", name)
                _shred(path)
            elif match and self.keys[int(match.group(1))].keypair is None:
                _shred(path)

    def _load_key(self, key_id: int, now: float) -> _Key:
        path = self._path(key_id, "json")
        meta = _read_metadata(path, key_id)
        key_path = self._path(key_id, "hpke")
        key = _Key(key_id, meta["suite"], meta["not_before"], meta["expires"],
                   meta["fingerprint"], None)
        if not os.path.lexists(key_path) or now >= key.expires:
            return key  # a tombstone
        try:
            keypair = _core.HpkeKeypair.load(key_path, self.password)
        except HushcallError as e:
            raise KeyRingError("%s: %s" % (key_path, e)) from e
        if keypair.kem != meta["kem"] or keypair.fingerprint != meta["fingerprint"]:
            raise KeyRingError("%s: the key does not match %s" % (key_path, path))
        key.keypair = keypair
        return key


class _RotationLock:
    """The key directory's rotation lock (flock on ROTATION_LOCK), held for
    one maintain(); entering says whether it is held. Released by the kernel
    when its holder dies."""

    def __init__(self, key_dir: str, wait: bool):
        self.path = os.path.join(key_dir, ROTATION_LOCK)
        self.wait = wait
        self.fd = -1

    def __enter__(self) -> bool:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(self.fd)
            self.fd = -1
        return self.fd >= 0

    def __exit__(self, *exc) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing releases the lock
            self.fd = -1


def _refuse_strangers(key_dir: str) -> None:
    """At start, anything not of the ring refuses the directory (naming the
    file); later, while serving, it is left alone rather than stop rotation."""
    for name in sorted(os.listdir(key_dir)):
        if not (KEY_FILE.match(name) or METADATA_FILE.match(name) or STAGED_FILE.match(name)
                or name == ROTATION_LOCK):
            raise KeyRingError("%s: not a file of the key ring; remove it or use another "
                               "directory" % os.path.join(key_dir, name))


def _listing(path: str) -> tuple:
    """What tells a changed directory: each entry's name, inode, change time and size."""
    entries = []
    with os.scandir(path) as it:
        for entry in it:
            st = entry.stat(follow_symlinks=False)
            entries.append((entry.name, st.st_ino, st.st_ctime_ns, st.st_size))
    return tuple(sorted(entries))


def _check_directory(path: str) -> None:
    """Refuse a key directory others could plant or swap files in."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise KeyRingError("%s: not a directory" % path)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise KeyRingError("%s: must be owned by this user and writable by no one else "
                           "(chmod 700 %s)" % (path, path))


def _read_metadata(path: str, key_id: int) -> dict:
    """The metadata in `path`, checked field by field (the message names the
    field, never its content)."""
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
            meta = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise KeyRingError("%s: unreadable key metadata (%s)" % (path, type(e).__name__)) from e
    if not isinstance(meta, dict) or set(meta) != METADATA_FIELDS:
        raise KeyRingError("%s: key metadata must have exactly the fields %s"
                           % (path, ", ".join(sorted(METADATA_FIELDS))))
    checks = [
        ("version", meta["version"] == METADATA_VERSION and type(meta["version"]) is int),
        ("key_id", meta["key_id"] == key_id and type(meta["key_id"]) is int),
        ("suite", meta["suite"] in SUITES),
        ("kem", meta["suite"] in SUITES and meta["kem"] == SUITES[meta["suite"]][0]),
        ("not_before", _is_time(meta["not_before"])),
        ("expires", _is_time(meta["expires"]) and _is_time(meta["not_before"])
         and meta["expires"] > meta["not_before"]),
        ("fingerprint", isinstance(meta["fingerprint"], str)
         and re.fullmatch(r"sha256:[0-9a-f]{64}", meta["fingerprint"]) is not None),
    ]
    for field, ok in checks:
        if not ok:
            raise KeyRingError("%s: bad %s" % (path, field))
    return meta


def _is_time(value) -> bool:
    return type(value) in (int, float) and 0 <= value < 1e11  # NaN fails the range too


def _shred(path: str) -> None:
    """Overwrite a key file with zeros, then delete it. The overwrite is
    best effort: a journaling file system or an SSD may keep old blocks."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        os.write(fd, bytes(size))
        os.fsync(fd)
    finally:
        os.close(fd)
    _remove(path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
