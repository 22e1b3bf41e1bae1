"""The replay stores in Redis (--replay-store, docs/operations.md "A shared
replay store"), against a real redis-server started here on loopback: the
same decisions as the in-process store (docs/security.md's rules), replays
refused across two gateways sharing one Redis, fail closed (503) or, when
the operator chose it, open while Redis is down, and decisions again once
it is back, without a restart."""

import collections
import concurrent.futures
import datetime
import ipaddress
import random
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hushcall import cli, replay, replay_redis
from processes import Gateway, RedisServer, _env, keys_copy
from test_ehbp_peer import post, x25519_request
from test_gateway import post_raw
from test_gateway_replay import REPLAYED, Sender, seal_request
from test_gateway_v2 import BODY, answered_then_replayed

UNAVAILABLE = {"detail": "Replay store unavailable"}
VERDICTS = ("new", "retry", "replayed", "exhausted")
OPS_KEY = "k-ops-17"
AUTH = {"Authorization": "Bearer " + OPS_KEY}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


class Clock:
    """Unix time that moves only when the test moves it."""

    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now


# ---- the same decisions as the in-process store ----------------------------------------


def test_random_decisions_match_the_in_process_store(redis_server):
    """One seeded random sequence of (digest, binding, expiry, time step)
    decided by the in-process store and by two Redis stores sharing one
    Redis (as two gateways do), taking turns: every verdict and count equal."""
    rng = random.Random(17)
    clock = Clock()
    local = replay.InProcessReplayStore(max_entries=10_000, clock=clock)
    outage = replay_redis.Outage(fail_open=False)
    client = replay_redis.client_for(redis_server.url)
    client.flushdb()
    shared = [replay_redis.RedisReplayStore(client, "v1", outage, clock=clock)
              for _ in range(2)]
    digests = [rng.randbytes(32) for _ in range(12)]
    bindings = [rng.randbytes(32) for _ in range(3)]
    seen, renewed, counts = {}, 0, collections.Counter()
    for step in range(4000):
        clock.now += rng.choice((0.0, 0.0, 0.0, 0.0, 0.3, 0.999, 1.0, 2.5, 31.0))
        digest = rng.choice(digests)
        # Mostly the binding it was first seen with (retries), sometimes another (replays).
        binding = seen.get(digest, rng.choice(bindings)) if rng.random() < 0.7 else (
            rng.choice(bindings))
        expires = clock.now + rng.choice((0.5, 1.0, 3.2, 10.0, 60.0, 60.0))
        expected = local.check_and_remember(digest, binding, expires)
        got = shared[step % 2].check_and_remember(digest, binding, expires)
        assert got == expected, "step %d" % step
        if expected[0] == "new":
            renewed += digest in seen  # seen before, forgotten at its expiry
            seen[digest] = binding
        counts[expected[0]] += 1
    assert set(counts) == set(VERDICTS), counts  # the sequence covered every verdict
    assert min(counts.values()) >= 50, counts
    assert renewed >= 50  # and expiry, many times
    assert not outage.down


@pytest.mark.parametrize("same_binding", [True, False], ids=["retries", "replays"])
def test_one_request_decided_at_once_by_many_is_new_once(redis_server, same_binding):
    """32 threads over two clients (two gateways) decide one request at the
    same moment: one "new", then retries up to three answers in all and
    "exhausted" (the same binding), or "replayed" (each its own binding)."""
    clock = Clock()
    outage = replay_redis.Outage(fail_open=False)
    stores = [replay_redis.RedisReplayStore(replay_redis.client_for(redis_server.url), "v1",
                                            outage, clock=clock) for _ in range(2)]
    digest, threads = random.Random(same_binding).randbytes(32), 32  # one per case
    start = threading.Barrier(threads)

    def decide(n):
        binding = b"b" * 32 if same_binding else n.to_bytes(32, "big")
        start.wait()
        return stores[n % 2].check_and_remember(digest, binding, clock.now + 60)[0]

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        verdicts = collections.Counter(pool.map(decide, range(threads)))
    if same_binding:
        assert verdicts == {"new": 1, "retry": 2, "exhausted": threads - 3}
    else:
        assert verdicts == {"new": 1, "replayed": threads - 1}


def test_keys_are_namespaced_by_protocol_and_kept_for_their_window(redis_server):
    clock = Clock()
    client = replay_redis.client_for(redis_server.url)
    client.flushdb()
    outage = replay_redis.Outage(fail_open=False)
    v1 = replay_redis.RedisReplayStore(client, "v1", outage, clock=clock)
    v2 = replay_redis.RedisReplayStore(client, "v2", outage, clock=clock)
    digest, binding = bytes(range(32)), b"b" * 32
    assert v1.check_and_remember(digest, binding, clock.now + 100) == ("new", 1)
    # The same digest in the other protocol's store is another request.
    assert v2.check_and_remember(digest, b"c" * 32, clock.now + 100) == ("new", 1)
    assert sorted(client.keys("*")) == [b"hushcall:replay:v1:" + digest.hex().encode(),
                                        b"hushcall:replay:v2:" + digest.hex().encode()]
    ttl = client.pttl(b"hushcall:replay:v1:" + digest.hex().encode())
    assert 100_000 < ttl <= (101 + replay_redis.KEY_GRACE) * 1000


def test_times_out_of_range_are_refused_as_by_the_in_process_store(redis_server):
    clock = Clock()
    store = replay_redis.RedisReplayStore(replay_redis.client_for(redis_server.url), "v1",
                                          replay_redis.Outage(False), clock=clock)
    local = replay.InProcessReplayStore(max_entries=10, clock=clock)
    for expires in (clock.now, clock.now - 1, 2.0 ** 32, float("nan")):
        for s in (store, local):
            with pytest.raises(ValueError):
                s.check_and_remember(b"d" * 32, b"b" * 32, expires)


def test_a_store_without_redis_raises_or_lets_through_and_recovers(tmp_path):
    server = RedisServer(tmp_path)
    clock = Clock()
    client = replay_redis.client_for(server.url, timeout=0.5)
    closed = replay_redis.RedisReplayStore(client, "v1", replay_redis.Outage(False), clock=clock)
    opened = replay_redis.RedisReplayStore(client, "v1", replay_redis.Outage(True), clock=clock)
    digest, binding, later = b"x" * 32, b"b" * 32, clock.now + 60
    try:
        assert closed.check_and_remember(digest, binding, later) == ("new", 1)
        server.stop()
        with pytest.raises(replay.ReplayStoreUnavailable):
            closed.check_and_remember(digest, binding, later)
        assert opened.check_and_remember(digest, b"other" * 6 + b"xx", later) == ("new", 1)
        assert (closed.outage.refused, opened.outage.unchecked) == (1, 1)
        assert closed.outage.down and opened.outage.down
        assert server.start()
        # Back, and empty (nothing saved): the request is new there again.
        assert closed.check_and_remember(digest, binding, later) == ("new", 1)
        assert opened.check_and_remember(digest, b"c" * 32, later) == ("replayed", 1)
        assert not closed.outage.down and not opened.outage.down
    finally:
        server.stop()


# ---- gateways sharing one Redis ----------------------------------------------------------


def redis_gateway(tmp, upstream, key_dir, store_url, *args):
    return Gateway(tmp, "--backend", "openai:" + upstream.url, "--log-format", "json",
                   "--replay-store", store_url, *args, key_dir=key_dir)


@pytest.fixture(scope="module")
def two_gateways(tmp_path_factory, server_keys, upstream, redis_server):
    """Two gateways, one key directory (v1 key and v2 ring), one Redis."""
    tmp = tmp_path_factory.mktemp("two")
    key_dir = keys_copy(server_keys, tmp)
    a = redis_gateway(tmp, upstream, key_dir, redis_server.url)
    b = redis_gateway(tmp, upstream, key_dir, redis_server.url)
    yield a, b
    assert a.stop() == 0
    assert b.stop() == 0


def test_a_v1_request_answered_by_one_gateway_is_refused_by_the_other(two_gateways):
    a, b = two_gateways
    alice, mallory = Sender(), Sender()
    body = seal_request(a.url, "shared secret")
    status, _, answer = post_raw(a.url, body, alice.headers("p-r1"))
    assert status == 200
    assert alice.open(answer)["choices"][0]["message"]["content"] == "upstream: shared secret"
    assert post_raw(b.url, body, mallory.headers("p-r1"))[::2] == (409, REPLAYED)
    assert post_raw(b.url, body, alice.headers("p-r1-other"))[::2] == (409, REPLAYED)
    # Alice's own retry at the other gateway is hers: answered, up to three answers in all.
    status, _, answer = post_raw(b.url, body, alice.headers("p-r1"))
    assert status == 200
    assert alice.open(answer)["choices"][0]["message"]["content"] == "upstream: shared secret"
    assert post_raw(a.url, body, alice.headers("p-r1"))[0] == 200
    assert post_raw(b.url, body, alice.headers("p-r1"))[::2] == (409, REPLAYED)


def test_a_v2_request_answered_by_one_gateway_is_refused_by_the_other(two_gateways, upstream):
    a, b = two_gateways
    again = answered_then_replayed(a.url, b.url)
    assert again.status_code == 409
    assert "ehbp-response-nonce" not in again.headers


# ---- Redis down, and back -----------------------------------------------------------------


def log_warnings(gw, text):
    return [line for line in gw.log().splitlines() if text in line]


def test_redis_down_fails_closed_with_503_and_recovers(tmp_path, server_keys, upstream):
    server = RedisServer(tmp_path)
    gw = redis_gateway(tmp_path, upstream, keys_copy(server_keys, tmp_path), server.url,
                       "--api-key", OPS_KEY)
    alice = Sender()

    def v1(body, sender, payload_id):
        return post_raw(gw.url, body, dict(sender.headers(payload_id), **AUTH))

    try:
        assert v1(seal_request(gw.url, "before"), alice, "p-1")[0] == 200
        server.stop()
        for n in range(2):
            status, headers, detail = v1(seal_request(gw.url, "during"), alice, "p-d%d" % n)
            assert (status, detail) == (503, UNAVAILABLE)
            assert headers["Retry-After"] == "1"
        enc, body, _ = x25519_request(gw.url, BODY)
        during = post(gw.url, enc.hex(), body, **AUTH)
        assert (during.status_code, during.json()) == (503, UNAVAILABLE)
        assert during.headers["Retry-After"] == "1"
        assert len(log_warnings(gw, "replay store unavailable")) == 1  # once per outage
        assert healthz(gw)["replay_store"] == {"shared": True, "available": False,
                                               "answered_unchecked": 0, "refused_unavailable": 3}

        assert server.start()
        body = seal_request(gw.url, "after")
        status, _, answer = v1(body, alice, "p-2")
        assert status == 200
        assert alice.open(answer)["choices"][0]["message"]["content"] == "upstream: after"
        assert v1(body, Sender(), "p-2")[::2] == (409, REPLAYED)
        assert len(log_warnings(gw, "replay store available again")) == 1
        assert healthz(gw)["replay_store"]["available"] is True
    finally:
        assert gw.stop() == 0
        server.stop()


def test_redis_down_with_fail_open_answers_unchecked_and_recovers(tmp_path, server_keys,
                                                                  upstream):
    server = RedisServer(tmp_path)
    gw = redis_gateway(tmp_path, upstream, keys_copy(server_keys, tmp_path), server.url,
                       "--replay-store-fail-open")
    alice = Sender()
    try:
        server.stop()
        body = seal_request(gw.url, "unchecked")
        status, _, answer = post_raw(gw.url, body, alice.headers("p-o"))
        assert status == 200
        assert alice.open(answer)["choices"][0]["message"]["content"] == "upstream: unchecked"
        enc, framed, _ = x25519_request(gw.url, BODY)
        assert post(gw.url, enc.hex(), framed).status_code == 200
        # The documented trade-off: a replay meanwhile is answered too.
        assert post_raw(gw.url, body, Sender().headers("p-o"))[0] == 200
        warnings = log_warnings(gw, "replay store unavailable")
        assert len(warnings) == 1 and "WITHOUT the replay check" in warnings[0]

        assert server.start()
        body = seal_request(gw.url, "checked again")
        assert post_raw(gw.url, body, alice.headers("p-c"))[0] == 200
        assert post_raw(gw.url, body, Sender().headers("p-c"))[::2] == (409, REPLAYED)
        back = log_warnings(gw, "replay store available again")
        assert len(back) == 1 and "3 requests answered unchecked" in back[0]
    finally:
        assert gw.stop() == 0
        server.stop()


def healthz(gw):
    health = httpx.get(gw.url + "/healthz", headers=AUTH).json()
    assert health["status"] == "ok"
    return health


def test_a_redis_that_never_answers_gets_503_at_the_timeout(tmp_path, server_keys, upstream):
    """A Redis that accepts and then says nothing (hung, or a black hole):
    each request waits out --replay-store-timeout, then is refused, and the
    gateway still answers what needs no replay check."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel completes connections; nobody ever reads them
    url = "redis://127.0.0.1:%d/0" % silent.getsockname()[1]
    gw = redis_gateway(tmp_path, upstream, keys_copy(server_keys, tmp_path), url,
                       "--replay-store-timeout", "0.2")
    try:
        alice = Sender()
        status, headers, detail = post_raw(gw.url, seal_request(gw.url, "hung"),
                                           alice.headers("p-h"))
        assert (status, detail) == (503, UNAVAILABLE)
        assert "TimeoutError" in log_warnings(gw, "replay store unavailable")[0]
        assert httpx.get(gw.url + "/healthz").json() == {"status": "ok"}
    finally:
        assert gw.stop() == 0
        silent.close()


def test_a_password_given_in_the_environment_is_used_and_removed(tmp_path, server_keys,
                                                                    upstream):
    password = "redis-canary-pw-17"
    server = RedisServer(tmp_path, "--requirepass", password)
    url = "redis://:%s@127.0.0.1:%d/0" % (password, server.port)
    gw = Gateway(tmp_path, "--backend", "openai:" + upstream.url,
                 key_dir=keys_copy(server_keys, tmp_path), env={cli.REPLAY_STORE_ENV: url})
    try:
        with open("/proc/%d/environ" % gw.proc.pid, "rb") as f:
            environ = f.read()
        assert cli.REPLAY_STORE_ENV.encode() in environ  # the scan reads the right block
        assert password.encode() not in environ
        body = seal_request(gw.url, "behind a password")
        assert post_raw(gw.url, body, Sender().headers("p-pw"))[0] == 200
        assert post_raw(gw.url, body, Sender().headers("p-pw"))[::2] == (409, REPLAYED)
        stored = redis.Redis.from_url(url).keys("hushcall:replay:v1:*")
        assert len(stored) == 1  # the decision was Redis's, not an in-process store's
    finally:
        assert gw.stop() == 0
        server.stop()
    assert password not in gw.log()


def self_signed(tmp_path):
    """(certificate, key) PEM files for 127.0.0.1, the certificate its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hushcall test redis")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "redis-cert.pem", tmp_path / "redis-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def test_rediss_with_its_ca_is_used_and_an_untrusted_certificate_fails_closed(
        tmp_path, server_keys, upstream):
    cert, key = self_signed(tmp_path)
    server = RedisServer(tmp_path, tls=(cert, key))
    trusted = Gateway(tmp_path, "--backend", "openai:" + upstream.url,
                      "--replay-store", server.url + "?ssl_ca_certs=" + cert,
                      key_dir=keys_copy(server_keys, tmp_path))
    untrusted = redis_gateway(tmp_path, upstream, keys_copy(server_keys, tmp_path), server.url)
    try:
        body = seal_request(trusted.url, "over TLS")
        assert post_raw(trusted.url, body, Sender().headers("p-tls"))[0] == 200
        assert post_raw(trusted.url, body, Sender().headers("p-tls"))[::2] == (409, REPLAYED)
        # The same Redis under a certificate nobody vouched for: refused, never used.
        status, _, detail = post_raw(untrusted.url, seal_request(untrusted.url, "mitm?"),
                                     Sender().headers("p-tls-2"))
        assert (status, detail) == (503, UNAVAILABLE)
        assert "certificate verify failed" in untrusted.log()
    finally:
        assert trusted.stop() == 0
        assert untrusted.stop() == 0
        server.stop()


@pytest.mark.parametrize("args, complaint", [
    (["--replay-store", "http://127.0.0.1:6379/0"], "redis:// or rediss://"),
    (["--replay-store-fail-open"], "--replay-store-fail-open needs --replay-store"),
])
def test_a_bad_replay_store_option_is_refused_at_start(tmp_path, args, complaint):
    proc = subprocess.run([sys.executable, "-m", "hushcall", "serve", "--port", "0",
                           "--key-dir", str(tmp_path / "k"), *args],
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert complaint in proc.stderr

