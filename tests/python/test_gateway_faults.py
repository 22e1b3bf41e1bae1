"""The fault campaign of issue 17 (docs/operations.md "Faults and what
clients see"), with real hushcall clients (Client and AsyncClient, v1 and
v2) in flight: a worker of `serve --processes 2` killed with SIGKILL
mid-request and mid-stream, Redis stopped and started again under a steady
load, an upstream that hangs, and one that resets mid-stream. Clients are
made with max_retries=0 to see each failure as it happened, but for one
that shows a retry taking a killed worker's call to a live one. Every
client has its own timeout, so none can hang; no test asserts a duration.

Proved elsewhere and not repeated here: a worker killed with requests half
sent (raw sockets), its restart, and v2 streams cut by a kill seen by fresh
clients (test_gateway_processes.py); Redis down and back one request at a
time, its 503 with Retry-After, its log lines, a Redis that never answers
(test_replay_redis.py); the 504 of an upstream past --upstream-timeout
(test_gateway.py test_upstream_failures) and its count in the metrics
(test_gateway_metrics.py); an upstream cut mid-stream as the tinfoil client
sees it, and a client that leaves closing the upstream request
(test_gateway_stream.py)."""

import asyncio
import collections
import os
import re
import signal
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import hushcall
from processes import Gateway, RedisServer, keys_copy
from test_ehbp_peer import post, x25519_request
from test_gateway import post_raw, user
from test_gateway_processes import ATTEMPTS, worker_pids
from test_gateway_replay import REPLAYED, Sender, seal_request, upstream_count
from test_gateway_v2 import BODY

KEY = "k-faults-17"
AUTH = {"Authorization": "Bearer " + KEY}
# max_retries=0: a failure reaches the caller as it happened, not retried away.
V1 = {"allow_http": True, "protocol": "v1", "key_bits": 2048, "max_retries": 0,
      "timeout": 60, "api_key": KEY}
V2 = dict(V1, protocol="v2")
PROTOCOLS = {"v1": V1, "v2": V2, "v2-pq": dict(V2, require_pq=True)}
DEADLINE = 120.0  # seconds; see wait_until


def wait_until(condition):
    """Poll until `condition` holds. DEADLINE only keeps a broken gateway from
    hanging the test run; nothing here is asserted to take less than it."""
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            pytest.fail("still waiting after %.0f s" % DEADLINE)
        time.sleep(0.05)


def content(answer):
    with answer:
        return answer["choices"][0]["message"]["content"]


def streamed_text(chunks, first_chunk):
    text = []
    for chunk in chunks:
        first_chunk.set()
        if chunk.choices:
            text.append(chunk.choices[0].delta.get("content") or "")
    return "".join(text)


async def async_streamed_text(chunks, first_chunk):
    text = []
    async for chunk in chunks:
        first_chunk.set()
        if chunk.choices:
            text.append(chunk.choices[0].delta.get("content") or "")
    return "".join(text)


class Caller:
    """One client object, on a thread of its own: a warm-up call (keys
    fetched, connection open), then, at once with the others, a call
    (`model`, streamed or not), and once that has ended however it ended
    and `go_on` is set, a next ordinary call. `warm`, `first` and `next` are
    the answers' text or the HushcallError that ended them; `in_flight` is
    set once a streamed first call has its first chunk (or the call ended)."""

    def __init__(self, url, asynchronous, protocol, model, stream, text, all_ready, go_on):
        self.url, self.asynchronous, self.options = url, asynchronous, PROTOCOLS[protocol]
        self.model, self.stream, self.text = model, stream, text
        self.all_ready = all_ready  # a Barrier: the first calls start together
        self.go_on = go_on  # an Event: the next calls wait for it
        self.warm = self.first = self.next = None
        self.in_flight = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        try:
            if self.asynchronous:
                asyncio.run(self.run_async())
            else:
                self.run_sync()
        finally:
            self.in_flight.set()  # a call that failed at once is no longer awaited

    def run_sync(self):
        client = hushcall.Client(self.url, **self.options)
        try:
            self.warm = content(client.create(model="m", messages=user("warm")))
        finally:
            self.all_ready.wait()
        try:
            if self.stream:
                with client.create(model=self.model, messages=user(self.text),
                                   stream=True) as chunks:
                    self.first = streamed_text(chunks, self.in_flight)
            else:
                self.first = content(client.create(model=self.model, messages=user(self.text)))
        except hushcall.HushcallError as e:
            self.first = e
        self.in_flight.set()
        self.go_on.wait()
        try:
            self.next = content(client.create(model="m", messages=user("next")))
        except hushcall.HushcallError as e:
            self.next = e

    async def run_async(self):
        async with hushcall.AsyncClient(self.url, **self.options) as client:
            try:
                self.warm = content(await client.create(model="m", messages=user("warm")))
            finally:
                await asyncio.to_thread(self.all_ready.wait)
            try:
                if self.stream:
                    async with await client.create(model=self.model, messages=user(self.text),
                                                   stream=True) as chunks:
                        self.first = await async_streamed_text(chunks, self.in_flight)
                else:
                    self.first = content(await client.create(model=self.model,
                                                             messages=user(self.text)))
            except hushcall.HushcallError as e:
                self.first = e
            self.in_flight.set()
            await asyncio.to_thread(self.go_on.wait)
            try:
                self.next = content(await client.create(model="m", messages=user("next")))
            except hushcall.HushcallError as e:
                self.next = e


def start(callers):
    start_threads([caller.thread for caller in callers])


def join(callers):
    join_threads([caller.thread for caller in callers])


def start_threads(threads):
    for thread in threads:
        thread.start()


def join_threads(threads):
    for thread in threads:
        thread.join()


# ---- a worker killed mid-request and mid-stream ----------------------------------------------

@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, server_keys, upstream):
    """`serve --processes 2` in front of the fake upstream, threads enough for
    every call the tests hold in flight (a stream holds one while it runs)."""
    tmp = tmp_path_factory.mktemp("faults-two")
    gw = Gateway(tmp, "--processes", "2", "--backend", "openai:" + upstream.url,
                 "--workers", "16", "--api-key", KEY, key_dir=keys_copy(server_keys, tmp))
    yield gw
    assert gw.stop() == 0


# The upstream holds each call this long: the kill comes once all are under way.
HELD_MS = 6000
WORDS = " ".join("w%d" % n for n in range(16))
CALLERS = 2 * 3 * 3  # sync and async; three each of a v1 call, a v2 call and a v2 stream


def test_a_worker_killed_mid_request_and_mid_stream(two_workers, upstream):
    gw = two_workers
    callers, go_on = [], threading.Event()
    all_ready = threading.Barrier(CALLERS + 1, timeout=DEADLINE)
    for asynchronous in (False, True):
        for n in range(3):
            for protocol in ("v1", "v2"):
                callers.append(Caller(gw.url, asynchronous, protocol, "slow-%d" % HELD_MS,
                                      False, "held %s %d" % (protocol, n), all_ready, go_on))
            # The upstream's words come HELD_MS / 16 apart; only v2 streams.
            callers.append(Caller(gw.url, asynchronous, "v2", "stream-slow-%d" % (HELD_MS // 16),
                                  True, WORDS, all_ready, go_on))
    assert len(callers) == CALLERS
    before = upstream_count(upstream)
    start(callers)
    all_ready.wait()
    for caller in callers:
        if caller.stream:
            caller.in_flight.wait()
    wait_until(lambda: upstream_count(upstream) >= before + 2 * CALLERS)  # warm, then held
    assert all(c.first is None for c in callers), [repr(c.first) for c in callers]
    killed = worker_pids(gw)[0]
    os.kill(killed, signal.SIGKILL)
    # Until the dying worker's listening socket is closed, a new connection may still
    # be queued on it and then reset: the next calls come once the parent reaped it.
    wait_until(lambda: "worker 0 (pid %d) exited" % killed in gw.log())
    go_on.set()
    join(callers)

    answered = [c for c in callers if isinstance(c.first, str)]
    cut = [c for c in callers if not isinstance(c.first, str)]
    assert [c.warm for c in callers] == ["upstream: warm"] * CALLERS
    assert answered and cut, "both workers held calls"
    for c in answered:
        assert c.first == "upstream: " + c.text, "the other worker's calls complete"
    for c in cut:
        # A cut answer is a connection error, a cut stream an incomplete one: never a
        # timeout (nothing hung), never a wrong answer.
        expected = hushcall.IncompleteStreamError if c.stream else hushcall.APIConnectionError
        assert type(c.first) is expected, (c.stream, repr(c.first))
        assert c.first.kind == ("truncated" if c.stream else "connection")
    assert [c.next for c in callers] == ["upstream: next"] * len(callers), \
        "the next call of every client object succeeds on a live process"


def worker_of(gw, payload_id):
    """The index of the worker whose access log answered `payload_id`."""
    pattern = re.compile(r"payload_id=%s .*worker=(\d+)" % re.escape(payload_id))
    wait_until(lambda: pattern.search(gw.log()))
    return int(pattern.search(gw.log()).group(1))


def test_with_retries_a_call_on_a_killed_worker_is_answered_by_another(two_workers, upstream):
    """What the table in docs/client.md promises for a dropped connection:
    with retries allowed, the call is sent again on a new connection, and a
    live worker answers it (the upstream sees it twice)."""
    gw = two_workers
    client = hushcall.Client(gw.url, **dict(V1, max_retries=2))
    warm = client.create(model="m", messages=user("warm"))
    worker = worker_of(gw, warm["_metadata"]["payload_id"])  # the kept connection's
    before, answers = upstream_count(upstream), []
    call = threading.Thread(target=lambda: answers.append(content(client.create(
        model="slow-2000", messages=user("retried")))))
    call.start()
    wait_until(lambda: upstream_count(upstream) > before)
    os.kill(worker_pids(gw)[worker], signal.SIGKILL)
    call.join()
    assert answers == ["upstream: retried"]
    assert upstream_count(upstream) == before + 2, "sent once, killed, sent again"


# ---- an upstream that resets mid-stream ---------------------------------------------------

def test_an_upstream_reset_mid_stream_is_an_incomplete_stream(two_workers):
    """v2 only: protocol v1 has no streams (docs/python.md "Streaming")."""
    go_on = threading.Event()
    go_on.set()
    callers = [Caller(two_workers.url, asynchronous, protocol, "stream-reset", True, "a b c d",
                      threading.Barrier(1), go_on)
               for asynchronous in (False, True) for protocol in ("v2", "v2-pq")]
    start(callers)
    join(callers)
    assert [c.warm for c in callers] == ["upstream: warm"] * len(callers)
    for c in callers:
        assert type(c.first) is hushcall.IncompleteStreamError, repr(c.first)
        assert c.first.kind == "truncated"
        assert c.next == "upstream: next"


# ---- an upstream that hangs ---------------------------------------------------------------

WORKERS = 4
HUNG = WORKERS - 1  # calls held by a hung upstream: fewer than the worker threads


def in_flight(gw):
    return httpx.get(gw.url + "/healthz", headers=AUTH).json()["in_flight"]


def streams_left(upstream):
    return httpx.get("http://127.0.0.1:%d/_last" % upstream.port).json()["streams"]["client_left"]


def hung_call(url, outcomes):
    try:
        content(hushcall.Client(url, **V2).create(model="slow-60000", messages=user("hung")))
    except hushcall.HushcallError as e:
        outcomes.append(e)


def ordinary_calls(url, count):
    """`count` calls at once (v1 and v2 in turn), each on its own client: their texts.
    A client's timeout, far below the hung upstream's 60 s, fails any that waits for
    a worker thread the hung calls still hold."""
    async def one(n):
        options = dict(PROTOCOLS[("v1", "v2")[n % 2]], timeout=20)
        async with hushcall.AsyncClient(url, **options) as client:
            return content(await client.create(model="m", messages=user("ordinary %d" % n)))

    async def all_of_them():
        return await asyncio.gather(*(one(n) for n in range(count)))

    return asyncio.run(all_of_them())


def test_a_hung_upstream_gets_504_at_the_timeout_and_starves_no_worker(tmp_path, server_keys,
                                                                        upstream):
    gw = Gateway(tmp_path, "--backend", "openai:" + upstream.url, "--workers", str(WORKERS),
                 # Long enough for the ordinary calls below on a loaded machine: they
                 # must be answered while the hung ones still wait.
                 "--upstream-timeout", "8", "--api-key", KEY,
                 key_dir=keys_copy(server_keys, tmp_path))
    try:
        outcomes = []
        hung = [threading.Thread(target=hung_call, args=(gw.url, outcomes)) for _ in range(HUNG)]
        start_threads(hung)
        wait_until(lambda: in_flight(gw) == HUNG)
        assert ordinary_calls(gw.url, 2) == ["upstream: ordinary 0", "upstream: ordinary 1"]
        assert in_flight(gw) == HUNG and outcomes == [], "answered while the hung calls wait"
        join_threads(hung)
        assert [(type(e), e.status_code) for e in outcomes] == [(hushcall.APIError, 504)] * HUNG

        # A stream the upstream stops feeding: the client's own timeout ends it (a
        # stream that began and was cut: incomplete), and the gateway, seeing its
        # client go, closes the upstream request and frees the worker.
        left = streams_left(upstream)
        with pytest.raises(hushcall.IncompleteStreamError) as cut:
            # Its timeout leaves room for the first chunk on a loaded machine.
            with hushcall.Client(gw.url, **dict(V2, timeout=5)).create(
                    model="stream-hang", messages=user("hang"), stream=True) as chunks:
                streamed_text(chunks, threading.Event())
        assert "Timeout was reached" in str(cut.value)  # curl's words: the client's timeout
        wait_until(lambda: in_flight(gw) == 0 and streams_left(upstream) > left)

        assert ordinary_calls(gw.url, WORKERS) == [
            "upstream: ordinary %d" % n for n in range(WORKERS)], "every worker thread free"
        assert in_flight(gw) == 0
    finally:
        assert gw.stop() == 0


# ---- Redis restarted under load ----------------------------------------------------------

UNAVAILABLE = {"detail": "Replay store unavailable"}
LOAD_THREADS = ("v1", "v2", "v1", "v2")  # per gateway
PAUSE = 0.02  # seconds between one thread's calls: a steady stream, not a spin


class Load:
    """Threads calling one gateway (sync clients, v1 and v2) until stopped.
    Each outcome is kept as (the phase its call began in, the text expected,
    the text answered or the HushcallError). After a 503 the thread takes a
    fresh client: a client's circuit breaker opens after five failures in a
    row and would refuse calls before they are sent."""

    def __init__(self, url, phase):
        self.url, self.phase = url, phase  # phase: a one-item list the test moves on
        self.outcomes = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(protocol, n))
                        for n, protocol in enumerate(LOAD_THREADS)]
        start_threads(self.threads)

    def run(self, protocol, n):
        client, k = None, 0
        while not self.stopping.is_set():
            client = client or hushcall.Client(self.url, **PROTOCOLS[protocol])
            phase, text = self.phase[0], "load %d %d" % (n, k)
            try:
                got = content(client.create(model="m", messages=user(text)))
            except hushcall.HushcallError as e:
                got, client = e, None
            self.outcomes.append((phase, "echo: " + text, got))
            k += 1
            time.sleep(PAUSE)

    def count(self, phase, kind):
        return sum(1 for p, _, got in self.outcomes if p == phase and isinstance(got, kind))

    def stop(self):
        self.stopping.set()
        join_threads(self.threads)


def metric(gw, outcome):
    text = httpx.get(gw.url + "/metrics", headers=AUTH).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hushcall_gateway_replay_store_unavailable_total" and \
                    sample.labels == {"outcome": outcome}:
                return sample.value
    pytest.fail("no replay_store_unavailable sample for %s" % outcome)


def refused_by_both_workers(url, send):
    """Send a replay on fresh connections until both workers refused it (409)."""
    refusers = set()
    for _ in range(ATTEMPTS):
        status, worker = send()
        assert status == 409
        refusers.add(worker)
        if refusers == {"0", "1"}:
            return
    pytest.fail("only workers %s refused the replay" % refusers)


def v1_replay_refused_by_both(gw):
    alice, mallory = Sender(), Sender()
    body = seal_request(gw.url, "after the restart")
    assert post_raw(gw.url, body, dict(alice.headers("p-f1"), **AUTH))[0] == 200

    def replay():
        status, headers, detail = post_raw(gw.url, body, dict(mallory.headers("p-f1"), **AUTH))
        assert status != 409 or detail == REPLAYED
        return status, headers["Hushcall-Worker"]
    refused_by_both_workers(gw.url, replay)


def v2_replay_refused_by_both(gw):
    enc, body, _ = x25519_request(gw.url, BODY)
    assert post(gw.url, enc.hex(), body, **AUTH).status_code == 200

    def replay():
        answer = post(gw.url, enc.hex(), body, **AUTH)
        return answer.status_code, answer.headers["Hushcall-Worker"]
    refused_by_both_workers(gw.url, replay)


def test_redis_restarted_under_load_fails_closed_or_open_as_configured(tmp_path, server_keys):
    """Two gateways of two processes each, one failing closed and one open,
    share a Redis that is stopped and started again while four clients call
    each: closed, every answer is right or a 503; open, every answer is right.
    After the restart every call is answered and replays are refused again by
    both processes; the metrics count every refusal."""
    redis_server = RedisServer(tmp_path)
    keys = keys_copy(server_keys, tmp_path)
    common = ("--processes", "2", "--replay-store", redis_server.url, "--api-key", KEY)
    gateways = []
    try:
        closed = Gateway(tmp_path, *common, key_dir=keys)
        gateways.append(closed)
        opened = Gateway(tmp_path, *common, "--replay-store-fail-open", key_dir=keys)
        gateways.append(opened)
        loads = restart_under_load(redis_server, {"closed": closed.url, "open": opened.url})
        counts = {name: tally(load) for name, load in loads.items()}
        for name, load in loads.items():
            for p, expected, got in load.outcomes:
                if isinstance(got, str):
                    assert got == expected
                else:
                    assert name == "closed" and p != "back", (counts, repr(got))
                    assert type(got) is hushcall.ServiceUnavailableError, repr(got)
                    assert (got.status_code, got.error_details) == (503, UNAVAILABLE)
        refused = sum(n for (_, what), n in counts["closed"].items() if what != "answered")
        assert (metric(closed, "refused"), metric(closed, "answered_unchecked")) == (refused, 0)
        assert metric(opened, "refused") == 0 and metric(opened, "answered_unchecked") >= 1
        v1_replay_refused_by_both(closed)
        v2_replay_refused_by_both(closed)
    finally:
        assert [gw.stop() for gw in gateways] == [0] * len(gateways)
        redis_server.stop()


def tally(load):
    """{(phase, "answered" or the error's class name): calls} of a Load."""
    return collections.Counter((p, "answered" if isinstance(got, str) else type(got).__name__)
                               for p, _, got in load.outcomes)


def restart_under_load(redis_server, urls):
    """Stop and start `redis_server` while a Load calls each of `urls` (the
    gateway failing "closed" and the one failing "open"); the Loads, stopped.
    A call that began in one phase may end in the next: one begun "down" may
    be answered once Redis is back."""
    phase = ["before"]
    loads = {name: Load(url, phase) for name, url in urls.items()}
    try:
        wait_until(lambda: all(load.count("before", str) >= 4 for load in loads.values()))
        redis_server.stop()
        phase[0] = "down"
        wait_until(lambda: loads["closed"].count("down", hushcall.ServiceUnavailableError) >= 4
                   and loads["open"].count("down", str) >= 4)
        assert redis_server.start()
        phase[0] = "back"
        wait_until(lambda: all(load.count("back", str) >= 8 for load in loads.values()))
    finally:
        for load in loads.values():
            load.stop()
    return loads
