"""hushcall.keyring.KeyRing, the gateway's v2 keys, on a fake clock (no
sleeps): the rotation schedule (a key per suite, the next one key_overlap
before the current one expires, expiry deleting the key file and failing
lookups at once), key ids unique among live keys and not reused while
tombstoned, restarts from the directory, and every kind of bad directory
refused loudly."""

import gc
import hashlib
import json
import mmap
import os
import stat
import threading

import pytest

from hushcall import _core
from hushcall.keyring import SUITES, KeyRing, KeyRingError
from keyscan import PRIVATE_BYTES, find_copies, read_clear_private_key

HOUR = 3600.0
LIFETIME = 24 * HOUR
OVERLAP = 1 * HOUR
T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


def ring_at(path, clock, **kwargs):
    return KeyRing(path, key_lifetime=kwargs.pop("key_lifetime", LIFETIME),
                   key_overlap=kwargs.pop("key_overlap", OVERLAP), clock=clock, **kwargs)


def live(ring):
    return {(k.key_id, k.suite) for k in ring.live_keys()}


def files(path):
    """The key files: the rotation lock file is made once and only locked."""
    return sorted(name for name in os.listdir(path) if name != "rotation.lock")


@pytest.fixture
def clock():
    return Clock()


def test_a_new_ring_has_one_key_per_suite(tmp_path, clock):
    ring = ring_at(tmp_path / "keys", clock)
    keys = ring.live_keys()
    assert sorted(k.suite for k in keys) == ["ehbp", "pq"]
    assert len({k.key_id for k in keys}) == 2
    for k in keys:
        kem = {"ehbp": 0x0020, "pq": 0x647A}[k.suite]
        assert k.kem == kem and (k.not_before, k.expires) == (T0, T0 + LIFETIME)
        assert k.fingerprint == "sha256:" + hashlib.sha256(
            kem.to_bytes(2, "big") + k.public_bytes).hexdigest()
        assert ring.lookup(k.key_id).fingerprint == k.fingerprint
    pq = next(k for k in keys if k.suite == "pq")
    assert pq.suites == ((0x0001, 0x0003), (0x0001, 0x0002)), "ChaCha20-Poly1305 first"
    ehbp = next(k for k in keys if k.suite == "ehbp")
    assert ehbp.suites == ((0x0001, 0x0002),)
    assert [(i, kp.fingerprint) for i, kp in ring.x25519_candidates()] == \
        [(ehbp.key_id, ehbp.fingerprint)]
    assert ring.lookup(255 if ehbp.key_id != 255 else 254) is None


def test_files_are_0600_keys_and_matching_public_metadata(tmp_path, clock):
    d = tmp_path / "keys"
    ring = ring_at(d, clock)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for k in ring.live_keys():
        key_file = d / ("key-%03d.hpke" % k.key_id)
        assert stat.S_IMODE(os.lstat(key_file).st_mode) == 0o600
        assert _core.HpkeKeypair.load(key_file).fingerprint == k.fingerprint
        meta = json.loads((d / ("key-%03d.json" % k.key_id)).read_text())
        assert meta == {"version": 1, "key_id": k.key_id, "suite": k.suite, "kem": k.kem,
                        "not_before": T0, "expires": T0 + LIFETIME,
                        "fingerprint": k.fingerprint}
    assert len(files(d)) == 4, "nothing staged left behind"
    assert stat.S_IMODE(os.lstat(d / "rotation.lock").st_mode) == 0o600


def test_rotation_overlap_and_expiry(tmp_path, clock):
    d = tmp_path / "keys"
    ring = ring_at(d, clock)
    first = {k.suite: k for k in ring.live_keys()}

    clock.now = T0 + LIFETIME - OVERLAP - 1
    ring.maintain()
    assert live(ring) == {(k.key_id, s) for s, k in first.items()}, "not yet"

    clock.now = T0 + LIFETIME - OVERLAP
    ring.maintain()
    keys = ring.live_keys()
    assert len(keys) == 4 and len({k.key_id for k in keys}) == 4
    second = {k.suite: k for k in keys if k.not_before == clock.now}
    assert set(second) == {"ehbp", "pq"}
    assert {k.key_id for k in keys[:2]} == {k.key_id for k in second.values()}, "newest first"
    assert [i for i, _ in ring.x25519_candidates()] == \
        [second["ehbp"].key_id, first["ehbp"].key_id]
    for k in first.values():
        assert ring.lookup(k.key_id) is not None, "the old key is still accepted"

    clock.now = T0 + LIFETIME
    for k in first.values():
        assert ring.lookup(k.key_id) is None, "expired, even before maintain() runs"
    assert [i for i, _ in ring.x25519_candidates()] == [second["ehbp"].key_id]
    ring.maintain()
    for k in first.values():
        assert not (d / ("key-%03d.hpke" % k.key_id)).exists(), "private key deleted"
        assert (d / ("key-%03d.json" % k.key_id)).exists(), "tombstone kept"
    assert live(ring) == {(k.key_id, s) for s, k in second.items()}

    clock.now = T0 + 2 * LIFETIME
    ring.maintain()
    for k in first.values():
        assert not (d / ("key-%03d.json" % k.key_id)).exists(), "tombstone retired"


@pytest.mark.parametrize("suite", ["ehbp", "pq"])
def test_an_expired_private_key_is_gone_from_disk_and_memory(tmp_path, clock, suite):
    d = tmp_path / "keys"
    ring = ring_at(d, clock)
    key_id = next(k.key_id for k in ring.live_keys() if k.suite == suite)
    needle = mmap.mmap(-1, mmap.PAGESIZE)
    try:
        read_clear_private_key(d / ("key-%03d.hpke" % key_id), needle)
        assert find_copies(needle, PRIVATE_BYTES), "control: the live key is found"
        clock.now += LIFETIME
        ring.maintain()
        gc.collect()
        assert not (d / ("key-%03d.hpke" % key_id)).exists()
        assert find_copies(needle, PRIVATE_BYTES) == [], "wiped when the ring let it go"
    finally:
        needle.write(bytes(len(needle)))
        needle.close()


def test_maintain_says_when_the_next_change_is_due(tmp_path, clock):
    ring = ring_at(tmp_path / "keys", clock)
    for _ in range(6):
        due = ring.maintain()
        assert due > clock.now
        before = (live(ring), files(tmp_path / "keys"))
        clock.now = due - 1
        ring.maintain()
        assert (live(ring), files(tmp_path / "keys")) == before, "nothing happens early"
        clock.now = due
        ring.maintain()
        assert (live(ring), files(tmp_path / "keys")) != before, "something happens on time"


def test_ids_stay_unique_and_are_not_reused_while_tombstoned(tmp_path, clock):
    lifetime, overlap = 10.0, 2.0
    ring = ring_at(tmp_path / "keys", clock, key_lifetime=lifetime, key_overlap=overlap)
    expired_at = {}
    created = set()
    for _ in range(1200):  # > 256 ids' worth of keys: the ids wrap around
        clock.now += 1.0
        ring.maintain()
        keys = ring.live_keys()
        ids = [k.key_id for k in keys]
        assert len(ids) == len(set(ids)), "unique among live keys across suites"
        assert all(0 <= i <= 255 for i in ids)
        assert {k.suite for k in keys} == {"ehbp", "pq"}
        for k in keys:
            if (k.key_id, k.not_before) not in created:
                created.add((k.key_id, k.not_before))
                if k.key_id in expired_at:
                    assert k.not_before >= expired_at[k.key_id] + lifetime, \
                        "an id comes back only after its tombstone retired"
            expired_at[k.key_id] = k.expires
    assert len(created) > 256


def test_restart_serves_the_same_keys(tmp_path, clock):
    d = tmp_path / "keys"
    ring = ring_at(d, clock, password="pw")
    clock.now += LIFETIME - OVERLAP
    ring.maintain()
    before = ring.live_keys()
    clock.now += 60
    again = ring_at(d, clock, password="pw")
    assert again.live_keys() == before
    assert [i for i, _ in again.x25519_candidates()] == [i for i, _ in ring.x25519_candidates()]
    clock.now += LIFETIME
    again.maintain()
    new_ids = {k.key_id for k in again.live_keys()}
    assert not new_ids & {k.key_id for k in before}, "ids not reused across the restart"
    with pytest.raises(KeyRingError, match=r"key-\d{3}\.hpke"):
        ring_at(d, clock, password="wrong")
    with pytest.raises(KeyRingError, match=r"key-\d{3}\.hpke"):
        ring_at(d, clock)


def test_restart_after_every_key_expired(tmp_path, clock):
    d = tmp_path / "keys"
    old = {k.key_id for k in ring_at(d, clock).live_keys()}
    clock.now += LIFETIME + 1
    ring = ring_at(d, clock)
    assert not {k.key_id for k in ring.live_keys()} & old
    for i in old:
        assert not (d / ("key-%03d.hpke" % i)).exists()
        assert ring.lookup(i) is None


def corrupt_metadata(d, which, **changes):
    path = d / ("key-%03d.json" % which)
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage,message", [
    (lambda d, k: (d / "notes.txt").write_text("hi"), "notes.txt: not a file of the key ring"),
    (lambda d, k: (d / "sub").mkdir(), "sub: not a file"),
    (lambda d, k: (d / ("key-%03d.json" % k)).write_text("{not json"), "unreadable"),
    (lambda d, k: (d / ("key-%03d.json" % k)).write_text("[]"), "exactly the fields"),
    (lambda d, k: corrupt_metadata(d, k, extra=1), "exactly the fields"),
    (lambda d, k: corrupt_metadata(d, k, version=2), "bad version"),
    (lambda d, k: corrupt_metadata(d, k, key_id=k + 1), "bad key_id"),
    (lambda d, k: corrupt_metadata(d, k, suite="rsa"), "bad suite"),
    (lambda d, k: corrupt_metadata(d, k, kem=0x647A), "bad kem"),
    (lambda d, k: corrupt_metadata(d, k, not_before="soon"), "bad not_before"),
    (lambda d, k: corrupt_metadata(d, k, expires=T0 - 1), "bad expires"),
    (lambda d, k: corrupt_metadata(d, k, fingerprint="sha256:" + "0" * 64), "does not match"),
    (lambda d, k: corrupt_metadata(d, k, fingerprint="md5:00"), "bad fingerprint"),
    (lambda d, k: os.chmod(d / ("key-%03d.hpke" % k), 0o644), r"key-\d{3}\.hpke"),
    (lambda d, k: (d / ("key-%03d.hpke" % k)).write_bytes(b"junk"), r"key-\d{3}\.hpke"),
])
def test_a_bad_directory_is_refused_at_start(tmp_path, clock, damage, message):
    d = tmp_path / "keys"
    ring = ring_at(d, clock)
    ehbp = next(k for k in ring.live_keys() if k.suite == "ehbp")
    damage(d, ehbp.key_id)
    (d / ".key-250.json.0123456789ab").write_text("{")  # cleaned up only when sound
    before = files(d)
    with pytest.raises(KeyRingError, match=message):
        ring_at(d, clock)
    assert files(d) == before, "refused, and nothing deleted"


def test_swapped_key_files_are_refused(tmp_path, clock):
    d = tmp_path / "keys"
    ring = ring_at(d, clock)
    clock.now += LIFETIME - OVERLAP
    ring.maintain()
    a, b = [k.key_id for k in ring.live_keys() if k.suite == "ehbp"]
    os.rename(d / ("key-%03d.hpke" % a), d / "swap")
    os.rename(d / ("key-%03d.hpke" % b), d / ("key-%03d.hpke" % a))
    os.rename(d / "swap", d / ("key-%03d.hpke" % b))
    with pytest.raises(KeyRingError, match="does not match"):
        ring_at(d, clock)


def test_a_tombstone_whose_key_file_reappears_is_wiped(tmp_path, clock):
    # An expired key whose file is back (restored from a backup, say) is
    # deleted again rather than served.
    d = tmp_path / "keys"
    ring = ring_at(d, clock)
    ehbp = next(k for k in ring.live_keys() if k.suite == "ehbp")
    (d / "backup").write_bytes((d / ("key-%03d.hpke" % ehbp.key_id)).read_bytes())
    clock.now += LIFETIME
    ring.maintain()
    os.rename(d / "backup", d / ("key-%03d.hpke" % ehbp.key_id))
    os.chmod(d / ("key-%03d.hpke" % ehbp.key_id), 0o600)
    again = ring_at(d, clock)
    assert again.lookup(ehbp.key_id) is None
    assert not (d / ("key-%03d.hpke" % ehbp.key_id)).exists()


def test_leftovers_of_an_interrupted_write_are_removed(tmp_path, clock):
    d = tmp_path / "keys"
    ring = ring_at(d, clock)
    used = {k.key_id for k in ring.live_keys()}
    orphan = next(i for i in range(256) if i not in used)
    _core.HpkeKeypair.generate(_core.HPKE_KEM_X25519_SHA256).save(d / ("key-%03d.hpke" % orphan))
    (d / (".key-%03d.json.0123456789ab" % orphan)).write_text("{")
    again = ring_at(d, clock)
    assert {k.key_id for k in again.live_keys()} == used
    assert len(files(d)) == 4, "the orphan key file and the staged file are gone"
    assert again.lookup(orphan) is None


def test_a_directory_others_can_write_or_a_symlink_is_refused(tmp_path, clock):
    d = tmp_path / "keys"
    ring_at(d, clock)
    os.symlink(d, tmp_path / "link")
    with pytest.raises(KeyRingError, match="not a directory"):
        ring_at(tmp_path / "link", clock)
    os.chmod(d, 0o770)
    with pytest.raises(KeyRingError, match="chmod 700"):
        ring_at(d, clock)
    os.chmod(d, 0o755)  # readable is fine: the key files themselves are 0600
    assert len(ring_at(d, clock).live_keys()) == 2


def test_overlap_must_be_shorter_than_the_lifetime(tmp_path, clock):
    for lifetime, overlap in ((HOUR, HOUR), (HOUR, 2 * HOUR), (HOUR, 0)):
        with pytest.raises(KeyRingError, match="key_overlap"):
            ring_at(tmp_path / "keys", clock, key_lifetime=lifetime, key_overlap=overlap)


def test_readers_and_maintain_in_threads(tmp_path, clock):
    ring = ring_at(tmp_path / "keys", clock, key_lifetime=10.0, key_overlap=2.0)
    failures = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                for k in ring.live_keys():
                    ring.lookup(k.key_id)
                for key_id, kp in ring.x25519_candidates():
                    assert kp.kem == _core.HPKE_KEM_X25519_SHA256
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(200):
            clock.now += 1.0
            ring.maintain()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert {k.suite for k in ring.live_keys()} == set(SUITES)


# ---- several processes on one directory (docs/operations.md) -------------------

def published(ring):
    return [(k.key_id, k.fingerprint, k.not_before) for k in ring.live_keys()]


def test_two_rings_on_one_directory_publish_the_same_keys_through_a_rotation(tmp_path, clock):
    d = tmp_path / "keys"
    a, b = ring_at(d, clock), ring_at(d, clock)
    assert published(a) == published(b) and len(published(a)) == 2, "b loaded a's keys"
    rotation = T0 + LIFETIME - OVERLAP
    clock.now = rotation - a.key_publish_lead
    a.maintain()
    b.maintain()
    assert len(files(d)) == 8, "the next keys are written once, by one of them"
    assert published(a) == published(b) and len(published(a)) == 2, "written, not published"
    clock.now = rotation
    assert published(a) == published(b) and len(published(a)) == 4, "both publish at once"
    clock.now = T0 + LIFETIME
    a.maintain()
    b.maintain()
    assert published(a) == published(b) and len(published(a)) == 2
    assert len(files(d)) == 6, "the expired keys' files deleted once"


def test_a_ring_without_the_rotation_lock_changes_nothing_and_polls(tmp_path, clock):
    import fcntl
    d = tmp_path / "keys"
    ring = ring_at(d, clock)
    before = files(d)
    with open(d / "rotation.lock", "r+") as other_rotator:
        fcntl.flock(other_rotator, fcntl.LOCK_EX)
        clock.now = T0 + LIFETIME  # the keys expire, the successors are overdue
        due = ring.maintain()
        assert files(d) == before, "only the lock holder writes or deletes"
        assert ring.live_keys() == [], "expired keys leave memory by the ring's own clock"
        assert due == clock.now + ring.reload_interval
    ring.maintain()
    assert len(ring.live_keys()) == 2, "the lock free again, the ring rotates"


def test_the_publish_lead_must_fit_between_publication_and_rotation(tmp_path, clock):
    with pytest.raises(KeyRingError, match="key_publish_lead"):
        ring_at(tmp_path / "keys", clock, key_lifetime=10.0, key_overlap=2.0,
                key_publish_lead=8.0)
