"""The reference gateway (`python -m hushcall serve`, docs/gateway.md) run as a
child process on loopback, with hushcall's own clients and raw HTTP: round
trips, the server key kept across restarts, every check in its documented
order, proxying to a fake OpenAI upstream and that upstream's failures,
logs free of plaintext, graceful shutdown, and the `chat` command."""

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pytest

import hushcall
from hushcall import _core
from processes import Gateway, ROOT, _env, keys_copy

CANARY = "CANARY-7f3a91-prompt"
FAST = {"allow_http": True, "protocol": "v1", "key_bits": 2048}
# /healthz tells in_flight only to a caller with an API key.
HEALTH_KEY = "k-health"


def user(text):
    return [{"role": "user", "content": text}]


def get(url, timeout=10, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return r.status, r.headers, r.read()


def in_flight(gw):
    health = get(gw.url + "/healthz", headers={"Authorization": "Bearer " + HEALTH_KEY})[2]
    return json.loads(health)["in_flight"]


def post_raw(url, body=b"", headers=None):
    """POST to the secure completion path; (status, headers, JSON body or bytes)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", "/v1/chat/secure_completion", body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        try:
            data = json.loads(data)
        except ValueError:
            pass
        return r.status, r.headers, data
    finally:
        conn.close()


MACHINE_PROTECTION = ("platform", "mlock_available", "dump_exclusion", "wipe_on_fork",
                      "openssl_secure_heap")


def assert_same_protection(reported):
    """The gateway's memory protection, as far as it is this machine's, not its process's."""
    mine = _core.get_memory_protection_info()
    assert set(reported) == set(mine)
    for field in MACHINE_PROTECTION:
        assert reported[field] == mine[field], field


def assert_request_protection(reported):
    """An answer's memory protection: the machine's booleans and this request's own."""
    mine = _core.get_memory_protection_info()
    assert set(reported) == set(MACHINE_PROTECTION) | {"request_locked", "request_bytes",
                                                       "answer_bytes"}
    for field in MACHINE_PROTECTION:
        assert reported[field] == mine[field], field
    # Answered while the request was held in the gateway's locked memory.
    assert reported["request_locked"] is True
    assert reported["request_bytes"] > 0 and reported["answer_bytes"] > 0


@pytest.fixture(scope="module")
def client_key():
    return _core.KeyPair.generate(2048)


@pytest.fixture(scope="module")
def good_headers(client_key):
    return {"X-Payload-ID": "raw-1",
            "X-Public-Key": urllib.parse.quote(client_key.public_pem()),
            "Content-Type": "application/octet-stream"}


# ---- round trips -------------------------------------------------------------


def test_sync_round_trip_and_metadata(echo):
    client = hushcall.Client(echo.url, **FAST)
    answer = client.create(model="m1", messages=[{"role": "system", "content": "be brief"},
                                                 {"role": "user", "content": "two words"}])
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "m1"
    assert answer["choices"][0]["message"]["content"] == "echo: two words"
    assert answer["usage"].to_dict() == {"prompt_tokens": 4, "completion_tokens": 3,
                                         "total_tokens": 7}
    meta = answer["_metadata"]
    assert answer["id"] == "chatcmpl-" + meta["payload_id"]
    assert meta["server"] == "hushcall-gateway"
    assert meta["backend"] == "echo"
    assert meta["security_tier"] == "standard"
    assert_request_protection(meta["memory_protection"].to_dict())
    # Unix seconds as an int, as NOMYO's API reference documents it, and not in the future.
    assert type(meta["processed_at"]) is int
    assert 1_700_000_000 < meta["processed_at"] <= time.time()
    assert meta["is_encrypted"] is True


def test_async_round_trip_with_tier(echo):
    async def main():
        async with hushcall.AsyncClient(echo.url, **FAST) as client:
            return await asyncio.gather(*(
                client.create(model="m", messages=user("q%d" % i), security_tier="high")
                for i in range(8)))

    answers = asyncio.run(main())
    assert [a["choices"][0]["message"]["content"] for a in answers] == \
        ["echo: q%d" % i for i in range(8)]
    assert {a["_metadata"]["security_tier"] for a in answers} == {"high"}


def test_public_key_and_healthz(echo):
    status, headers, body = get(echo.url + "/pki/public_key")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    with open(os.path.join(echo.key_dir, "public_key.pem"), "rb") as f:
        assert body == f.read()
    key = _core.KeyPair.load(os.path.join(echo.key_dir, "private_key.pem"))
    assert key.bits == 4096
    # No API keys configured: nobody is a known caller, so no details.
    for headers in ({}, {"Authorization": "Bearer anything"}):
        status, _, body = get(echo.url + "/healthz", headers=headers)
        assert (status, json.loads(body)) == (200, {"status": "ok"})


def test_healthz_details_need_an_api_key(guarded):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic k-one"}):
        status, _, body = get(guarded.url + "/healthz", headers=headers)
        assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, _, body = get(guarded.url + "/healthz", headers={"Authorization": "Bearer k-two"})
    health = json.loads(body)
    assert health["status"] == "ok" and health["backend"] == "echo"
    key = _core.KeyPair.load(os.path.join(guarded.key_dir, "private_key.pem"))
    assert health["key_fingerprint"] == key.fingerprint
    assert health["in_flight"] == 0 and health["tpm"] is None
    assert health["replay_store"] == {"shared": False}
    assert_same_protection(health["memory_protection"])


def test_key_kept_across_restart(tmp_path):
    gw = Gateway(tmp_path)
    first = get(gw.url + "/pki/public_key")[2]
    assert gw.stop() == 0
    mode = os.stat(os.path.join(gw.key_dir, "private_key.pem")).st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(gw.key_dir).st_mode) == 0o700
    again = Gateway(tmp_path, key_dir=gw.key_dir)
    try:
        assert get(again.url + "/pki/public_key")[2] == first
        # A client that pinned the first run's key still talks to the second.
        fp = _core.KeyPair.load(os.path.join(gw.key_dir, "private_key.pem")).fingerprint
        answer = hushcall.Client(again.url, server_key_fingerprint=fp, **FAST).create(
            model="m", messages=user("still you"))
        assert answer["choices"][0]["message"]["content"] == "echo: still you"
    finally:
        again.stop()


def test_encrypted_key_dir(tmp_path):
    env = {"HUSHCALL_GATEWAY_KEY_PASSWORD": "correct horse"}
    gw = Gateway(tmp_path, env=env)
    gw.stop()
    with open(os.path.join(gw.key_dir, "private_key.pem")) as f:
        assert "ENCRYPTED PRIVATE KEY" in f.read()
    with pytest.raises(hushcall.SecurityError):
        _core.KeyPair.load(os.path.join(gw.key_dir, "private_key.pem"))
    # Without the password the gateway refuses to start rather than make a new key.
    proc = subprocess.run([sys.executable, "-m", "hushcall", "serve", "--port", "0",
                           "--key-dir", gw.key_dir], env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert "password" in proc.stderr.lower()


# ---- the checks, in order ------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, server_keys):
    tmp = tmp_path_factory.mktemp("guarded")
    gw = Gateway(tmp, "--api-key", "k-one", "k-two",
                 "--max-body-bytes", "200000", "--log-format", "json",
                 key_dir=keys_copy(server_keys, tmp))
    yield gw
    gw.stop()


def test_api_keys(guarded):
    for key in (None, "wrong"):
        options = dict(FAST, max_retries=0)
        if key:
            options["api_key"] = key
        with pytest.raises(hushcall.AuthenticationError) as e:
            hushcall.Client(guarded.url, **options).create(model="m", messages=user("x"))
        assert e.value.status_code == 401
    answer = hushcall.Client(guarded.url, api_key="k-two", **FAST).create(
        model="m", messages=user("let me in"))
    assert answer["choices"][0]["message"]["content"] == "echo: let me in"
    status, _, body = post_raw(guarded.url, b"x", {"Authorization": "Basic k-one"})
    assert (status, body) == (401, {"detail": "Invalid API key"})


def test_header_and_tier_checks(guarded, good_headers):
    auth = {"Authorization": "Bearer k-one"}
    cases = [
        ({k: v for k, v in good_headers.items() if k != "X-Payload-ID"},
         400, "Missing X-Payload-ID header"),
        ({k: v for k, v in good_headers.items() if k != "X-Public-Key"},
         400, "Missing X-Public-Key header"),
        (dict(good_headers, **{"X-Security-Tier": "ultra"}), 400, "Invalid security tier"),
        (dict(good_headers, **{"X-Security-Tier": "maximum"}), 503,
         "Security tier 'maximum' requires TPM attestation, which this gateway does not offer"),
        (dict(good_headers, **{"X-Public-Key": "not a key"}), 400,
         "X-Public-Key is not an RSA public key of at least 2048 bits"),
    ]
    for headers, status, detail in cases:
        got = post_raw(guarded.url, b"{}", dict(headers, **auth))
        assert (got[0], got[2]) == (status, {"detail": detail}), headers


def test_bad_envelopes_get_one_opaque_answer(guarded, good_headers, client_key):
    auth = dict(good_headers, Authorization="Bearer k-one")
    sealed = json.dumps({"version": "1.0", "algorithm": "hybrid-aes256-rsa4096",
                         "encrypted_payload": {"ciphertext": "AAAA", "nonce": "AAAA",
                                               "tag": "AAAA"},
                         "encrypted_aes_key": "AAAA", "key_algorithm": "RSA-OAEP-SHA256",
                         "payload_algorithm": "AES-256-GCM"}).encode()
    for body in (b"", b"not json", b"[]", b'{"version": "1.0"}', sealed, b"\xff" * 64):
        status, _, detail = post_raw(guarded.url, body, auth)
        assert (status, detail) == (400, {"detail": "Invalid encrypted payload"}), body
    # Still serving after all of that.
    answer = hushcall.Client(guarded.url, api_key="k-one", **FAST).create(
        model="m", messages=user("fine"))
    assert answer["choices"][0]["message"]["content"] == "echo: fine"


def test_413_before_the_body_is_read(guarded, good_headers):
    port = urllib.parse.urlsplit(guarded.url).port
    head = ("POST /v1/chat/secure_completion HTTP/1.1\r\nHost: x\r\n"
            "Authorization: Bearer k-one\r\nX-Payload-ID: big\r\n"
            "X-Public-Key: %s\r\nContent-Length: 1000000000\r\n\r\n"
            % good_headers["X-Public-Key"])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(head.encode())
        # No body byte is ever sent: an answer proves the gateway did not wait for it.
        reply = s.recv(65536).decode("latin-1")
    assert reply.startswith("HTTP/1.1 413 ")
    assert '{"detail": "Request body too large"}' in reply


def test_413_for_chunked_body_over_the_limit(guarded, good_headers):
    def chunks():
        for _ in range(50):
            yield b"A" * 10000

    # http.client sends an iterable body chunked, with no Content-Length.
    status, _, detail = post_raw(guarded.url, chunks(),
                                 dict(good_headers, Authorization="Bearer k-one"))
    assert (status, detail) == (413, {"detail": "Request body too large"})


def test_413_reaches_our_client(guarded):
    client = hushcall.Client(guarded.url, api_key="k-one", max_retries=0, **FAST)
    with pytest.raises(hushcall.APIError) as e:
        client.create(model="m", messages=user("x" * 300000))
    assert e.value.status_code == 413
    # The same client goes on working.
    assert client.create(model="m", messages=user("ok"))["choices"][0]["message"]["content"] \
        == "echo: ok"


def test_json_log_has_no_plaintext(guarded, good_headers):
    auth = dict(good_headers, Authorization="Bearer k-one")
    post_raw(guarded.url, CANARY.encode(), dict(auth, **{"X-Payload-ID": ""}))  # 400
    post_raw(guarded.url, CANARY.encode() * 20000, auth)  # 413
    post_raw(guarded.url, CANARY.encode(), dict(auth, **{"X-Security-Tier": "maximum"}))  # 503
    client = hushcall.Client(guarded.url, api_key="k-one", **FAST)
    answer = client.create(model="m", messages=user("secret " + CANARY))
    assert CANARY in answer["choices"][0]["message"]["content"]
    with pytest.raises(hushcall.AuthenticationError):
        hushcall.Client(guarded.url, api_key="k-" + CANARY, max_retries=0, **FAST).create(
            model="m", messages=user(CANARY))
    log = guarded.log()
    assert CANARY not in log
    assert "k-one" not in log and "k-two" not in log
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    mine = [r for r in records if r["payload_id"] == answer["_metadata"]["payload_id"]]
    assert len(mine) == 1
    assert mine[0]["status"] == 200 and mine[0]["caller"] == "key#1"
    assert mine[0]["bytes_in"] > 0 and mine[0]["bytes_out"] > 0
    assert mine[0]["open_ms"] is not None and mine[0]["seal_ms"] is not None
    assert {r["status"] for r in records} >= {200, 400, 401, 413, 503}


# ---- rate limit ------------------------------------------------------------------


def test_rate_limit_and_retry_after(tmp_path, good_headers, server_keys):
    # One token every two seconds: the bucket stays empty between the calls below.
    gw = Gateway(tmp_path, "--rate-limit", "0.5", "--rate-burst", "1",
                 key_dir=keys_copy(server_keys, tmp_path))
    try:
        client = hushcall.Client(gw.url, **FAST)
        client.create(model="m", messages=user("first"))  # takes the only token
        status, headers, detail = post_raw(gw.url, b"{}", good_headers)
        assert (status, detail) == (429, {"detail": "Rate limit exceeded"})
        assert headers["Retry-After"] == "2"
        # The client waits out Retry-After and its retry gets through.
        answer = client.create(model="m", messages=user("second"))
        assert answer["choices"][0]["message"]["content"] == "echo: second"
        pid = answer["_metadata"]["payload_id"]
        statuses = [int(m) for m in re.findall(r"status=(\d+) .*payload_id=%s" % pid, gw.log())]
        assert statuses == [429, 200]
        with pytest.raises(hushcall.RateLimitError) as e:
            hushcall.Client(gw.url, max_retries=0, **FAST).create(model="m", messages=user("x"))
        assert e.value.status_code == 429
    finally:
        gw.stop()


def test_tls(tmp_path, server_keys):
    pki = tmp_path / "pki"
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "interop", "make_test_ca.py"),
                    str(pki)], check=True, timeout=60)
    gw = Gateway(tmp_path, "--tls-cert", str(pki / "server.pem"), "--tls-key",
                 str(pki / "server.key"), key_dir=keys_copy(server_keys, tmp_path))
    try:
        assert gw.url.startswith("https://127.0.0.1:")
        answer = hushcall.Client(gw.url, ca_file=str(pki / "ca.pem"), key_bits=2048).create(
            model="m", messages=user("over tls"), security_tier="high")
        assert answer["choices"][0]["message"]["content"] == "echo: over tls"
        with pytest.raises(hushcall.APIConnectionError):
            hushcall.Client(gw.url, ca_file=str(pki / "other_ca.pem"), key_bits=2048,
                            max_retries=0).create(model="m", messages=user("x"))
    finally:
        gw.stop()


def test_token_buckets(monkeypatch):
    from hushcall import gateway

    now = [100.0]
    monkeypatch.setattr(gateway.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(gateway, "MAX_BUCKETS", 2)
    buckets = gateway.TokenBuckets(rate=2.0, burst=2)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.5]
    now[0] += 0.25  # half a token back
    assert buckets.take("a") == pytest.approx(0.25)
    now[0] += 0.25
    assert buckets.take("a") == 0.0
    assert buckets.take("b") == 0.0 and buckets.take("c") == 0.0
    now[0] += 10  # all full again: the next new caller forgets them
    assert buckets.take("d") == 0.0
    assert set(buckets.buckets) == {"d"}


# ---- the openai backend ------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream, server_keys):
    tmp = tmp_path_factory.mktemp("proxy")
    gw = Gateway(tmp, "--backend", "openai:" + upstream.url, "--upstream-timeout", "1",
                 env={"HUSHCALL_UPSTREAM_API_KEY": "up-secret"},
                 key_dir=keys_copy(server_keys, tmp))
    yield gw
    gw.stop()


def last_upstream_request(upstream):
    return json.loads(get("http://127.0.0.1:%d/_last" % upstream.port)[2])


def test_proxy_round_trip(proxy, upstream):
    client = hushcall.Client(proxy.url, **FAST)
    messages = [{"role": "user", "content": "via upstream " + CANARY}]
    answer = client.create(model="llama", messages=messages, temperature=0.25)
    assert answer["choices"][0]["message"]["content"] == "upstream: via upstream " + CANARY
    assert answer["model"] == "llama"
    meta = answer["_metadata"]
    assert meta["server"] == "hushcall-gateway" and meta["backend"] == "openai"
    seen = last_upstream_request(upstream)
    assert json.loads(seen["body"]) == {"model": "llama", "messages": messages,
                                        "temperature": 0.25}
    assert seen["authorization"] == "Bearer up-secret"
    assert CANARY not in proxy.log() and "up-secret" not in proxy.log()


@pytest.mark.parametrize("model, cls, status", [
    ("fail-500", hushcall.APIError, 502),
    ("fail-404", hushcall.APIError, 502),
    ("garbage", hushcall.APIError, 502),
    ("array", hushcall.APIError, 502),
    ("fail-503", hushcall.ServiceUnavailableError, 503),
    ("fail-429", hushcall.ServiceUnavailableError, 503),
    ("slow-3000", hushcall.APIError, 504),
])
def test_upstream_failures(proxy, model, cls, status):
    async def main():
        async with hushcall.AsyncClient(proxy.url, max_retries=0, **FAST) as client:
            await client.create(model=model, messages=user("leak? " + CANARY))

    with pytest.raises(cls) as e:
        asyncio.run(main())
    assert e.value.status_code == status
    assert CANARY not in str(e.value)
    assert CANARY not in json.dumps(e.value.error_details)


def test_upstream_down(tmp_path, server_keys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    gw = Gateway(tmp_path, "--backend", "openai:http://127.0.0.1:%d/v1" % closed_port,
                 key_dir=keys_copy(server_keys, tmp_path))
    try:
        with pytest.raises(hushcall.ServiceUnavailableError) as e:
            hushcall.Client(gw.url, max_retries=0, **FAST).create(model="m", messages=user("x"))
        assert e.value.status_code == 503
    finally:
        gw.stop()


def test_max_in_flight(tmp_path, upstream, server_keys):
    gw = Gateway(tmp_path, "--backend", "openai:" + upstream.url, "--max-in-flight", "1",
                 "--api-key", HEALTH_KEY, key_dir=keys_copy(server_keys, tmp_path))
    try:
        async def main():
            async with hushcall.AsyncClient(gw.url, max_retries=0, api_key=HEALTH_KEY,
                                            **FAST) as client:
                slow = asyncio.ensure_future(client.create(model="slow-1000",
                                                           messages=user("first")))
                while in_flight(gw) == 0:
                    await asyncio.sleep(0.05)
                with pytest.raises(hushcall.ServiceUnavailableError) as e:
                    await client.create(model="m", messages=user("second"))
                assert e.value.error_details == {"detail": "Gateway busy"}
                return await slow

        answer = asyncio.run(main())
        assert answer["choices"][0]["message"]["content"] == "upstream: first"
    finally:
        gw.stop()


# ---- stopping -------------------------------------------------------------------------


def test_graceful_shutdown(tmp_path, upstream, server_keys):
    gw = Gateway(tmp_path, "--backend", "openai:" + upstream.url, "--api-key", HEALTH_KEY,
                 key_dir=keys_copy(server_keys, tmp_path))
    result = {}

    def slow_call():
        try:
            answer = hushcall.Client(gw.url, max_retries=0, api_key=HEALTH_KEY, **FAST).create(
                model="slow-1500", messages=user("finish me"))
            result["content"] = answer["choices"][0]["message"]["content"]
        except Exception as e:  # reported by the assertion below
            result["error"] = e

    caller = threading.Thread(target=slow_call)
    caller.start()
    deadline = time.monotonic() + 30
    while in_flight(gw) == 0:
        assert time.monotonic() < deadline, "the slow call never arrived"
        time.sleep(0.05)
    gw.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # The listener is closed: a new connection is refused while the call finishes.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", urllib.parse.urlsplit(gw.url).port),
                                 timeout=5).close()
    caller.join(30)
    assert result == {"content": "upstream: finish me"}
    assert gw.proc.wait(timeout=30) == 0
    gw.stop()
    assert "shutting down: 1 in flight" in gw.log()


# ---- python -m hushcall chat -----------------------------------------------------------


def chat(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "hushcall", "chat", *args], env=_env(),
                          input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture(scope="module")
def client_key_dir(tmp_path_factory, client_key):
    d = tmp_path_factory.mktemp("client") / "keys"
    client_key.save(str(d))
    return str(d)


def test_chat_command(echo, client_key_dir):
    done = chat("--base-url", echo.url, "--key-dir", client_key_dir, "hello there")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "echo: hello there\n"
    done = chat("--base-url", echo.url, "--key-dir", client_key_dir, "--json", "-v",
                "--tier", "high",
                "--system", "be kind", "-", stdin="from stdin")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["choices"][0]["message"]["content"] == "echo: from stdin"
    assert answer["usage"]["prompt_tokens"] == 4
    # "auto" speaks v2 to this gateway, tier and all: its log shows the tier it got
    assert '"protocol": "v2"' in done.stderr and "round trip:" in done.stderr
    assert "tier=high protocol=v2" in echo.log()


def test_chat_command_errors(guarded, client_key_dir):
    done = chat("--base-url", guarded.url, "--key-dir", client_key_dir, "--api-key", "nope", "hi")
    assert done.returncode == 1
    assert "AuthenticationError" in done.stderr
    done = chat("--base-url", "http://example.com", "hi")
    assert done.returncode == 1 and "http" in done.stderr
    done = chat("hi")
    assert done.returncode == 2 and "--base-url" in done.stderr


def test_serve_refuses_bad_arguments(tmp_path):
    for args in (["--backend", "ollama"], ["--backend", "openai:ftp://x"],
                 ["--tls-cert", "x.pem"], ["--rate-limit", "0"], ["--max-body-bytes", "-1"]):
        done = subprocess.run([sys.executable, "-m", "hushcall", "serve", "--key-dir",
                               str(tmp_path / "k"), *args], env=_env(), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, args
        assert "error" in done.stderr
    assert not os.path.exists(tmp_path / "k")
