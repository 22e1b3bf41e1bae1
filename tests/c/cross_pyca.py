#!/usr/bin/env python3
"""hushcall's HPKE and ML-KEM-768 against pyca `cryptography` (>= 47, which
carries OpenSSL 3.5), live and both ways, through tests/c/hpke_peer.c.

  python3 tests/c/cross_pyca.py PATH/TO/hpke_peer

For every suite hushcall seals with (KEM 0x0020 and 0x647A, KDF 0x0001 and
0x0011, AEAD 0x0002 and 0x0003), with non-empty info and aad: pyca seals and
hushcall opens, hushcall seals and pyca opens; a modified ciphertext, a
wrong key, a wrong info and a wrong aad are refused on both sides. Keys
cross too: a private key made by one side gives the same public key on the
other (for X-Wing that checks the seed's SHAKE256 expansion).

pyca's HPKE is single-shot (one message at sequence number 0) and has no
Export. So messages later in a sequence, and Export values, are checked
against an independent RFC 9180 key schedule written here over pyca's
primitives (HKDF-SHA256 suites; the one-stage SHAKE256 KDF has none here).

ML-KEM-768: keys from one seed agree; pyca encapsulates and hushcall
decapsulates, and the reverse; a modified ciphertext yields, on both sides,
the implicit-rejection secret J(z || c') of FIPS 203 (computed here too),
not an error, and not the sender's secret.

Exits 1 on the first disagreement, and if pyca lacks HPKE or ML-KEM.
"""

import hashlib
import hmac
import os
import subprocess
import sys

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes, hpke
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
    # Suite.encrypt/decrypt take no aad; pyca's own tests reach it here.
    from cryptography.hazmat.bindings._rust import openssl as rust_openssl
    _encrypt_with_aad = rust_openssl.hpke._encrypt_with_aad
    _decrypt_with_aad = rust_openssl.hpke._decrypt_with_aad
except (ImportError, AttributeError) as e:  # a missing dependency fails loudly, never skips
    sys.exit("cross_pyca: pyca cryptography with hpke and mlkem is needed (>= 47): %s" % e)

X25519_KEM, XWING_KEM = 0x0020, 0x647A
HKDF_SHA256, SHAKE256 = 0x0001, 0x0011
AES_256_GCM, CHACHA20, EXPORT_ONLY = 0x0002, 0x0003, 0xFFFF

PYCA_KEM = {X25519_KEM: hpke.KEM.X25519, XWING_KEM: hpke.KEM.MLKEM768_X25519}
PYCA_KDF = {HKDF_SHA256: hpke.KDF.HKDF_SHA256, SHAKE256: hpke.KDF.SHAKE256}
PYCA_AEAD = {AES_256_GCM: hpke.AEAD.AES_256_GCM, CHACHA20: hpke.AEAD.CHACHA20_POLY1305}
ENC_BYTES = {X25519_KEM: 32, XWING_KEM: 1120}
SUITES = [(k, d, a) for k in PYCA_KEM for d in PYCA_KDF for a in PYCA_AEAD]

INFO = b"hushcall cross-check info \x00\xff"
AAD = b"associated \x01 data"
MESSAGES = [b"first message", b"", b"\x00" * 100 + b"third", os.urandom(3000)]

checks = 0


def ensure(cond, what):
    global checks
    if not cond:
        sys.exit("cross_pyca: FAILED: " + what)
    checks += 1


def hx(data):
    return data.hex() if data else "-"


def flip(data, index=-1):
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


class Peer:
    """hpke_peer over a pipe: one command line out, one answer line back."""

    def __init__(self, path):
        self.proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def ask(self, *fields):
        self.proc.stdin.write(" ".join(fields) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().split()
        ensure(answer, "hpke_peer answered nothing to %s" % fields[0])
        return answer

    def ok(self, *fields):
        answer = self.ask(*fields)
        ensure(answer[0] == "ok", "hpke_peer refused %s: %s" % (fields[0], " ".join(answer)))
        return [b"" if f == "-" else bytes.fromhex(f) for f in answer[1:]]

    def refused(self, *fields):
        answer = self.ask(*fields)
        return answer[1] if answer[0] == "fail" and len(answer) > 1 else None

    def close(self):
        self.proc.stdin.close()
        ensure(self.proc.wait(timeout=30) == 0, "hpke_peer exited with an error")


def sid(kem, kdf, aead):
    return "%04x %04x %04x" % (kem, kdf, aead)


# ---- keys, as pyca holds them -------------------------------------------------

def xwing_expand(seed):
    """draft-connolly-cfrg-xwing-kem: SHAKE256(seed, 96) = d || z || sk_X."""
    expanded = hashlib.shake_256(seed).digest(96)
    return expanded[:64], expanded[64:]


def pyca_private(kem, sk):
    if kem == X25519_KEM:
        return x25519.X25519PrivateKey.from_private_bytes(sk)
    mlkem_seed, sk_x = xwing_expand(sk)
    return hpke.MLKEM768X25519PrivateKey(mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed),
                                         x25519.X25519PrivateKey.from_private_bytes(sk_x))


def pyca_public(kem, pk):
    if kem == X25519_KEM:
        return x25519.X25519PublicKey.from_public_bytes(pk)
    return hpke.MLKEM768X25519PublicKey(mlkem.MLKEM768PublicKey.from_public_bytes(pk[:1184]),
                                        x25519.X25519PublicKey.from_public_bytes(pk[1184:]))


def public_bytes_from_private(kem, sk):
    """SerializePublicKey as the specs define it, from pyca's own keys."""
    if kem == X25519_KEM:
        return x25519.X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes_raw()
    mlkem_seed, sk_x = xwing_expand(sk)
    pk_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed).public_key().public_bytes_raw()
    pk_x = x25519.X25519PrivateKey.from_private_bytes(sk_x).public_key().public_bytes_raw()
    return pk_m + pk_x


def check_keys(peer):
    for kem in PYCA_KEM:
        for _ in range(3):
            sk, pk = peer.ok("keygen", "%04x" % kem)
            ensure(public_bytes_from_private(kem, sk) == pk,
                   "KEM 0x%04x: pyca derives another public key from hushcall's private key" % kem)
            theirs = os.urandom(32)
            (pk2,) = peer.ok("public", "%04x" % kem, hx(theirs))
            ensure(pk2 == public_bytes_from_private(kem, theirs),
                   "KEM 0x%04x: hushcall derives another public key from pyca's private key" % kem)


# ---- an independent RFC 9180 key schedule (HKDF-SHA256 suites) -----------------

def labeled_extract(suite_id, salt, label, ikm):
    return hmac.new(salt or bytes(32), b"HPKE-v1" + suite_id + label + ikm, "sha256").digest()


def labeled_expand(suite_id, prk, label, info, length):
    labeled_info = length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info
    return HKDFExpand(hashes.SHA256(), length, labeled_info).derive(prk)


def kem_shared_secret(kem, sk, enc, pk):
    """Decap(enc, skR): DHKEM(X25519, HKDF-SHA256) of RFC 9180 §4.1, or
    X-Wing's decapsulation with its SHA3-256 combiner (label last)."""
    if kem == X25519_KEM:
        dh = x25519.X25519PrivateKey.from_private_bytes(sk).exchange(
            x25519.X25519PublicKey.from_public_bytes(enc))
        kem_id = b"KEM" + kem.to_bytes(2, "big")
        prk = labeled_extract(kem_id, b"", b"eae_prk", dh)
        return labeled_expand(kem_id, prk, b"shared_secret", enc + pk, 32)
    mlkem_seed, sk_x = xwing_expand(sk)
    ct_m, ct_x = enc[:1088], enc[1088:]
    ss_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed).decapsulate(ct_m)
    x_key = x25519.X25519PrivateKey.from_private_bytes(sk_x)
    ss_x = x_key.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
    pk_x = x_key.public_key().public_bytes_raw()
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + b"\\.//^\\").digest()


class Schedule:
    """KeySchedule of RFC 9180 §5.1 in base mode, for HKDF-SHA256."""

    def __init__(self, suite, shared_secret, info):
        kem, kdf, aead = suite
        self.aead = aead
        self.suite_id = b"HPKE" + b"".join(i.to_bytes(2, "big") for i in suite)
        psk_id_hash = labeled_extract(self.suite_id, b"", b"psk_id_hash", b"")
        info_hash = labeled_extract(self.suite_id, b"", b"info_hash", info)
        context = b"\x00" + psk_id_hash + info_hash
        secret = labeled_extract(self.suite_id, shared_secret, b"secret", b"")
        if aead != EXPORT_ONLY:
            self.key = labeled_expand(self.suite_id, secret, b"key", context, 32)
            self.base_nonce = labeled_expand(self.suite_id, secret, b"base_nonce", context, 12)
        self.exporter_secret = labeled_expand(self.suite_id, secret, b"exp", context, 32)

    def open(self, seq, aad, ct):
        nonce = bytes(a ^ b for a, b in zip(self.base_nonce, seq.to_bytes(12, "big")))
        cipher = AESGCM(self.key) if self.aead == AES_256_GCM else ChaCha20Poly1305(self.key)
        return cipher.decrypt(nonce, ct, aad)

    def export(self, context, length):
        return labeled_expand(self.suite_id, self.exporter_secret, b"sec", context, length)


# ---- HPKE both ways -------------------------------------------------------------

def pyca_seals_hushcall_opens(peer, suite):
    kem, kdf, aead = suite
    name = "suite %s" % sid(*suite)
    pyca_suite = hpke.Suite(PYCA_KEM[kem], PYCA_KDF[kdf], PYCA_AEAD[aead])
    sk, pk = peer.ok("keygen", "%04x" % kem)
    other_sk, _ = peer.ok("keygen", "%04x" % kem)
    n = ENC_BYTES[kem]
    for pt in MESSAGES:
        sealed = _encrypt_with_aad(pyca_suite, pt, pyca_public(kem, pk), info=INFO, aad=AAD)
        enc, ct = sealed[:n], sealed[n:]
        opened = peer.ok("open", sid(*suite), hx(sk), hx(enc), hx(INFO), hx(AAD), hx(ct))
        ensure(opened == [pt], "%s: hushcall did not open pyca's message" % name)
        for what, fields in [
                ("a modified ciphertext", (hx(sk), hx(enc), hx(INFO), hx(AAD), hx(flip(ct)))),
                ("a modified enc", (hx(sk), hx(flip(enc, 0)), hx(INFO), hx(AAD), hx(ct))),
                ("a wrong key", (hx(other_sk), hx(enc), hx(INFO), hx(AAD), hx(ct))),
                ("a wrong info", (hx(sk), hx(enc), hx(INFO + b"!"), hx(AAD), hx(ct))),
                ("a wrong aad", (hx(sk), hx(enc), hx(INFO), hx(AAD + b"!"), hx(ct)))]:
            ensure(peer.refused("open", sid(*suite), *fields) == "auth",
                   "%s: hushcall did not refuse %s as auth" % (name, what))
    # pyca's public API: no aad.
    sealed = pyca_suite.encrypt(MESSAGES[0], pyca_public(kem, pk), info=INFO)
    opened = peer.ok("open", sid(*suite), hx(sk), hx(sealed[:n]), hx(INFO), "-", hx(sealed[n:]))
    ensure(opened == [MESSAGES[0]], "%s: hushcall did not open pyca's Suite.encrypt" % name)


def pyca_refuses(pyca_suite, sealed, private_key, info, aad):
    try:
        _decrypt_with_aad(pyca_suite, sealed, private_key, info=info, aad=aad)
    except InvalidTag:
        return True
    return False


def hushcall_seals_pyca_opens(peer, suite):
    kem, kdf, aead = suite
    name = "suite %s" % sid(*suite)
    pyca_suite = hpke.Suite(PYCA_KEM[kem], PYCA_KDF[kdf], PYCA_AEAD[aead])
    sk, pk = peer.ok("keygen", "%04x" % kem)
    other_sk, _ = peer.ok("keygen", "%04x" % kem)
    answer = peer.ok("seal", sid(*suite), hx(pk), hx(INFO), hx(AAD), *[hx(m) for m in MESSAGES])
    enc, cts = answer[0], answer[1:]
    ensure(len(cts) == len(MESSAGES), "%s: hushcall sealed %d messages" % (name, len(cts)))
    key = pyca_private(kem, sk)
    # pyca opens one message per context: the first of the sequence.
    first = enc + cts[0]
    ensure(_decrypt_with_aad(pyca_suite, first, key, info=INFO, aad=AAD) == MESSAGES[0],
           "%s: pyca did not open hushcall's message" % name)
    ensure(pyca_refuses(pyca_suite, flip(first), key, INFO, AAD),
           "%s: pyca opened a modified ciphertext" % name)
    ensure(pyca_refuses(pyca_suite, first, pyca_private(kem, other_sk), INFO, AAD),
           "%s: pyca opened with a wrong key" % name)
    ensure(pyca_refuses(pyca_suite, first, key, INFO + b"!", AAD),
           "%s: pyca opened with a wrong info" % name)
    ensure(pyca_refuses(pyca_suite, first, key, INFO, AAD + b"!"),
           "%s: pyca opened with a wrong aad" % name)
    # The whole sequence: hushcall's recipient, and the schedule written here.
    opened = peer.ok("open", sid(*suite), hx(sk), hx(enc), hx(INFO), hx(AAD), *[hx(c) for c in cts])
    ensure(opened == MESSAGES, "%s: hushcall did not open its own sequence" % name)
    ensure(peer.refused("open", sid(*suite), hx(sk), hx(enc), hx(INFO), hx(AAD), hx(cts[1]))
           == "auth", "%s: a message opened at the wrong sequence number" % name)
    if kdf == HKDF_SHA256:
        schedule = Schedule(suite, kem_shared_secret(kem, sk, enc, pk), INFO)
        for seq, (ct, pt) in enumerate(zip(cts, MESSAGES)):
            ensure(schedule.open(seq, AAD, ct) == pt,
                   "%s: message %d does not open under RFC 9180's schedule" % (name, seq))


def check_export(peer, suite):
    kem, kdf, aead = suite
    name = "suite %s" % sid(*suite)
    sk, pk = peer.ok("keygen", "%04x" % kem)
    for context, length in [(b"", 32), (b"exporter context", 64), (b"\x00\x01", 1)]:
        enc, secret = peer.ok("export_s", sid(*suite), hx(pk), hx(INFO), hx(context), str(length))
        (secret_r,) = peer.ok("export_r", sid(*suite), hx(sk), hx(enc), hx(INFO), hx(context),
                              str(length))
        ensure(len(secret) == length and secret == secret_r,
               "%s: sender and recipient export differently" % name)
        if kdf == HKDF_SHA256:
            schedule = Schedule(suite, kem_shared_secret(kem, sk, enc, pk), INFO)
            ensure(schedule.export(context, length) == secret,
                   "%s: Export differs from RFC 9180's schedule" % name)


# ---- ML-KEM-768 --------------------------------------------------------------------

def check_mlkem(peer):
    for _ in range(5):
        seed = os.urandom(64)
        theirs = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
        ek, dk = peer.ok("mlkem_keygen", hx(seed))
        ensure(ek == theirs.public_key().public_bytes_raw(),
               "ML-KEM: the two sides make different keys from one seed")
        # pyca encapsulates, hushcall decapsulates.
        ss, ct = theirs.public_key().encapsulate()
        ensure(peer.ok("mlkem_decaps", hx(dk), hx(ct)) == [ss],
               "ML-KEM: hushcall decapsulated pyca's ciphertext to another secret")
        # hushcall encapsulates, pyca decapsulates.
        ct2, ss2 = peer.ok("mlkem_encaps", hx(ek))
        ensure(theirs.decapsulate(ct2) == ss2,
               "ML-KEM: pyca decapsulated hushcall's ciphertext to another secret")
        # A modified ciphertext: implicit rejection, J(z || c'), on both sides.
        bad = flip(ct, 17)
        (rejected,) = peer.ok("mlkem_decaps", hx(dk), hx(bad))
        ensure(rejected != ss, "ML-KEM: a modified ciphertext gave the sender's secret")
        ensure(rejected == theirs.decapsulate(bad),
               "ML-KEM: the implicit-rejection secrets of the two sides differ")
        ensure(rejected == hashlib.shake_256(seed[32:] + bad).digest(32),
               "ML-KEM: the implicit-rejection secret is not J(z || c)")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    peer = Peer(sys.argv[1])
    check_keys(peer)
    for suite in SUITES:
        pyca_seals_hushcall_opens(peer, suite)
        hushcall_seals_pyca_opens(peer, suite)
    for kem in PYCA_KEM:
        for kdf in PYCA_KDF:
            for aead in (AES_256_GCM, CHACHA20, EXPORT_ONLY):
                check_export(peer, (kem, kdf, aead))
    check_mlkem(peer)
    peer.close()
    print("cross_pyca: %d checks passed over %d suites, both ways" % (checks, len(SUITES)))


if __name__ == "__main__":
    main()
