"""Streamed answers (docs/python.md "Streaming"): Client's Stream and
AsyncClient's AsyncStream against our gateway (the echo backend streams its
reply word by word, --echo-delay-ms apart) and against the independent EHBP
server (tests/interop/ehbp_server.py) in both suites. Checked: the chunks'
shape (OpenAI's chat.completion.chunk and text_completion), each chunk a
Response of its own, ending early (close(), with, async with, a cancelled
task, an abandoned stream: the server side sees the connection close, and the
client stays usable), a stream cut short (IncompleteStreamError after every
chunk), a tampered frame (SecurityError at once), the v1 refusal, and that no
copy of the streamed text is left in this process once its chunks are wiped."""

import asyncio
import gc
import json
import os
import select
import subprocess
import sys
import threading
import time

import httpx
import pytest

import hushcall
from processes import EhbpPeer, Gateway, keys_copy
from tcp_watch import TcpWatch
from test_memory import MASK, Scanner, make_canary, zero_str

# Small enough for quick tests, large enough that a 200-word answer is still
# streaming when a test ends it early.
ECHO_DELAY_MS = 25
LONG_TEXT = " ".join("word%d" % i for i in range(200))


def user(text):
    return [{"role": "user", "content": text}]


def port_of(url):
    return int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, server_keys):
    tmp = tmp_path_factory.mktemp("gw-stream")
    gw = Gateway(tmp, "--echo-delay-ms", str(ECHO_DELAY_MS), key_dir=keys_copy(server_keys, tmp))
    yield gw
    assert gw.stop() == 0


@pytest.fixture
def watch(gateway):
    relay = TcpWatch(port_of(gateway.url))
    yield relay
    relay.close()


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    child = EhbpPeer(tmp_path_factory.mktemp("ehbp-stream"))
    yield child.url
    assert child.stop() == 0


@pytest.fixture(scope="module")
def plain_peer(tmp_path_factory):
    child = EhbpPeer(tmp_path_factory.mktemp("ehbp-stream-plain"), "--plain-ehbp")
    yield child.url
    assert child.stop() == 0


@pytest.fixture(params=["pq", "ehbp"])
def suite_peer(request, peer, plain_peer):
    """The EHBP peer in each suite: X-Wing, and plain EHBP (X25519)."""
    return request.param, (peer if request.param == "pq" else plain_peer)


def control(url, **order):
    answer = httpx.post(url + "/__control", json=order)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture
def streaming(suite_peer):
    """The peer in each suite, its stream controls restored to the default after."""
    yield suite_peer
    control(suite_peer[1], stream={})


def take(chunk):
    """(delta content or None, finish_reason or None, usage or None) of a chat
    chunk, read as plain values; the chunk is wiped after."""
    assert isinstance(chunk, hushcall.Response)
    assert chunk["object"] == "chat.completion.chunk"
    content = finish = usage = None
    if chunk["choices"]:
        choice = chunk["choices"][0]
        assert choice["index"] == 0
        delta = choice["delta"]
        content = delta.get("content")
        content = None if content is None else str(content)
        finish = choice.get("finish_reason")
    if chunk.get("usage") is not None:
        usage = chunk["usage"].to_dict()
    chunk.wipe()
    assert chunk.wiped
    return content, finish, usage


def read_all(chunks):
    """The streamed text, the finish reasons and the usages of an iterable of chunks."""
    texts, finishes, usages = [], [], []
    for chunk in chunks:
        content, finish, usage = take(chunk)
        if content is not None:
            texts.append(content)
        if finish is not None:
            finishes.append(finish)
        if usage is not None:
            usages.append(usage)
    return texts, finishes, usages


async def aread_all(stream):
    return read_all([chunk async for chunk in stream])


# ---- the chunks ---------------------------------------------------------------


def test_sync_stream_of_chat_chunks(gateway):
    client = hushcall.Client(gateway.url, allow_http=True)
    stream = client.chat.completions.create(model="m", messages=user("one two three four"),
                                            stream=True)
    assert isinstance(stream, hushcall.Stream)
    assert not stream.done
    texts, finishes, usages = read_all(stream)
    assert "".join(texts) == "echo: one two three four"
    assert len(texts) > 1, "streamed in pieces, not as one answer"
    assert finishes == ["stop"]
    assert usages == []  # not asked for
    assert stream.done
    assert list(stream) == []  # ended: iteration stays stopped


def test_async_stream_of_chat_chunks(gateway):
    async def main():
        async with hushcall.AsyncClient(gateway.url, allow_http=True) as client:
            stream = await client.chat.completions.create(
                model="m", messages=user("five six seven"), stream=True)
            assert isinstance(stream, hushcall.AsyncStream)
            texts, finishes, usages = await aread_all(stream)
            assert stream.done
            return texts, finishes, usages

    texts, finishes, usages = asyncio.run(main())
    assert "".join(texts) == "echo: five six seven"
    assert len(texts) > 1
    assert finishes == ["stop"]
    assert usages == []


def test_usage_when_stream_options_ask(gateway):
    client = hushcall.Client(gateway.url, allow_http=True)
    stream = client.chat.completions.create(model="m", messages=user("count these words"),
                                            stream=True,
                                            stream_options={"include_usage": True})
    texts, finishes, usages = read_all(stream)
    assert "".join(texts) == "echo: count these words"
    assert len(usages) == 1
    usage = usages[0]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] > 0


def test_each_chunk_is_a_response_with_its_display_rules(gateway):
    client = hushcall.Client(gateway.url, allow_http=True)
    with client.chat.completions.create(model="m", messages=user("secretword"),
                                        stream=True) as stream:
        for chunk in stream:
            content = chunk.choices[0].delta.get("content") if chunk.choices else None
            if content is not None and "secretword" in content:
                assert "secretword" not in repr(chunk)  # redacted: shape only
                assert isinstance(content, hushcall.ZeroOnFreeStr)
                chunk.wipe()
                with pytest.raises(hushcall.WipedError):
                    chunk.choices
                break
        else:
            pytest.fail("the streamed text never came")


def test_text_completions_stream(gateway):
    client = hushcall.Client(gateway.url, allow_http=True)
    stream = client.completions.create(model="m", prompt="alpha beta gamma", stream=True)
    texts, finishes = [], []
    for chunk in stream:
        assert chunk["object"] == "text_completion"
        choice = chunk["choices"][0]
        texts.append(str(choice["text"]))
        if choice.get("finish_reason") is not None:
            finishes.append(choice["finish_reason"])
        chunk.wipe()
    assert "alpha beta gamma" in "".join(texts)
    assert len(texts) > 1
    assert finishes == ["stop"]


def test_generic_request_streams(gateway):
    client = hushcall.Client(gateway.url, allow_http=True)
    stream = client.request("POST", "/v1/chat/completions",
                            json={"model": "m", "messages": user("via request"), "stream": True},
                            stream=True)
    texts, finishes, _ = read_all(stream)
    assert "".join(texts) == "echo: via request"
    assert finishes == ["stop"]
    with pytest.raises(ValueError):
        client.request("GET", "/v1/models", stream=True)


def test_a_failure_before_the_stream_is_raised_and_the_client_stays_usable(gateway):
    client = hushcall.Client(gateway.url, allow_http=True)
    stream = client.request("POST", "/v1/no-such-endpoint",
                            json={"model": "m", "prompt": "x", "stream": True}, stream=True)
    with pytest.raises(hushcall.APIError) as raised:
        next(stream)
    assert raised.value.status_code == 404
    assert stream.done
    with pytest.raises(hushcall.APIError):  # a failure stays a failure
        next(stream)
    texts, _, _ = read_all(client.chat.completions.create(model="m", messages=user("after"),
                                                          stream=True))
    assert "".join(texts) == "echo: after"


# ---- ending early: the server side sees the connection close -------------------


def test_close_ends_the_stream_and_the_connection(watch):
    client = hushcall.Client(watch.url, allow_http=True)
    stream = client.chat.completions.create(model="m", messages=user(LONG_TEXT), stream=True)
    take(next(stream))
    assert watch.streams() == (1, 0)
    stream.close()
    assert stream.done
    assert list(stream) == []
    assert watch.wait_streams_closed(1) == (1, 1)
    stream.close()  # idempotent
    assert client.create(model="m", messages=user("still usable")).choices[0].message.content \
        == "echo: still usable"


def test_with_block_ends_the_stream(watch):
    client = hushcall.Client(watch.url, allow_http=True)
    with client.chat.completions.create(model="m", messages=user(LONG_TEXT),
                                        stream=True) as stream:
        take(next(stream))
    assert stream.done
    assert watch.wait_streams_closed(1) == (1, 1)


def test_an_abandoned_stream_is_cancelled(watch):
    client = hushcall.Client(watch.url, allow_http=True)
    stream = client.chat.completions.create(model="m", messages=user(LONG_TEXT), stream=True)
    take(next(stream))
    del stream
    gc.collect()
    assert watch.wait_streams_closed(1) == (1, 1)


def test_async_aclose_and_async_with_end_the_stream(watch):
    async def main():
        async with hushcall.AsyncClient(watch.url, allow_http=True) as client:
            stream = await client.chat.completions.create(
                model="m", messages=user(LONG_TEXT), stream=True)
            take(await stream.__anext__())
            await stream.aclose()
            assert stream.done
            assert [c async for c in stream] == []
            async with await client.chat.completions.create(
                    model="m", messages=user(LONG_TEXT), stream=True) as second:
                take(await second.__anext__())
            assert second.done
            counts = await asyncio.get_running_loop().run_in_executor(
                None, watch.wait_streams_closed, 2)
            answer = await client.create(model="m", messages=user("still usable"))
            return counts, str(answer.choices[0].message.content)

    counts, content = asyncio.run(main())
    assert counts == (2, 2)
    assert content == "echo: still usable"


def test_cancelling_the_awaiting_task_cancels_the_stream(watch):
    async def main():
        async with hushcall.AsyncClient(watch.url, allow_http=True) as client:
            stream = await client.chat.completions.create(
                model="m", messages=user(LONG_TEXT), stream=True)
            first = asyncio.Event()

            async def consume():
                async for chunk in stream:
                    take(chunk)
                    first.set()

            task = asyncio.create_task(consume())
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert stream.done
            counts = await asyncio.get_running_loop().run_in_executor(
                None, watch.wait_streams_closed, 1)
            texts, _, _ = await aread_all(await client.chat.completions.create(
                model="m", messages=user("after the cancel"), stream=True))
            return counts, "".join(texts)

    counts, text = asyncio.run(main())
    assert counts == (1, 1)
    assert text == "echo: after the cancel"


def test_an_abandoned_async_stream_is_cancelled(watch):
    async def main():
        async with hushcall.AsyncClient(watch.url, allow_http=True) as client:
            stream = await client.chat.completions.create(
                model="m", messages=user(LONG_TEXT), stream=True)
            take(await stream.__anext__())
            del stream
            gc.collect()
            return await asyncio.get_running_loop().run_in_executor(
                None, watch.wait_streams_closed, 1)

    assert asyncio.run(main()) == (1, 1)


def test_closing_the_async_client_fails_its_streams(gateway):
    async def main():
        client = hushcall.AsyncClient(gateway.url, allow_http=True)
        stream = await client.chat.completions.create(model="m", messages=user(LONG_TEXT),
                                                      stream=True)
        take(await stream.__anext__())
        client.close()
        with pytest.raises(hushcall.CallCancelledError):
            async for chunk in stream:
                take(chunk)

    asyncio.run(main())


# ---- the independent EHBP server, both suites ------------------------------------


def test_peer_streams_in_both_suites(suite_peer):
    suite, url = suite_peer
    client = hushcall.Client(url, allow_http=True)
    texts, finishes, _ = read_all(client.chat.completions.create(
        model="m", messages=user("from the peer"), stream=True))
    assert "".join(texts) == "echo: from the peer"
    assert finishes == ["stop"]

    async def main():
        async with hushcall.AsyncClient(url, allow_http=True) as aclient:
            return await aread_all(await aclient.chat.completions.create(
                model="m", messages=user("async from the peer"), stream=True))

    texts, finishes, _ = asyncio.run(main())
    assert "".join(texts) == "echo: async from the peer"
    assert finishes == ["stop"]


@pytest.mark.parametrize("framing", [
    {"framing": "event"},
    {"framing": "batch", "batch": 3},
    {"framing": "split", "split": 7},
    {"framing": "split", "split": 1, "eol": "\r\n", "comments": True},
    {"framing": "event", "eol": "\r"},
])
def test_every_framing_gives_the_same_chunks(streaming, framing):
    """EHBP lets a server frame the event stream as it likes (docs/protocol-v2.md)."""
    _, url = streaming
    control(url, stream=framing)
    client = hushcall.Client(url, allow_http=True)
    texts, finishes, usages = read_all(client.chat.completions.create(
        model="m", messages=user("framed any way at all"), stream=True,
        stream_options={"include_usage": True}))
    assert "".join(texts) == "echo: framed any way at all"
    assert finishes == ["stop"]
    assert len(usages) == 1


def test_peer_sees_the_client_go_when_a_stream_is_closed(streaming):
    _, url = streaming
    control(url, stream={"delay_ms": 50})
    gone = control(url)["streams"]["client_gone"]
    client = hushcall.Client(url, allow_http=True)
    with client.chat.completions.create(model="m", messages=user(LONG_TEXT),
                                        stream=True) as stream:
        take(next(stream))
    assert wait_for_client_gone(url, gone + 1) == gone + 1

    async def main():
        async with hushcall.AsyncClient(url, allow_http=True) as aclient:
            async with await aclient.chat.completions.create(
                    model="m", messages=user(LONG_TEXT), stream=True) as astream:
                take(await astream.__anext__())

    asyncio.run(main())
    assert wait_for_client_gone(url, gone + 2) == gone + 2


def wait_for_client_gone(url, count, deadline_s=20.0):
    """The peer's count of streams given up because the client left, once it
    reaches `count` (or at the deadline, so that a failing test ends)."""
    end = time.monotonic() + deadline_s
    while True:
        gone = control(url)["streams"]["client_gone"]
        if gone >= count or time.monotonic() > end:
            return gone
        time.sleep(0.05)


# "echo: cut me short" is streamed as a role chunk, then one chunk per word.
TRUNCATE_AFTER = 3  # events: the role chunk, "echo:" and "cut"


def test_truncated_stream_raises_after_every_chunk(streaming):
    """The peer ends the body cleanly between two events, before the end: every
    authentic chunk is handed out, then IncompleteStreamError."""
    _, url = streaming
    control(url, stream={"truncate": TRUNCATE_AFTER})
    client = hushcall.Client(url, allow_http=True)
    stream = client.chat.completions.create(model="m", messages=user("cut me short"),
                                            stream=True)
    chunks = 0
    texts = []
    with pytest.raises(hushcall.IncompleteStreamError) as raised:
        for chunk in stream:
            chunks += 1
            content, _, _ = take(chunk)
            if content:
                texts.append(content)
    assert raised.value.kind == "truncated"
    assert isinstance(raised.value, hushcall.SecurityError)
    assert chunks == TRUNCATE_AFTER  # every chunk sent came out before the error
    assert "".join(texts).split() == ["echo:", "cut"]
    assert stream.done
    with pytest.raises(hushcall.IncompleteStreamError):
        next(stream)  # and it stays failed
    control(url, stream={})
    texts, _, _ = read_all(client.chat.completions.create(model="m", messages=user("whole"),
                                                          stream=True))
    assert "".join(texts) == "echo: whole"  # the client stays usable


def test_truncated_async_stream_raises_after_every_chunk(streaming):
    _, url = streaming
    control(url, stream={"truncate": TRUNCATE_AFTER})

    async def main():
        async with hushcall.AsyncClient(url, allow_http=True) as client:
            stream = await client.chat.completions.create(
                model="m", messages=user("cut me short"), stream=True)
            chunks = 0
            with pytest.raises(hushcall.IncompleteStreamError) as raised:
                async for chunk in stream:
                    chunks += 1
                    take(chunk)
            assert stream.done
            return raised.value.kind, chunks

    assert asyncio.run(main()) == ("truncated", TRUNCATE_AFTER)


TAMPERED_FRAME = 2  # one event per frame: the role chunk and "echo:" come first


def test_tampered_frame_fails_at_once(streaming):
    """A frame that fails to authenticate: SecurityError (not the truncation)
    and no chunk from it or after it."""
    _, url = streaming
    control(url, stream={"tamper": TAMPERED_FRAME})
    client = hushcall.Client(url, allow_http=True)
    stream = client.chat.completions.create(model="m", messages=user("tamper with me now"),
                                            stream=True)
    chunks = 0
    with pytest.raises(hushcall.SecurityError) as raised:
        for chunk in stream:
            chunks += 1
            take(chunk)
    assert not isinstance(raised.value, hushcall.IncompleteStreamError)
    assert raised.value.kind == "auth"
    assert chunks <= TAMPERED_FRAME

    async def main():
        async with hushcall.AsyncClient(url, allow_http=True) as aclient:
            stream = await aclient.chat.completions.create(
                model="m", messages=user("tamper with me now"), stream=True)
            seen = 0
            with pytest.raises(hushcall.SecurityError) as raised:
                async for chunk in stream:
                    seen += 1
                    take(chunk)
            return raised.value, seen

    error, seen = asyncio.run(main())
    assert not isinstance(error, hushcall.IncompleteStreamError)
    assert error.kind == "auth"
    assert seen <= TAMPERED_FRAME


def test_peer_text_completions_stream(streaming):
    _, url = streaming
    client = hushcall.Client(url, allow_http=True)
    texts = []
    for chunk in client.completions.create(model="m", prompt="p q r", stream=True):
        assert chunk["object"] == "text_completion"
        if chunk["choices"]:
            texts.append(str(chunk["choices"][0]["text"]))
        chunk.wipe()
    assert "".join(texts) == "echo: p q r"


def test_close_from_another_thread_ends_a_waiting_next(streaming):
    """next() waits without the GIL; close() from another thread meanwhile
    ends it (StopIteration), and frees the call only after it returns."""
    _, url = streaming
    control(url, stream={"delay_ms": 300})
    client = hushcall.Client(url, allow_http=True)
    stream = client.chat.completions.create(model="m", messages=user(LONG_TEXT), stream=True)
    take(next(stream))
    closer = threading.Timer(0.05, stream.close)
    closer.start()
    rest = list(stream)  # waits in next() until the close
    closer.join()
    for chunk in rest:  # at most what came before the close
        take(chunk)
    assert stream.done
    assert len(rest) < 200


def test_engine_next_chunk_tells_chunk_none_yet_and_end_apart(peer):
    """The engine as another event loop would drive it: after each drain, take
    chunks until None; the end is STREAM_END, never None or a chunk."""
    control(peer, stream={"delay_ms": 20})
    try:
        client = hushcall._core.Client(peer, allow_http=True)
        engine = hushcall.Engine()
        call = engine.submit(client, {"model": "m", "messages": user("a b c"), "stream": True},
                             stream=True)
        chunks, nones, ended = [], 0, False
        while not ended:
            select.select([engine.fileno()], [], [], 10)
            assert call in engine.drain()
            while True:
                item = call.next_chunk()
                if item is None:
                    nones += 1
                    break
                if item is hushcall._core.STREAM_END:
                    ended = True
                    break
                chunks.append(take(item)[0])
        assert call.next_chunk() is hushcall._core.STREAM_END  # and stays ended
        assert "".join(c for c in chunks if c) == "echo: a b c"
        assert nones >= 1, "the drains came while the stream was still going"
        assert engine.pending == 0  # drained for the last time once done
        whole = engine.submit(client, {"model": "m", "messages": user("x")})
        with pytest.raises(ValueError):
            whole.next_chunk()  # not a streamed call
        whole.close()
        call.close()
        engine.close()
    finally:
        control(peer, stream={})


def test_chat_command_streams(peer, tmp_path):
    # A saved client key: a process that exits while the core still generates
    # one in the background can crash in OpenSSL's exit clean-up (the key
    # thread is detached), whatever the command did.
    key_dir = str(tmp_path / "keys")
    hushcall.KeyPair.generate(2048).save(key_dir)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    argv = [sys.executable, "-m", "hushcall", "chat", "--base-url", peer, "--stream",
            "--key-dir", key_dir]
    done = subprocess.run(argv + ["streamed on the command line"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "echo: streamed on the command line\n"
    done = subprocess.run(argv + ["--json", "as json"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    chunks = [json.loads(line) for line in done.stdout.splitlines()]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"]) == "echo: as json"


# ---- v1 cannot stream ---------------------------------------------------------------


def test_secure_chat_completion_refuses_stream_with_nothing_sent(watch):
    client = hushcall.SecureChatCompletion(base_url=watch.url, allow_http=True, key_bits=2048)
    with pytest.raises(hushcall.InvalidRequestError, match="cannot stream"):
        asyncio.run(client.create(model="m", messages=user("no"), stream=True))
    assert watch.connections == []
    client.close()


def test_a_v1_client_refuses_stream(gateway):
    client = hushcall.Client(gateway.url, allow_http=True, protocol="v1", key_bits=2048)
    with pytest.raises(hushcall.SecurityError) as raised:
        stream = client.chat.completions.create(model="m", messages=user("no"), stream=True)
        next(stream)
    assert raised.value.kind == "unsupported"
    assert client.create(model="m", messages=user("v1 still works")).choices[0].message.content \
        == "echo: v1 still works"


# ---- no plaintext residue ------------------------------------------------------------


def ends_with_masked(s, masked):
    """Whether `s` ends with the canary, compared without copying `s`."""
    n, start = len(masked), len(s) - len(masked)
    return start >= 0 and all(ord(s[start + i]) ^ MASK == masked[i] for i in range(n))


@pytest.fixture(params=["gateway", "peer"])
def any_server(request):
    return request.getfixturevalue(request.param)


def test_no_copy_of_the_streamed_text_is_left(any_server):
    """As test_memory.py does for whole answers: a canary that only the request
    buffer holds is streamed back (one word, so one chunk); once that chunk
    is wiped and the stream is over, no copy is anywhere in this process."""
    url = any_server if isinstance(any_server, str) else any_server.url
    client = hushcall.Client(url, allow_http=True)
    masked, text = make_canary()
    buf = hushcall.encode({"model": "m", "messages": [{"role": "user", "content": text}],
                           "stream": True})
    zero_str(text)
    del text
    scanner = Scanner(masked)
    try:
        assert scanner.count() == 1, "the request buffer holds the one copy"
        stream = client.request("POST", "/v1/chat/completions", json=buf, stream=True)
        assert buf.wiped  # consumed by the call
        seen = 0
        for chunk in stream:
            content = chunk.choices[0].delta.get("content") if chunk.choices else None
            if content is not None and ends_with_masked(content, masked):
                seen += 1
                assert scanner.count() >= 1, "the scan sees the live chunk"
            del content
            chunk.wipe()
            del chunk
        assert seen == 1
        assert stream.done
        del stream
        gc.collect()
        assert scanner.count() == 0
    finally:
        scanner.close()
