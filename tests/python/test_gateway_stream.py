"""Streams and the rest of the OpenAI surface in `python -m hushcall serve`
(docs/gateway.md "Streaming", docs/protocol-v2.md "Endpoints and
streaming"), with clients nobody here wrote: the real tinfoil-ehbp 0.4.1
client (X25519) and the independent pyca client of test_ehbp_peer.py for
the X-Wing suite. Events are checked against OpenAI's chunk shapes. The
upstream is tests/interop/fake_openai.py, whose counters show what the
gateway did to its request (closed it, stopped reading it). Waits are
polls with generous deadlines; no test asserts a duration."""

import base64
import json
import struct
import time

import ehbp
import httpx
import pytest

from processes import Gateway, keys_copy
from test_ehbp_peer import AEADS, AES256GCM, CHACHA, hkdf_expand, hkdf_extract, x25519_request
from test_gateway_v2 import PQ_EXPORT, pq_request

CHAT = "/v1/chat/completions"
CANARY = "CANARY-stream-7c2a"
DEADLINE = 30.0  # seconds a poll may wait for the upstream's counters; never asserted
FLOOD_EVENTS = 4096  # of 16 KiB: 64 MiB, far more than every buffer on the way


@pytest.fixture(scope="module")
def echo_gw(tmp_path_factory, server_keys):
    tmp = tmp_path_factory.mktemp("gw-stream-echo")
    gw = Gateway(tmp, "--echo-delay-ms", "1", "--allow-plaintext",
                 key_dir=keys_copy(server_keys, tmp))
    yield gw
    assert gw.stop() == 0


@pytest.fixture(scope="module")
def openai_gw(tmp_path_factory, server_keys, upstream):
    tmp = tmp_path_factory.mktemp("gw-stream-openai")
    gw = Gateway(tmp, "--backend", "openai:" + upstream.url, key_dir=keys_copy(server_keys, tmp))
    yield gw
    assert gw.stop() == 0


def chat(text, model="m", **extra):
    return {"model": model, "stream": True,
            "messages": [{"role": "user", "content": text}], **extra}


def last(upstream):
    return httpx.get("http://127.0.0.1:%d/_last" % upstream.port).json()


def wait_for(check, deadline=DEADLINE):
    """Poll until check() is truthy or the deadline passes; its last value."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.05)


# ---- reading streams ---------------------------------------------------------------------

def one_event(plaintext):
    """The event a frame's plaintext must be, whole: `data: ...` and its blank line."""
    text = plaintext.decode()
    assert text.startswith("data: ") and text.endswith("\n\n"), text
    assert text.count("\n\n") == 1, text
    return text[len("data: "):-2]


def summarize(events, chat_shape=True):
    """(concatenated text, chunks) of a stream's events; [DONE] must be last."""
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    kind = "chat.completion.chunk" if chat_shape else "text_completion"
    assert all(c["object"] == kind for c in chunks)
    if chat_shape:
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks
                       if c["choices"])
    else:
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    return text, chunks


def tinfoil_events(url, path, body):
    """Each frame the tinfoil client opens, as one event; the response."""
    with ehbp.Client.discover(url) as client:
        with client.stream("POST", path, json_body=body) as answer:
            events = [one_event(piece) for piece in answer]
    return answer, events


class FrameReader:
    """EHBP §4.4 frame by frame, with the AEAD the suite names."""

    def __init__(self, nonce_hex, enc, secret, aead_id):
        prk = hkdf_extract(enc + bytes.fromhex(nonce_hex), secret)
        self.aead = AEADS[aead_id](hkdf_expand(prk, b"key", 32))
        self.base = int.from_bytes(hkdf_expand(prk, b"nonce", 12), "big")
        self.seq, self.pending = 0, b""

    def feed(self, data):
        """The plaintexts of the frames completed by `data`."""
        self.pending += data
        out = []
        while len(self.pending) >= 4:
            (length,) = struct.unpack_from(">I", self.pending)
            if len(self.pending) < 4 + length:
                break
            ciphertext = self.pending[4:4 + length]
            self.pending = self.pending[4 + length:]
            out.append(self.aead.decrypt((self.base ^ self.seq).to_bytes(12, "big"),
                                         ciphertext, b""))
            self.seq += 1
        return out


# ---- streamed answers --------------------------------------------------------------------

def test_tinfoil_streams_the_echo_chat_one_event_per_frame(echo_gw):
    text = "streamed words of " + CANARY
    answer, events = tinfoil_events(
        echo_gw.url, CHAT, chat(text, stream_options={"include_usage": True}))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["transfer-encoding"] == "chunked"
    joined, chunks = summarize(events)
    assert joined == "echo: " + text  # exactly the whole answer's text, word by word
    assert len(chunks) == 1 + 5 + 1 + 1  # role, five words, stop, usage
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("aead_id", [CHACHA, AES256GCM], ids=["chacha20poly1305", "aes256gcm"])
def test_the_pq_suite_streams_completions_one_event_per_frame(echo_gw, aead_id):
    body = json.dumps({"model": "m", "stream": True, "prompt": "post quantum " + CANARY}).encode()
    enc, hdr, framed, sender = pq_request(echo_gw.url, body, aead_id)
    headers = {"Ehbp-Encapsulated-Key": enc.hex(), "Hushcall-Key-Config": hdr.hex()}
    events = []
    with httpx.stream("POST", echo_gw.url + "/v1/completions", content=framed,
                      headers=headers) as answer:
        assert answer.status_code == 200
        reader = FrameReader(answer.headers["ehbp-response-nonce"], enc,
                             sender.export(PQ_EXPORT, 32), aead_id)
        for data in answer.iter_raw():
            events += [one_event(p) for p in reader.feed(data)]
    assert reader.pending == b""
    joined, chunks = summarize(events, chat_shape=False)
    assert joined == "echo: post quantum " + CANARY
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_the_upstreams_stream_reaches_the_client_event_by_event(openai_gw, upstream):
    answer, events = tinfoil_events(openai_gw.url, CHAT, chat("a b " + CANARY))
    joined, _ = summarize(events)
    assert joined == "upstream: a b " + CANARY
    seen = last(upstream)
    assert seen["path"] == CHAT and json.loads(seen["body"])["stream"] is True


@pytest.mark.parametrize("model,status", [("fail-503", 503), ("fail-500", 502)])
def test_an_upstream_that_fails_before_the_stream_gets_the_usual_status(openai_gw, model,
                                                                          status):
    with ehbp.Client.discover(openai_gw.url) as client:
        answer = client.post(CHAT, json_body=chat(CANARY, model=model))
    assert answer.status_code == status
    assert "ehbp-response-nonce" not in answer.headers
    assert CANARY.encode() not in answer.content  # fail-500's body quotes the prompt


def test_an_upstream_cut_mid_stream_ends_the_body_without_its_end(openai_gw):
    events = []
    with pytest.raises((httpx.HTTPError, ehbp.EHBPError)):
        with ehbp.Client.discover(openai_gw.url) as client:
            with client.stream("POST", CHAT, json_body=chat("a b c d", model="stream-reset")) \
                    as answer:
                for piece in answer:
                    events.append(one_event(piece))
    assert "[DONE]" not in events  # the client sees a truncated stream, never a whole one


# ---- endpoints -----------------------------------------------------------------------------

def test_embeddings_in_both_encodings_completions_and_an_unknown_path(echo_gw):
    with ehbp.Client.discover(echo_gw.url) as client:
        floats = client.post("/v1/embeddings", json_body={"input": ["one", "two"]}).json()
        encoded = client.post("/v1/embeddings", json_body={
            "input": "one", "encoding_format": "base64", "dimensions": 8}).json()
        completion = client.post("/v1/completions", json_body={"prompt": CANARY}).json()
        unknown = client.post("/v1/audio/speech", json_body={"input": "x"})
    vectors = [item["embedding"] for item in floats["data"]]
    assert [len(v) for v in vectors] == [8, 8] and vectors[0] != vectors[1]
    assert all(-1 <= x < 1 for x in vectors[0])
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert list(struct.unpack("<8f", raw)) == pytest.approx(vectors[0], rel=1e-6)
    assert completion["object"] == "text_completion"
    assert completion["choices"][0]["text"] == "echo: " + CANARY
    assert unknown.status_code == 404
    assert "ehbp-response-nonce" not in unknown.headers


def test_other_paths_reach_the_upstreams_same_path(openai_gw, upstream):
    with ehbp.Client.discover(openai_gw.url) as client:
        answer = client.post("/v1/embeddings", json_body={"model": "e", "input": CANARY})
    assert answer.json()["data"][0]["embedding"] == [0.5, -0.25]
    assert last(upstream)["path"] == "/v1/embeddings"


def test_models_are_listed_in_plaintext(echo_gw, openai_gw):
    echo = httpx.get(echo_gw.url + "/v1/models")
    assert echo.status_code == 200 and "ehbp-response-nonce" not in echo.headers
    assert [m["id"] for m in echo.json()["data"]] == ["echo"]
    forwarded = httpx.get(openai_gw.url + "/v1/models")
    assert [m["id"] for m in forwarded.json()["data"]] == ["fake-model"]


# ---- cancellation and the slow reader ----------------------------------------------------------

def test_a_client_that_leaves_closes_the_upstream_request(openai_gw, upstream):
    left = last(upstream)["streams"]["client_left"]
    with ehbp.Client.discover(openai_gw.url) as client:
        with client.stream("POST", CHAT, json_body=chat("a b", model="stream-hang")) as answer:
            first = next(iter(answer))  # then it leaves; the upstream would go on for 60 s
    assert one_event(first)
    assert wait_for(lambda: last(upstream)["streams"]["client_left"] > left)


def flood_written(upstream):
    return last(upstream)["streams"]["flood_written"]


def settled(upstream):
    """The flood's count once it stopped moving for a second (None while it moves)."""
    before = flood_written(upstream)
    time.sleep(1.0)
    after = flood_written(upstream)
    return after if after == before and after > 0 else None


def test_a_slow_reader_stalls_the_upstream_instead_of_filling_the_gateway(openai_gw, upstream):
    body = json.dumps(chat("x", model="stream-flood-%d" % FLOOD_EVENTS)).encode()
    enc, framed, _ = x25519_request(openai_gw.url, body)
    left = last(upstream)["streams"]["client_left"]
    with httpx.Client(timeout=DEADLINE) as http:
        with http.stream("POST", openai_gw.url + CHAT, content=framed,
                         headers={"Ehbp-Encapsulated-Key": enc.hex()}) as answer:
            assert answer.status_code == 200
            chunks = answer.iter_raw()  # kept: a dropped iterator would close the stream
            next(chunks)  # one read, then this client reads no more
            stalled = wait_for(lambda: settled(upstream))
            # The upstream wrote only what the buffers on the way hold: the
            # gateway stopped reading it while the client did not read.
            assert stalled is not None and stalled < FLOOD_EVENTS
    assert wait_for(lambda: last(upstream)["streams"]["client_left"] > left)


# ---- the plaintext pass-through ------------------------------------------------------------

def test_plaintext_pass_through_streams_only_when_allowed(echo_gw, openai_gw):
    events = []
    with httpx.stream("POST", echo_gw.url + CHAT, json=chat("in clear")) as answer:
        assert answer.status_code == 200
        assert "ehbp-response-nonce" not in answer.headers
        for line in answer.iter_lines():
            if line.startswith("data: "):
                events.append(line[len("data: "):])
    assert summarize(events)[0] == "echo: in clear"
    whole = httpx.post(echo_gw.url + CHAT, json={"messages": [{"role": "user", "content": "x"}]})
    assert whole.json()["choices"][0]["message"]["content"] == "echo: x"
    refused = httpx.post(openai_gw.url + CHAT, json=chat("x"))
    assert refused.status_code == 400 and "Ehbp-Encapsulated-Key" in refused.json()["detail"]


# ---- stopping ------------------------------------------------------------------------------

def test_a_gateway_stopping_ends_the_streams_still_running(tmp_path, server_keys):
    gw = Gateway(tmp_path, "--echo-delay-ms", "1000", "--allow-plaintext",
                 "--shutdown-timeout", "1", key_dir=keys_copy(server_keys, tmp_path))
    words = " ".join(["w"] * 300)  # five minutes of words
    with httpx.stream("POST", gw.url + CHAT, json=chat(words), timeout=DEADLINE) as answer:
        lines = answer.iter_lines()
        assert next(lines).startswith("data: ")
        # Past its shutdown timeout the stream is cut, and the gateway exits
        # (before the fix, its worker thread kept the executor from closing).
        assert gw.stop(timeout=DEADLINE) == 0
