"""The point of the binding, measured: after wipe() (or a with block) and a
collection, no copy of a response's content is left anywhere in this process's
readable memory. The scan reads every readable mapping through /proc/self/mem,
as tests/c/memscan.h does; controls show the same scan does find a plain copy,
so the test can fail. Also: creating and wiping many responses leaks nothing.

The canary is made at run time from os.urandom and never exists as a constant.
The test keeps it only XOR-masked; the one unmasked form it needs for the
search lives in a mapping of its own that the scan skips, and the Python str
that has to exist briefly (to go into the request) is zeroed in place before
it is released. Everything is ASCII, so no UTF-8 cache is ever made."""

import ctypes
import gc
import mmap
import os
import subprocess
import sys

import pytest

import hushcall

MASK = 0x5A
MAX_REGION = 512 << 20  # sanitizer shadow and similar reservations hold nothing of ours
# Large enough that the strings holding it bypass pymalloc's small pools, which
# the scanner's own bookkeeping strings would otherwise reuse.
CANARY_CHARS = 600
# The scan looks for the canary less its ends: an allocator that reuses the
# first bytes of a freed block for its free list (glibc's tcache writes 16)
# must not hide the rest of a copy. 536 random hex digits are still unique.
NEEDLE_MARGIN = 32


def _memmem():
    libc = ctypes.CDLL(None)
    fn = libc.memmem
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
    return fn


def _address(m):
    obj = ctypes.c_char.from_buffer(m)
    try:
        return ctypes.addressof(obj)
    finally:
        del obj


class Scanner:
    """Counts copies, whole or with their ends overwritten, of the canary whose
    masked form is `masked`."""

    CHUNK = 1 << 20

    def __init__(self, masked):
        masked = masked[NEEDLE_MARGIN:-NEEDLE_MARGIN]
        self.n = len(masked)
        self.memmem = _memmem()
        # The unmasked needle and the read buffer each get a mapping of their
        # own, skipped by the scan: both hold the secret by design.
        self.needle = mmap.mmap(-1, max(mmap.PAGESIZE, self.n))
        self.buffer = mmap.mmap(-1, self.CHUNK + self.n)
        for i, b in enumerate(masked):
            self.needle[i] = b ^ MASK
        self.needle_at = _address(self.needle)
        self.buffer_at = _address(self.buffer)
        self.skip = [
            (self.needle_at, self.needle_at + len(self.needle)),
            (self.buffer_at, self.buffer_at + len(self.buffer)),
        ]

    def close(self):
        for i in range(self.n):
            self.needle[i] = 0
        self.buffer.write(bytes(len(self.buffer)))
        self.needle.close()
        self.buffer.close()

    def _find_in(self, got, starts, base, found):
        p, end = self.buffer_at, self.buffer_at + starts
        while True:
            hit = self.memmem(p, self.buffer_at + got - p, self.needle_at, self.n)
            if not hit or hit >= end:
                return
            found.append(base + (hit - self.buffer_at))
            p = hit + 1

    def holds_at(self, address):
        """Whether the copy found at `address` is still there. Reads only those
        bytes and allocates nothing the size of a copy, so a freed block that
        was not zeroed is seen before anything can reuse it."""
        fd = os.open("/proc/self/mem", os.O_RDONLY)
        view = memoryview(self.buffer)
        try:
            got = os.preadv(fd, [view[: self.n]], address)
        except OSError:  # unmapped (a wiped arena is): nothing is there
            got = 0
        finally:
            view.release()
            os.close(fd)
        return got == self.n and self.memmem(self.buffer_at, self.n, self.needle_at, self.n) == self.buffer_at

    def count(self):
        return len(self.find())

    def find(self):
        """The addresses of every copy."""
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
        fd = os.open("/proc/self/mem", os.O_RDONLY)
        view = memoryview(self.buffer)
        found = []
        try:
            for line in lines:
                fields = line.split()
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                if fields[1][0] != "r" or hi - lo > MAX_REGION:
                    continue
                if len(fields) > 5 and fields[5] in ("[vvar]", "[vvar_vclock]", "[vsyscall]"):
                    continue
                if any(a < hi and b > lo for a, b in self.skip):
                    continue
                at = lo
                while at < hi:
                    want = min(hi - at, self.CHUNK + self.n)
                    try:
                        got = os.preadv(fd, [view[:want]], at)
                    except OSError:
                        break
                    if got <= 0:
                        break
                    starts = min(got - self.n + 1, self.CHUNK) if got >= self.n else 0
                    self._find_in(got, starts, at, found)
                    at += self.CHUNK
        finally:
            view.release()
            os.close(fd)
        return found


def make_canary():
    """(masked bytes, the canary as a fresh ASCII str). Zero the str with
    zero_str() before dropping it."""
    hexdigits = b"0123456789abcdef"
    raw = os.urandom(CANARY_CHARS // 2)
    buf = bytearray(CANARY_CHARS)
    for i, b in enumerate(raw):
        buf[2 * i] = hexdigits[b >> 4]
        buf[2 * i + 1] = hexdigits[b & 15]
    masked = bytes(c ^ MASK for c in buf)
    text = buf.decode("ascii")  # one str, made directly from the buffer
    for i in range(len(buf)):
        buf[i] = 0
    return masked, text


# Compact ASCII strs keep their characters right after the object header:
# sys.getsizeof("") is that header plus the terminating NUL.
_ASCII_DATA_OFFSET = sys.getsizeof("") - 1


def zero_str(s):
    """Overwrite a compact ASCII str's characters in place (test use only: the
    str must be dropped right after)."""
    probe = "".join(["pr", "obe"])
    assert ctypes.string_at(id(probe) + _ASCII_DATA_OFFSET, 5) == b"probe"
    assert s.isascii()
    ctypes.memset(id(s) + _ASCII_DATA_OFFSET, 0, len(s))


def matches(s, masked):
    """Compare without making any copy of s."""
    return len(s) == len(masked) and all(ord(c) ^ MASK == m for c, m in zip(s, masked))


def response_with_canary():
    """A Response whose only copy of a fresh canary is in its locked arena."""
    masked, text = make_canary()
    request = {
        "id": "chatcmpl-memtest",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
        "_metadata": {"payload_id": "memtest", "is_encrypted": True},
    }
    buf = hushcall.encode(request)
    zero_str(text)
    del text, request
    scanner = Scanner(masked)
    assert scanner.count() == 1, "the secure buffer holds the one copy"
    resp = hushcall.decode(buf)
    assert scanner.count() == 2, "the buffer and the document"
    buf.wipe()
    del buf
    return masked, scanner, resp


def test_nothing_left_after_wipe():
    masked, scanner, resp = response_with_canary()
    try:
        document = scanner.find()
        assert len(document) == 1, "the document in locked memory"
        content = resp.choices[0].message.content
        assert matches(content, masked)
        leaf = [a for a in scanner.find() if a not in document]
        assert len(leaf) == 1, "the one leaf read"
        del content  # a ZeroOnFreeStr: zeroed as it is freed
        assert not scanner.holds_at(leaf[0])
        assert scanner.count() == 1
        resp.wipe()
        assert not scanner.holds_at(document[0])
        gc.collect()
        assert scanner.count() == 0
        del resp
        gc.collect()
        assert scanner.count() == 0
    finally:
        scanner.close()


def test_nothing_left_after_with_block():
    masked, scanner, resp = response_with_canary()
    try:
        with resp as r:
            content = r.choices[0].message.content
            items = r.choices[0].message.items()  # keys and values, through every path
            copied = r.to_dict()
            assert matches(content, masked)
            del content, items, copied
        del r, resp
        gc.collect()
        assert scanner.count() == 0
    finally:
        scanner.close()


def test_nothing_left_after_collection():
    masked, scanner, resp = response_with_canary()
    try:
        message = resp.choices[0].message
        del resp
        assert matches(message.content, masked)
        del message  # the last view: the document is wiped as it goes
        gc.collect()
        assert scanner.count() == 0
    finally:
        scanner.close()


def test_control_live_plain_copy_is_found():
    """The scanner finds an ordinary copy: without this, zero could mean blind."""
    masked, scanner, resp = response_with_canary()
    try:
        plain = {"content": str(resp.choices[0].message.content)}  # an ordinary str
        resp.wipe()
        gc.collect()
        assert scanner.count() >= 1
        zero_str(plain["content"])
        del plain
        assert scanner.count() == 0
    finally:
        scanner.close()


_DEBUG_ALLOCATOR = sys.flags.dev_mode or os.environ.get("PYTHONMALLOC", "").endswith("debug")


def test_control_released_plain_copy_is_found():
    """A plain dict's str, released but never zeroed, is still in the heap: the
    difference ZeroOnFreeStr makes."""
    if _DEBUG_ALLOCATOR:
        # The debug allocator (-X dev) overwrites freed memory, so the control
        # runs in an interpreter with the ordinary one.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDEVMODE", "PYTHONMALLOC")}
        env["PYTHONPATH"] = os.pathsep.join(sys.path)
        child = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             __file__ + "::test_control_released_plain_copy_is_found"],
            env=env, capture_output=True, text=True, timeout=300)
        assert child.returncode == 0, child.stdout + child.stderr
        return
    masked, scanner, resp = response_with_canary()
    try:
        plain = {"content": str(resp.choices[0].message.content)}
        resp.wipe()
        del plain
        gc.collect()
        assert scanner.count() >= 1
    finally:
        scanner.close()


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * mmap.PAGESIZE


def test_many_responses_leak_nothing():
    request = {
        "model": "m",
        "choices": [{"message": {"role": "assistant", "content": "x" * 2000 + "\u00e9"}}],
        "usage": {"total_tokens": 3},
        "_metadata": {"payload_id": "leak-test"},
    }

    def once():
        buf = hushcall.encode(request)
        r = hushcall.decode(buf)
        buf.wipe()
        content = r.choices[0].message.content
        pairs = r.items()
        copied = r.to_dict()
        keys = list(r)
        text = repr(r)
        del content, pairs, copied, keys, text
        r.wipe()

    for _ in range(500):  # warm up caches and free lists
        once()
    gc.collect()
    info = hushcall.get_memory_protection_info()
    rss, blocks, objects = _rss_bytes(), sys.getallocatedblocks(), len(gc.get_objects())
    refs = sys.getrefcount(request)
    for _ in range(10000):
        once()
    gc.collect()
    after = hushcall.get_memory_protection_info()
    assert after["mapped_bytes"] == info["mapped_bytes"]
    assert after["locked_bytes"] == info["locked_bytes"]
    assert sys.getrefcount(request) == refs
    assert len(gc.get_objects()) - objects < 100
    assert sys.getallocatedblocks() - blocks < 1000
    assert _rss_bytes() - rss < 8 << 20
