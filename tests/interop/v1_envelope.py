"""NOMYO's v1 package ("hybrid-aes256-rsa4096"), written without hushcall.

The independent reading of the protocol that the C core is tested against: AES-256-GCM over the
payload, the AES key wrapped with RSA-OAEP (SHA-256, MGF1-SHA-256, no label), laid out exactly as
the `nomyo` client's json.dumps lays it out. Shared by v1_peer.py and nomyo_peer.py.
"""
import base64
import json
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()),
                    algorithm=hashes.SHA256(), label=None)


def package_fields(public_key, plaintext, key_bytes=32, nonce_bytes=12):
    """The package for `public_key` as a dict, to be changed before it is written. Only the
    differential test asks for another AES key or nonce size than v1's 32 and 12 bytes."""
    key, nonce = secrets.token_bytes(key_bytes), secrets.token_bytes(nonce_bytes)
    sealed = AESGCM(key).encrypt(nonce, plaintext, None)
    return {
        "version": "1.0",
        "algorithm": "hybrid-aes256-rsa4096",
        "encrypted_payload": {
            "ciphertext": base64.b64encode(sealed[:-16]).decode(),
            "nonce": base64.b64encode(nonce).decode(),
            "tag": base64.b64encode(sealed[-16:]).decode(),
        },
        "encrypted_aes_key": base64.b64encode(public_key.encrypt(key, OAEP)).decode(),
        "key_algorithm": "RSA-OAEP-SHA256",
        "payload_algorithm": "AES-256-GCM",
    }


def seal(public_key, plaintext, processed_at=None):
    """The package for `public_key`, as bytes; the server role adds `processed_at` last, an int
    of Unix seconds as NOMYO's API reference documents it."""
    package = package_fields(public_key, plaintext)
    if processed_at is not None:
        package["processed_at"] = processed_at
    return json.dumps(package).encode()


def _unique_members(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key")
    return dict(pairs)


def _unb64(value, size=None):
    raw = base64.b64decode(value, validate=True)
    if size is not None and len(raw) != size:
        raise ValueError("wrong length")
    return raw


def open_package(private_key, body):
    """The plaintext of a package; ValueError, TypeError, KeyError or InvalidTag otherwise."""
    package = json.loads(body, object_pairs_hook=_unique_members)
    if not isinstance(package, dict):
        raise ValueError("not an object")
    if package.get("version") != "1.0" or package.get("algorithm") != "hybrid-aes256-rsa4096":
        raise ValueError("version or algorithm")
    # The two *_algorithm members may be missing, as the nomyo client allows.
    if (package.get("key_algorithm", "RSA-OAEP-SHA256") != "RSA-OAEP-SHA256"
            or package.get("payload_algorithm", "AES-256-GCM") != "AES-256-GCM"):
        raise ValueError("key_algorithm or payload_algorithm")
    payload = package["encrypted_payload"]
    if not isinstance(payload, dict):
        raise ValueError("encrypted_payload")
    key = private_key.decrypt(_unb64(package["encrypted_aes_key"]), OAEP)
    if len(key) != 32:
        raise ValueError("not an AES-256 key")
    return AESGCM(key).decrypt(_unb64(payload["nonce"], 12),
                               _unb64(payload["ciphertext"]) + _unb64(payload["tag"], 16), None)


def has_nomyo_layout(body):
    """True when the bytes are exactly what nomyo's json.dumps would write for them."""
    return json.dumps(json.loads(body)).encode() == body
