"""Helpers for tests of HPKE private keys: read one out of an unprotected
key file (docs/crypto.md's format) into a mapping of its own, without a bytes
object holding it, and find copies of it in this process's memory as
tests/python/test_memory.py does."""

import ctypes
import mmap
import os

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
