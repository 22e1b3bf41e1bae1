"""What the gateway must not give away (docs/gateway.md): its secrets stay out of
its environment once read, an answer's `_metadata.memory_protection` tells of
that request only (never of other callers' traffic), and a plain-http upstream
off this machine needs saying so. Gateways run as children on loopback."""

import asyncio
import ctypes
import os
import subprocess
import sys

import pytest

import hushcall
from hushcall import _core, gateway
from processes import FakeOpenAI, Gateway, _env, keys_copy

FAST = {"allow_http": True, "protocol": "v1", "key_bits": 2048}
PASSWORD = "pw-canary-5d1e0b7c"
UPSTREAM_KEY = "up-canary-93a4f6e2"


def user(text):
    return [{"role": "user", "content": text}]


# ---- secrets leave the environment ---------------------------------------------------


def test_secrets_gone_from_the_gateways_environment(tmp_path, server_keys):
    """/proc/<pid>/environ is the block the gateway was started with: the values
    are zeroed there once read (the names stay, with empty values)."""
    gw = Gateway(tmp_path, env={gateway.KEY_PASSWORD_ENV: PASSWORD,
                                gateway.UPSTREAM_API_KEY_ENV: UPSTREAM_KEY})
    try:
        with open("/proc/%d/environ" % gw.proc.pid, "rb") as f:
            environ = f.read()
        assert gateway.KEY_PASSWORD_ENV.encode() in environ  # the scan reads the right block
        assert PASSWORD.encode() not in environ
        assert UPSTREAM_KEY.encode() not in environ
        # The password was used before it went: the new key is saved encrypted with it.
        _core.KeyPair.load(os.path.join(gw.key_dir, "private_key.pem"), PASSWORD)
        answer = hushcall.Client(gw.url, **FAST).create(model="m", messages=user("still up"))
        assert answer["choices"][0]["message"]["content"] == "echo: still up"
    finally:
        gw.stop()
    assert PASSWORD not in gw.log() and UPSTREAM_KEY not in gw.log()


def test_take_secret_env_unsets_for_children(monkeypatch):
    name = "HUSHCALL_TEST_SECRET"
    monkeypatch.setenv(name, "child-canary-41")
    assert gateway.take_secret_env(name) == "child-canary-41"
    assert name not in os.environ
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    assert libc.getenv(name.encode()) is None
    child = subprocess.run(["sh", "-c", 'printf "%%s" "${%s-unset}"' % name], capture_output=True,
                           text=True, timeout=30)
    assert child.stdout == "unset"
    assert gateway.take_secret_env(name) is None  # already gone
    monkeypatch.setenv(name, "")
    assert gateway.take_secret_env(name) is None and name not in os.environ


def test_wipe_environment_variable_refuses_bad_names():
    for name in ("", "A=B"):
        with pytest.raises(ValueError):
            _core.wipe_environment_variable(name)
    with pytest.raises(ValueError):
        _core.wipe_environment_variable("BAD\udcff")


# ---- memory_protection is the request's own ------------------------------------------


def protection_of(answer):
    return answer["_metadata"]["memory_protection"].to_dict()


def test_memory_protection_does_not_move_with_other_traffic(echo):
    same = user("the same question")
    large = [user("large %02d " % i + "x" * 60000) for i in range(20)]

    async def main():
        async with hushcall.AsyncClient(echo.url, max_retries=0, **FAST) as client:
            before = await client.create(model="m", messages=same)
            others = await asyncio.gather(*(client.create(model="m", messages=m)
                                            for m in large))
            # and once more while 20 larger requests are being answered
            during = await asyncio.gather(client.create(model="m", messages=same),
                                          *(client.create(model="m", messages=m)
                                            for m in large))
            after = await client.create(model="m", messages=same)
            return before, others, during[0], after

    before, others, during, after = asyncio.run(main())
    reported = protection_of(before)
    assert set(reported) == {"platform", "mlock_available", "request_locked", "dump_exclusion",
                             "wipe_on_fork", "openssl_secure_heap", "request_bytes",
                             "answer_bytes"}
    assert protection_of(during) == reported
    assert protection_of(after) == reported
    # The bytes are the request's own: a larger request reports more.
    bigger = protection_of(others[0])
    assert bigger["request_bytes"] > reported["request_bytes"]
    assert bigger["answer_bytes"] > reported["answer_bytes"]


# ---- plain http upstream -------------------------------------------------------------


def serve(tmp_path, server_keys, *args):
    return subprocess.run([sys.executable, "-m", "hushcall", "serve", "--port", "0",
                           "--key-dir", str(keys_copy(server_keys, tmp_path)), *args],
                          env=_env(), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("url", ["http://10.0.0.5:8000/v1", "http://llm.example.com/v1",
                                 "http://127.0.0.1@llm.example.com/v1", "http://[::2]/v1"])
def test_http_upstream_off_this_machine_refused(tmp_path, server_keys, url):
    proc = serve(tmp_path, server_keys, "--backend", "openai:" + url)
    assert proc.returncode == 1
    assert "allow_http_upstream" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_http_upstream_allowed_when_asked(tmp_path, server_keys):
    # Nothing is sent before a request comes: starting does not reach 10.0.0.5.
    gw = Gateway(tmp_path, "--backend", "openai:http://10.0.0.5:8000/v1",
                 "--allow-http-upstream", key_dir=keys_copy(server_keys, tmp_path))
    assert gw.stop() == 0


def test_loopback_http_upstream_needs_no_flag(tmp_path, server_keys):
    upstream = FakeOpenAI(tmp_path)
    try:
        url = upstream.url.replace("127.0.0.1", "localhost")
        gw = Gateway(tmp_path, "--backend", "openai:" + url,
                     key_dir=keys_copy(server_keys, tmp_path))
        try:
            answer = hushcall.Client(gw.url, **FAST).create(model="m", messages=user("near"))
            assert answer["choices"][0]["message"]["content"] == "upstream: near"
        finally:
            gw.stop()
    finally:
        upstream.stop()
