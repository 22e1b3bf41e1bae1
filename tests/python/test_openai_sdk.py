"""The official `openai` package (2.54.0, from PyPI) over hushcall.httpx's
transports, against the real gateway (echo backend) and the independent EHBP
peer (tests/interop/ehbp_server.py), with both suites: the peer as it is
(X-Wing, required), the peer with --plain-ehbp (X25519 only), the gateway
with X-Wing required and with its X25519 config pinned. Chat completions whole and streamed, sync and async; embeddings as
the package asks for them (base64) and as floats; completions; models.list;
HTTP errors as openai's own exceptions; a cut and a tampered stream raising
hushcall's errors; a request to another origin never sent."""

import asyncio
import hashlib
import socket
import time

import httpx
import openai
import pytest

import hushcall
import hushcall.httpx
from processes import EhbpPeer, Gateway, keys_copy

API_KEY = "sk-openai-sdk-test"
SUITE_PQ = "xwing-chacha20poly1305"
SUITE_X25519 = "ehbp-x25519-aes256gcm"


# ---- servers -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gateway(tmp_path_factory, server_keys):
    tmp = tmp_path_factory.mktemp("openai-gw")
    gw = Gateway(tmp, "--echo-delay-ms", "1", "--api-key", API_KEY,
                 key_dir=keys_copy(server_keys, tmp))
    yield gw
    assert gw.stop() == 0


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    child = EhbpPeer(tmp_path_factory.mktemp("openai-peer"))
    yield child
    assert child.stop() == 0


@pytest.fixture(scope="module")
def plain_peer(tmp_path_factory):
    child = EhbpPeer(tmp_path_factory.mktemp("openai-plain-peer"), "--plain-ehbp")
    yield child
    assert child.stop() == 0


class Server:
    """A server under test: its URL, the suite hushcall must speak to it, and
    the transport options that say so."""

    def __init__(self, url, suite, options):
        self.url, self.suite, self.options = url, suite, options


def x25519_pin(url):
    """v2_key_fingerprint of a server's X25519 config (RFC 9458 §3: key_id,
    kem_id, a 32-byte key), as docs/crypto.md defines it: the gateway offers
    both suites, and the pin is how a client picks EHBP's there."""
    config = httpx.get(url + "/.well-known/hpke-keys").content
    return "sha256:" + hashlib.sha256(config[1:3] + config[3:35]).hexdigest()


SERVERS = {
    "gateway": lambda r: Server(r.getfixturevalue("gateway").url, SUITE_PQ, {"require_pq": True}),
    "gateway-x25519": lambda r: Server(
        r.getfixturevalue("gateway").url, SUITE_X25519,
        {"protocol": "v2", "v2_key_fingerprint": x25519_pin(r.getfixturevalue("gateway").url)}),
    "peer": lambda r: Server(r.getfixturevalue("peer").url, SUITE_PQ, {"require_pq": True}),
    "plain-peer": lambda r: Server(r.getfixturevalue("plain_peer").url, SUITE_X25519,
                                   {"protocol": "v2"}),
}


@pytest.fixture(params=sorted(SERVERS))
def server(request):
    return SERVERS[request.param](request)


def sdk(server, api_key=API_KEY):
    transport = hushcall.httpx.Transport(server.url, allow_http=True, **server.options)
    return openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0,
                         http_client=httpx.Client(transport=transport))


def async_sdk(server, api_key=API_KEY):
    transport = hushcall.httpx.AsyncTransport(server.url, allow_http=True, **server.options)
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0,
                              http_client=httpx.AsyncClient(transport=transport))


def user(text):
    return [{"role": "user", "content": text}]


def peer_control(peer, **order):
    answer = httpx.post(peer.url + "/__control", json=order)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture
def peer_streams(peer):
    """The peer, whose stream controls (framing, truncate, tamper) a test sets;
    restored to the default afterwards."""
    yield peer
    peer_control(peer, stream={})


def suite_of(completion):
    return completion.model_extra["_metadata"]["suite"]


# ---- chat completions ----------------------------------------------------------------

def test_chat_completion(server):
    with sdk(server) as client:
        completion = client.chat.completions.create(model="m", messages=user("hello sdk"))
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "echo: hello sdk"
    assert completion.choices[0].finish_reason == "stop"
    assert suite_of(completion) == server.suite


def test_chat_completion_streamed(server):
    with sdk(server) as client:
        stream = client.chat.completions.create(model="m", messages=user("three streamed words"),
                                                stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(deltas) == "echo: three streamed words"
    assert len([d for d in deltas if d]) >= 4  # a chunk per word, not one answer
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_chat_completion_async(server):
    async def main():
        async with async_sdk(server) as client:
            whole = await client.chat.completions.create(model="m", messages=user("async whole"))
            stream = await client.chat.completions.create(model="m", messages=user("async streamed"),
                                                          stream=True)
            deltas = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return whole, deltas

    whole, deltas = asyncio.run(main())
    assert whole.choices[0].message.content == "echo: async whole"
    assert suite_of(whole) == server.suite
    assert "".join(deltas) == "echo: async streamed"


def test_a_stream_closed_early_leaves_the_client_usable(server):
    with sdk(server) as client:
        with client.chat.completions.create(model="m", messages=user("a b c d e f g h"),
                                            stream=True) as stream:
            first = next(iter(stream))
        assert first.object == "chat.completion.chunk"
        again = client.chat.completions.create(model="m", messages=user("after closing"))
    assert again.choices[0].message.content == "echo: after closing"


@pytest.mark.parametrize("framing", ["batch", "split"])
def test_a_stream_framed_otherwise(peer_streams, framing):
    """Several events per frame, or an event cut across frames: the same chunks."""
    peer_control(peer_streams, stream={"framing": framing})
    with sdk(Server(peer_streams.url, SUITE_PQ, {})) as client:
        chunks = list(client.chat.completions.create(model="m", messages=user("framed some way"),
                                                     stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: framed some way"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_closing_the_openai_stream_cancels_the_call(peer_streams):
    """openai's Stream.close() reaches the hushcall call: the peer sees the
    client go while its stream (a word every 200 ms) had seconds to run."""
    peer_control(peer_streams, stream={"delay_ms": 200})
    gone_before = peer_control(peer_streams)["streams"]["client_gone"]
    with sdk(Server(peer_streams.url, SUITE_PQ, {})) as client:
        stream = client.chat.completions.create(model="m", messages=user("word " * 30),
                                                stream=True)
        next(iter(stream))
        stream.close()
    deadline = time.monotonic() + 30  # a generous bound on waiting, not a measured time
    while peer_control(peer_streams)["streams"]["client_gone"] == gone_before:
        assert time.monotonic() < deadline, "the peer never saw the client go"
        time.sleep(0.05)


# ---- the rest of the surface ---------------------------------------------------------

def test_embeddings_as_the_package_asks_for_them(server):
    """openai asks for base64 unless told otherwise and decodes it; the same
    inputs asked for as floats give the same vectors (float32 on both ways)."""
    with sdk(server) as client:
        packed = client.embeddings.create(model="e", input=["alpha", "beta"])
        floats = client.embeddings.create(model="e", input=["alpha", "beta"],
                                          encoding_format="float")
        again = client.embeddings.create(model="e", input="alpha")
    assert [d.index for d in packed.data] == [0, 1]
    alpha, beta = (d.embedding for d in packed.data)
    assert len(alpha) == len(beta) > 0 and alpha != beta
    for got, want in zip(packed.data, floats.data):
        assert got.embedding == pytest.approx(want.embedding, rel=1e-6)
    assert again.data[0].embedding == pytest.approx(alpha, rel=1e-6)


def test_completions_whole_and_streamed(server):
    with sdk(server) as client:
        whole = client.completions.create(model="m", prompt="complete these words")
        parts = [c.choices[0].text for c in
                 client.completions.create(model="m", prompt="complete these words", stream=True)
                 if c.choices]
    assert whole.object == "text_completion"
    assert "complete these words" in whole.choices[0].text
    assert "".join(parts) == whole.choices[0].text


def test_models_list(server):
    with sdk(server) as client:
        models = list(client.models.list())
    assert models and all(m.object == "model" and m.id for m in models)


# ---- errors --------------------------------------------------------------------------

def test_http_errors_become_openai_exceptions(gateway):
    server = Server(gateway.url, SUITE_PQ, {})
    with sdk(server, api_key="sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            client.chat.completions.create(model="m", messages=user("wrong key"))
    assert refused.value.status_code == 401
    direct = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "m"},
                        headers={"Authorization": "Bearer sk-wrong"})
    assert direct.status_code == 401
    assert refused.value.body == direct.json()  # the gateway's own error body, as it sent it
    with sdk(server) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            client.post("/no/such/endpoint", body={"model": "m"}, cast_to=object)
        assert missing.value.status_code == 404
        ok = client.chat.completions.create(model="m", messages=user("still usable"))
    assert ok.choices[0].message.content == "echo: still usable"


def test_async_http_error(gateway):
    async def main():
        async with async_sdk(Server(gateway.url, SUITE_PQ, {}), api_key="sk-wrong") as client:
            await client.chat.completions.create(model="m", messages=user("wrong key"))

    with pytest.raises(openai.AuthenticationError):
        asyncio.run(main())


def test_a_cut_stream_raises_after_its_chunks(peer_streams):
    peer = peer_streams
    peer_control(peer, stream={"truncate": 3})
    server = Server(peer.url, SUITE_PQ, {})
    received = []
    with sdk(server) as client:
        stream = client.chat.completions.create(model="m", messages=user("cut short here today"),
                                                stream=True)
        with pytest.raises(hushcall.IncompleteStreamError) as cut:
            for chunk in stream:
                received.append(chunk)
        assert cut.value.kind == "truncated"
        assert len(received) == 3
        peer_control(peer, stream={})
        again = client.chat.completions.create(model="m", messages=user("after the cut"))
    assert again.choices[0].message.content == "echo: after the cut"


def test_a_tampered_stream_raises_at_once(peer_streams):
    """Frame 2 fails to authenticate. The transport waits for the first chunk
    before it answers, and the core releases nothing once a frame failed: if
    the bad frame came before that chunk was taken, the SecurityError comes
    from create() (openai wraps it, the hushcall error its cause), else from
    the loop, as it is. Either way no chunk from frame 2 on is seen."""
    peer = peer_streams
    peer_control(peer, stream={"tamper": 2})
    server = Server(peer.url, SUITE_PQ, {})

    async def main():
        received = []
        async with async_sdk(server) as client:
            try:
                stream = await client.chat.completions.create(model="m", messages=user("x y z w v"),
                                                              stream=True)
                async for chunk in stream:
                    received.append(chunk)
            except openai.APIConnectionError as e:
                return e.__cause__, received
            except hushcall.SecurityError as e:
                return e, received
        return None, received

    error, received = asyncio.run(main())
    assert isinstance(error, hushcall.SecurityError)
    assert not isinstance(error, hushcall.IncompleteStreamError)
    assert error.kind == "auth"
    assert len(received) <= 2


def test_a_tampered_answer_is_hushcalls_error(peer):
    """Through httpx the transport raises hushcall's SecurityError as it is;
    openai wraps whatever is not its own in APIConnectionError, the hushcall
    error its cause (max_retries=0: a failed check is not tried again)."""
    server = Server(peer.url, SUITE_PQ, {})
    with httpx.Client(transport=hushcall.httpx.Transport(peer.url, allow_http=True)) as http:
        peer_control(peer, misbehave="flip-bit")
        with pytest.raises(hushcall.SecurityError):
            http.post(peer.url + "/v1/chat/completions", json={"model": "m", "messages": user("a")})
    peer_control(peer, misbehave="flip-bit")
    with sdk(server) as client:
        with pytest.raises(openai.APIConnectionError) as wrapped:
            client.chat.completions.create(model="m", messages=user("flipped"))
    assert isinstance(wrapped.value.__cause__, hushcall.SecurityError)


# ---- never elsewhere -----------------------------------------------------------------

@pytest.fixture
def bystander():
    """A loopback listener nobody should ever connect to."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield "http://127.0.0.1:%d" % sock.getsockname()[1], sock
    sock.close()


def nobody_connected(sock):
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return True
    return False


def test_a_request_to_another_origin_is_refused(peer, bystander):
    elsewhere, sock = bystander
    transport = hushcall.httpx.Transport(peer.url, allow_http=True)
    with httpx.Client(transport=transport) as http:
        for url in (elsewhere + "/v1/chat/completions",
                    peer.url.replace("http:", "https:") + "/v1/chat/completions",
                    peer.url + "/v2/chat/completions"):
            with pytest.raises(hushcall.SecurityError, match="base URL"):
                http.post(url, json={"model": "m", "messages": user("secret")})
        with pytest.raises(hushcall.InvalidArgumentError, match="query"):
            http.get(peer.url + "/v1/models?limit=1")  # the core's paths have no query
        ok = http.post(peer.url + "/v1/chat/completions", json={"model": "m", "messages": user("ok")})
    assert ok.json()["choices"][0]["message"]["content"] == "echo: ok"
    client = openai.OpenAI(base_url=elsewhere + "/v1", api_key=API_KEY, max_retries=0,
                           http_client=httpx.Client(transport=transport))
    with pytest.raises(openai.APIConnectionError) as refused:
        client.chat.completions.create(model="m", messages=user("secret"))
    assert isinstance(refused.value.__cause__, hushcall.SecurityError)
    assert nobody_connected(sock)


def test_the_async_transport_refuses_another_origin(peer, bystander):
    elsewhere, sock = bystander

    async def main():
        transport = hushcall.httpx.AsyncTransport(peer.url, allow_http=True)
        async with httpx.AsyncClient(transport=transport) as http:
            await http.post(elsewhere + "/v1/embeddings", json={"model": "e", "input": "secret"})

    with pytest.raises(hushcall.SecurityError):
        asyncio.run(main())
    assert nobody_connected(sock)
