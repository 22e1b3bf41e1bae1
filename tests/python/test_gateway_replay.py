"""Replayed v1 requests (docs/security.md): a request body captured on the way
and sent again under another client key or payload id is refused with 409
before the backend runs; the client's own retry of the very same bytes is
answered (from the answer cache once answered), at most three times; the
cache is bounded by its window and its entry cap. Requests here are sealed
with tests/interop/v1_envelope.py (the `cryptography` package, no hushcall),
and the real `nomyo` client retries through a connection dropped after the
gateway answered."""

import asyncio
import importlib.util
import json
import os
import socket
import struct
import threading
import time
import urllib.parse

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hushcall import _core, replay
from processes import Gateway, ROOT, keys_copy
from test_gateway import get, post_raw

ENVELOPE = os.path.join(ROOT, "tests", "interop", "v1_envelope.py")
REPLAYED = {"detail": "replayed request"}


def _load_envelope():
    spec = importlib.util.spec_from_file_location("v1_envelope", ENVELOPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


envelope = _load_envelope()


class Sender:
    """A client made of `cryptography` alone: its key, its headers."""

    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.quoted_pem = urllib.parse.quote(pem.decode())

    def headers(self, payload_id):
        return {"X-Payload-ID": payload_id, "X-Public-Key": self.quoted_pem,
                "Content-Type": "application/octet-stream"}

    def open(self, package):
        """The answer in a sealed package, as bytes or as post_raw hands it over, parsed."""
        if isinstance(package, dict):
            package = json.dumps(package)
        return json.loads(envelope.open_package(self.key, package))


def seal_request(gateway_url, text, model="m"):
    server_key = serialization.load_pem_public_key(get(gateway_url + "/pki/public_key")[2])
    chat = {"model": model, "messages": [{"role": "user", "content": text}]}
    return envelope.seal(server_key, json.dumps(chat).encode())


def upstream_count(upstream):
    return json.loads(get("http://127.0.0.1:%d/_last" % upstream.port)[2])["count"]


def log_records(gw):
    return [json.loads(line) for line in gw.log().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def alice():
    return Sender()


@pytest.fixture(scope="module")
def mallory():
    return Sender()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream, server_keys):
    tmp = tmp_path_factory.mktemp("replay")
    gateway = Gateway(tmp, "--backend", "openai:" + upstream.url, "--log-format", "json",
                      key_dir=keys_copy(server_keys, tmp))
    yield gateway
    gateway.stop()


# ---- replays are refused before the backend -----------------------------------------


def test_replay_under_another_key_is_refused(gw, upstream, alice, mallory):
    body = seal_request(gw.url, "the diagnosis is private")
    status, _, answer = post_raw(gw.url, body, alice.headers("p-1"))
    assert status == 200
    assert alice.open(answer)["choices"][0]["message"]["content"] == (
        "upstream: the diagnosis is private")
    seen = upstream_count(upstream)

    status, _, detail = post_raw(gw.url, body, mallory.headers("p-1"))
    assert (status, detail) == (409, REPLAYED)
    assert upstream_count(upstream) == seen  # the backend never saw the replay
    refused = [r for r in log_records(gw) if r["status"] == 409]
    assert refused and refused[-1]["replay"] == 1


def test_replay_with_another_payload_id_is_refused(gw, upstream, alice):
    body = seal_request(gw.url, "another secret")
    assert post_raw(gw.url, body, alice.headers("p-2"))[0] == 200
    seen = upstream_count(upstream)
    assert post_raw(gw.url, body, alice.headers("p-2-other"))[:3:2] == (409, REPLAYED)
    assert upstream_count(upstream) == seen


def test_refused_replay_leaves_the_owner_retries(gw, alice, mallory):
    body = seal_request(gw.url, "still mine")
    first = post_raw(gw.url, body, alice.headers("p-3"))
    assert first[0] == 200
    for _ in range(3):
        assert post_raw(gw.url, body, mallory.headers("p-3"))[0] == 409
    assert post_raw(gw.url, body, alice.headers("p-3"))[0] == 200


# ---- the client's own retries ---------------------------------------------------------


def test_retry_is_served_from_the_answer_cache_at_most_three_times(gw, upstream, alice):
    body = seal_request(gw.url, "retry me")
    status, _, first = post_raw(gw.url, body, alice.headers("p-4"))
    assert status == 200
    seen = upstream_count(upstream)
    for _ in range(2):
        status, _, again = post_raw(gw.url, body, alice.headers("p-4"))
        assert status == 200
        assert again == first  # the very same sealed answer: the backend did not run again
    assert upstream_count(upstream) == seen
    assert alice.open(first)["choices"][0]["message"]["content"] == "upstream: retry me"
    # A fourth answer is never given.
    assert post_raw(gw.url, body, alice.headers("p-4"))[:3:2] == (409, REPLAYED)
    mine = [r for r in log_records(gw) if r.get("payload_id") == "p-4"]
    assert [r["status"] for r in mine] == [200, 200, 200, 409]
    assert [r.get("answers") for r in mine] == [None, 2, 3, 3]


def test_retry_after_an_upstream_failure_runs_the_backend_again(gw, upstream, alice):
    body = seal_request(gw.url, "flaky", model="fail-503")
    before = upstream_count(upstream)
    for _ in range(3):
        assert post_raw(gw.url, body, alice.headers("p-5"))[0] == 503
    assert upstream_count(upstream) == before + 3
    assert post_raw(gw.url, body, alice.headers("p-5"))[:3:2] == (409, REPLAYED)
    assert upstream_count(upstream) == before + 3


def test_unopened_packages_are_not_remembered(gw, alice, mallory):
    """Only a package that opens is remembered: garbage cannot fill the cache
    or block anyone, and a refused request can be sent again."""
    body = seal_request(gw.url, "x")
    broken = body.replace(b'"tag": "', b'"tag": "A', 1)
    for sender in (alice, mallory):
        assert post_raw(gw.url, broken, sender.headers("p-6"))[0] == 400
    assert post_raw(gw.url, body, mallory.headers("p-6"))[0] == 200


# ---- the bounds -------------------------------------------------------------------------


def test_window_and_entry_cap(tmp_path, server_keys, alice, mallory):
    gw = Gateway(tmp_path, "--replay-window", "1", "--replay-max-entries", "2",
                 "--log-format", "json", key_dir=keys_copy(server_keys, tmp_path))
    try:
        old = seal_request(gw.url, "old")
        assert post_raw(gw.url, old, alice.headers("w-1"))[0] == 200
        time.sleep(2.5)  # past the 1 s window (kept in whole seconds, rounded up)
        assert post_raw(gw.url, old, mallory.headers("w-1"))[0] == 200

        bodies = [seal_request(gw.url, "cap %d" % i) for i in range(4)]
        for i, body in enumerate(bodies):
            assert post_raw(gw.url, body, alice.headers("c-%d" % i))[0] == 200
        # The newest two are remembered; the oldest were pushed out to keep the cap.
        assert post_raw(gw.url, bodies[3], mallory.headers("c-3"))[0] == 409
        assert post_raw(gw.url, bodies[2], mallory.headers("c-2"))[0] == 409
        assert post_raw(gw.url, bodies[0], mallory.headers("c-0"))[0] == 200
    finally:
        gw.stop()
    assert gw.log().count("replay cache full") == 1


def test_stores_directly():
    store = replay.InProcessReplayStore(max_entries=10)
    digest, binding, other = os.urandom(32), os.urandom(32), os.urandom(32)
    later = time.time() + 60
    assert store.check_and_remember(digest, binding, later) == ("new", 1)
    assert store.check_and_remember(digest, other, later) == ("replayed", 1)
    assert store.check_and_remember(digest, binding, later) == ("retry", 2)
    with pytest.raises(ValueError):
        store.check_and_remember(b"short", binding, later)
    with pytest.raises(ValueError):
        store.check_and_remember(digest, binding, time.time() - 1)  # already expired
    with pytest.raises(ValueError):
        _core.ReplayCache(0)
    with pytest.raises(ValueError):
        _core.ReplayCache(10, max_answers=300)

    cache = replay.AnswerCache(ttl=60, max_bytes=10)
    cache.put(b"a", b"12345")
    cache.put(b"b", b"67890")
    cache.put(b"c", b"xyz")  # over 10 bytes: the oldest goes
    assert (cache.get(b"a"), cache.get(b"b"), cache.get(b"c")) == (None, b"67890", b"xyz")
    cache.put(b"huge", b"x" * 11)  # larger than the whole cache: not kept
    assert cache.get(b"huge") is None and cache.bytes == 8
    expiring = replay.AnswerCache(ttl=0.01, max_bytes=100)
    expiring.put(b"a", b"1")
    time.sleep(0.05)
    assert expiring.get(b"a") is None and expiring.bytes == 0


def test_exchange_answers_once(server_keys, alice):
    key = _core.KeyPair.load(os.path.join(server_keys, "private_key.pem"))
    server = _core.Server(key)
    public = serialization.load_pem_public_key(key.public_pem().encode())
    body = envelope.seal(public, json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode())
    pem = urllib.parse.unquote(alice.quoted_pem)
    first = server.open(body, pem, "x-1")
    again = server.open(body, pem, "x-1")
    other = server.open(body, pem, "x-2")
    digest, binding = first.replay_key
    assert again.replay_key == (digest, binding)
    assert other.replay_key[0] == digest and other.replay_key[1] != binding
    package, timings = first.answer()
    assert alice.open(package)["choices"][0]["message"]["content"] == "echo: hi"
    assert set(timings) == {"open_ms", "backend_ms", "seal_ms", "upstream_status"}
    with pytest.raises(RuntimeError):
        first.answer()
    with pytest.raises(RuntimeError):
        first.replay_key
    again.close()
    again.close()
    with pytest.raises(RuntimeError):
        again.answer()
    with pytest.raises(TypeError):
        type(first)()


# ---- the real nomyo client, through a connection dropped after the answer ------------


class DropFirstAnswerProxy:
    """A loopback TCP proxy in front of the gateway. The first POST it sees is
    forwarded, the gateway's whole answer read, and the client's connection
    reset instead of passing the answer on: the gateway has answered, the
    client has not heard. Everything else passes through."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.posts = 0
        self.dropped_answer = b""
        self.lock = threading.Lock()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def serve(self, client):
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        request = self.read_head_and_body(client)
        with self.lock:
            is_post = request.startswith(b"POST ")
            self.posts += is_post
            drop = is_post and self.posts == 1
        upstream.sendall(request)
        if drop:
            self.dropped_answer = self.read_head_and_body(upstream)
            # RST, not FIN: the client sees a connection reset (a network error it retries).
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            upstream.close()
            return
        pipes = [threading.Thread(target=self.pipe, args=(a, b), daemon=True)
                 for a, b in ((client, upstream), (upstream, client))]
        for p in pipes:
            p.start()
        for p in pipes:
            p.join()
        client.close()
        upstream.close()

    @staticmethod
    def pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    @staticmethod
    def read_head_and_body(sock):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return head + b"\r\n\r\n" + rest

    def close(self):
        self.listener.close()


def test_nomyo_retry_after_a_dropped_answer_is_served_once(gw, upstream):
    from nomyo import SecureChatCompletion

    proxy = DropFirstAnswerProxy(urllib.parse.urlsplit(gw.url).port)
    try:
        before = upstream_count(upstream)
        client = SecureChatCompletion(base_url="http://127.0.0.1:%d" % proxy.port,
                                      allow_http=True)
        answer = asyncio.run(client.create(
            model="m", messages=[{"role": "user", "content": "dropped once"}]))
        assert answer["choices"][0]["message"]["content"] == "upstream: dropped once"
        assert proxy.posts == 2  # nomyo did retry, once
        assert proxy.dropped_answer.startswith(b"HTTP/1.1 200")  # the gateway had answered
        assert upstream_count(upstream) == before + 1  # and the backend ran once
    finally:
        proxy.close()
    retried = [r for r in log_records(gw) if r.get("answers") == 2 and r["status"] == 200]
    assert retried, "the retry was not answered from the replay cache"
