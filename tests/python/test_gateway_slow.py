"""The reference gateway under slow and oversized clients (docs/gateway.md,
"Limits"): 50 slowloris connections on 127.0.0.1 are cut off at the head and
body deadlines while hushcall's own client keeps getting answers and the
gateway's memory stays put; the body byte budget refuses before reading; the
per-address connection cap; a request counts as in flight while its body is
still being uploaded. Every gateway is a child on loopback; nothing is timed."""

import asyncio
import http.client
import json
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
from aiohttp.test_utils import make_mocked_request

import hushcall
from hushcall.gateway_limits import Limits
from processes import Gateway, _env, keys_copy

# /healthz tells in_flight only to callers with an API key: every gateway here has one.
API_KEY = "slow-test-key"
FAST = {"allow_http": True, "protocol": "v1", "key_bits": 2048, "max_retries": 0,
        "api_key": API_KEY}
PATH = "/v1/chat/secure_completion"
HEADER_TIMEOUT = "2"
BODY_TIMEOUT = "3"
SLOW_HEADS = 25
SLOW_BODIES = 25
SLOW_BODY_LENGTH = 8_000_000  # declared, never sent: 200 MB reserved, under the 256 MiB default
TRICKLE_EVERY = 0.25
# Bounds for waiting on the gateway, never asserted as durations.
GIVE_UP_AFTER = 30.0
RSS_GROWTH_BOUND = 64 * 1024 * 1024


def port_of(gw):
    return urllib.parse.urlsplit(gw.url).port


def connect(gw):
    return socket.create_connection(("127.0.0.1", port_of(gw)), timeout=GIVE_UP_AFTER)


def head(content_length=None, chunked=False, payload_id="slow", expect=False):
    """A secure-completion request head that passes every check before the body."""
    lines = ["POST %s HTTP/1.1" % PATH, "Host: 127.0.0.1",
             "Authorization: Bearer " + API_KEY,
             "X-Payload-ID: " + payload_id, "X-Public-Key: not-read-before-the-body",
             "Content-Type: application/octet-stream"]
    if content_length is not None:
        lines.append("Content-Length: %d" % content_length)
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if expect:
        lines.append("Expect: 100-continue")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer_of(sock):
    """(status, headers, JSON body or bytes) of the response on sock."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    try:
        body = json.loads(body)
    except ValueError:
        pass
    return response.status, response.headers, body


def closed_by_server(sock):
    """Read until the server closes the connection; anything it said first is fine."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def records(gw):
    return [json.loads(line) for line in gw.log().splitlines() if line.startswith("{")]


def events(gw, event):
    return [r for r in records(gw) if r.get("event") == event]


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    pytest.fail("no VmRSS for the gateway")


def healthz(gw):
    with connect(gw) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     b"Authorization: Bearer %s\r\n\r\n" % API_KEY.encode())
        status, _, body = answer_of(sock)
    assert status == 200
    return body


def wait_until(condition, what):
    give_up = time.monotonic() + GIVE_UP_AFTER
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail("the gateway never got there: " + what)
        time.sleep(0.05)


def ask(client, i):
    answer = client.create(model="m", messages=[{"role": "user", "content": "ordinary %d" % i}])
    assert answer["choices"][0]["message"]["content"] == "echo: ordinary %d" % i


@pytest.fixture(scope="module")
def deadlines(tmp_path_factory, server_keys):
    tmp = tmp_path_factory.mktemp("deadlines")
    gw = Gateway(tmp, "--api-key", API_KEY, "--header-timeout", HEADER_TIMEOUT,
                 "--body-timeout", BODY_TIMEOUT,
                 "--log-format", "json", key_dir=keys_copy(server_keys, tmp))
    yield gw
    gw.stop()


# ---- slowloris -------------------------------------------------------------------------


class Slowloris(threading.Thread):
    """SLOW_HEADS connections trickling a request head that never ends and
    SLOW_BODIES trickling the body of a large declared Content-Length, one
    byte each per tick, until the gateway closes each of them."""

    def __init__(self, gw):
        super().__init__(daemon=True)
        self.open = {}
        for _ in range(SLOW_HEADS):
            sock = connect(gw)
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " % PATH.encode())
            self.open[sock] = "head"
        for i in range(SLOW_BODIES):
            sock = connect(gw)
            sock.sendall(head(SLOW_BODY_LENGTH, payload_id="slow-%d" % i))
            self.open[sock] = "body"
        self.cut_off = {"head": 0, "body": 0}
        self.never_cut = []  # the kinds of those still open when it gave up

    def run(self):
        give_up = time.monotonic() + GIVE_UP_AFTER
        while self.open and time.monotonic() < give_up:
            readable, _, _ = select.select(list(self.open), [], [], TRICKLE_EVERY)
            for sock in readable:
                self.read(sock)
            for sock in list(self.open):
                try:
                    sock.send(b"a")
                except (BrokenPipeError, ConnectionResetError):
                    self.close(sock)
        self.never_cut = sorted(self.open.values())
        for sock in list(self.open):
            sock.close()

    def read(self, sock):
        try:
            if sock.recv(65536):
                return  # a 408 before the close
        except ConnectionResetError:
            pass
        self.close(sock)

    def close(self, sock):
        self.cut_off[self.open.pop(sock)] += 1
        sock.close()

    def connected(self):
        return SLOW_HEADS + SLOW_BODIES - sum(self.cut_off.values())


def test_slowloris_cut_off_while_others_served(deadlines):
    client = hushcall.Client(deadlines.url, **FAST)
    ask(client, -1)  # keys made and fetched before the baseline
    rss_before = rss_bytes(deadlines.proc.pid)
    heads_before = len(events(deadlines, "header_timeout"))

    attack = Slowloris(deadlines)
    attack.start()
    answered_under_full_attack = answered = 0
    while attack.is_alive():
        ask(client, answered)
        answered += 1
        if attack.connected() == SLOW_HEADS + SLOW_BODIES:
            answered_under_full_attack += 1
    attack.join()
    ask(client, answered)  # and after it

    assert attack.never_cut == []
    assert attack.cut_off == {"head": SLOW_HEADS, "body": SLOW_BODIES}
    assert answered_under_full_attack > 0
    heads = events(deadlines, "header_timeout")[heads_before:]
    bodies = events(deadlines, "body_timeout")
    assert len(heads) == SLOW_HEADS and len(bodies) == SLOW_BODIES
    assert {r["client"] for r in heads + bodies} == {"127.0.0.1"}
    # Each cut-off upload is in the access log too, as the 408 it was answered.
    cut_uploads = {r["payload_id"]: r["status"] for r in records(deadlines)
                   if str(r.get("payload_id")).startswith("slow-")}
    assert cut_uploads == {"slow-%d" % i: 408 for i in range(SLOW_BODIES)}
    assert healthz(deadlines)["in_flight"] == 0
    # 200 MB of declared bodies never became memory.
    rss_after = rss_bytes(deadlines.proc.pid)
    assert rss_after - rss_before < RSS_GROWTH_BOUND, (rss_before, rss_after)


def test_body_deadline_answers_408_and_closes(deadlines):
    with connect(deadlines) as sock:
        sock.sendall(head(1000, payload_id="late") + b"x" * 10)
        status, headers, detail = answer_of(sock)
        assert (status, detail) == (408, {"detail": "Request body not received in time"})
        assert headers["Connection"] == "close"
        assert closed_by_server(sock)
    completions = [r for r in records(deadlines) if r.get("payload_id") == "late"]
    assert [r["status"] for r in completions] == [408]


def test_idle_keep_alive_outlives_the_head_deadline(deadlines):
    with connect(deadlines) as sock:
        for request in range(2):
            if request:
                # Idle between requests: keepalive_timeout's business, not the head deadline's.
                time.sleep(float(HEADER_TIMEOUT) + 0.5)
            sock.sendall(b"GET /pki/public_key HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, _, body = answer_of(sock)
            assert status == 200 and body.startswith(b"-----BEGIN PUBLIC KEY-----")


def test_head_deadline_runs_from_the_connection(deadlines):
    before = len(events(deadlines, "header_timeout"))
    with connect(deadlines) as sock:
        assert closed_by_server(sock)  # a connection that never says anything
    assert len(events(deadlines, "header_timeout")) == before + 1


# ---- the byte budget -------------------------------------------------------------------


@pytest.fixture(scope="module")
def budget(tmp_path_factory, server_keys):
    tmp = tmp_path_factory.mktemp("budget")
    gw = Gateway(tmp, "--api-key", API_KEY, "--max-buffered-bytes", "100000",
                 "--log-format", "json",
                 key_dir=keys_copy(server_keys, tmp))
    yield gw
    gw.stop()


def refused_for_budget(answer):
    status, headers, detail = answer
    return (status == 503 and headers["Retry-After"] == "1"
            and headers["Connection"] == "close"
            and detail == {"detail": "Gateway busy: too many request bytes buffered"})


def first_line(sock):
    line = b""
    while not line.endswith(b"\r\n"):
        byte = sock.recv(1)
        assert byte, "closed after %r" % line
        line += byte
    return line


def test_budget_refuses_before_reading(budget):
    with connect(budget) as sock:
        sock.sendall(head(150000))  # and not one byte of the body
        assert refused_for_budget(answer_of(sock))
    # A client that waits to be told to send it is told no, not 100 Continue.
    with connect(budget) as sock:
        sock.sendall(head(150000, expect=True))
        assert first_line(sock) == b"HTTP/1.1 503 Service Unavailable\r\n"


def test_budget_is_shared_and_given_back(budget):
    holder = connect(budget)
    holder.sendall(head(60000, payload_id="holder", expect=True))
    assert first_line(holder) == b"HTTP/1.1 100 Continue\r\n"
    assert first_line(holder) == b"\r\n"
    holder.sendall(b"x" * 100)
    wait_until(lambda: healthz(budget)["in_flight"] == 1, "the holder's body being read")
    with connect(budget) as sock:
        sock.sendall(head(60000))
        assert refused_for_budget(answer_of(sock))
    # The holder finishes (its key is refused once the body is in), and its bytes come back.
    holder.sendall(b"x" * 59900)
    status, _, detail = answer_of(holder)
    assert (status, detail) == (
        400, {"detail": "X-Public-Key is not an RSA public key of at least 2048 bits"})
    holder.close()
    with connect(budget) as sock:
        sock.sendall(head(60000) + b"x" * 60000)
        assert answer_of(sock)[0] == 400

    # A holder that goes away mid-body gives its bytes back too.
    quitter = connect(budget)
    quitter.sendall(head(60000, payload_id="quitter") + b"x" * 100)
    wait_until(lambda: healthz(budget)["in_flight"] == 1, "the quitter's body being read")
    quitter.close()
    wait_until(lambda: healthz(budget)["in_flight"] == 0, "the quitter's slot given back")
    with connect(budget) as sock:
        sock.sendall(head(60000) + b"x" * 60000)
        assert answer_of(sock)[0] == 400


def test_budget_counts_chunks_as_they_come(budget):
    chunk = b"x" * 30000
    with connect(budget) as sock:
        sock.sendall(head(chunked=True))
        try:
            for _ in range(5):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed before all of it was sent
        assert refused_for_budget(answer_of(sock))
    # Still usable, for a real client too.
    ask(hushcall.Client(budget.url, **FAST), 0)


# ---- connections per address and requests in flight ----------------------------------------


def refused_outright(sock):
    """True when the server closed the connection without answering a request on it."""
    try:
        sock.sendall(b"GET /pki/public_key HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        return sock.recv(65536) == b""
    except (BrokenPipeError, ConnectionResetError):
        return True


def public_key_answered(gw):
    with connect(gw) as sock:
        sock.sendall(b"GET /pki/public_key HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Connection: close\r\n\r\n")
        try:
            return answer_of(sock)[0] == 200
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return False  # still refused: the closed one is not counted off yet


def test_connections_per_address(tmp_path, server_keys):
    gw = Gateway(tmp_path, "--api-key", API_KEY, "--max-connections-per-ip", "3",
                 "--log-format", "json",
                 key_dir=keys_copy(server_keys, tmp_path))
    try:
        kept = [connect(gw) for _ in range(3)]
        refused = [connect(gw) for _ in range(20)]
        for sock in refused:
            assert refused_outright(sock)
            sock.close()
        lines = events(gw, "connection_refused")
        assert 1 <= len(lines) < len(refused)  # rate-limited
        assert lines[0]["client"] == "127.0.0.1" and lines[0]["open"] == 3
        kept.pop().close()
        wait_until(lambda: public_key_answered(gw), "a connection after one closed")
        for sock in kept:
            sock.close()
    finally:
        gw.stop()


def test_in_flight_counts_from_the_head(tmp_path, server_keys):
    gw = Gateway(tmp_path, "--api-key", API_KEY, "--max-in-flight", "1",
                 key_dir=keys_copy(server_keys, tmp_path))
    try:
        uploading = connect(gw)
        uploading.sendall(head(1000, payload_id="uploading") + b"x" * 10)
        wait_until(lambda: healthz(gw)["in_flight"] == 1, "the upload being counted")
        with connect(gw) as sock:
            sock.sendall(head(10) + b"x" * 10)
            status, headers, detail = answer_of(sock)
        assert (status, headers["Retry-After"], detail) == (503, "1", {"detail": "Gateway busy"})
        uploading.sendall(b"x" * 990)
        assert answer_of(uploading)[0] == 400
        uploading.close()
        wait_until(lambda: healthz(gw)["in_flight"] == 0, "the slot given back")
        ask(hushcall.Client(gw.url, **FAST), 0)
    finally:
        gw.stop()


# ---- what a request holds is given back on every path, in process ------------------------


def limits():
    return Limits(max_in_flight=1, max_buffered_bytes=100, header_timeout=1.0,
                  max_connections_per_ip=1)


@pytest.mark.parametrize("ending", [ValueError, asyncio.CancelledError, ConnectionResetError])
def test_holdings_given_back_when_the_handler_fails(ending):
    held = limits()

    async def handler(request):
        assert held.admit(request) and held.reserve(request, 60) and held.reserve(request, 40)
        assert not held.reserve(request, 1)
        raise ending()

    with pytest.raises(ending):
        asyncio.run(held.hold_until_sent(make_mocked_request("POST", PATH), handler))
    assert (held.in_flight, held.buffered_bytes) == (0, 0)


def test_refused_request_holds_nothing():
    held = limits()
    holder, refused = make_mocked_request("POST", PATH), make_mocked_request("POST", PATH)
    assert held.admit(holder)
    assert not held.admit(refused)
    held.release(refused)
    assert held.in_flight == 1
    held.release(holder)
    held.release(holder)  # twice is harmless
    assert held.in_flight == 0


def test_serve_refuses_bad_limits(tmp_path):
    for args in (["--header-timeout", "0"], ["--body-timeout", "-1"],
                 ["--max-buffered-bytes", "0"], ["--max-connections-per-ip", "0"]):
        done = subprocess.run([sys.executable, "-m", "hushcall", "serve", "--key-dir",
                               str(tmp_path / "k"), *args], env=_env(), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, args
        assert args[0] in done.stderr
    assert not (tmp_path / "k").exists()
