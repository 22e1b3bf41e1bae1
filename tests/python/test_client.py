"""Client, AsyncClient and SecureChatCompletion against the independent NOMYO
peer (tests/interop/nomyo_peer.py): round trips, per-call overrides, the
exception each HTTP error maps to with the server's error body, limits
enforced before anything is sent, asyncio concurrency and cancellation, and
the synchronous client from several threads."""

import asyncio
import json
import os
import threading
import time
import urllib.request

import pytest

import hushcall
from hushcall import _core

# Small keys keep the suite fast; the protocol is the same at 4096 bits.
FAST = {"allow_http": True, "key_bits": 2048}


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory, peer):
    """One client key for the module: made once, then loaded by every client."""
    d = str(tmp_path_factory.mktemp("keys"))
    os.chmod(d, 0o700)
    hushcall.Client(peer, key_dir=d, **FAST).public_key_pem()
    return d


def options(key_dir, **extra):
    o = dict(FAST, key_dir=key_dir)
    o.update(extra)
    return o


def stats(url):
    with urllib.request.urlopen(url + "/_stats", timeout=10) as r:
        return json.loads(r.read())


def user(text):
    return [{"role": "user", "content": text}]


# ---- synchronous ------------------------------------------------------------


def test_sync_round_trip(peer, key_dir):
    client = hushcall.Client(peer, **options(key_dir))
    resp = client.chat.completions.create(model="echo", messages=user("hi"))
    assert resp["choices"][0]["message"]["content"] == "echo: hi"
    assert resp.choices[0].message.content == "echo: hi"
    meta = resp["_metadata"]
    assert meta["is_encrypted"] is True
    assert len(meta["payload_id"]) == 36
    assert resp["x_seen"]["payload_id"] == meta["payload_id"]
    resp.wipe()
    same = client.create(model="echo", messages=user("again"), temperature=0.5)
    assert same["choices"][0]["message"]["content"] == "echo: again"
    assert same["x_seen"]["request_keys"].to_dict() == ["messages", "model", "temperature"]


def test_sync_per_call_overrides(peer, key_dir):
    client = hushcall.Client(peer, **options(key_dir, api_key="default-key"))
    resp = client.create(model="echo", messages=user("x"))
    assert resp["x_seen"]["authorization"] == "Bearer default-key"
    assert resp["x_seen"]["security_tier"] is None
    resp = client.create(model="echo", messages=user("x"), api_key="other-key",
                         security_tier="high")
    assert resp["x_seen"]["authorization"] == "Bearer other-key"
    assert resp["x_seen"]["security_tier"] == "high"
    assert resp["_metadata"]["security_tier"] == "high"
    # The override kwargs are options, not members of the request.
    assert "security_tier" not in resp["x_seen"]["request_keys"].to_dict()


def test_sync_base_url_override(peer, key_dir):
    client = hushcall.Client("http://127.0.0.1:9", **options(key_dir, max_retries=0))
    resp = client.create(model="echo", messages=user("moved"), base_url=peer)
    assert resp["choices"][0]["message"]["content"] == "echo: moved"


def test_sync_error_maps_to_nomyo_class(peer, key_dir):
    client = hushcall.Client(peer, **options(key_dir, max_retries=0))
    with pytest.raises(hushcall.AuthenticationError) as info:
        client.create(model="echo", messages=user("x"),
                      x_test={"status": 401, "detail": "nope"})
    assert info.value.status_code == 401
    assert info.value.kind == "unauthorized"
    # The server's JSON error body, as nomyo keeps it, from the synchronous client too.
    assert info.value.error_details == {"detail": "nope"}
    # A body that is not JSON could be a proxy's page, not the server's word.
    with pytest.raises(hushcall.APIError) as info:
        client.create(model="echo", messages=user("x"),
                      x_test={"status": 418, "body": "not json"})
    assert info.value.status_code == 418
    assert info.value.error_details is None


def test_oversized_request_sends_nothing(peer, key_dir):
    client = hushcall.Client(peer, **options(key_dir, max_request_bytes=1000))
    before = stats(peer)["completions"]
    with pytest.raises(hushcall.InvalidRequestError) as info:
        client.create(model="echo", messages=user("y" * 2000))
    assert info.value.status_code is None
    assert info.value.kind == "limit"

    async def run():
        async with hushcall.AsyncClient(peer, **options(key_dir, max_request_bytes=1000)) as ac:
            with pytest.raises(hushcall.InvalidRequestError):
                await ac.create(model="echo", messages=user("y" * 2000))

    asyncio.run(run())
    # The limit is also the core's: a SecureBuffer bigger than it is refused at submit.
    engine = _core.Engine()
    try:
        core_client = _core.Client(peer, **options(key_dir, max_request_bytes=1000))
        buf = hushcall.encode({"model": "echo", "messages": user("z" * 2000)})
        with pytest.raises(hushcall.InvalidRequestError):
            engine.submit(core_client, buf)
    finally:
        engine.close()
    assert stats(peer)["completions"] == before


def test_bad_request_object(peer, key_dir):
    client = hushcall.Client(peer, **options(key_dir))
    before = stats(peer)["completions"]
    with pytest.raises(TypeError, match=r"messages\[0\]\.content"):
        client.create(model="echo", messages=[{"role": "user", "content": {1, 2}}])

    async def run():
        async with hushcall.AsyncClient(peer, **options(key_dir)) as ac:
            with pytest.raises(TypeError):
                await ac.create(model="echo", messages=[object()])

    asyncio.run(run())
    assert stats(peer)["completions"] == before


def test_bad_options(peer):
    with pytest.raises(hushcall.InvalidArgumentError):
        hushcall.Client(peer)  # http:// without allow_http
    with pytest.raises(ValueError):
        hushcall.Client(peer, allow_http=True, timeout=-1)
    with pytest.raises(TypeError):
        hushcall.Client(peer, allow_http=True, no_such_option=1)


def test_sync_from_threads(peer, key_dir):
    client = hushcall.Client(peer, **options(key_dir))
    results, errors = {}, []

    def work(n):
        try:
            for i in range(5):
                text = "t%d-%d" % (n, i)
                resp = client.create(model="echo", messages=user(text))
                results[text] = str(resp["choices"][0]["message"]["content"])
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(results) == 40
    assert all(v == "echo: " + k for k, v in results.items())


def test_public_key_pem(peer, key_dir):
    pem = hushcall.Client(peer, **options(key_dir)).public_key_pem()
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")


# ---- errors through the async API (with the server's error body) -------------

ERRORS = [
    (401, hushcall.AuthenticationError),
    (400, hushcall.InvalidRequestError),
    (403, hushcall.ForbiddenError),
    (404, hushcall.APIError),
    (429, hushcall.RateLimitError),
    (500, hushcall.ServerError),
    (503, hushcall.ServiceUnavailableError),
]


@pytest.mark.parametrize("status,cls", ERRORS)
def test_async_errors(peer, key_dir, status, cls):
    detail = "injected %d detail" % status

    async def run():
        async with hushcall.AsyncClient(peer, **options(key_dir, max_retries=0)) as client:
            with pytest.raises(cls) as info:
                await client.create(model="echo", messages=user("x"),
                                    x_test={"status": status, "detail": detail})
            return info.value

    e = asyncio.run(run())
    assert type(e) is cls
    assert e.status_code == status
    assert e.error_details["detail"] == detail
    assert isinstance(e, hushcall.APIError)


def test_async_retry_then_success(peer, key_dir):
    async def run():
        async with hushcall.AsyncClient(peer, **options(key_dir, max_retries=2)) as client:
            return await client.create(model="echo", messages=user("r"),
                                       x_test={"status": 429, "detail": "slow", "times": 1,
                                               "retry_after": 0})

    resp = asyncio.run(run())
    assert resp["choices"][0]["message"]["content"] == "echo: r"


# ---- asyncio -----------------------------------------------------------------


def test_async_round_trip(peer, key_dir):
    async def run():
        client = hushcall.AsyncClient(peer, **options(key_dir))
        try:
            resp = await client.chat.completions.create(model="echo", messages=user("hi"),
                                                        security_tier="standard",
                                                        api_key="async-key")
            assert resp["choices"][0]["message"]["content"] == "echo: hi"
            assert resp["_metadata"]["is_encrypted"] is True
            assert resp["x_seen"]["security_tier"] == "standard"
            assert resp["x_seen"]["authorization"] == "Bearer async-key"
            again = await client.acreate(model="echo", messages=user("two"))
            assert again["choices"][0]["message"]["content"] == "echo: two"
        finally:
            await client.aclose()

    asyncio.run(run())


def test_async_client_across_loops(peer, key_dir):
    client = hushcall.AsyncClient(peer, **options(key_dir))
    try:
        for text in ("first", "second"):
            resp = asyncio.run(client.create(model="echo", messages=user(text)))
            assert resp["choices"][0]["message"]["content"] == "echo: " + text
    finally:
        client.close()


def native_threads():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def test_async_gather_500(peer, key_dir):
    # Counted from what the process has before the client exists: threads
    # earlier tests leave winding down are not this client's.
    before = native_threads()

    async def run():
        async with hushcall.AsyncClient(peer, **options(key_dir)) as client:
            texts = ["n%d" % i for i in range(500)]
            gathered = asyncio.gather(
                *(client.create(model="echo", messages=user(t)) for t in texts))
            await asyncio.sleep(0.2)
            # 500 calls in flight, and no thread for any of them: the engine's
            # I/O thread and its workers, whatever the number of calls.
            assert client._engine.pending > 0
            assert native_threads() - before <= 7
            resps = await gathered
            ids = set()
            for t, r in zip(texts, resps):
                assert r["choices"][0]["message"]["content"] == "echo: " + t
                ids.add(str(r["_metadata"]["payload_id"]))
            assert len(ids) == 500
            assert client._engine.pending == 0

    asyncio.run(run())


def test_async_cancel(peer, key_dir):
    async def run():
        async with hushcall.AsyncClient(peer, **options(key_dir)) as client:
            task = asyncio.ensure_future(
                client.create(model="echo", messages=user("slow"),
                              x_test={"delay_ms": 5000}))
            while not client._futures:
                await asyncio.sleep(0.01)
            (call,) = list(client._futures)
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The call ends with CallCancelledError, long before the 5 s delay.
            for _ in range(400):
                if call.done():
                    break
                await asyncio.sleep(0.01)
            assert call.done()
            with pytest.raises(hushcall.CallCancelledError):
                call.result()
            # The engine still works.
            resp = await client.create(model="echo", messages=user("after"))
            assert resp["choices"][0]["message"]["content"] == "echo: after"

    asyncio.run(run())


def test_async_close_fails_pending_calls(peer, key_dir):
    async def run():
        client = hushcall.AsyncClient(peer, **options(key_dir))
        task = asyncio.ensure_future(
            client.create(model="echo", messages=user("slow"), x_test={"delay_ms": 5000}))
        while not client._futures:
            await asyncio.sleep(0.01)
        await client.aclose()
        with pytest.raises(hushcall.CallCancelledError):
            await task
        with pytest.raises(RuntimeError):
            await client.create(model="echo", messages=user("closed"))
        client.close()  # idempotent

    asyncio.run(run())


@pytest.fixture
def running_loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_async_inside_running_loop(peer, key_dir, running_loop):
    """Called from a coroutine already running in a loop the test did not make
    with asyncio.run (as in a framework or notebook)."""
    client = hushcall.AsyncClient(peer, **options(key_dir))

    async def handler():
        assert asyncio.get_running_loop() is running_loop
        r = await client.create(model="echo", messages=user("inside"))
        return str(r["choices"][0]["message"]["content"])

    async def app():
        # Nested tasks in the same loop share the registration.
        return await asyncio.gather(handler(), handler())

    try:
        assert running_loop.run_until_complete(app()) == ["echo: inside"] * 2
    finally:
        client.close()


def test_secure_chat_completion(peer, key_dir):
    async def run():
        nomyo = hushcall.SecureChatCompletion(base_url=peer, allow_http=True, key_dir=key_dir,
                                              api_key="nomyo-key")
        try:
            resp = await nomyo.create(model="echo", messages=user("hello nomyo"),
                                      security_tier="high")
            assert resp["choices"][0]["message"]["content"] == "echo: hello nomyo"
            assert resp["x_seen"]["authorization"] == "Bearer nomyo-key"
            assert resp["x_seen"]["security_tier"] == "high"
            resp = await nomyo.acreate("echo", user("positional"), api_key="k2")
            assert resp["choices"][0]["message"]["content"] == "echo: positional"
            assert resp["x_seen"]["authorization"] == "Bearer k2"
        finally:
            await nomyo.aclose()

    asyncio.run(run())


# ---- the core types directly ------------------------------------------------


def test_engine_and_call(peer, key_dir):
    client = _core.Client(peer, **options(key_dir))
    engine = _core.Engine()
    try:
        call = engine.submit(client, {"model": "echo", "messages": user("core")})
        assert engine.pending == 1
        assert len(call.payload_id) == 36
        assert call.wait(10) is True
        assert call.done()
        drained = []
        for _ in range(100):
            drained += engine.drain()
            if drained:
                break
            time.sleep(0.01)
        assert drained == [call]
        assert engine.pending == 0
        resp = call.result()
        assert resp["choices"][0]["message"]["content"] == "echo: core"
        assert resp["_metadata"]["payload_id"] == call.payload_id
        with pytest.raises(hushcall.WipedError):
            call.result()  # taken once
        # Closing an undrained call releases the engine's reference.
        other = engine.submit(client, {"model": "echo", "messages": user("x"),
                                       "x_test": {"delay_ms": 3000}})
        other.close()
        assert engine.pending == 0
        with pytest.raises(ValueError):
            other.done()
        with pytest.raises(TypeError):
            engine.submit(object(), {})
    finally:
        engine.close()
        engine.close()
    assert engine.closed
    assert engine.drain() == []
    with pytest.raises(ValueError):
        engine.fileno()


def test_call_keeps_engine_alive_and_close_during_wait(peer, key_dir):
    client = _core.Client(peer, **options(key_dir))
    call = _core.Engine().submit(client, {"model": "echo", "messages": user("kept")})
    del client
    assert call.wait(10)
    assert call.result()["choices"][0]["message"]["content"] == "echo: kept"

    engine = _core.Engine()
    try:
        slow = engine.submit(_core.Client(peer, **options(key_dir)),
                             {"model": "echo", "messages": user("x"),
                              "x_test": {"delay_ms": 5000}})
        outcome = []
        waiter = threading.Thread(target=lambda: outcome.append(slow.wait(10)))
        waiter.start()
        time.sleep(0.1)
        slow.close()  # cancels; the free waits for the waiter
        waiter.join(10)
        assert outcome == [True]
        assert engine.pending == 0
    finally:
        engine.close()
