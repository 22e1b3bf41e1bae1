"""HPKE through pyca `cryptography` (hazmat.primitives.hpke), the independent implementation
test_hpke.c checks hushcall's HPKE against, both ways.

    hpke_pyca.py KEM KDF AEAD SK_HEX PK_HEX INFO_HEX MESSAGE_HEX

ids in decimal; MESSAGE is a single-shot HPKE message from hushcall (enc || ct, no aad). Prints
three lines: the message's plaintext in hex (or "refused"), "refused" or "opened" for the same
message under a different info, and a message pyca seals to PK with INFO (hex enc || ct) for
hushcall to open. X-Wing's private key is its 32-byte seed, expanded here as the X-Wing draft
does (SHAKE256(seed, 96): ML-KEM-768's d || z, then the X25519 key); pyca takes the components.
"""
import hashlib
import sys

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

KEMS = {0x0020: hpke.KEM.X25519, 0x647A: hpke.KEM.MLKEM768_X25519}
KDFS = {0x0001: hpke.KDF.HKDF_SHA256, 0x0011: hpke.KDF.SHAKE256}
AEADS = {0x0002: hpke.AEAD.AES_256_GCM, 0x0003: hpke.AEAD.CHACHA20_POLY1305}
MLKEM768_EK_BYTES = 1184


def private_key(kem, sk):
    if kem == 0x0020:
        return x25519.X25519PrivateKey.from_private_bytes(sk)
    expanded = hashlib.shake_256(sk).digest(96)
    return hpke.MLKEM768X25519PrivateKey(mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
                                         x25519.X25519PrivateKey.from_private_bytes(expanded[64:]))


def public_key(kem, pk):
    if kem == 0x0020:
        return x25519.X25519PublicKey.from_public_bytes(pk)
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(pk[:MLKEM768_EK_BYTES]),
        x25519.X25519PublicKey.from_public_bytes(pk[MLKEM768_EK_BYTES:]))


def try_open(suite, message, sk, info):
    try:
        return suite.decrypt(message, sk, info=info).hex()
    except Exception:  # pyca raises its own error for every refusal; all mean "refused"
        return "refused"


def main(argv):
    kem, kdf, aead = (int(a) for a in argv[1:4])
    sk, pk, info, message = (bytes.fromhex(a) for a in argv[4:8])
    suite = hpke.Suite(KEMS[kem], KDFS[kdf], AEADS[aead])
    recipient = private_key(kem, sk)
    print(try_open(suite, message, recipient, info))
    print("refused" if try_open(suite, message, recipient, info + b"x") == "refused" else "opened")
    print(suite.encrypt(b"sealed by pyca cryptography", public_key(kem, pk), info=info).hex())


if __name__ == "__main__":
    main(sys.argv)
