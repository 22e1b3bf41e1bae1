"""Interoperability with the public `nomyo` client, against the NOMYO peer
(tests/interop/nomyo_peer.py): the same requests give the same answers, the
same HTTP errors raise exceptions of the same class names and status codes,
and key files saved by either client load in the other and work.

`nomyo` must be installed: a missing import fails this module."""

import asyncio
import os
import warnings

import pytest

import nomyo  # noqa: E402  (required: no importorskip)

import hushcall
from hushcall import _core

BITS = 2048  # small keys keep the suite fast; nomyo's own default is 4096

# nomyo warns about HTTP base URLs and, without its optional extras, about
# secure memory: expected here.
pytestmark = pytest.mark.filterwarnings("ignore")


def user(text):
    return [{"role": "user", "content": text}]


def nomyo_client(peer, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = nomyo.SecureChatCompletion(base_url=peer, allow_http=True, **kwargs)
    client.client.key_size = BITS
    return client


def hush_client(peer, **kwargs):
    return hushcall.SecureChatCompletion(base_url=peer, allow_http=True, key_bits=BITS, **kwargs)


def run(coro):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return asyncio.run(coro)


def comparable(answer):
    """The members that do not depend on the payload id or the time."""
    d = answer if isinstance(answer, dict) else answer.to_dict()
    return {k: d[k] for k in ("choices", "usage", "model")}


REQUESTS = [
    ("m", user("hello there"), {}),
    ("Qwen/Qwen3-0.6B", user("grüße, 你好, emoji 🔐 and \"quotes\"\n"), {}),
    (
        "m",
        [
            {"role": "system", "content": "you are terse"},
            {"role": "user", "content": [{"type": "text", "text": "part one "},
                                         {"type": "text", "text": "part two"}]},
        ],
        {"temperature": 0.2, "max_tokens": 17, "top_p": 0.9, "stop": ["\n\n"]},
    ),
    ("m", user(""), {"temperature": 0}),
]


def test_same_answers(peer):
    async def main():
        theirs, ours = nomyo_client(peer), hush_client(peer)
        try:
            for model, messages, params in REQUESTS:
                a = await theirs.create(model=model, messages=messages, **params)
                b = await ours.create(model=model, messages=messages, **params)
                assert comparable(a) == comparable(b)
                # the same request members reached the server
                assert a["x_seen"]["request_keys"] == b.to_dict()["x_seen"]["request_keys"]
                assert b["_metadata"]["payload_id"] != a["_metadata"]["payload_id"]
        finally:
            ours.close()

    run(main())


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500, 503])
def test_same_error_classes(peer, status):
    async def main():
        theirs = nomyo_client(peer, max_retries=0)
        ours = hush_client(peer, max_retries=0)
        x_test = {"status": status, "detail": "injected %d" % status}
        try:
            with pytest.raises(Exception) as a:
                await theirs.create(model="m", messages=user("x"), x_test=x_test)
            with pytest.raises(hushcall.HushcallError) as b:
                await ours.create(model="m", messages=user("x"), x_test=x_test)
        finally:
            ours.close()
        return a.value, b.value

    a, b = run(main())
    assert type(a).__name__ == type(b).__name__, (a, b)
    assert getattr(a, "status_code", None) == getattr(b, "status_code", None) == status
    # the server's JSON error body, as nomyo keeps it
    assert b.error_details == {"detail": "injected %d" % status}
    assert a.error_details == b.error_details


def test_nomyo_keys_load_in_hushcall(peer, tmp_path):
    d = str(tmp_path / "nomyo_keys")
    priv, pub = os.path.join(d, "private_key.pem"), os.path.join(d, "public_key.pem")

    async def main():
        theirs = nomyo_client(peer)
        theirs.client.generate_keys(save_to_file=True, key_dir=d, password="nomyo pw")
        theirs._keys_initialized = True
        a = await theirs.create(model="m", messages=user("nomyo's key"))

        key = _core.KeyPair.load(priv, password="nomyo pw")
        assert key.bits == BITS
        assert key.public_pem().strip() == theirs.client.public_key_pem.strip()
        assert key.public_pem().strip() == open(pub).read().strip()

        client = hushcall.Client(peer, allow_http=True, client_key=key)
        assert comparable(client.create(model="m", messages=user("nomyo's key"))) == comparable(a)

        ours = hush_client(peer)
        await ours.load_keys(priv, pub, password="nomyo pw")
        assert ours._client.public_key_pem().strip() == theirs.client.public_key_pem.strip()
        b = await ours.create(model="m", messages=user("nomyo's key"))
        assert comparable(b) == comparable(a)
        ours.close()

        with pytest.raises(hushcall.SecurityError):
            await hush_client(peer).load_keys(priv, password="wrong")

    run(main())


@pytest.mark.parametrize("password", [None, "hushcall pw ✓"])
def test_hushcall_keys_load_in_nomyo(peer, tmp_path, password):
    d = str(tmp_path / "hush_keys")
    priv, pub = os.path.join(d, "private_key.pem"), os.path.join(d, "public_key.pem")

    async def main():
        ours = hush_client(peer)
        await ours.generate_keys(save_to_file=True, key_dir=d, password=password)
        pem = ours._client.public_key_pem()
        b = await ours.create(model="m", messages=user("hushcall's key"), temperature=0.5)
        ours.close()

        theirs = nomyo_client(peer)
        theirs.client.load_keys(priv, pub, password=password)
        theirs._keys_initialized = True
        assert theirs.client.public_key_pem.strip() == pem.strip()
        a = await theirs.create(model="m", messages=user("hushcall's key"), temperature=0.5)
        assert comparable(a) == comparable(b)

        if password is None:
            # nomyo's own key_dir path (load_keys without a password) finds it too
            # rather than generating a new one.
            by_dir = nomyo_client(peer, key_dir=d)
            await by_dir.create(model="m", messages=user("by key_dir"))
            assert by_dir.client.public_key_pem.strip() == pem.strip()
        else:
            with pytest.raises(ValueError):
                nomyo_client(peer).client.load_keys(priv, pub, password="wrong")

    run(main())
