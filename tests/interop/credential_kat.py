#!/usr/bin/env python3
"""TPM2_MakeCredential's known answers, computed from the TPM 2.0 Library
spec alone (Part 1 §11.4.10.2 KDFa, §24 Credential Protection), never with
hushcall, for tests/c/test_credential.c:

  credential_kat.py EK_PRIVATE.pem SEED NAME SECRET ID_OBJECT ENCRYPTED_SECRET   (all hex)

Recomputes the TPM2B_ID_OBJECT from the seed and checks it byte for byte;
decrypts the TPM2B_ENCRYPTED_SECRET with the EK's private key (RSA-OAEP,
SHA-256, label "IDENTITY\\0") and checks it is the seed. Prints "ok" and
exits 0 when both hold; says what differs and exits 1 otherwise."""
import hashlib
import hmac
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # CFB moved to pyca's "decrepit" corner in 47; the TPM still uses it
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:
    from cryptography.hazmat.primitives.ciphers.modes import CFB

HASH = hashlib.sha256  # the default EK template's nameAlg
SYM_KEY_BITS = 128     # and its AES-128-CFB


def kdfa(key, label, context_u, bits):
    """KDFa: HMAC over [i]32 || label || 0x00 || contextU || contextV || [bits]32, i = 1, 2, ..."""
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        data = counter.to_bytes(4, "big") + label + b"\x00" + context_u + bits.to_bytes(4, "big")
        out += hmac.new(key, data, HASH).digest()
        counter += 1
    return out[: bits // 8]


def tpm2b(data):
    return len(data).to_bytes(2, "big") + data


def id_object(seed, name, secret):
    sym_key = kdfa(seed, b"STORAGE", name, SYM_KEY_BITS)
    hmac_key = kdfa(seed, b"INTEGRITY", b"", HASH().digest_size * 8)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(tpm2b(secret)) + encryptor.finalize()
    integrity = hmac.new(hmac_key, enc_identity + name, HASH).digest()
    return tpm2b(tpm2b(integrity) + enc_identity)


def main(argv):
    key_pem, seed, name, secret, got_id, got_enc = argv[1], *map(bytes.fromhex, argv[2:7])
    with open(key_pem, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    failures = []
    if id_object(seed, name, secret) != got_id:
        failures.append("id object differs")
    if int.from_bytes(got_enc[:2], "big") != len(got_enc) - 2:
        failures.append("encrypted secret's size prefix is wrong")
    else:
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                            label=b"IDENTITY\x00")
        try:
            if key.decrypt(got_enc[2:], oaep) != seed:
                failures.append("encrypted secret is not the seed")
        except ValueError:
            failures.append("encrypted secret does not decrypt")
    print("ok" if not failures else "; ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
