"""_core.HpkeKeypair, the v2 server key as a handle: generation for both KEMs,
the public key and fingerprint as docs/crypto.md defines them (checked with
hashlib and pyca `cryptography`, not with the core), the key file of
docs/crypto.md written 0600 and read back, password errors, and the private
key never reaching Python: no attribute returns it, and once the handle is
freed no copy of it is left anywhere in this process's memory."""

import ctypes
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

X25519 = _core.HPKE_KEM_X25519_SHA256
XWING = _core.HPKE_KEM_XWING
PUBLIC_BYTES = {X25519: 32, XWING: 1216}
# docs/crypto.md, the key file: PEM-like armour around a big-endian body of
# magic(4) version(1) kem_id(2) protection(1) key_len(2) key, when unprotected.
BEGIN = b"-----BEGIN HUSHCALL HPKE PRIVATE KEY-----\n"
END = b"-----END HUSHCALL HPKE PRIVATE KEY-----\n"
CLEAR_KEY_OFFSET = 10
PRIVATE_BYTES = 32
B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def read_clear_private_key(path, out):
    """Decode the private key of an unprotected key file into `out` (an
    mmap) without making a bytes object that holds it."""
    with open(path, "rb") as f:
        text = f.read()
    assert text.startswith(BEGIN) and text.endswith(END)
    body = text[len(BEGIN):-len(END)].replace(b"\n", b"").rstrip(b"=")
    bits = nbits = at = 0
    for c in body:
        bits = (bits << 6 | B64.index(c)) & 0xFFFFFF
        nbits += 6
        if nbits >= 8:
            nbits -= 8
            if CLEAR_KEY_OFFSET <= at < CLEAR_KEY_OFFSET + PRIVATE_BYTES:
                out[at - CLEAR_KEY_OFFSET] = (bits >> nbits) & 0xFF
            at += 1
    assert at == CLEAR_KEY_OFFSET + PRIVATE_BYTES, "an unprotected file of a 32-byte key"
    bits = 0


def find_copies(needle, n):
    """Addresses of copies of needle[:n] in this process's readable memory,
    skipping the needle's own mapping (tests/python/test_memory.py's scan)."""
    libc = ctypes.CDLL(None)
    libc.memmem.restype = ctypes.c_void_p
    libc.memmem.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
    chunk = 1 << 20
    buffer = mmap.mmap(-1, chunk + n)
    at_needle = ctypes.addressof(ctypes.c_char.from_buffer(needle))
    at_buffer = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    skip = [(at_needle, at_needle + len(needle)), (at_buffer, at_buffer + len(buffer))]
    with open("/proc/self/maps") as f:
        lines = f.read().splitlines()
    found = []
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    view = memoryview(buffer)
    try:
        for line in lines:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if fields[1][0] != "r" or hi - lo > (512 << 20) or \
                    (len(fields) > 5 and fields[5] in ("[vvar]", "[vvar_vclock]", "[vsyscall]")) \
                    or any(a < hi and b > lo for a, b in skip):
                continue
            for start in range(lo, hi, chunk):
                try:
                    got = os.preadv(fd, [view[:min(hi - start, chunk + n)]], start)
                except OSError:
                    break
                p = at_buffer
                while got >= n:
                    hit = libc.memmem(p, at_buffer + got - p, at_needle, n)
                    if not hit or hit >= at_buffer + min(got - n + 1, chunk):
                        break
                    found.append(start + hit - at_buffer)
                    p = hit + 1
    finally:
        view.release()
        os.close(fd)
        buffer.write(bytes(len(buffer)))
        buffer.close()
    return found


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
    with pytest.raises(ValueError, match="kem must be"):
        _core.HpkeKeypair.generate(0x10020)


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
