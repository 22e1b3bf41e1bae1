#!/usr/bin/env python3
"""hushcall's protocol v2 codec against an EHBP written here from the spec
(../shared/refs/ehbp-SPEC.md, RFC 9458 §3, RFC 9180), live and both ways,
through tests/c/ehbp_peer.c.

  python3 tests/c/cross_ehbp.py PATH/TO/ehbp_peer

Nothing here comes from hushcall: key configs are encoded and parsed by the
few lines below; the EHBP suite's HPKE is pyhpke's (tinfoil-ehbp's own
dependency), and the real tinfoil-ehbp 0.4.1 parses our config, seals a
request our server role opens and opens our sealed answer; the post-quantum
suite's request direction is pyca cryptography's HPKE
(KEM.MLKEM768_X25519), its later frames and its Export the RFC 9180 key
schedule of cross_pyca.py over pyca primitives. The answer's key is EHBP
§4.4's plain HKDF, written here over pyca's HMAC and HKDFExpand.

For both suites (and both of the post-quantum AEADs): Python seals a request
our server opens; we seal a request Python opens; Python seals the answer we
open, and the reverse; a flipped bit is refused on both sides.

The examples in docs/protocol-v2.md are checked too: Python remakes or
opens every value, and the core makes the same bytes today
(`cross_ehbp.py PEER --print-examples` prints them afresh).

Exits 1 on the first disagreement, and if a dependency is missing.
"""

import hashlib
import hmac
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cross_pyca  # noqa: E402  the RFC 9180 schedule and the pyca keys, not copied
from cross_pyca import (AES_256_GCM, CHACHA20, HKDF_SHA256, X25519_KEM, XWING_KEM, Peer,  # noqa: E402
                        Schedule, ensure, flip, hx, kem_shared_secret, pyca_public)

try:
    import ehbp
    import pyhpke
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes, hpke
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
except ImportError as e:  # a missing dependency fails loudly, never skips
    sys.exit("cross_ehbp: pyhpke, tinfoil-ehbp (0.4.1) and cryptography are needed: %s" % e)

EHBP_INFO, EHBP_EXPORT = b"ehbp request", b"ehbp response"
PQ_INFO, PQ_EXPORT = b"hushcall-v2 request", b"hushcall-v2 response"
PYCA_AEAD = {AES_256_GCM: hpke.AEAD.AES_256_GCM, CHACHA20: hpke.AEAD.CHACHA20_POLY1305}
BODIES = [b"{}", b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}',
          os.urandom(5000)]
FRAME = 1024


# ---- the spec's bytes, written here -------------------------------------------------

def encode_config(key_id, kem, pk, aeads):
    """RFC 9458 §3.1: key_id, kem_id, public key, suites length, (kdf, aead)..."""
    suites = b"".join(struct.pack(">HH", HKDF_SHA256, a) for a in aeads)
    return bytes([key_id]) + struct.pack(">H", kem) + pk + struct.pack(">H", len(suites)) + suites


def parse_config(data):
    npk = {X25519_KEM: 32, XWING_KEM: 1216}
    key_id, kem = data[0], struct.unpack(">H", data[1:3])[0]
    pk = data[3:3 + npk[kem]]
    (n,) = struct.unpack(">H", data[3 + npk[kem]:5 + npk[kem]])
    rest = data[5 + npk[kem]:]
    ensure(len(rest) == n and n % 4 == 0, "config: suite list length")
    return key_id, kem, pk, [struct.unpack(">HH", rest[i:i + 4]) for i in range(0, n, 4)]


def encode_list(configs):
    return b"".join(struct.pack(">H", len(c)) + c for c in configs)


def frames_of(sealed_chunks):
    return b"".join(struct.pack(">I", len(c)) + c for c in sealed_chunks)


def split_frames(body):
    out, i = [], 0
    while i < len(body):
        (n,) = struct.unpack(">I", body[i:i + 4])
        ensure(i + 4 + n <= len(body), "a frame runs past the body")
        if n:
            out.append(body[i + 4:i + 4 + n])
        i += 4 + n
    return out


def chunks(body, size=FRAME):
    return [body[i:i + size] for i in range(0, len(body), size)]


def hdr_of(key_id, kem, aead):
    return bytes([key_id]) + struct.pack(">HHH", kem, HKDF_SHA256, aead)


def request_info(kem, hdr):
    return EHBP_INFO if kem == X25519_KEM else PQ_INFO + b"\x00" + hdr


def export_label(kem):
    return EHBP_EXPORT if kem == X25519_KEM else PQ_EXPORT


def response_keys(secret, enc, nonce):
    """EHBP §4.4: HKDF-Extract(enc || nonce, secret), Expand "key" / "nonce"."""
    prk = hmac.new(enc + nonce, secret, "sha256").digest()
    key = HKDFExpand(hashes.SHA256(), 32, b"key").derive(prk)
    base = HKDFExpand(hashes.SHA256(), 12, b"nonce").derive(prk)
    return key, base


def response_aead(aead, key):
    return AESGCM(key) if aead == AES_256_GCM else ChaCha20Poly1305(key)


def seal_response(aead, secret, enc, body, nonce):
    key, base = response_keys(secret, enc, nonce)
    cipher = response_aead(aead, key)
    return frames_of(cipher.encrypt(bytes(b ^ s for b, s in zip(base, i.to_bytes(12, "big"))),
                                    c, b"") for i, c in enumerate(chunks(body)))


def open_response(aead, secret, enc, body, nonce):
    key, base = response_keys(secret, enc, nonce)
    cipher = response_aead(aead, key)
    return b"".join(cipher.decrypt(bytes(b ^ s for b, s in zip(base, i.to_bytes(12, "big"))),
                                   c, b"") for i, c in enumerate(split_frames(body)))


# ---- the X25519 suite: pyhpke, as EHBP's clients use it -----------------------------

PYHPKE = pyhpke.CipherSuite.new(pyhpke.KEMId.DHKEM_X25519_HKDF_SHA256, pyhpke.KDFId.HKDF_SHA256,
                                pyhpke.AEADId.AES256_GCM)


def python_seals_x25519(pk, body):
    enc, sender = PYHPKE.create_sender_context(PYHPKE.kem.deserialize_public_key(pk),
                                               info=EHBP_INFO)
    frames = frames_of(sender.seal(c) for c in chunks(body))
    return enc, frames, sender.export(EHBP_EXPORT, 32)


def python_opens_x25519(sk, enc, frames):
    ctx = PYHPKE.create_recipient_context(enc, PYHPKE.kem.deserialize_private_key(sk),
                                          info=EHBP_INFO)
    return b"".join(ctx.open(c) for c in split_frames(frames)), ctx.export(EHBP_EXPORT, 32)


# ---- the post-quantum suite: pyca's HPKE and RFC 9180's schedule ---------------------

def python_seals_pq(sk, pk, hdr, aead, body):
    """pyca seals the first frame (its HPKE is single-shot); the key schedule,
    run from the recipient's side here, seals the rest and gives the export."""
    suite = (XWING_KEM, HKDF_SHA256, aead)
    info = request_info(XWING_KEM, hdr)
    parts = chunks(body)
    sealed = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, PYCA_AEAD[aead]).encrypt(
        parts[0], pyca_public(XWING_KEM, pk), info=info)
    enc, first = sealed[:1120], sealed[1120:]
    schedule = Schedule(suite, kem_shared_secret(XWING_KEM, sk, enc, pk), info)
    rest = []
    for seq, c in enumerate(parts[1:], start=1):
        nonce = bytes(a ^ b for a, b in zip(schedule.base_nonce, seq.to_bytes(12, "big")))
        rest.append(response_aead(aead, schedule.key).encrypt(nonce, c, b""))
    return enc, frames_of([first] + rest), schedule.export(PQ_EXPORT, 32)


def python_opens_pq(sk, pk, hdr, aead, enc, frames):
    suite = (XWING_KEM, HKDF_SHA256, aead)
    info = request_info(XWING_KEM, hdr)
    cts = split_frames(frames)
    first = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, PYCA_AEAD[aead]).decrypt(
        enc + cts[0], cross_pyca.pyca_private(XWING_KEM, sk), info=info)
    schedule = Schedule(suite, kem_shared_secret(XWING_KEM, sk, enc, pk), info)
    rest = [schedule.open(seq, b"", c) for seq, c in enumerate(cts[1:], start=1)]
    return first + b"".join(rest), schedule.export(PQ_EXPORT, 32)


# ---- the checks ----------------------------------------------------------------------

def check_configs(peer):
    sk, config = peer.ok("keygen", "0020", "07", hx(b"\x11" * 32), "0002")
    key_id, kem, pk, suites = parse_config(config)
    ensure((key_id, kem, suites) == (7, X25519_KEM, [(HKDF_SHA256, AES_256_GCM)]),
           "our X25519 config does not read back as the spec's bytes")
    ensure(pk == PYHPKE.kem.derive_key_pair(b"\x11" * 32).public_key.to_public_bytes(),
           "our DeriveKeyPair differs from pyhpke's")
    ident = ehbp.ServerIdentity.unmarshal_public_config(config)
    ensure(ident.key_id == 7 and ident.public_key_bytes() == pk,
           "tinfoil-ehbp reads our config otherwise")
    ensure(ident.marshal_public_config() == config, "tinfoil-ehbp encodes the config otherwise")
    _, xconfig = peer.ok("keygen", "647a", "09", hx(b"\x22" * 32), "0003", "0002")
    key_id, kem, xpk, suites = parse_config(xconfig)
    ensure((key_id, kem, suites) == (9, XWING_KEM, [(1, CHACHA20), (1, AES_256_GCM)]),
           "our X-Wing config does not read back")
    # Ours reads what the spec's encoder writes, bare and as a list.
    mine = encode_config(0x33, X25519_KEM, pk, [AES_256_GCM])
    got = peer.ok("parse_config", hx(mine))
    ensure(got == [b"\x33", bytes.fromhex("0020"), pk, bytes.fromhex("00010002")],
           "our parser reads the spec's config otherwise")
    unknown_kem = encode_config(0x44, 0x0021, b"\x00" * 56, [AES_256_GCM])
    unknown_suite = encode_config(0x55, X25519_KEM, pk, [0x0099])
    listed = encode_list([unknown_kem, encode_config(0x66, XWING_KEM, xpk, [CHACHA20]),
                          unknown_suite, mine])
    ensure(peer.ok("parse_list", hx(listed)) == [b"\x66", b"\x33"],
           "our list parser does not keep exactly the known configs")
    ensure(peer.refused("parse_config", hx(unknown_kem)) == "unsupported",
           "our parser takes a bare config with an unknown KEM")
    ensure(peer.refused("parse_config", hx(mine + b"\x00")) == "format",
           "our parser takes trailing bytes")
    ensure(peer.refused("parse_list", hx(listed[:-1])) == "format",
           "our parser takes a truncated list")


def keys_for(peer, kem, aeads):
    sk, config = peer.ok("keygen", "%04x" % kem, "2a", hx(os.urandom(32)),
                         *["%04x" % a for a in aeads])
    return sk, config, parse_config(config)[2]


def check_python_seals(peer, kem, aead):
    """Python seals the request, our server opens it and seals the answer,
    Python opens that; then the same with a flipped bit on each side."""
    name = "suite %04x/%04x, Python seals" % (kem, aead)
    sk, config, pk = keys_for(peer, kem, [aead])
    for body in BODIES:
        hdr = hdr_of(0x2a, kem, aead)
        if kem == X25519_KEM:
            enc, frames, secret = python_seals_x25519(pk, body)
            named = "-"
        else:
            enc, frames, secret = python_seals_pq(sk, pk, hdr, aead, body)
            named = hx(hdr)
        got = peer.ok("open_request", "%04x" % kem, hx(sk), named, hx(enc), hx(frames))
        ensure(got == [body], "%s: our server did not open the request" % name)
        nonce, answer = peer.ok("seal_response", "%x" % FRAME, hx(body[::-1]))
        ensure(open_response(aead, secret, enc, answer, nonce) == body[::-1],
               "%s: Python did not open our answer" % name)
        try:
            open_response(aead, secret, enc, flip(answer, len(answer) // 2), nonce)
            ensure(False, "%s: Python opened a modified answer" % name)
        except InvalidTag:
            pass
        for index in (4, len(frames) // 2, -1):
            ensure(peer.refused("open_request", "%04x" % kem, hx(sk), named, hx(enc),
                                hx(flip(frames, index))) in ("auth", "key"),
                   "%s: our server opened a modified request" % name)


def check_hushcall_seals(peer, kem, aead, cipher_index=0, aeads=None):
    name = "suite %04x/%04x, hushcall seals" % (kem, aead)
    sk, config, pk = keys_for(peer, kem, aeads or [aead])
    for body in BODIES:
        hdr, enc, frames = peer.ok("seal_request", hx(config), "%x" % cipher_index, "%x" % FRAME,
                                   hx(body))
        ensure(hdr == hdr_of(0x2a, kem, aead), "%s: the hdr is not the spec's" % name)
        if kem == X25519_KEM:
            opened, secret = python_opens_x25519(sk, enc, frames)
        else:
            opened, secret = python_opens_pq(sk, pk, hdr, aead, enc, frames)
        ensure(opened == body, "%s: Python did not open our request" % name)
        nonce = os.urandom(32)
        answer = seal_response(aead, secret, enc, body[::-1], nonce)
        ensure(peer.ok("open_response", hx(nonce), hx(answer)) == [body[::-1]],
               "%s: our client did not open Python's answer" % name)
        for index in (4, len(answer) // 2, -1):
            ensure(peer.refused("open_response", hx(nonce), hx(flip(answer, index))) == "auth",
                   "%s: our client opened a modified answer" % name)
        ensure(peer.refused("open_response", hx(flip(nonce, 0)), hx(answer)) == "auth",
               "%s: our client opened an answer under another nonce" % name)


def check_tinfoil(peer):
    """The real tinfoil-ehbp client: its request opens in our server role,
    our answer opens with its token, a modified answer does not."""
    sk, config, pk = keys_for(peer, X25519_KEM, [AES_256_GCM])
    ident = ehbp.ServerIdentity.unmarshal_public_config(config)
    for body in BODIES:
        req = ident.encrypt_request_body(body)
        got = peer.ok("open_request", "0020", hx(sk), "-", hx(req.encapsulated_key), hx(req.body))
        ensure(got == [body], "our server did not open tinfoil-ehbp's request")
        nonce, answer = peer.ok("seal_response", "%x" % FRAME, hx(body[::-1]))
        ensure(req.token.decrypt_response_body(nonce, answer) == body[::-1],
               "tinfoil-ehbp did not open our answer")
        try:
            req.token.decrypt_response_body(nonce, flip(answer, 10))
            ensure(False, "tinfoil-ehbp opened a modified answer")
        except ehbp.EHBPError:
            pass


# ---- the examples in docs/protocol-v2.md ----------------------------------------------

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "protocol-v2.md")
EXAMPLE_INPUTS = {
    "ehbp": dict(kem=X25519_KEM, aead=AES_256_GCM, key_id=1, ikm=bytes(range(32)),
                 ikmE=bytes(range(32, 64))),
    "pq": dict(kem=XWING_KEM, aead=CHACHA20, key_id=2, ikm=bytes(range(32)),
               ikmE=bytes(range(64, 128))),
}
EXAMPLE_REQUEST = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
EXAMPLE_ANSWER = b'{"choices":[{"message":{"role":"assistant","content":"hello"}}]}'
EXAMPLE_NONCE = bytes(range(128, 160))
EXAMPLE_FRAME = 32  # request frames of 32 bytes of plaintext, so there are two; one answer frame
EXAMPLE_FIELDS = ["private_key", "config", "hdr", "enc", "request_frames", "response_nonce",
                  "response_frames"]


def example_by_core(peer, name):
    """Every value of one example as hushcall's core makes it."""
    x = EXAMPLE_INPUTS[name]
    sk, config = peer.ok("keygen", "%04x" % x["kem"], "%02x" % x["key_id"], hx(x["ikm"]),
                         "%04x" % x["aead"])
    hdr, enc, frames = peer.ok("seal_request", hx(config), "0", "%x" % EXAMPLE_FRAME,
                               hx(EXAMPLE_REQUEST), hx(x["ikmE"]))
    named = hx(hdr) if x["kem"] == XWING_KEM else "-"
    ensure(peer.ok("open_request", "%04x" % x["kem"], hx(sk), named, hx(enc), hx(frames)) ==
           [EXAMPLE_REQUEST], "example %s: our server did not open our request" % name)
    nonce, answer = peer.ok("seal_response", "%x" % len(EXAMPLE_ANSWER), hx(EXAMPLE_ANSWER),
                            hx(EXAMPLE_NONCE))
    return dict(zip(EXAMPLE_FIELDS, [sk, config, hdr, enc, frames, nonce, answer]))


def check_example_independently(name, v):
    """What Python alone says of an example's values. For EHBP it makes them
    all itself (pyhpke's DeriveKeyPair and a sender with a derived ephemeral
    key); for the PQ suite (pyca has no derandomized X-Wing) it opens the
    request with the private key and remakes the config and the answer."""
    x = EXAMPLE_INPUTS[name]
    kem, aead = x["kem"], x["aead"]
    ensure(v["hdr"] == hdr_of(x["key_id"], kem, aead), "example %s: hdr" % name)
    ensure(v["response_nonce"] == EXAMPLE_NONCE, "example %s: nonce" % name)
    if kem == X25519_KEM:
        kp = PYHPKE.kem.derive_key_pair(x["ikm"])
        pk = kp.public_key.to_public_bytes()
        ensure(v["private_key"] == kp.private_key.to_private_bytes(), "example ehbp: private key")
        enc, sender = PYHPKE.create_sender_context(kp.public_key, info=EHBP_INFO,
                                                   eks=PYHPKE.kem.derive_key_pair(x["ikmE"]))
        ensure(v["enc"] == enc, "example ehbp: enc")
        frames = frames_of(sender.seal(c) for c in chunks(EXAMPLE_REQUEST, EXAMPLE_FRAME))
        ensure(v["request_frames"] == frames, "example ehbp: request frames")
        secret = sender.export(EHBP_EXPORT, 32)
    else:
        pk = cross_pyca.public_bytes_from_private(kem, v["private_key"])
        opened, secret = python_opens_pq(v["private_key"], pk, v["hdr"], aead, v["enc"],
                                         v["request_frames"])
        ensure(opened == EXAMPLE_REQUEST, "example pq: Python did not open the request")
    ensure(v["config"] == encode_config(x["key_id"], kem, pk, [aead]), "example %s: config" % name)
    answer = seal_response(aead, secret, v["enc"], EXAMPLE_ANSWER, EXAMPLE_NONCE)
    ensure(v["response_frames"] == answer, "example %s: response frames" % name)


def read_doc_examples():
    """The `name.field: hex` lines of docs/protocol-v2.md's examples."""
    values = {}
    with open(DOC) as f:
        for line in f:
            head, _, value = line.strip().partition(": ")
            name, _, field = head.partition(".")
            if name in EXAMPLE_INPUTS and field in EXAMPLE_FIELDS:
                values.setdefault(name, {})[field] = bytes.fromhex(value)
    return values


def check_doc_examples(peer):
    documented = read_doc_examples()
    for name in EXAMPLE_INPUTS:
        v = example_by_core(peer, name)
        check_example_independently(name, v)
        ensure(documented.get(name) == v,
               "docs/protocol-v2.md's %s example differs from what the core makes now" % name)


def print_doc_examples(peer):
    for name in EXAMPLE_INPUTS:
        v = example_by_core(peer, name)
        check_example_independently(name, v)
        print("```")
        for field in EXAMPLE_FIELDS:
            print("%s.%s: %s" % (name, field, v[field].hex()))
        print("```")


def main():
    if len(sys.argv) == 3 and sys.argv[2] == "--print-examples":
        peer = Peer(sys.argv[1])
        print_doc_examples(peer)
        peer.close()
        return
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    peer = Peer(sys.argv[1])
    check_doc_examples(peer)
    check_configs(peer)
    for kem, aead in [(X25519_KEM, AES_256_GCM), (XWING_KEM, CHACHA20), (XWING_KEM, AES_256_GCM)]:
        check_python_seals(peer, kem, aead)
        check_hushcall_seals(peer, kem, aead)
    check_hushcall_seals(peer, XWING_KEM, AES_256_GCM, 1, [CHACHA20, AES_256_GCM])
    check_tinfoil(peer)
    peer.close()
    print("cross_ehbp: %d checks passed" % cross_pyca.checks)


if __name__ == "__main__":
    main()
