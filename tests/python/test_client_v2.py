"""Client and AsyncClient over protocol v2 (docs/protocol-v2.md) against the
independent EHBP server (tests/interop/ehbp_server.py): the post-quantum
suite preferred, a plain EHBP server, the v2 key pin (its fingerprint made
here from docs/crypto.md's formula), require_pq, answers that must fail
closed, a rotation, and SecureChatCompletion staying on v1."""

import asyncio
import hashlib
import struct

import httpx
import pytest

import hushcall
from processes import EhbpPeer

KEM_XWING = 0x647A


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    child = EhbpPeer(tmp_path_factory.mktemp("ehbp-peer"))
    yield child.url
    assert child.stop() == 0


@pytest.fixture(scope="module")
def plain_peer(tmp_path_factory):
    child = EhbpPeer(tmp_path_factory.mktemp("ehbp-plain"), "--plain-ehbp")
    yield child.url
    assert child.stop() == 0


def control(url, **order):
    answer = httpx.post(url + "/__control", json=order)
    assert answer.status_code == 200, answer.text


def user(text):
    return [{"role": "user", "content": text}]


def xwing_fingerprint(url):
    """sha256 over kem_id (2 bytes) || public key, of the X-Wing config in the
    peer's RFC 9458 §3.2 list."""
    data = httpx.get(url + "/.well-known/hushcall-hpke-keys").content
    while data:
        (length,) = struct.unpack(">H", data[:2])
        config, data = data[2:2 + length], data[2 + length:]
        (kem_id,) = struct.unpack(">H", config[1:3])
        if kem_id == KEM_XWING:
            public_key = config[3:3 + 1216]
            return "sha256:" + hashlib.sha256(config[1:3] + public_key).hexdigest()
    pytest.fail("the peer lists no X-Wing config")


def test_auto_prefers_the_post_quantum_suite(peer):
    client = hushcall.Client(peer, allow_http=True)
    resp = client.chat.completions.create(model="m", messages=user("hello v2"))
    assert resp.choices[0].message.content == "echo: hello v2"
    assert resp["_peer"]["suite"] == "pq"
    meta = resp["_metadata"]
    assert meta["protocol"] == "v2"
    assert meta["suite"] == "xwing-chacha20poly1305"
    assert meta["status"] == 200
    assert meta["key_id"] == resp["_peer"]["key_id"]
    assert meta["server_key_fingerprint"] == xwing_fingerprint(peer)
    resp.wipe()


def test_the_pin_is_checked(peer):
    pinned = hushcall.Client(peer, allow_http=True, protocol="v2",
                             v2_key_fingerprint=xwing_fingerprint(peer))
    assert pinned.create(model="m", messages=user("pinned"))["_peer"]["suite"] == "pq"
    wrong = hushcall.Client(peer, allow_http=True, protocol="v2",
                            v2_key_fingerprint="sha256:" + "ab" * 32)
    with pytest.raises(hushcall.SecurityError, match="v2_key_fingerprint"):
        wrong.create(model="m", messages=user("wrong pin"))


def test_async_client_against_a_plain_ehbp_server(plain_peer):
    async def ask():
        client = hushcall.AsyncClient(plain_peer, allow_http=True)
        try:
            resp = await client.chat.completions.create(model="m", messages=user("async"))
            return resp["choices"][0]["message"]["content"] == "echo: async", \
                resp["_metadata"]["suite"] == "ehbp-x25519-aes256gcm"
        finally:
            await client.aclose()

    assert asyncio.run(ask()) == (True, True)


def test_require_pq_refuses_a_plain_ehbp_server(plain_peer):
    client = hushcall.Client(plain_peer, allow_http=True, require_pq=True)
    with pytest.raises(hushcall.SecurityError, match="require_pq"):
        client.create(model="m", messages=user("must not be sent"))


@pytest.mark.parametrize("mode", ["strip-nonce", "bad-nonce", "flip-bit", "truncate",
                                  "other-enc"])
def test_a_misbehaving_answer_fails_closed_and_the_client_stays_usable(peer, mode):
    client = hushcall.Client(peer, allow_http=True, protocol="v2")
    control(peer, misbehave=mode)
    with pytest.raises(hushcall.SecurityError):
        client.create(model="m", messages=user("secret"))
    assert client.create(model="m", messages=user("after"))["_peer"]["suite"] == "pq"


def test_a_rotation_is_followed(tmp_path):
    child = EhbpPeer(tmp_path)
    try:
        client = hushcall.Client(child.url, allow_http=True)
        assert client.create(model="m", messages=user("old"))["_peer"]["suite"] == "pq"
        control(child.url, rotate=True)
        resp = client.create(model="m", messages=user("new"))
        assert resp.choices[0].message.content == "echo: new"
    finally:
        assert child.stop() == 0


def test_bad_protocol_is_refused(peer):
    with pytest.raises(ValueError):
        hushcall.Client(peer, allow_http=True, protocol="v3")


def test_secure_chat_completion_stays_on_v1(peer):
    """The EHBP peer has no /pki/public_key (it routes only POSTs there, so v1's
    GET of the key gets 405), while a v2 request would be answered."""
    client = hushcall.SecureChatCompletion(base_url=peer, allow_http=True, protocol="v2",
                                           key_bits=2048)
    with pytest.raises(hushcall.APIError) as raised:
        asyncio.run(client.create(model="m", messages=user("v1 only")))
    assert raised.value.status_code == 405
