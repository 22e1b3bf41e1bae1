"""The gateway's header handling against the real aiohttp server (a gateway child
on 127.0.0.1), over raw sockets so that any byte can be sent: headers that are
not UTF-8, duplicated, empty or long get a 400 with a fixed message, and a
seeded random campaign never gets a 500, a malformed answer, a traceback in the
log or a gateway that stops serving."""

import random
import re
import socket
import urllib.parse

import pytest

import hushcall
from hushcall import _core
from processes import Gateway, keys_copy

API_KEY = "fuzz-key-1"
FAST = {"allow_http": True, "protocol": "v1", "key_bits": 2048, "api_key": API_KEY}
CHECKED = ("Authorization", "X-Payload-ID", "X-Public-Key", "X-Security-Tier")
SEED = 20261201
CAMPAIGN = 1500
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*\r\n")


@pytest.fixture(scope="module")
def gw(tmp_path_factory, server_keys):
    tmp = tmp_path_factory.mktemp("headers")
    gateway = Gateway(tmp, "--api-key", API_KEY, "--max-body-bytes", "4096",
                      key_dir=keys_copy(server_keys, tmp))
    yield gateway
    assert gateway.stop() == 0, gateway.log()


@pytest.fixture(scope="module")
def public_key():
    return urllib.parse.quote(_core.KeyPair.generate(2048).public_pem()).encode()


def port_of(gw):
    return urllib.parse.urlsplit(gw.url).port


def exchange(gw, head_lines, body=b"", method=b"POST", path=b"/v1/chat/secure_completion"):
    """Send one request as raw bytes; (status, head, body) of the answer."""
    request = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % (method, path)
    request += b"".join(line + b"\r\n" for line in head_lines)
    request += b"Content-Length: %d\r\n\r\n" % len(body) + body
    with socket.create_connection(("127.0.0.1", port_of(gw)), timeout=30) as s:
        s.sendall(request)
        answer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    return parse_answer(answer)


def parse_answer(answer):
    """A well-formed answer: a status line (HTTP/1.0 for what aiohttp's parser
    refuses), headers, a body of Content-Length."""
    match = STATUS_LINE.match(answer)
    assert match, answer[:200]
    head, sep, body = answer.partition(b"\r\n\r\n")
    assert sep, answer[:200]
    lengths = re.findall(rb"(?im)^content-length: *(\d+)\r?$", head)
    assert len(lengths) == 1 and int(lengths[0]) == len(body), answer[:300]
    return int(match.group(1)), head, body


def detail(body):
    import json
    return json.loads(body)["detail"]


def good_lines(public_key, **override):
    lines = {"Authorization": b"Bearer " + API_KEY.encode(), "X-Payload-ID": b"pid-1",
             "X-Public-Key": public_key, "X-Security-Tier": b"standard"}
    lines.update(override)
    return [name.encode() + b": " + value for name, value in lines.items() if value is not None]


def assert_still_serving(gw):
    answer = hushcall.Client(gw.url, **FAST).create(model="m", messages=[
        {"role": "user", "content": "still here"}])
    assert answer["choices"][0]["message"]["content"] == "echo: still here"


# ---- each header, each way of being bad -------------------------------------------


@pytest.mark.parametrize("name", CHECKED)
def test_undecodable_header_is_400(gw, public_key, name):
    status, _, body = exchange(gw, good_lines(public_key, **{name: b"ab\xff\xfe\xc3("}), b"x")
    assert (status, detail(body)) == (400, "%s header is not valid UTF-8" % name)


@pytest.mark.parametrize("name", CHECKED)
def test_duplicate_header_is_400(gw, public_key, name):
    lines = good_lines(public_key) + good_lines(public_key)[CHECKED.index(name):][:1]
    status, _, body = exchange(gw, lines, b"x")
    assert (status, detail(body)) == (400, "Duplicate %s header" % name)


def test_nul_in_the_percent_encoded_public_key_is_400(gw, public_key):
    status, _, body = exchange(gw, good_lines(public_key, **{"X-Public-Key": b"%00" + public_key}),
                               b"x")
    assert (status, detail(body)) == (400, "X-Public-Key header contains a NUL character")


def test_valid_utf8_that_is_not_ascii_is_refused_by_the_core(gw, public_key):
    status, _, body = exchange(gw, good_lines(public_key, **{"X-Payload-ID": "pïd".encode()}),
                               b"x")
    assert status == 400
    assert detail(body).startswith("X-Payload-ID must be at most")


def test_healthz_with_an_undecodable_authorization(gw):
    status, _, body = exchange(gw, [b"Authorization: Bearer \xff\xfe"], method=b"GET",
                               path=b"/healthz")
    assert (status, body) == (200, b'{"status": "ok"}')
    assert_still_serving(gw)


def test_binding_names_an_argument_that_is_not_utf8():
    server = _core.Server(_core.KeyPair.generate(2048))
    for args, name in (((b"x", "pem", "pid\udcff"), "payload_id"),
                       ((b"x", "pem\udcfe", "pid"), "public_key"),
                       ((b"x", "pem", "pid", "high\udc80"), "security_tier")):
        with pytest.raises(ValueError) as e:
            server.handle(*args)
        assert type(e.value) is ValueError  # not the codec's UnicodeEncodeError, which quotes
        assert str(e.value) == "%s is not valid UTF-8 text" % name


# ---- the campaign ---------------------------------------------------------------------


def random_value(rng, public_key):
    kind = rng.randrange(8)
    if kind == 0:
        return b""
    if kind == 1:  # any byte but the line ends, which would end the header itself
        return bytes(rng.choice([b for b in range(256) if b not in (10, 13)])
                     for _ in range(rng.randrange(1, 64)))
    if kind == 2:  # bytes that are never UTF-8
        return bytes(rng.choice((0x80, 0xbf, 0xc0, 0xc1, 0xf5, 0xfe, 0xff))
                     for _ in range(rng.randrange(1, 16)))
    if kind == 3:  # long: past aiohttp's field limit now and then
        return b"a" * rng.choice((200, 4000, 8190, 9000))
    if kind == 4:
        return rng.choice((b"standard", b"high", b"maximum", b"Bearer " + API_KEY.encode(),
                           b"bearer " + API_KEY.encode(), b"pid-" + b"%d" % rng.randrange(99)))
    if kind == 5:  # percent escapes, valid or not
        return b"".join(rng.choice((b"%00", b"%ff", b"%c3%a9", b"%", b"%zz", b"-----BEGIN"))
                        for _ in range(rng.randrange(1, 12)))
    if kind == 6:
        return public_key
    return "ünï\u2028😀".encode()[:rng.randrange(1, 16)]


def random_request(rng, public_key):
    lines = []
    for name in CHECKED:
        for _ in range(rng.choice((0, 1, 1, 1, 2, 3))):
            value = random_value(rng, public_key)
            spelled = name if rng.random() < 0.8 else name.lower()
            lines.append(spelled.encode() + b":" + rng.choice((b" ", b"", b"\t")) + value)
    rng.shuffle(lines)
    body = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 64, 600))))
    if rng.random() < 0.1:
        return lines, body, b"GET", b"/healthz"
    return lines, body, b"POST", b"/v1/chat/secure_completion"


def test_random_header_campaign(gw, public_key):
    rng = random.Random(SEED)
    seen = {}
    for n in range(CAMPAIGN):
        lines, body, method, path = random_request(rng, public_key)
        status, _, answer = exchange(gw, lines, body, method, path)
        assert 200 <= status < 500, (n, status, lines, answer[:200])
        seen[status] = seen.get(status, 0) + 1
    # The campaign reached past the header checks, not only into them.
    assert seen.get(400, 0) > 0 and seen.get(401, 0) > 0 and seen.get(200, 0) > 0, seen
    assert gw.proc.poll() is None
    assert_still_serving(gw)
    log = gw.log()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
    # What aiohttp refused is logged as one line, without the header that broke it.
    assert "refused a malformed request from 127.0.0.1: " in log
    assert API_KEY not in log
