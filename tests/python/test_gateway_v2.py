"""Protocol v2 in `python -m hushcall serve` (docs/gateway.md "Protocol v2",
docs/protocol-v2.md), with parts nobody here wrote: the real tinfoil-ehbp
0.4.1 client (its Client, and the openai package over its EHBPTransport),
the post-quantum suite through the independent pyca client of
test_ehbp_peer.py (X-Wing from the draft, RFC 9180's schedule), and each bad
input of issue 14 with the status EHBP §5 prescribes, none of which reaches
the upstream (FakeOpenAI counts what it gets). Key rotation is waited for by
polling the config endpoints, never by timing."""

import json
import struct
import time

import ehbp
import httpx
import openai
import pytest

from hushcall import _core
from hushcall.errors import HushcallError
from processes import Gateway, keys_copy
from test_ehbp_peer import (AES256GCM, CHACHA, KEM_X25519, KEM_XWING, KEY_CONFIG_PROBLEM,
                            Sender, assert_key_config_problem, chat, frame, open_answer,
                            parse_config, parse_list, post, pq_header, x25519_request,
                            xwing_encapsulate)

CHAT = "/v1/chat/completions"
CANARY = "CANARY-v2-5e1d"
OPAQUE = "Invalid encrypted payload"
PQ_INFO = b"hushcall-v2 request\x00"
PQ_EXPORT = b"hushcall-v2 response"
BODY = json.dumps(chat("sealed " + CANARY)).encode()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, server_keys, upstream):
    tmp = tmp_path_factory.mktemp("gw-v2")
    gw = Gateway(tmp, "--backend", "openai:" + upstream.url, "--log-format", "json",
                 key_dir=keys_copy(server_keys, tmp))
    yield gw
    assert gw.stop() == 0


def upstream_count(upstream):
    return httpx.get("http://127.0.0.1:%d/_last" % upstream.port).json()["count"]


def upstream_body(upstream):
    return json.loads(httpx.get("http://127.0.0.1:%d/_last" % upstream.port).json()["body"])


def hushcall_configs(url):
    answer = httpx.get(url + "/.well-known/hushcall-hpke-keys")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/ohttp-keys"
    return [parse_config(c) for c in parse_list(answer.content)]


def ehbp_key_id(url):
    return parse_config(httpx.get(url + "/.well-known/hpke-keys").content)[0]


def assert_opaque_400(answer):
    assert answer.status_code == 400
    assert answer.json() == {"detail": OPAQUE}
    assert "ehbp-response-nonce" not in answer.headers


# ---- discovery -------------------------------------------------------------------------

def test_the_ehbp_config_is_one_bare_x25519_config_with_one_suite(gateway):
    answer = httpx.get(gateway.url + "/.well-known/hpke-keys")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/ohttp-keys"
    key_id, kem, public, suites, rest = parse_config(answer.content)
    assert (kem, len(public), suites, rest) == (KEM_X25519, 32, [(1, AES256GCM)], b"")
    assert ehbp.ServerIdentity.unmarshal_public_config(answer.content).key_id == key_id


def test_the_hushcall_list_holds_the_xwing_config_and_the_ehbp_one(gateway):
    configs = hushcall_configs(gateway.url)
    by_kem = {c[1]: c for c in configs}
    assert set(by_kem) == {KEM_X25519, KEM_XWING}
    assert by_kem[KEM_XWING][3] == [(1, CHACHA), (1, AES256GCM)]
    assert len(by_kem[KEM_XWING][2]) == 1216
    assert by_kem[KEM_X25519][0] == ehbp_key_id(gateway.url)
    assert len({c[0] for c in configs}) == len(configs)


# ---- the tinfoil-ehbp client -------------------------------------------------------------

def test_tinfoil_client_gets_a_chat_completion_over_several_frames(gateway, upstream):
    text = CANARY + "x" * 200_000  # tinfoil seals 64 KiB frames: four of them
    with ehbp.Client.discover(gateway.url) as client:
        answer = client.post(CHAT, json_body=chat(text))
    assert answer.status_code == 200
    assert answer.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in answer.headers
    completion = answer.json()
    assert completion["choices"][0]["message"]["content"] == "upstream: " + text
    assert "_metadata" not in completion  # v2 clients assemble their own
    assert upstream_body(upstream) == chat(text)


def test_openai_package_over_the_ehbp_transport(gateway):
    with ehbp.Client.discover(gateway.url) as discovered:
        identity = discovered.server_identity
    with httpx.Client(transport=ehbp.EHBPTransport(identity)) as http:
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused",
                               http_client=http)
        completion = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "through openai " + CANARY}])
    assert completion.choices[0].message.content == "upstream: through openai " + CANARY


# ---- the post-quantum suite, through the independent pyca client --------------------------

def xwing_config(url):
    return next(c for c in hushcall_configs(url) if c[1] == KEM_XWING)


def pq_request(url, body, aead_id, size=100):
    """(enc, Hushcall-Key-Config, framed body, sender) sealed to the X-Wing config."""
    key_id, _, public, _, _ = xwing_config(url)
    hdr = pq_header(key_id, aead_id)
    shared, enc = xwing_encapsulate(public)
    sender = Sender(shared, aead_id, PQ_INFO + hdr)
    framed = b"".join(frame(sender.seal(body[i:i + size])) for i in range(0, len(body), size))
    return enc, hdr, framed, sender


@pytest.mark.parametrize("aead_id", [CHACHA, AES256GCM], ids=["chacha20poly1305", "aes256gcm"])
def test_the_pq_suite_over_several_frames_each_way(gateway, upstream, aead_id):
    text = "post-quantum " * 30 + CANARY
    body = json.dumps(chat(text)).encode()
    enc, hdr, framed, sender = pq_request(gateway.url, body, aead_id)
    answer = post(gateway.url, enc.hex(), framed, **{"Hushcall-Key-Config": hdr.hex()})
    assert answer.status_code == 200, answer.text
    assert answer.headers["transfer-encoding"] == "chunked"
    plaintext, _ = open_answer(answer, enc, sender.export(PQ_EXPORT, 32), aead_id)
    assert json.loads(plaintext)["choices"][0]["message"]["content"] == "upstream: " + text
    assert upstream_body(upstream) == chat(text)


# ---- bad input: EHBP §5, and nothing reaches the upstream ---------------------------------

@pytest.fixture
def nothing_reaches_upstream(upstream):
    before = upstream_count(upstream)
    yield
    assert upstream_count(upstream) == before


@pytest.mark.parametrize("mangle", [
    lambda h: h.upper(),              # EHBP: lowercase hex
    lambda h: h[:-2],                 # 31 bytes
    lambda h: h + "00",               # 33 bytes
    lambda h: "zz" + h[2:],           # not hex
    lambda h: "",
], ids=["uppercase", "short", "long", "not-hex", "empty"])
def test_a_malformed_encapsulated_key_gets_the_opaque_400(gateway, nothing_reaches_upstream,
                                                          mangle):
    enc, body, _ = x25519_request(gateway.url, BODY)
    assert_opaque_400(post(gateway.url, mangle(enc.hex()), body))


@pytest.mark.parametrize("mangle", [
    lambda b: b[:-1],                                  # truncated last frame
    lambda b: b + b"\x00\x00",                         # a partial length prefix
    lambda b: b + struct.pack(">I", 4 * 1024 * 1024 + 1) + b"\x00" * 16,  # over the cap
    lambda b: b[:-1] + bytes([b[-1] ^ 1]),             # a flipped bit in the second frame
], ids=["truncated", "partial-prefix", "over-cap", "flipped-later-frame"])
def test_bad_framing_or_a_later_bad_frame_gets_the_opaque_400(gateway, nothing_reaches_upstream,
                                                              mangle):
    enc, body, _ = x25519_request(gateway.url, BODY, frame_size=len(BODY) // 2 + 1)
    assert_opaque_400(post(gateway.url, enc.hex(), mangle(body)))


def test_an_ehbp_request_opening_under_no_live_key_gets_the_key_config_problem(
        gateway, nothing_reaches_upstream):
    enc, body, _ = x25519_request(gateway.url, BODY)
    flipped = body[:4] + bytes([body[4] ^ 1]) + body[5:]
    assert_key_config_problem(post(gateway.url, enc.hex(), flipped))
    assert_key_config_problem(post(gateway.url, "00" * 32, body))  # a low-order share


def test_a_pq_request_naming_no_live_config_or_failing_to_open(gateway, nothing_reaches_upstream):
    enc, hdr, framed, _ = pq_request(gateway.url, BODY, CHACHA)
    unknown = bytes([(hdr[0] + 100) % 256]) + hdr[1:]
    assert_key_config_problem(post(gateway.url, enc.hex(), framed,
                                   **{"Hushcall-Key-Config": unknown.hex()}))
    assert_opaque_400(post(gateway.url, enc.hex(), framed, **{"Hushcall-Key-Config": "zz"}))
    flipped = framed[:-1] + bytes([framed[-1] ^ 1])
    assert_opaque_400(post(gateway.url, enc.hex(), flipped,
                           **{"Hushcall-Key-Config": hdr.hex()}))
    assert_opaque_400(post(gateway.url, enc.hex()[:-2], framed,
                           **{"Hushcall-Key-Config": hdr.hex()}))


def test_a_body_over_the_limit_gets_413(gateway, nothing_reaches_upstream):
    enc, _, _ = x25519_request(gateway.url, BODY)
    answer = post(gateway.url, enc.hex(), b"\x00" * (16 * 1024 * 1024 + 1))
    assert answer.status_code == 413
    assert "ehbp-response-nonce" not in answer.headers


def test_a_sealed_body_that_is_not_a_json_object_gets_the_opaque_400(
        gateway, nothing_reaches_upstream):
    for plaintext in (b"not json", b"[1, 2]"):
        enc, body, _ = x25519_request(gateway.url, plaintext)
        assert_opaque_400(post(gateway.url, enc.hex(), body))


def test_a_plaintext_completion_is_refused(gateway, nothing_reaches_upstream):
    answer = httpx.post(gateway.url + CHAT, json=chat("in the clear " + CANARY))
    assert answer.status_code == 400
    assert "Ehbp-Encapsulated-Key" in answer.json()["detail"]


def answered_then_replayed(first_url, again_url):
    """An X25519 request answered (and opened) at `first_url`, then its very
    bytes sent to `again_url`: the second answer."""
    enc, body, sender = x25519_request(first_url, BODY)
    first = post(first_url, enc.hex(), body)
    assert first.status_code == 200
    plaintext, _ = open_answer(first, enc, sender.export(b"ehbp response", 32), AES256GCM)
    assert json.loads(plaintext)["choices"][0]["message"]["content"].endswith(CANARY)
    return post(again_url, enc.hex(), body)


def test_a_replayed_enc_gets_409_and_reaches_the_upstream_once(gateway, upstream):
    before = upstream_count(upstream)
    replay = answered_then_replayed(gateway.url, gateway.url)
    assert replay.status_code == 409
    assert "ehbp-response-nonce" not in replay.headers
    assert upstream_count(upstream) == before + 1


def test_the_access_log_has_v2_lines_and_no_plaintext(gateway):
    with ehbp.Client.discover(gateway.url) as client:
        assert client.post(CHAT, json_body=chat("log me not " + CANARY)).status_code == 200
    log = gateway.log()
    assert CANARY not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    v2 = [r for r in lines if r.get("protocol") == "v2" and r["status"] == 200]
    assert v2 and all(r["bytes_in"] > 0 and r["bytes_out"] > 0 and r["open_ms"] is not None
                      for r in v2)


# ---- rotation ------------------------------------------------------------------------------

def wait_until(condition):
    """Poll the gateway until `condition` holds (no deadline asserted: pytest's
    own timeout, if any, bounds it)."""
    while not condition():
        time.sleep(0.1)


def test_tinfoil_client_recovers_from_a_key_mismatch_after_rotation(tmp_path, server_keys):
    gw = Gateway(tmp_path, "--key-lifetime", "4", "--key-overlap", "2",
                 key_dir=keys_copy(server_keys, tmp_path))
    try:
        client = ehbp.Client.discover(gw.url)
        old_id = client.server_identity.key_id
        assert client.post(CHAT, json_body=chat("before")).status_code == 200
        # the next key is published before the old one goes ...
        wait_until(lambda: ehbp_key_id(gw.url) != old_id)
        # ... and once the old one has expired, its requests get the key-config problem
        wait_until(lambda: old_id not in {c[0] for c in hushcall_configs(gw.url)})
        with pytest.raises(ehbp.KeyConfigMismatchError):
            client.post(CHAT, json_body=chat("stale"))
        client.close()
        with ehbp.Client.discover(gw.url) as renewed:  # EHBP §5.4.3: refetch, re-send
            assert renewed.server_identity.key_id != old_id
            answer = renewed.post(CHAT, json_body=chat("after"))
        assert answer.json()["choices"][0]["message"]["content"] == "echo: after"
    finally:
        assert gw.stop() == 0


def test_no_v2_serves_v1_only(tmp_path, server_keys):
    gw = Gateway(tmp_path, "--no-v2", key_dir=keys_copy(server_keys, tmp_path))
    try:
        assert httpx.get(gw.url + "/.well-known/hpke-keys").status_code == 404
        assert httpx.post(gw.url + CHAT, content=b"x").status_code in (404, 405)
        assert httpx.get(gw.url + "/pki/public_key").status_code == 200
    finally:
        assert gw.stop() == 0


def test_v2_takes_the_api_key_and_rate_limit_of_v1(tmp_path, server_keys, upstream):
    gw = Gateway(tmp_path, "--backend", "openai:" + upstream.url, "--api-key", "k-v2",
                 "--rate-limit", "0.001", "--rate-burst", "1",
                 key_dir=keys_copy(server_keys, tmp_path))
    try:
        enc, body, _ = x25519_request(gw.url, BODY)
        before = upstream_count(upstream)
        assert post(gw.url, enc.hex(), body).status_code == 401
        assert post(gw.url, enc.hex(), body, Authorization="Bearer wrong").status_code == 401
        assert upstream_count(upstream) == before
        with ehbp.Client.discover(gw.url) as discovered:
            identity = discovered.server_identity
        with httpx.Client(transport=ehbp.EHBPTransport(identity)) as http:
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k-v2", http_client=http,
                                   max_retries=0)
            completion = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "with a key"}])
            assert completion.choices[0].message.content == "upstream: with a key"
            with pytest.raises(openai.RateLimitError):  # one request per 1000 s
                client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "too soon"}])
        assert upstream_count(upstream) == before + 1
    finally:
        assert gw.stop() == 0


# ---- the binding's checks ----------------------------------------------------------------

def test_the_binding_refuses_keys_that_are_not_key_pairs_and_a_bare_list():
    key = _core.HpkeKeypair.generate(KEM_X25519)
    server = _core.Server(_core.KeyPair.generate(2048))
    for keys in ([key], [(1, "not a key")], [(256, key)], 5):
        with pytest.raises(TypeError):
            server.open_v2("00" * 32, b"", keys)
    with pytest.raises(ValueError):
        _core.v2_key_configs([(1, key), (2, key)], bare=True)
    with pytest.raises(HushcallError) as caught:
        server.open_v2("00" * 32, b"", [])
    assert caught.value.http_status == 422
