"""Differential test: hushcall's clients (C, Python, Lua) open what the real `nomyo` client opens.

A loopback peer serves, under /v/<variant>, answers whose packages vary one non-cryptographic
thing each (a field's type or absence, unknown members, unusual but valid JSON, the plaintext's
shape), sealed with `cryptography` to the X-Public-Key of each request. The real nomyo client
(send_secure_request, the path SecureChatCompletion takes), our Python client, our C client
(build/differential_client) and our Lua client (tests/python/differential_client.lua) each
request every variant. They must agree on accept/refuse and, when accepted, on the whole
document, _metadata.processed_at included, down to int/float and array/object.

Where hushcall refuses on purpose what nomyo accepts, the variant is in REFUSED_ON_PURPOSE and
named in the "Refused on purpose" table of docs/protocol-v1.md; any other disagreement fails.
"""
import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
import uuid

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import hushcall
from nomyo import SecureCompletionClient as nomyo_scc
from processes import ROOT, _env

sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))
from v1_envelope import package_fields  # noqa: E402

# nomyo warns about HTTP base URLs and, without its optional extras, about secure memory.
pytestmark = pytest.mark.filterwarnings("ignore")

BUILD_DIR = os.environ.get("HUSHCALL_BUILD_DIR", os.path.join(ROOT, "build"))
C_CLIENT = os.path.join(BUILD_DIR, "differential_client")
LUA_CLIENT = os.path.join(ROOT, "tests", "python", "differential_client.lua")
DOCS = os.path.join(ROOT, "docs", "protocol-v1.md")
PROCESSED_AT = 1764590000  # Unix seconds, an int, as NOMYO sends it
CLIENT_TIMEOUT = 600
INT64 = (-2**63, 2**63 - 1)

ANSWER = {
    "id": "chatcmpl-differential",
    "object": "chat.completion",
    "created": 1764590000,
    "model": "differential",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "echo: hi"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    "_metadata": {"server": "differential-peer"},
}


# ---- the variants ----------------------------------------------------------------------------


def nested(depth, leaf=0):
    """`depth` arrays one inside the other around `leaf`."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def answer(**changes):
    """ANSWER with members replaced, and those named in `drop` removed."""
    out = json.loads(json.dumps(ANSWER))
    for key in changes.pop("drop", ()):
        del out[key]
    out.update(changes)
    return out


def _parent(package, path):
    """The container of the member `path` names, and that member's key."""
    *parents, last = path
    for key in parents:
        package = package[key]
    return package, last


def setting(path, value):
    def edit(package):
        target, last = _parent(package, path)
        target[last] = value
    return edit


def dropping(path):
    def edit(package):
        target, last = _parent(package, path)
        del target[last]
    return edit


def transforming(path, fn):
    def edit(package):
        target, last = _parent(package, path)
        target[last] = fn(target[last])
    return edit


def replacing(old, new):
    def text(package_text):
        assert old in package_text, old
        return package_text.replace(old, new, 1)
    return text


def with_line_breaks(b64):
    return "\n".join(b64[i:i + 16] for i in range(0, len(b64), 16))


def non_canonical(b64):
    """The same bytes with the unused low bits of the last character set (base64 padding)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    stripped = b64.rstrip("=")
    last = alphabet[alphabet.index(stripped[-1]) | 0b1]
    assert last != stripped[-1]
    return stripped[:-1] + last + b64[len(stripped):]


class Variant:
    def __init__(self, name, plaintext=None, edit=None, text=None, key_bytes=32, nonce_bytes=12):
        self.name = name
        self.plaintext = ANSWER if plaintext is None else plaintext
        self.edit, self.text = edit, text
        self.key_bytes, self.nonce_bytes = key_bytes, nonce_bytes

    def package(self, recipient):
        body = self.plaintext
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        package = package_fields(recipient, body, self.key_bytes, self.nonce_bytes)
        package["processed_at"] = PROCESSED_AT
        if self.edit is not None:
            self.edit(package)
        text = json.dumps(package)
        if self.text is not None:
            text = self.text(text)
        return text if isinstance(text, bytes) else text.encode()


PA = ("processed_at",)
PAYLOAD = ("encrypted_payload",)
VARIANTS = [
    # processed_at: every JSON form, carried into _metadata as received
    Variant("processed_at_int"),
    Variant("processed_at_absent", edit=dropping(PA)),
    Variant("processed_at_null", edit=setting(PA, None)),
    Variant("processed_at_iso_string", edit=setting(PA, "2026-12-01T13:00:00.123456+00:00")),
    Variant("processed_at_float", edit=setting(PA, 1764590000.25)),
    Variant("processed_at_negative", edit=setting(PA, -5)),
    Variant("processed_at_zero", edit=setting(PA, 0)),
    Variant("processed_at_past_int64", edit=setting(PA, 2**63)),
    Variant("processed_at_big_int", edit=setting(PA, 123456789012345678901234567890)),
    Variant("processed_at_exponent", text=replacing('"processed_at": 1764590000',
                                                    '"processed_at": 1.7645900001E9')),
    Variant("processed_at_integral_exponent", text=replacing('"processed_at": 1764590000',
                                                             '"processed_at": 1E3')),
    Variant("processed_at_past_double", text=replacing('"processed_at": 1764590000',
                                                       '"processed_at": -1e400')),
    Variant("processed_at_minus_zero", text=replacing('"processed_at": 1764590000',
                                                      '"processed_at": -0.0')),
    Variant("processed_at_bool", edit=setting(PA, True)),
    Variant("processed_at_array", edit=setting(PA, [1764590000, "UTC", None])),
    Variant("processed_at_object", edit=setting(PA, {"unix": 1764590000, "tz": {"name": "UTC"}})),
    Variant("processed_at_long_string", edit=setting(PA, "2026-12-01T13:00:00Z " * 50)),
    Variant("processed_at_empty_string", edit=setting(PA, "")),
    Variant("processed_at_unicode", edit=setting(PA, "z\u00fc\u20ac\U0001F600\u0301")),
    Variant("processed_at_nul", edit=setting(PA, "a\u0000b")),
    Variant("processed_at_nested_60", edit=setting(PA, nested(60))),
    Variant("processed_at_first", text=lambda t: '{"processed_at": 1764590000, ' +
            t[1:].replace(', "processed_at": 1764590000', "")),
    # the rest of the package
    Variant("unknown_members", edit=lambda p: p.update(
        x_extra={"nested": [1, 2.5, {"a": None}], "big": 2**80}, zzz=1e300, x_list=[])),
    Variant("unknown_payload_member", edit=setting(PAYLOAD + ("aad",), "unused")),
    Variant("indented_layout", text=lambda t: json.dumps(json.loads(t), indent=2)),
    Variant("escaped_keys_and_values", text=lambda t: t.replace('"version": "1.0"',
                                                                '"\\u0076ersion": "1\\u002e0"')),
    Variant("version_missing", edit=dropping(("version",))),
    Variant("version_number", edit=setting(("version",), 1.0)),
    Variant("version_other", edit=setting(("version",), "2.0")),
    Variant("algorithm_missing", edit=dropping(("algorithm",))),
    Variant("algorithm_other", edit=setting(("algorithm",), "hybrid-aes128-rsa2048")),
    Variant("key_algorithm_other", edit=setting(("key_algorithm",), "RSA-PKCS1v15")),
    Variant("key_algorithm_absent", edit=dropping(("key_algorithm",))),
    Variant("payload_algorithm_number", edit=setting(("payload_algorithm",), 5)),
    Variant("payload_algorithm_absent", edit=dropping(("payload_algorithm",))),
    Variant("encrypted_payload_array", edit=transforming(PAYLOAD, lambda p: [p])),
    Variant("ciphertext_missing", edit=dropping(PAYLOAD + ("ciphertext",))),
    Variant("nonce_missing", edit=dropping(PAYLOAD + ("nonce",))),
    Variant("tag_missing", edit=dropping(PAYLOAD + ("tag",))),
    Variant("encrypted_aes_key_missing", edit=dropping(("encrypted_aes_key",))),
    Variant("encrypted_aes_key_number", edit=setting(("encrypted_aes_key",), 5)),
    Variant("tag_short", edit=transforming(PAYLOAD + ("tag",),
                                           lambda t: base64.b64encode(
                                               base64.b64decode(t)[:12]).decode())),
    Variant("tag_flipped", edit=transforming(PAYLOAD + ("tag",),
                                             lambda t: base64.b64encode(
                                                 bytes([base64.b64decode(t)[0] ^ 1]) +
                                                 base64.b64decode(t)[1:]).decode())),
    Variant("package_array", text=lambda t: "[" + t + "]"),
    Variant("package_not_utf8", text=lambda t: t.encode().replace(
        b'"processed_at": 1764590000', b'"processed_at": "\xff"')),
    # the decrypted answer
    Variant("answer_without_metadata", plaintext=answer(drop=["_metadata"])),
    Variant("answer_metadata_rich", plaintext=answer(_metadata={
        "server": "x", "nested": {"a": [1, 2, {"b": None}]}, "processed_at": "server's own",
        "payload_id": "server's own", "is_encrypted": False})),
    Variant("answer_metadata_first", plaintext=b'{"_metadata": {"server": "first"}, "id": "x"}'),
    Variant("answer_metadata_array", plaintext=answer(_metadata=[])),
    Variant("answer_metadata_null", plaintext=answer(_metadata=None)),
    Variant("answer_metadata_string", plaintext=answer(_metadata="x_metadata")),
    Variant("answer_empty_object", plaintext={}),
    Variant("answer_array", plaintext=[ANSWER]),
    Variant("answer_string", plaintext="_metadata"),
    Variant("answer_number", plaintext=42),
    Variant("answer_null", plaintext=b"null"),
    Variant("answer_empty", plaintext=b""),
    Variant("answer_numbers", plaintext=answer(numbers={
        "int64_max": 2**63 - 1, "int64_min": -2**63, "past_int64": 2**63, "big": 2**100,
        "negative_big": -2**70, "float": 1.5, "tiny": 1e-7, "minus_zero": -0.0,
        "huge": 1e308, "integral_float": 3.0})),
    Variant("answer_number_texts", plaintext=b'{"e": 1E2, "e_minus": 25e-1, "past": 1e400, '
                                             b'"neg_zero": -0, "frac": 0.1000000000000000055511}'),
    Variant("answer_unicode", plaintext=answer(choices=[{"message": {
        "content": "z\u00fc\u20ac\U0001F600 \u05e9\u05dc\u05d5\u05dd e\u0301 \u0000 \u2028"}}],
        **{"k\u00ebys \U0001F511": "v"})),
    Variant("answer_raw_utf8", plaintext='{"content": "z\u00fc\u20ac\U0001F600"}'.encode()),
    Variant("answer_nested_60", plaintext=answer(deep=nested(60))),
    Variant("answer_whitespace", plaintext=b' \n\t {"id": "x" ,"_metadata" : {} }\r\n '),
    Variant("answer_trailing_data", plaintext=b'{"id": "x"} {}'),
    Variant("answer_invalid_utf8", plaintext=b'{"id": "\xff"}'),
    # refused on purpose (REFUSED_ON_PURPOSE below; docs/protocol-v1.md says why)
    Variant("duplicate_package_key", text=lambda t: t.replace(
        '"version": "1.0"', '"processed_at": 1, "version": "1.0"', 1)),
    Variant("nan_in_package", text=replacing('"processed_at": 1764590000', '"processed_at": NaN')),
    Variant("lone_surrogate_in_package", edit=setting(PA, "\ud800")),
    Variant("package_nested_70", edit=setting(PA, nested(70))),
    Variant("base64_line_breaks", edit=transforming(("encrypted_aes_key",), with_line_breaks)),
    Variant("base64_non_canonical", edit=transforming(PAYLOAD + ("tag",), non_canonical)),
    Variant("nonce_16_bytes", nonce_bytes=16),
    Variant("nonce_8_bytes", nonce_bytes=8),
    Variant("aes_128_key", key_bytes=16),
    Variant("duplicate_answer_key", plaintext=b'{"id": "a", "id": "b"}'),
    Variant("nan_in_answer", plaintext=b'{"id": "x", "score": NaN, "top": Infinity}'),
    Variant("lone_surrogate_in_answer", plaintext=b'{"content": "\\udc00"}'),
    Variant("answer_nested_100", plaintext=answer(deep=nested(100))),
    Variant("answer_utf8_bom", plaintext=b"\xef\xbb\xbf" + json.dumps(ANSWER).encode()),
    Variant("answer_utf16", plaintext=json.dumps(ANSWER).encode("utf-16-le")),
]

# hushcall refuses these, nomyo accepts them: each is named in docs/protocol-v1.md's
# "Refused on purpose" table with the reason.
REFUSED_ON_PURPOSE = {
    "duplicate_package_key", "nan_in_package", "lone_surrogate_in_package", "package_nested_70",
    "base64_line_breaks", "base64_non_canonical", "nonce_16_bytes", "nonce_8_bytes",
    "aes_128_key", "duplicate_answer_key", "nan_in_answer", "lone_surrogate_in_answer",
    "answer_nested_100", "answer_utf8_bom", "answer_utf16",
}


# ---- the peer ---------------------------------------------------------------------------------


class VariantPeer:
    """aiohttp on 127.0.0.1 in a thread of its own: /v/<variant>/pki/public_key and
    /v/<variant>/v1/chat/secure_completion, answering with that variant's package."""

    def __init__(self, variants):
        self.variants = {v.name: v for v in variants}
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = None
        port = self._run(self._start())
        self.url = "http://127.0.0.1:%d" % port

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    async def _start(self):
        app = web.Application()
        app.add_routes([web.get("/v/{variant}/pki/public_key", self.public_key),
                        web.post("/v/{variant}/v1/chat/secure_completion", self.complete)])
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return self.runner.addresses[0][1]

    async def public_key(self, request):
        return web.Response(text=self.pem, content_type="text/plain")

    async def complete(self, request):
        variant = self.variants[request.match_info["variant"]]
        recipient = serialization.load_pem_public_key(
            urllib.parse.unquote(request.headers["X-Public-Key"]).encode())
        await request.read()
        package = await asyncio.get_running_loop().run_in_executor(
            None, variant.package, recipient)
        return web.Response(body=package, content_type="application/octet-stream")

    def stop(self):
        self._run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


# ---- the same answer, whichever client opened it ----------------------------------------------


def typed(value):
    """A value with what == would blur kept apart: int or float, array or object."""
    if value is None:
        return ["null"]
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", str(int(value))]
    if isinstance(value, float):
        return ["float", repr(value)]
    if isinstance(value, str):
        return ["str", str(value)]
    if isinstance(value, list):
        return ["array", [typed(v) for v in value]]
    if isinstance(value, dict):
        return ["object", sorted([str(k), typed(v)] for k, v in value.items())]
    raise TypeError(type(value))


def as_float(text):
    try:
        return repr(float(int(text)))
    except OverflowError:
        return repr(float("-inf") if text.startswith("-") else float("inf"))


def as_lua_sees_it(node):
    """Lua has 64-bit integers: a JSON integer outside them becomes the nearest float."""
    kind = node[0]
    if kind == "int" and not INT64[0] <= int(node[1]) <= INT64[1]:
        return ["float", as_float(node[1])]
    if kind == "array":
        return ["array", [as_lua_sees_it(v) for v in node[1]]]
    if kind == "object":
        return ["object", [[k, as_lua_sees_it(v)] for k, v in node[1]]]
    return node


def from_lua(node):
    """Lua's floats arrive as %.17g text: the same float, written as Python's repr writes it."""
    kind = node[0]
    if kind == "float":
        return ["float", repr(float(node[1]))]
    if kind == "array":
        return ["array", [from_lua(v) for v in node[1]]]
    if kind == "object":
        return ["object", [[k, from_lua(v)] for k, v in node[1]]]
    return node


def settled(node):
    """The answer with our own `attestation` verdict left out and payload_id (each client makes
    its own) checked to be a non-empty string, then made equal."""
    members = dict((k, v) for k, v in node[1])
    metadata = dict((k, v) for k, v in members["_metadata"][1])
    assert metadata["payload_id"][0] == "str" and metadata["payload_id"][1], metadata
    metadata["payload_id"] = ["str", "<payload id>"]
    metadata.pop("attestation", None)
    members["_metadata"] = ["object", sorted([k, v] for k, v in metadata.items())]
    return ["object", sorted([k, v] for k, v in members.items())]


# ---- the four clients -------------------------------------------------------------------------

REQUEST = {"model": "differential", "messages": [{"role": "user", "content": "hi"}]}


def run_nomyo(key_dir, base, variants):
    async def one(variant):
        client = nomyo_scc.SecureCompletionClient(router_url="%s/v/%s" % (base, variant.name),
                                                  allow_http=True, max_retries=0)
        client.load_keys(os.path.join(key_dir, "private_key.pem"),
                         os.path.join(key_dir, "public_key.pem"))
        try:
            return True, typed(await client.send_secure_request(REQUEST, str(uuid.uuid4())))
        except Exception as e:  # every failure of the nomyo client is a refusal
            return False, "%s: %s" % (type(e).__name__, e)

    async def every():
        return {v.name: await one(v) for v in variants}
    return asyncio.run(every())


def run_python(key_dir, base, variants):
    client = hushcall.Client(base, key_dir=key_dir, allow_http=True, max_retries=0)
    outcomes = {}
    try:
        for v in variants:
            try:
                resp = client.create(base_url="%s/v/%s" % (base, v.name), **REQUEST)
                outcomes[v.name] = True, typed(resp.to_dict())
            except hushcall.HushcallError as e:
                outcomes[v.name] = False, "%s: %s" % (type(e).__name__, e)
    finally:
        client.close()
    return outcomes


def run_child(argv, env=None):
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=CLIENT_TIMEOUT)
    assert done.returncode == 0, (argv[0], done.returncode, done.stderr)
    outcomes = {}
    for line in filter(None, done.stdout.split("\n")):  # not splitlines(): U+2028 is content
        result = json.loads(line)
        outcomes[result["variant"]] = ((True, result["answer"]) if result["ok"]
                                       else (False, "%s: %s" % (result["kind"], result["message"])))
    return outcomes


def run_c(key_dir, base, variants):
    outcomes = run_child([C_CLIENT, key_dir, base, *(v.name for v in variants)])
    return {name: (ok, typed(answer) if ok else answer) for name, (ok, answer) in outcomes.items()}


def run_lua(key_dir, base, variants):
    env = _env()
    env["LUA_CPATH"] = os.path.join(BUILD_DIR, "lua", "?.so") + ";;"
    env["LUA_PATH"] = os.path.join(ROOT, "lua", "?.lua") + ";;"
    outcomes = run_child(["lua5.4", LUA_CLIENT, key_dir, base, *(v.name for v in variants)], env)
    return {name: (ok, from_lua(answer) if ok else answer)
            for name, (ok, answer) in outcomes.items()}


# ---- the test ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory):
    """One RSA-2048 client key in the layout both nomyo and hushcall read."""
    d = tmp_path_factory.mktemp("client-keys")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(d / "private_key.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    (d / "public_key.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(d)


@pytest.fixture(scope="module")
def outcomes(key_dir):
    assert os.access(C_CLIENT, os.X_OK), "build the C helper first (make build): " + C_CLIENT
    peer = VariantPeer(VARIANTS)
    try:
        return {"nomyo": run_nomyo(key_dir, peer.url, VARIANTS),
                "python": run_python(key_dir, peer.url, VARIANTS),
                "c": run_c(key_dir, peer.url, VARIANTS),
                "lua": run_lua(key_dir, peer.url, VARIANTS)}
    finally:
        peer.stop()


def refused_on_purpose_in_docs():
    """The variant names in docs/protocol-v1.md's "Refused on purpose" table."""
    with open(DOCS) as f:
        text = f.read()
    section = text.split("### Refused on purpose", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"`([a-z0-9_]+)`\s*\|\s*$", section, re.MULTILINE))


def test_every_refusal_on_purpose_is_documented():
    assert refused_on_purpose_in_docs() == REFUSED_ON_PURPOSE
    assert REFUSED_ON_PURPOSE <= {v.name for v in VARIANTS}


def test_variants_are_distinct():
    names = [v.name for v in VARIANTS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("variant", [v.name for v in VARIANTS])
@pytest.mark.parametrize("client", ["python", "c", "lua"])
def test_hushcall_opens_what_nomyo_opens(outcomes, client, variant):
    nomyo_ok, nomyo_answer = outcomes["nomyo"][variant]
    ours_ok, ours_answer = outcomes[client][variant]
    if variant in REFUSED_ON_PURPOSE:
        assert nomyo_ok, "nomyo refuses %s now (%s): not a divergence any more" % (
            variant, nomyo_answer)
        assert not ours_ok, "%s accepts %s, which docs/protocol-v1.md says it refuses" % (
            client, variant)
        return
    assert ours_ok == nomyo_ok, (client, "accepts" if ours_ok else "refuses", ours_answer,
                                 "nomyo:", nomyo_answer)
    if nomyo_ok:
        expected = settled(nomyo_answer)
        if client == "lua":
            expected = as_lua_sees_it(expected)
        assert settled(ours_answer) == expected, "%s opened %s differently" % (client, variant)


def test_processed_at_is_carried_as_received(outcomes):
    """The headline of the issue, spelled out: nomyo's view of processed_at, in Python."""
    def processed_at(variant):
        ok, node = outcomes["python"][variant]
        assert ok, node
        metadata = dict(dict(node[1])["_metadata"][1])
        return metadata["processed_at"]
    assert processed_at("processed_at_int") == ["int", "1764590000"]
    assert processed_at("processed_at_float") == ["float", "1764590000.25"]
    assert processed_at("processed_at_big_int") == ["int", "123456789012345678901234567890"]
    assert processed_at("processed_at_absent") == ["null"]
    assert processed_at("processed_at_iso_string") == ["str", "2026-12-01T13:00:00.123456+00:00"]
