"""The EHBP peer (tests/interop/ehbp_server.py) proven right with parts nobody
here wrote, before our own v2 clients are tested against it:

- the real `tinfoil-ehbp` 0.4.1 client, through its `Client` and through the
  official `openai` package on its `EHBPTransport`: a chat completion, its
  key-mismatch recovery after the peer rotates (SPEC §5.4.3), and each of the
  peer's misbehaviours making it fail;
- the peer's X-Wing and RFC 9180 key schedule, and the sender written here,
  against the published X-Wing HPKE vectors (cryptography-vectors);
- requests built here from the specs (pyhpke for X25519, pyca `cryptography`
  for X-Wing with RFC 9180's key schedule written out below) for what the
  tinfoil client never sends: bad headers and frames, replays, the
  post-quantum suite with both AEADs and several frames each way.

Every package is required: a missing import fails this module."""

import asyncio
import hashlib
import hmac
import json
import os
import struct
import sys

import cryptography_vectors
import ehbp
import httpx
import openai
import pytest
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

from processes import EHBP_SERVER, EhbpPeer

sys.path.insert(0, os.path.dirname(EHBP_SERVER))
import ehbp_server  # noqa: E402  (the peer's own X-Wing and key schedule, checked below)

CHAT = "/v1/chat/completions"
KEY_CONFIG_PROBLEM = "urn:ietf:params:ehbp:error:key-config"
KEM_X25519, KEM_XWING, KDF_SHA256 = 0x0020, 0x647A, 0x0001
AES256GCM, CHACHA = 0x0002, 0x0003
AEADS = {AES256GCM: AESGCM, CHACHA: ChaCha20Poly1305}


def chat(text, model="m"):
    return {"model": model, "messages": [{"role": "user", "content": text}]}


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    child = EhbpPeer(tmp_path_factory.mktemp("ehbp-peer"))
    yield child.url
    assert child.stop() == 0


@pytest.fixture
def fresh_peer(tmp_path):
    """A peer of its own, for tests that rotate its keys."""
    child = EhbpPeer(tmp_path)
    yield child.url
    assert child.stop() == 0


def control(url, **order):
    answer = httpx.post(url + "/__control", json=order)
    assert answer.status_code == 200, answer.text
    return answer.json()


# ---- key configs, parsed here from RFC 9458 §3 ---------------------------------------

def parse_config(data):
    """(key_id, kem_id, public key, [(kdf, aead)], rest)."""
    key_id, kem_id = struct.unpack_from(">BH", data)
    npk = {KEM_X25519: 32, KEM_XWING: 1216}[kem_id]
    public = data[3:3 + npk]
    (suites_len,) = struct.unpack_from(">H", data, 3 + npk)
    start = 5 + npk
    suites = [struct.unpack_from(">HH", data, start + i) for i in range(0, suites_len, 4)]
    return key_id, kem_id, public, suites, data[start + suites_len:]


def parse_list(data):
    configs = []
    while data:
        (length,) = struct.unpack_from(">H", data)
        configs.append(data[2:2 + length])
        data = data[2 + length:]
    return configs


def test_the_ehbp_config_is_one_bare_x25519_config_with_one_suite(peer):
    answer = httpx.get(peer + "/.well-known/hpke-keys")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/ohttp-keys"
    key_id, kem_id, public, suites, rest = parse_config(answer.content)
    assert (kem_id, suites, rest) == (KEM_X25519, [(KDF_SHA256, AES256GCM)], b"")
    identity = ehbp.ServerIdentity.unmarshal_public_config(answer.content)
    assert (identity.key_id, identity.public_key_bytes()) == (key_id, public)


def test_the_hushcall_list_holds_the_xwing_config_and_the_ehbp_one(peer):
    answer = httpx.get(peer + "/.well-known/hushcall-hpke-keys")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/ohttp-keys"
    configs = [parse_config(c) for c in parse_list(answer.content)]
    assert [c[1] for c in configs] == [KEM_XWING, KEM_X25519]
    assert configs[0][3] == [(KDF_SHA256, CHACHA), (KDF_SHA256, AES256GCM)]
    assert all(c[4] == b"" for c in configs)
    assert len({c[0] for c in configs}) == 2
    bare = httpx.get(peer + "/.well-known/hpke-keys").content
    assert parse_list(answer.content)[1] == bare


def test_a_plain_ehbp_peer_offers_no_hushcall_configs(tmp_path):
    child = EhbpPeer(tmp_path, "--plain-ehbp")
    try:
        assert httpx.get(child.url + "/.well-known/hushcall-hpke-keys").status_code == 404
        with ehbp.Client.discover(child.url) as client:
            answer = client.post(CHAT, json_body=chat("plain"))
        assert answer.json()["choices"][0]["message"]["content"] == "echo: plain"
    finally:
        assert child.stop() == 0


def test_a_body_over_the_limit_gets_413_before_anything_is_opened(tmp_path):
    child = EhbpPeer(tmp_path, "--max-body", "1000")
    try:
        with ehbp.Client.discover(child.url) as client:
            assert client.post(CHAT, json_body=chat("x" * 900)).status_code == 200
            answer = client.post(CHAT, json_body=chat("x" * 1000))
        assert answer.status_code == 413
        assert "ehbp-response-nonce" not in answer.headers
    finally:
        assert child.stop() == 0


# ---- the tinfoil-ehbp client -----------------------------------------------------------

def test_tinfoil_client_gets_a_chat_completion_over_several_frames(peer):
    text = "x" * 200_000  # tinfoil seals 64 KiB frames: four of them
    with ehbp.Client.discover(peer) as client:
        answer = client.post(CHAT, json_body=chat(text))
    assert answer.status_code == 200
    assert answer.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in answer.headers
    completion = answer.json()
    assert completion["choices"][0]["message"]["content"] == "echo: " + text
    assert completion["_peer"]["suite"] == "ehbp"
    assert completion["_peer"]["request_frames"] == 4


def test_openai_package_over_the_ehbp_transport(peer):
    with ehbp.Client.discover(peer) as discovered:
        identity = discovered.server_identity
    with httpx.Client(transport=ehbp.EHBPTransport(identity)) as http:
        client = openai.OpenAI(base_url=peer + "/v1", api_key="unused", http_client=http)
        completion = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "through openai"}])
    assert completion.choices[0].message.content == "echo: through openai"


def test_async_openai_over_the_async_ehbp_transport(peer):
    with ehbp.Client.discover(peer) as discovered:
        identity = discovered.server_identity

    async def ask():
        async with httpx.AsyncClient(transport=ehbp.AsyncEHBPTransport(identity)) as http:
            client = openai.AsyncOpenAI(base_url=peer + "/v1", api_key="unused",
                                        http_client=http)
            return await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "async"}])

    assert asyncio.run(ask()).choices[0].message.content == "echo: async"


def test_tinfoil_client_recovers_from_a_key_mismatch_after_rotation(fresh_peer):
    client = ehbp.Client.discover(fresh_peer)
    assert client.post(CHAT, json_body=chat("before")).status_code == 200
    old_id = client.server_identity.key_id
    control(fresh_peer, rotate=True)
    with pytest.raises(ehbp.KeyConfigMismatchError):
        client.post(CHAT, json_body=chat("stale"))
    client.close()
    # SPEC §5.4.3: refresh the key configuration, recreate, re-send.
    with ehbp.Client.discover(fresh_peer) as renewed:
        assert renewed.server_identity.key_id != old_id
        answer = renewed.post(CHAT, json_body=chat("after"))
    assert answer.json()["choices"][0]["message"]["content"] == "echo: after"


MISBEHAVIOURS = [
    ("strip-nonce", ehbp.MissingResponseNonceError),
    ("bad-nonce", ehbp.InvalidResponseNonceError),
    ("flip-bit", ehbp.AEADDecryptFailedError),
    ("truncate", ehbp.FramingTruncatedError),
    ("oversize-frame", ehbp.ChunkTooLargeError),
    ("other-enc", ehbp.AEADDecryptFailedError),
]


@pytest.mark.parametrize("mode,error", MISBEHAVIOURS, ids=[m for m, _ in MISBEHAVIOURS])
def test_each_misbehaviour_makes_tinfoil_fail_once(peer, mode, error):
    with ehbp.Client.discover(peer) as client:
        client.post(CHAT, json_body=chat("an earlier exchange, for other-enc"))
        control(peer, misbehave=mode)
        with pytest.raises(error):
            client.post(CHAT, json_body=chat("misbehaved"))
        assert client.post(CHAT, json_body=chat("next")).status_code == 200


def test_a_plaintext_502_reaches_tinfoil_as_an_unauthenticated_error(peer):
    with ehbp.Client.discover(peer) as client:
        control(peer, misbehave="plaintext-502")
        answer = client.post(CHAT, json_body=chat("to a failing proxy"))
        assert answer.status_code == 502
        assert "ehbp-response-nonce" not in answer.headers
        assert answer.content == b"bad gateway"
        identity = client.server_identity
    control(peer, misbehave="plaintext-502")
    with httpx.Client(transport=ehbp.EHBPTransport(identity)) as http:
        client = openai.OpenAI(base_url=peer + "/v1", api_key="unused", http_client=http,
                               max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="m", messages=[])
    assert caught.value.status_code == 502


# ---- requests built here: X25519 (pyhpke) ---------------------------------------------

def x25519_request(peer, body, frame_size=None):
    """(enc, framed body, sender context) sealed to the peer's EHBP config."""
    identity = ehbp.ServerIdentity.unmarshal_public_config(
        httpx.get(peer + "/.well-known/hpke-keys").content)
    suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256,
                            AEADId.AES256_GCM)
    public = suite.kem.deserialize_public_key(identity.public_key_bytes())
    enc, sender = suite.create_sender_context(public, info=b"ehbp request")
    size = frame_size or len(body)
    frames = b"".join(frame(sender.seal(body[i:i + size], b""))
                      for i in range(0, len(body), size))
    return enc, frames, sender


def frame(ciphertext):
    return struct.pack(">I", len(ciphertext)) + ciphertext


def post(peer, enc_hex, body, **headers):
    headers["Ehbp-Encapsulated-Key"] = enc_hex
    return httpx.post(peer + CHAT, content=body, headers=headers)


def assert_opaque_400(answer):
    assert (answer.status_code, answer.text) == (400, "bad request")
    assert "ehbp-response-nonce" not in answer.headers


def assert_key_config_problem(answer):
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"] == KEY_CONFIG_PROBLEM


BODY = json.dumps(chat("built here")).encode()


@pytest.mark.parametrize("mangle", [
    lambda h: h.upper(),              # EHBP: lowercase hex
    lambda h: h[:-2],                 # 31 bytes
    lambda h: h + "00",               # 33 bytes
    lambda h: "zz" + h[2:],           # not hex
    lambda h: "",
], ids=["uppercase", "short", "long", "not-hex", "empty"])
def test_a_malformed_encapsulated_key_gets_the_opaque_400(peer, mangle):
    enc, body, _ = x25519_request(peer, BODY)
    assert_opaque_400(post(peer, mangle(enc.hex()), body))


@pytest.mark.parametrize("mangle", [
    lambda b: b[:-1],                                  # truncated last frame
    lambda b: b + b"\x00\x00",                         # a partial length prefix
    lambda b: b + struct.pack(">I", 4 * 1024 * 1024 + 1) + b"\x00" * 16,  # over the cap
    lambda b: b[:-1] + bytes([b[-1] ^ 1]),             # a flipped bit in the second frame
    lambda b: struct.pack(">I", 0),                    # no frame at all
], ids=["truncated", "partial-prefix", "over-cap", "flipped-later-frame", "no-frame"])
def test_bad_framing_or_a_later_bad_frame_gets_the_opaque_400(peer, mangle):
    enc, body, _ = x25519_request(peer, BODY, frame_size=len(BODY) // 2 + 1)
    assert_opaque_400(post(peer, enc.hex(), mangle(body)))


def test_an_ehbp_request_opening_under_no_live_key_gets_the_key_config_problem(peer):
    enc, body, _ = x25519_request(peer, BODY)
    flipped = body[:4] + bytes([body[4] ^ 1]) + body[5:]
    assert_key_config_problem(post(peer, enc.hex(), flipped))
    # A low-order share fails in decapsulation, not in the AEAD: the same answer,
    # so the status is no oracle for which step failed (EHBP §5.4.4).
    assert_key_config_problem(post(peer, "00" * 32, body))


def test_a_replayed_enc_gets_409_and_no_answer(peer):
    enc, body, _ = x25519_request(peer, BODY)
    assert post(peer, enc.hex(), body).status_code == 200
    replay = post(peer, enc.hex(), body)
    assert replay.status_code == 409
    assert "ehbp-response-nonce" not in replay.headers


def test_a_request_without_the_header_is_answered_in_plaintext(peer):
    answer = httpx.post(peer + CHAT, json=chat("in the clear"))
    assert answer.status_code == 200
    assert "ehbp-response-nonce" not in answer.headers
    assert answer.json()["choices"][0]["message"]["content"] == "echo: in the clear"


def test_an_answer_that_is_not_json_is_still_sealed(peer):
    enc, body, sender = x25519_request(peer, b"not json")
    answer = post(peer, enc.hex(), body)
    assert answer.status_code == 400
    secret = sender.export(b"ehbp response", 32)
    plaintext, _ = open_answer(answer, enc, secret, AES256GCM)
    assert "error" in json.loads(plaintext)


# ---- the post-quantum suite, from the RFC and the X-Wing draft -------------------------

def hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand(prk, info, length):
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(prk)


def xwing_encapsulate(public):
    """(shared secret, enc) for an X-Wing public key (ML-KEM-768 ek || X25519)."""
    pk_m, pk_x = public[:1184], public[1184:]
    ss_m, ct_m = mlkem.MLKEM768PublicKey.from_public_bytes(pk_m).encapsulate()
    ephemeral = x25519.X25519PrivateKey.generate()
    ct_x = ephemeral.public_key().public_bytes_raw()
    ss_x = ephemeral.exchange(x25519.X25519PublicKey.from_public_bytes(pk_x))
    label = b"\\.//^\\"
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + label).digest(), ct_m + ct_x


class Sender:
    """RFC 9180 §5.1 base mode, sender side: seal in sequence, Export."""

    def __init__(self, shared_secret, aead_id, info):
        suite_id = b"HPKE" + struct.pack(">HHH", KEM_XWING, KDF_SHA256, aead_id)

        def extract(salt, label, ikm):
            return hkdf_extract(salt, b"HPKE-v1" + suite_id + label + ikm)

        def expand(prk, label, context, length):
            return hkdf_expand(prk, struct.pack(">H", length) + b"HPKE-v1" + suite_id
                               + label + context, length)

        context = b"\x00" + extract(b"", b"psk_id_hash", b"") + extract(b"", b"info_hash", info)
        secret = extract(shared_secret, b"secret", b"")
        self.aead = AEADS[aead_id](expand(secret, b"key", context, 32))
        self.base_nonce = expand(secret, b"base_nonce", context, 12)
        self.exporter = expand(secret, b"exp", context, 32)
        self.expand, self.seq = expand, 0

    def seal(self, plaintext, aad=b""):
        nonce = (int.from_bytes(self.base_nonce, "big") ^ self.seq).to_bytes(12, "big")
        self.seq += 1
        return self.aead.encrypt(nonce, plaintext, aad)

    def export(self, label, length):
        return self.expand(self.exporter, b"sec", label, length)


def open_answer(answer, enc, secret, aead_id):
    """EHBP §4.4 with the given AEAD: every frame opened, in order."""
    nonce = bytes.fromhex(answer.headers["ehbp-response-nonce"])
    assert len(nonce) == 32
    prk = hkdf_extract(enc + nonce, secret)
    aead = AEADS[aead_id](hkdf_expand(prk, b"key", 32))
    base = int.from_bytes(hkdf_expand(prk, b"nonce", 12), "big")
    body, plaintext, seq = answer.content, b"", 0
    while body:
        (length,) = struct.unpack_from(">I", body)
        ciphertext, body = body[4:4 + length], body[4 + length:]
        assert len(ciphertext) == length
        plaintext += aead.decrypt((base ^ seq).to_bytes(12, "big"), ciphertext, b"")
        seq += 1
    return plaintext, seq


def xwing_config(peer):
    configs = [parse_config(c) for c in
               parse_list(httpx.get(peer + "/.well-known/hushcall-hpke-keys").content)]
    return next(c for c in configs if c[1] == KEM_XWING)


def pq_header(key_id, aead_id):
    return struct.pack(">BHHH", key_id, KEM_XWING, KDF_SHA256, aead_id)


@pytest.mark.parametrize("aead_id", [CHACHA, AES256GCM], ids=["chacha20poly1305", "aes256gcm"])
def test_the_pq_suite_over_several_frames_each_way(peer, aead_id):
    key_id, _, public, _, _ = xwing_config(peer)
    hdr = pq_header(key_id, aead_id)
    shared, enc = xwing_encapsulate(public)
    sender = Sender(shared, aead_id, b"hushcall-v2 request\x00" + hdr)
    text = "post-quantum " * 30
    body = json.dumps(chat(text)).encode()
    framed = b"".join(frame(sender.seal(body[i:i + 100])) for i in range(0, len(body), 100))
    answer = post(peer, enc.hex(), framed, **{"Hushcall-Key-Config": hdr.hex()})
    assert answer.status_code == 200, answer.text
    plaintext, frames = open_answer(answer, enc, sender.export(b"hushcall-v2 response", 32),
                                    aead_id)
    completion = json.loads(plaintext)
    assert completion["choices"][0]["message"]["content"] == "echo: " + text
    assert completion["_peer"] == {"suite": "pq", "aead": aead_id, "key_id": key_id,
                                   "request_frames": -(-len(body) // 100)}
    assert frames > 1
    replay = post(peer, enc.hex(), framed, **{"Hushcall-Key-Config": hdr.hex()})
    assert replay.status_code == 409


@pytest.mark.parametrize("aead", [hpke.AEAD.CHACHA20_POLY1305, hpke.AEAD.AES_256_GCM])
def test_a_request_sealed_by_pycas_own_hpke_opens(peer, aead):
    aead_id = CHACHA if aead is hpke.AEAD.CHACHA20_POLY1305 else AES256GCM
    key_id, _, public, _, _ = xwing_config(peer)
    hdr = pq_header(key_id, aead_id)
    recipient = hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(public[:1184]),
        x25519.X25519PublicKey.from_public_bytes(public[1184:]))
    sealed = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, aead).encrypt(
        BODY, recipient, info=b"hushcall-v2 request\x00" + hdr)
    enc, ciphertext = sealed[:1120], sealed[1120:]
    headers = {"Hushcall-Key-Config": hdr.hex()}
    flipped = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    assert_opaque_400(post(peer, enc.hex(), frame(flipped), **headers))
    answer = post(peer, enc.hex(), frame(ciphertext), **headers)
    assert answer.status_code == 200
    assert len(bytes.fromhex(answer.headers["ehbp-response-nonce"])) == 32


def test_pq_requests_under_the_wrong_labels_or_config_are_refused(peer):
    key_id, _, public, _, _ = xwing_config(peer)
    hdr = pq_header(key_id, CHACHA)
    shared, enc = xwing_encapsulate(public)
    ehbp_labels = Sender(shared, CHACHA, b"ehbp request")
    answer = post(peer, enc.hex(), frame(ehbp_labels.seal(BODY)),
                  **{"Hushcall-Key-Config": hdr.hex()})
    assert_opaque_400(answer)
    shared, enc = xwing_encapsulate(public)
    good = frame(Sender(shared, CHACHA, b"hushcall-v2 request\x00" + hdr).seal(BODY))
    unknown = pq_header((key_id + 100) % 256, CHACHA)
    assert_key_config_problem(post(peer, enc.hex(), good,
                                   **{"Hushcall-Key-Config": unknown.hex()}))
    wrong_kdf = struct.pack(">BHHH", key_id, KEM_XWING, 0x0002, CHACHA)
    assert_key_config_problem(post(peer, enc.hex(), good,
                                   **{"Hushcall-Key-Config": wrong_kdf.hex()}))
    assert_opaque_400(post(peer, enc.hex(), good, **{"Hushcall-Key-Config": "zz"}))
    assert_opaque_400(post(peer, enc.hex().upper(), good,
                           **{"Hushcall-Key-Config": unknown.hex()}))
    assert_opaque_400(post(peer, enc.hex()[:-2], good, **{"Hushcall-Key-Config": hdr.hex()}))
    # none of these was accepted, so the same enc still opens once
    assert post(peer, enc.hex(), good, **{"Hushcall-Key-Config": hdr.hex()}).status_code == 200


def test_a_pq_key_is_refused_with_the_key_config_problem_after_rotation(fresh_peer):
    key_id, _, public, _, _ = xwing_config(fresh_peer)
    hdr = pq_header(key_id, CHACHA)
    shared, enc = xwing_encapsulate(public)
    body = frame(Sender(shared, CHACHA, b"hushcall-v2 request\x00" + hdr).seal(BODY))
    control(fresh_peer, rotate=True)
    assert xwing_config(fresh_peer)[0] != key_id
    assert_key_config_problem(post(fresh_peer, enc.hex(), body,
                                   **{"Hushcall-Key-Config": hdr.hex()}))


def test_an_ehbp_request_may_name_the_x25519_config(peer):
    config = httpx.get(peer + "/.well-known/hpke-keys").content
    named = config[:3] + struct.pack(">HH", KDF_SHA256, AES256GCM)
    enc, body, sender = x25519_request(peer, BODY)
    answer = post(peer, enc.hex(), body, **{"Hushcall-Key-Config": named.hex()})
    assert answer.status_code == 200
    plaintext, _ = open_answer(answer, enc, sender.export(b"ehbp response", 32), AES256GCM)
    assert json.loads(plaintext)["_peer"]["suite"] == "ehbp"


# ---- known answers: the X-Wing HPKE vectors of draft-ietf-hpke-pq ---------------------

def xwing_vectors():
    with cryptography_vectors.open_vector_file(
            os.path.join("HPKE", "hpke-pq-test-vectors.json"), "r") as f:
        entries = json.load(f)
    chosen = [e for e in entries if (e["mode"], e["kem_id"], e["kdf_id"])
              == (0, KEM_XWING, KDF_SHA256) and e["aead_id"] in AEADS]
    assert chosen, "no base-mode X-Wing / HKDF-SHA256 vector"
    return chosen


@pytest.mark.parametrize("vector", xwing_vectors(), ids=lambda v: "aead%d" % v["aead_id"])
def test_the_peers_xwing_and_key_schedule_give_the_published_answers(vector):
    h = {k: bytes.fromhex(v) for k, v in vector.items() if isinstance(v, str)}
    key = ehbp_server.XWingKey(h["skRm"])
    assert key.public_bytes == h["pkRm"]
    assert key.decapsulate(h["enc"]) == h["shared_secret"]
    context = ehbp_server.Rfc9180Context(h["shared_secret"], h["suite_id"], h["info"],
                                         vector["aead_id"])
    for sealed in vector["encryptions"]:
        e = {k: bytes.fromhex(v) for k, v in sealed.items()}
        assert context.open(e["ct"], e["aad"]) == e["pt"]
    for export in vector["exports"]:
        assert context.export(bytes.fromhex(export["exporter_context"]), export["L"]) \
            == bytes.fromhex(export["exported_value"])


@pytest.mark.parametrize("vector", xwing_vectors(), ids=lambda v: "aead%d" % v["aead_id"])
def test_the_sender_written_here_gives_the_published_answers(vector):
    h = {k: bytes.fromhex(v) for k, v in vector.items() if isinstance(v, str)}
    sender = Sender(h["shared_secret"], vector["aead_id"], h["info"])
    for sealed in vector["encryptions"]:
        e = {k: bytes.fromhex(v) for k, v in sealed.items()}
        assert sender.seal(e["pt"], e["aad"]) == e["ct"]
    for export in vector["exports"]:
        assert sender.export(bytes.fromhex(export["exporter_context"]), export["L"]) \
            == bytes.fromhex(export["exported_value"])
