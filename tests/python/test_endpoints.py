"""The rest of OpenAI's surface over protocol v2 (docs/python.md "Endpoints"):
completions, embeddings, models and the generic request() on Client and
AsyncClient, against our gateway's echo backend (which answers chat,
completions and embeddings, and 404 to any other path) and the independent
EHBP server. The shapes checked are OpenAI's (its API reference for
text_completion, embedding lists and model lists); the bodyless GET of the
models is shown to go and come back in plaintext (EHBP §7.4) on the wire,
while a POST's body never does."""

import asyncio
import base64
import json
import struct

import pytest

import hushcall
from processes import EhbpPeer, Gateway, keys_copy
from tcp_watch import TcpWatch


def port_of(url):
    return int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, server_keys):
    tmp = tmp_path_factory.mktemp("gw-endpoints")
    gw = Gateway(tmp, key_dir=keys_copy(server_keys, tmp))
    yield gw
    assert gw.stop() == 0


@pytest.fixture
def watch(gateway):
    relay = TcpWatch(port_of(gateway.url))
    yield relay
    relay.close()


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    child = EhbpPeer(tmp_path_factory.mktemp("ehbp-endpoints"))
    yield child.url
    assert child.stop() == 0


@pytest.fixture(scope="module")
def client(gateway):
    return hushcall.Client(gateway.url, allow_http=True)


def float32s(text):
    raw = base64.b64decode(str(text))
    assert len(raw) % 4 == 0
    return list(struct.unpack("<%df" % (len(raw) // 4), raw))


# ---- completions ---------------------------------------------------------------------


def test_text_completion(client):
    resp = client.completions.create(model="m", prompt="complete this")
    assert resp["object"] == "text_completion"
    choice = resp["choices"][0]
    assert "complete this" in str(choice["text"])
    assert choice["finish_reason"] == "stop"
    assert resp["_metadata"]["is_encrypted"] is True
    assert resp["_metadata"]["protocol"] == "v2"
    resp.wipe()


# ---- embeddings ----------------------------------------------------------------------


def test_embeddings_are_deterministic_vectors(client):
    first = client.embeddings.create(model="m", input="the same text")
    assert first["object"] == "list"
    data = first["data"]
    assert len(data) == 1
    assert data[0]["object"] == "embedding"
    assert data[0]["index"] == 0
    vector = [float(x) for x in data[0]["embedding"]]
    assert len(vector) > 1
    assert all(isinstance(x, float) for x in vector)
    assert first["_metadata"]["is_encrypted"] is True
    again = client.embeddings.create(model="m", input="the same text")
    assert [float(x) for x in again["data"][0]["embedding"]] == vector
    other = client.embeddings.create(model="m", input="another text")
    assert [float(x) for x in other["data"][0]["embedding"]] != vector


def test_embeddings_of_a_list_and_in_base64(client):
    listed = client.embeddings.create(model="m", input=["one", "two", "three"])
    assert [d["index"] for d in listed["data"]] == [0, 1, 2]
    floats = [[float(x) for x in d["embedding"]] for d in listed["data"]]
    encoded = client.embeddings.create(model="m", input=["one", "two", "three"],
                                       encoding_format="base64")
    # OpenAI's base64 form: the little-endian float32s of the same vector.
    decoded = [float32s(d["embedding"]) for d in encoded["data"]]
    assert len(decoded) == 3
    for got, want in zip(decoded, floats):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-6)


# ---- models: a bodyless GET, in plaintext ----------------------------------------------


def test_models_list_is_plaintext(watch):
    client = hushcall.Client(watch.url, allow_http=True)
    models = client.models.list()
    assert models["object"] == "list"
    assert len(models["data"]) >= 1
    for model in models["data"]:
        assert model["object"] == "model"
        assert isinstance(str(model["id"]), str)
    assert models["_metadata"]["is_encrypted"] is False
    first_id = str(models["data"][0]["id"])
    sent, received = watch.traffic()
    request_head = sent.split(b"\r\n\r\n", 1)[0].lower()
    assert request_head.startswith(b"get /v1/models ")
    assert b"ehbp-encapsulated-key" not in request_head
    assert first_id.encode() in received  # the answer came in plaintext, as §7.4 says
    assert b"ehbp-response-nonce" not in received.lower()


def test_a_sealed_post_never_shows_its_body(watch):
    client = hushcall.Client(watch.url, allow_http=True)
    resp = client.embeddings.create(model="m", input="wire-visible-marker-31337")
    assert resp["data"][0]["object"] == "embedding"
    sent, received = watch.traffic()
    assert b"wire-visible-marker-31337" not in sent
    assert b"POST /v1/embeddings " in sent
    assert b"ehbp-encapsulated-key" in sent.lower()


# ---- request(): any endpoint -----------------------------------------------------------


def test_generic_request(client):
    embedding = client.request("POST", "/v1/embeddings", json={"model": "m", "input": "x"})
    assert embedding["data"][0]["object"] == "embedding"
    chat = client.request("post", "/v1/chat/completions",
                          json={"model": "m", "messages": [{"role": "user", "content": "req"}]})
    assert chat.choices[0].message.content == "echo: req"
    models = client.request("GET", "/v1/models")
    assert models["_metadata"]["is_encrypted"] is False
    assert models.to_dict()["object"] == "list"


def test_an_unknown_endpoint_is_404_and_the_client_stays_usable(client):
    with pytest.raises(hushcall.APIError) as raised:
        client.request("POST", "/v1/no-such-endpoint", json={"model": "m"})
    assert raised.value.status_code == 404
    assert client.embeddings.create(model="m", input="after")["data"][0]["index"] == 0


def test_bad_arguments_are_refused_before_sending(client):
    with pytest.raises(TypeError):
        client.request("GET", "/v1/models", json={"a": 1})  # a GET has no body
    with pytest.raises(TypeError):
        client.request("POST", "/v1/embeddings")  # a POST needs one
    with pytest.raises(TypeError):
        client.request("POST", "/v1/embeddings", json={"input": "x"}, no_such_option=1)


def test_a_v1_client_refuses_other_endpoints(gateway):
    v1 = hushcall.Client(gateway.url, allow_http=True, protocol="v1", key_bits=2048)
    with pytest.raises(hushcall.SecurityError) as raised:
        v1.embeddings.create(model="m", input="x")
    assert raised.value.kind == "unsupported"
    assert v1.create(model="m", messages=[{"role": "user", "content": "v1"}]) \
        .choices[0].message.content == "echo: v1"


# ---- the same from AsyncClient -----------------------------------------------------


def test_async_endpoints(gateway):
    async def main():
        async with hushcall.AsyncClient(gateway.url, allow_http=True) as client:
            completion, embedding, models, generic = await asyncio.gather(
                client.completions.create(model="m", prompt="async prompt"),
                client.embeddings.create(model="m", input="async input"),
                client.models.list(),
                client.request("POST", "/v1/embeddings",
                               json={"model": "m", "input": "async input"}))
            with pytest.raises(hushcall.APIError) as raised:
                await client.request("POST", "/v1/nowhere", json={"model": "m"})
            return (completion.to_dict(), embedding.to_dict(), models.to_dict(),
                    generic.to_dict(), raised.value.status_code)

    completion, embedding, models, generic, status = asyncio.run(main())
    assert completion["object"] == "text_completion"
    assert "async prompt" in completion["choices"][0]["text"]
    assert embedding["data"][0]["embedding"] == generic["data"][0]["embedding"]
    assert models["object"] == "list"
    assert models["_metadata"]["is_encrypted"] is False
    assert status == 404


# ---- the independent EHBP server ----------------------------------------------------


def test_peer_answers_any_sealed_path(peer):
    client = hushcall.Client(peer, allow_http=True)
    resp = client.request("POST", "/v1/some/other/endpoint",
                          json={"model": "m", "messages": [{"role": "user", "content": "p"}]})
    assert resp.choices[0].message.content == "echo: p"
    assert resp["_metadata"]["is_encrypted"] is True
    assert resp["_peer"]["suite"] == "pq"

    async def main():
        async with hushcall.AsyncClient(peer, allow_http=True) as aclient:
            return (await aclient.request(
                "POST", "/v1/another", json={"messages": [{"role": "user", "content": "q"}]}
            )).to_dict()

    answer = asyncio.run(main())
    assert answer["choices"][0]["message"]["content"] == "echo: q"
    json.dumps(answer)  # a plain deep copy


def test_peer_endpoints_and_plaintext_models(peer):
    relay = TcpWatch(port_of(peer))
    try:
        client = hushcall.Client(relay.url, allow_http=True)
        models = client.models.list()
        assert models["object"] == "list"
        assert models["_metadata"]["is_encrypted"] is False
        model_id = str(models["data"][0]["id"]).encode()
        sent, received = relay.traffic()
        assert sent.lower().startswith(b"get /v1/models ")
        assert b"ehbp-encapsulated-key" not in sent.lower()
        assert model_id in received

        embedding = client.embeddings.create(model="m", input=["a", "b"])
        assert [d["index"] for d in embedding["data"]] == [0, 1]
        again = client.embeddings.create(model="m", input="a")
        assert again["data"][0]["embedding"].to_dict() == embedding["data"][0]["embedding"].to_dict()
        completion = client.completions.create(model="m", prompt="peer prompt")
        assert completion["object"] == "text_completion"
        assert completion["choices"][0]["text"] == "echo: peer prompt"
        sent, _ = relay.traffic()
        assert b"peer prompt" not in sent
    finally:
        relay.close()
