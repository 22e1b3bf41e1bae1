"""_core.HpkeKeypair, the v2 server key as a handle: generation for both KEMs,
the public key and fingerprint as docs/crypto.md defines them (checked with
hashlib and pyca `cryptography`, not with the core), the key file of
docs/crypto.md written 0600 and read back, password errors, and the private
key never reaching Python: no attribute returns it, and once the handle is
freed no copy of it is left anywhere in this process's memory."""

import gc
import hashlib
import mmap
import os
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hushcall import _core
from hushcall.errors import HushcallError, SecurityError
from keyscan import PRIVATE_BYTES, find_copies, read_clear_private_key

X25519 = _core.HPKE_KEM_X25519_SHA256
XWING = _core.HPKE_KEM_XWING
PUBLIC_BYTES = {X25519: 32, XWING: 1216}


@pytest.mark.parametrize("kem", [X25519, XWING])
def test_generate_gives_a_key_of_the_kem(kem):
    a, b = _core.HpkeKeypair.generate(kem), _core.HpkeKeypair.generate(kem=kem)
    assert a.kem == kem
    assert len(a.public_bytes()) == PUBLIC_BYTES[kem]
    assert a.public_bytes() != b.public_bytes(), "fresh randomness per key"
    assert repr(a).startswith("<hushcall._core.HpkeKeypair kem=0x%04x sha256:" % kem)


@pytest.mark.parametrize("kem", [X25519, XWING])
def test_fingerprint_is_sha256_over_kem_id_and_public_key(kem):
    kp = _core.HpkeKeypair.generate(kem)
    expected = "sha256:" + hashlib.sha256(kem.to_bytes(2, "big") + kp.public_bytes()).hexdigest()
    assert kp.fingerprint == expected
    assert _core.hpke_pubkey_fingerprint(kem, kp.public_bytes()) == expected
    assert _core.hpke_pubkey_fingerprint(kem, bytearray(kp.public_bytes())) == expected


def test_pubkey_fingerprint_refuses_what_is_not_a_key():
    kp = _core.HpkeKeypair.generate(X25519)
    with pytest.raises(SecurityError):
        _core.hpke_pubkey_fingerprint(X25519, kp.public_bytes()[:31])
    with pytest.raises(SecurityError):
        _core.hpke_pubkey_fingerprint(XWING, kp.public_bytes())
    with pytest.raises(ValueError, match="kem must be"):
        _core.hpke_pubkey_fingerprint(0x0010, kp.public_bytes())  # P-256: not ours
    for kem in (0x10020, -1, 0):
        with pytest.raises(ValueError, match="kem must be"):
            _core.HpkeKeypair.generate(kem)
    with pytest.raises(OverflowError):
        _core.HpkeKeypair.generate(2**64 + X25519)  # not wrapped around to a valid id


def test_saved_x25519_key_is_the_public_keys_private_half(tmp_path):
    kp = _core.HpkeKeypair.generate(X25519)
    path = tmp_path / "k.hpke"
    kp.save(path)
    raw = mmap.mmap(-1, mmap.PAGESIZE)
    read_clear_private_key(path, raw)
    public = X25519PrivateKey.from_private_bytes(raw[:PRIVATE_BYTES]).public_key()
    assert public.public_bytes(Encoding.Raw, PublicFormat.Raw) == kp.public_bytes()


@pytest.mark.parametrize("kem", [X25519, XWING])
@pytest.mark.parametrize("kdf", ["pbkdf2", "scrypt"])
def test_save_and_load_with_a_password(tmp_path, kem, kdf):
    kp = _core.HpkeKeypair.generate(kem)
    path = tmp_path / "k.hpke"
    kp.save(str(path), "correct horse", kdf=kdf)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = _core.HpkeKeypair.load(path, password="correct horse")
    assert (loaded.kem, loaded.fingerprint, loaded.public_bytes()) == \
        (kem, kp.fingerprint, kp.public_bytes())
    with pytest.raises(SecurityError):
        _core.HpkeKeypair.load(path, "wrong horse")
    with pytest.raises(SecurityError):
        _core.HpkeKeypair.load(path)


def test_save_is_0600_under_any_umask_and_refuses_to_overwrite(tmp_path):
    kp, other = _core.HpkeKeypair.generate(X25519), _core.HpkeKeypair.generate(X25519)
    path = tmp_path / "k.hpke"
    old = os.umask(0)
    try:
        kp.save(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(HushcallError):
        other.save(path)
    assert _core.HpkeKeypair.load(path).fingerprint == kp.fingerprint, "untouched"
    other.save(path, overwrite=True)
    assert _core.HpkeKeypair.load(path).fingerprint == other.fingerprint
    assert sorted(os.listdir(tmp_path)) == ["k.hpke"], "no staging file left"


def test_load_refuses_loose_modes_symlinks_and_garbage(tmp_path):
    kp = _core.HpkeKeypair.generate(X25519)
    path = tmp_path / "k.hpke"
    kp.save(path)
    os.symlink(path, tmp_path / "link.hpke")
    with pytest.raises(SecurityError):
        _core.HpkeKeypair.load(tmp_path / "link.hpke")
    os.chmod(path, 0o644)
    with pytest.raises(SecurityError, match="chmod|permission|mode"):
        _core.HpkeKeypair.load(path)
    garbage = tmp_path / "garbage.hpke"
    garbage.write_bytes(b"not a key\n")
    os.chmod(garbage, 0o600)
    with pytest.raises(SecurityError):
        _core.HpkeKeypair.load(garbage)
    with pytest.raises(ValueError, match="kdf must be"):
        kp.save(tmp_path / "other.hpke", "pw", kdf="md5")
    assert not (tmp_path / "other.hpke").exists()


def test_no_attribute_returns_the_private_key(tmp_path):
    kp = _core.HpkeKeypair.generate(X25519)
    kp.save(tmp_path / "k.hpke")
    raw = mmap.mmap(-1, mmap.PAGESIZE)
    read_clear_private_key(tmp_path / "k.hpke", raw)
    private = raw[:PRIVATE_BYTES]
    seen = 0
    for name in dir(kp):
        if name.startswith("__") or name in ("generate", "load", "save"):
            continue
        value = getattr(kp, name)
        if callable(value):
            value = value()
        as_bytes = value if isinstance(value, bytes) else str(value).encode()
        assert private not in as_bytes and private.hex().encode() not in as_bytes, name
        seen += 1
    assert seen == 3, "public_bytes, fingerprint and kem were looked at"
    with pytest.raises(TypeError):
        _core.HpkeKeypair()
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(kp)


@pytest.mark.parametrize("kem", [X25519, XWING])
def test_freed_key_leaves_no_copy_in_memory(tmp_path, kem):
    kp = _core.HpkeKeypair.generate(kem)
    kp.save(tmp_path / "k.hpke")
    needle = mmap.mmap(-1, mmap.PAGESIZE)
    read_clear_private_key(tmp_path / "k.hpke", needle)
    os.unlink(tmp_path / "k.hpke")
    gc.collect()
    assert find_copies(needle, PRIVATE_BYTES), "control: the live key is found in the core"
    del kp
    gc.collect()
    try:
        assert find_copies(needle, PRIVATE_BYTES) == []
    finally:
        needle.write(bytes(len(needle)))
        needle.close()
