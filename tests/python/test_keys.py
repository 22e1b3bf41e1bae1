"""KeyPair (bindings/python/keys.c) and SecureChatCompletion.generate_keys /
load_keys: generation, saving and loading with and without a password, the
core's refusals (wrong password, a key file others can read, a symlink) as
SecurityError, and requests against the NOMYO peer with the keys made."""

import asyncio
import os
import stat

import pytest

import hushcall
from hushcall import _core

BITS = 2048  # small keys keep the suite fast


@pytest.fixture(scope="module")
def key():
    return _core.KeyPair.generate(BITS)


def user(text):
    return [{"role": "user", "content": text}]


def test_generate(key):
    assert isinstance(key, hushcall.KeyPair)
    assert key.bits == BITS
    assert key.fingerprint.startswith("sha256:") and len(key.fingerprint) == 71
    pem = key.public_pem()
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in pem
    assert "RSA-2048" in repr(key) and key.fingerprint in repr(key)
    other = _core.KeyPair.generate(bits=BITS)
    assert other.fingerprint != key.fingerprint


def test_generate_refuses_small_and_direct_construction():
    with pytest.raises(ValueError):
        _core.KeyPair.generate(1024)
    with pytest.raises(TypeError):
        _core.KeyPair()


@pytest.mark.parametrize("password", [None, "correct horse battery staple ✓"])
def test_save_load_round_trip(tmp_path, key, password):
    d = tmp_path / "keys"
    key.save(str(d), password)
    priv, pub = d / "private_key.pem", d / "public_key.pem"
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pub).st_mode) == 0o644
    text = priv.read_text()
    assert ("ENCRYPTED PRIVATE KEY" in text) == (password is not None)
    assert pub.read_text().strip() == key.public_pem().strip()
    loaded = _core.KeyPair.load(priv, password=password)  # os.PathLike accepted
    assert loaded.fingerprint == key.fingerprint
    assert loaded.bits == BITS


def test_save_refuses_existing_unless_overwrite(tmp_path, key):
    d = str(tmp_path / "keys")
    key.save(d)
    with pytest.raises(hushcall.HushcallError) as info:
        key.save(d)
    assert info.value.kind == "exists"
    other = _core.KeyPair.generate(BITS)
    other.save(d, overwrite=True)
    assert _core.KeyPair.load(os.path.join(d, "private_key.pem")).fingerprint == other.fingerprint


def test_wrong_or_missing_password(tmp_path, key):
    d = tmp_path / "keys"
    key.save(str(d), "right")
    with pytest.raises(hushcall.SecurityError) as info:
        _core.KeyPair.load(str(d / "private_key.pem"), "wrong")
    assert info.value.kind == "password"
    with pytest.raises(hushcall.SecurityError):
        _core.KeyPair.load(str(d / "private_key.pem"))


def test_key_readable_by_others_refused(tmp_path, key):
    d = tmp_path / "keys"
    key.save(str(d))
    priv = d / "private_key.pem"
    os.chmod(priv, 0o644)
    with pytest.raises(hushcall.SecurityError) as info:
        _core.KeyPair.load(str(priv))
    assert "chmod 600" in str(info.value)
    assert info.value.kind == "permissions"


def test_symlinked_key_refused(tmp_path, key):
    d = tmp_path / "keys"
    key.save(str(d))
    link = tmp_path / "link.pem"
    link.symlink_to(d / "private_key.pem")
    with pytest.raises(hushcall.SecurityError) as info:
        _core.KeyPair.load(str(link))
    assert info.value.kind == "permissions"


def test_missing_file(tmp_path):
    with pytest.raises(hushcall.HushcallError):
        _core.KeyPair.load(str(tmp_path / "nope.pem"))


def test_client_key_option(peer, key):
    client = hushcall.Client(peer, allow_http=True, client_key=key)
    assert client.public_key_pem() == key.public_pem()
    resp = client.create(model="m", messages=user("with a given key"))
    assert resp["choices"][0]["message"]["content"] == "echo: with a given key"
    with pytest.raises(TypeError):
        _core.Client(peer, allow_http=True, client_key="not a key")
    with pytest.raises(hushcall.InvalidArgumentError):
        _core.Client(peer, allow_http=True, client_key=key, key_dir="/nonexistent")


def test_secure_chat_completion_generate_then_load(peer, tmp_path):
    d = str(tmp_path / "scc_keys")

    async def main():
        client = hushcall.SecureChatCompletion(base_url=peer, allow_http=True, key_bits=BITS)
        old = client._client
        await client.generate_keys(save_to_file=True, key_dir=d, password="pw")
        assert client._client is not old and old._closed
        pem = client._client.public_key_pem()
        resp = await client.create(model="m", messages=user("generated"))
        assert resp["choices"][0]["message"]["content"] == "echo: generated"
        client.close()

        fresh = hushcall.SecureChatCompletion(base_url=peer, allow_http=True)
        await fresh.load_keys(os.path.join(d, "private_key.pem"), password="pw")
        assert fresh._client.public_key_pem() == pem
        resp = await fresh.create(model="m", messages=user("loaded"))
        assert resp["choices"][0]["message"]["content"] == "echo: loaded"
        # with the matching public key file too
        await fresh.load_keys(
            os.path.join(d, "private_key.pem"), os.path.join(d, "public_key.pem"), "pw"
        )
        resp = await fresh.create(model="m", messages=user("again"))
        assert resp["choices"][0]["message"]["content"] == "echo: again"
        fresh.close()
        return pem

    pem = asyncio.run(main())
    assert open(os.path.join(d, "public_key.pem")).read().strip() == pem.strip()
    assert stat.S_IMODE(os.stat(os.path.join(d, "private_key.pem")).st_mode) == 0o600


def test_secure_chat_completion_generate_in_memory(peer):
    async def main():
        client = hushcall.SecureChatCompletion(base_url=peer, allow_http=True, key_bits=BITS)
        await client.generate_keys()
        resp = await client.create(model="m", messages=user("ephemeral"))
        assert resp["choices"][0]["message"]["content"] == "echo: ephemeral"
        client.close()

    asyncio.run(main())


def test_secure_chat_completion_load_errors(tmp_path, key):
    d = tmp_path / "keys"
    key.save(str(d), "pw")
    other = tmp_path / "other"
    _core.KeyPair.generate(BITS).save(str(other))

    async def main():
        client = hushcall.SecureChatCompletion(base_url="http://127.0.0.1:9", allow_http=True)
        old = client._client
        with pytest.raises(hushcall.SecurityError):
            await client.load_keys(str(d / "private_key.pem"), password="bad")
        with pytest.raises(hushcall.SecurityError, match="public half"):
            await client.load_keys(
                str(d / "private_key.pem"), str(other / "public_key.pem"), password="pw"
            )
        os.chmod(d / "private_key.pem", 0o640)
        with pytest.raises(hushcall.SecurityError, match="chmod 600"):
            await client.load_keys(str(d / "private_key.pem"), password="pw")
        assert client._client is old  # a failed load leaves the client as it was
        client.close()

    asyncio.run(main())
