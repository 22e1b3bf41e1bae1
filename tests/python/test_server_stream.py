"""The binding of the server's streamed answers (_core.Server's
Exchange.stream, open_plaintext, echo_delay_ms, models): what the gateway
builds on, checked directly. The pass-through exchange keeps the events
readable here; the sealed ones are read by independent clients in
test_gateway_stream.py."""

import json

import pytest

from hushcall import _core
from hushcall.errors import CallCancelledError, HushcallError

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def server():
    return _core.Server(_core.KeyPair.generate(2048), echo_delay_ms=150)


def stream_request(text):
    return json.dumps({"model": "m", "stream": True,
                       "messages": [{"role": "user", "content": text}]}).encode()


def test_each_emit_is_one_event_and_the_liveness_polls_come_between_words(server):
    exchange = server.open_plaintext(CHAT, stream_request("one two"))
    assert exchange.is_stream
    got = []
    nonce = exchange.stream(lambda frames: got.append(frames) and False)
    assert nonce == "00" * 32  # a pass-through has no nonce
    events = [g for g in got if g is not None]
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") and e.count(b"\n\n") == 1
               for e in events)
    assert events[-1] == b"data: [DONE]\n\n"
    deltas = [json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in events[:-1]]
    assert "".join(deltas) == "echo: one two"
    assert None in got  # 150 ms between words, asked about in slices of at most 100 ms


def test_a_truthy_emit_stops_the_stream_and_an_exception_is_raised_again(server):
    exchange = server.open_plaintext(CHAT, stream_request("a b c d e f"))
    seen = []
    with pytest.raises(CallCancelledError):
        exchange.stream(lambda frames: seen.append(frames) or frames is None)
    assert len([s for s in seen if s is not None]) == 2  # the role chunk and "echo: "

    def boom(frames):
        raise KeyError("from emit")

    exchange = server.open_plaintext(CHAT, stream_request("x"))
    with pytest.raises(KeyError):
        exchange.stream(boom)
    with pytest.raises(RuntimeError):
        exchange.stream(boom)  # answered once


def test_whole_answers_refuse_stream_and_unknown_paths_are_404(server):
    exchange = server.open_plaintext("/v1/embeddings", b'{"input": "x", "dimensions": 3}')
    assert not exchange.is_stream
    (_, answer), _ = exchange.answer()
    assert len(json.loads(answer)["data"][0]["embedding"]) == 3
    with pytest.raises(HushcallError) as caught:
        server.open_plaintext("/v1/files", b"{}")
    assert caught.value.http_status == 404


def test_models_and_echo_delay_range(server):
    assert json.loads(server.models())["data"][0]["id"] == "echo"
    with pytest.raises(HushcallError):
        _core.Server(_core.KeyPair.generate(2048), echo_delay_ms=-5)
