"""Attest, then send, from Python (docs/attestation.md "What the clients do"
and "Enrolling an AIK"): hushcall.Client and AsyncClient with
`require_attestation` on protocol v2 against the gateway with a swtpm
(manufactured with an EK certificate from a local CA, a persistent AIK).
The config a request is sealed to is verified before anything is sent; an
AIK not pinned is refused and the gateway's access log shows no POST; and
the issue's whole story: `python -m hushcall attest enroll` proves the AIK
by the TPM's EK certificate and writes the policy the client then uses.

swtpm, swtpm-tools and tpm2-tools must be installed: a missing binary fails,
never skips."""

import asyncio
import json
import os
import secrets
import ssl
import subprocess
import sys

import httpx
import pytest

import hushcall
from hushcall.errors import SecurityError
from processes import ROOT, EkCa, Gateway, _env, keys_copy
from test_gateway_attest import fingerprint, start_tpm_gateway, stop_tpm_gateway

ATTESTATION = "/.well-known/hushcall-attestation"
FOREIGN_PIN = {"aik_fingerprints": ["sha256:" + "1" * 64]}


def user(text):
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def ek_ca(tmp_path_factory):
    return EkCa(tmp_path_factory.mktemp("ekca"))


@pytest.fixture(scope="module")
def gw(tmp_path_factory, server_keys, ek_ca):
    gw = start_tpm_gateway(tmp_path_factory.mktemp("client-attest-gw"), server_keys,
                           "--tpm-quotes-per-second", "10000", ek_ca=ek_ca)
    yield gw
    stop_tpm_gateway(gw)


@pytest.fixture(scope="module")
def aik_fingerprint(gw):
    """Learnt out of band: from a quote fetched here, on loopback."""
    answer = httpx.get(gw.url + ATTESTATION, params={"nonce": secrets.token_hex(32)},
                       timeout=60)
    assert answer.status_code == 200, answer.text
    return fingerprint(answer.json()["tpm_attestation"])


def write_policy(tmp_path, policy):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    return str(path)


def posts(gw):
    """The sealed POSTs the gateway's access log shows (logged before each answer)."""
    return sum(1 for line in gw.log().splitlines()
               if "method=POST" in line and "path=/v1/" in line)


def client(gw, policy_path, **options):
    return hushcall.Client(gw.url, allow_http=True, protocol="v2", require_attestation=True,
                           attestation_policy=policy_path, **options)


def assert_verified(attestation):
    assert attestation["verified"] is True, attestation
    assert attestation["key_config_verified"] is True, attestation


def test_attest_then_send_is_verified_both_ways(gw, aik_fingerprint, tmp_path):
    policy = write_policy(tmp_path, {"aik_fingerprints": [aik_fingerprint]})
    with client(gw, policy) as c:
        answer = c.chat.completions.create(model="m", messages=user("attested"))
        assert answer.choices[0].message.content == "echo: attested"
        attestation = answer["_metadata"]["attestation"]
        assert_verified(attestation)
        assert attestation["aik_fingerprint"] == aik_fingerprint
        assert answer["_metadata"]["protocol"] == "v2"
        chunks = list(c.chat.completions.create(model="m", messages=user("a b c"),
                                                stream=True))
        assert "".join(chunk.choices[0].delta.get("content") or "" for chunk in chunks
                       if chunk.choices) == "echo: a b c"


def test_the_async_client_attests_too(gw, aik_fingerprint, tmp_path):
    policy = write_policy(tmp_path, {"aik_fingerprints": [aik_fingerprint]})

    async def main():
        async with hushcall.AsyncClient(gw.url, allow_http=True, protocol="v2",
                                        require_attestation=True,
                                        attestation_policy=policy) as c:
            return await c.chat.completions.create(model="m", messages=user("async"))

    answer = asyncio.run(main())
    assert answer.choices[0].message.content == "echo: async"
    assert_verified(answer["_metadata"]["attestation"])


def make_pki(tmp_path):
    """A test CA and a server certificate for 127.0.0.1; the gateway's TLS options."""
    pki = tmp_path / "pki"
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "interop", "make_test_ca.py"),
                    str(pki)], check=True, timeout=60)
    return pki, ("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"))


def test_the_maximum_tier_attests_without_require_attestation(tmp_path, server_keys):
    """Over https, as the client allows maximum only there."""
    pki, tls_options = make_pki(tmp_path)
    tls = start_tpm_gateway(tmp_path, server_keys, *tls_options)
    try:
        ca = str(pki / "ca.pem")
        answer = httpx.get(tls.url + ATTESTATION, params={"nonce": secrets.token_hex(32)},
                           verify=ssl.create_default_context(cafile=ca), timeout=60)
        policy = write_policy(tmp_path, {"aik_fingerprints": [
            fingerprint(answer.json()["tpm_attestation"])]})
        with hushcall.Client(tls.url, ca_file=ca, protocol="v2", security_tier="maximum",
                             attestation_policy=policy) as c:
            answer = c.chat.completions.create(model="m", messages=user("max"))
        assert answer.choices[0].message.content == "echo: max"
        assert_verified(answer["_metadata"]["attestation"])
    finally:
        stop_tpm_gateway(tls)


def test_an_aik_not_pinned_sends_nothing(gw, tmp_path):
    policy = write_policy(tmp_path, FOREIGN_PIN)
    before = posts(gw)
    with client(gw, policy) as c:
        with pytest.raises(SecurityError) as refused:
            c.chat.completions.create(model="m", messages=user("never sent"))
    assert refused.value.kind == "attestation"
    assert "aik not in policy" in str(refused.value)
    assert posts(gw) == before  # the request never left the client


def test_enrol_then_send_the_whole_story(gw, ek_ca, tmp_path):
    """The issue end to end: the AIK proven by the TPM's EK certificate, the
    policy written by the CLI, the client attesting with it."""
    policy = tmp_path / "enrolled.json"
    proc = subprocess.run([sys.executable, "-m", "hushcall", "attest", "enroll", gw.url,
                           "--ek-ca", ek_ca.ca_file, "--out", str(policy)],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = json.loads(policy.read_text())
    assert len(written["aik_fingerprints"]) == 1
    assert written["pcrs"]  # the values the enrolment's quote showed
    with client(gw, str(policy)) as c:
        answer = c.chat.completions.create(model="m", messages=user("enrolled"))
    assert answer.choices[0].message.content == "echo: enrolled"
    assert_verified(answer["_metadata"]["attestation"])
    assert answer["_metadata"]["attestation"]["aik_fingerprint"] == \
        written["aik_fingerprints"][0]


def test_enrolment_against_another_ca_writes_nothing(gw, tmp_path):
    other = EkCa(tmp_path)
    # the other CA exists once it signed a certificate: manufacture a TPM state with it
    os.makedirs(tmp_path / "other-tpm")
    other.provision(str(tmp_path / "other-tpm"))
    policy = tmp_path / "refused.json"
    proc = subprocess.run([sys.executable, "-m", "hushcall", "attest", "enroll", gw.url,
                           "--ek-ca", other.ca_file, "--out", str(policy)],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert not policy.exists()


def test_maximum_on_v2_without_a_tpm_sends_nothing(tmp_path, server_keys):
    """The attestation is fetched first and the gateway has none: refused
    before the request is sealed (v1 answers the same call 503 instead)."""
    pki, tls_options = make_pki(tmp_path)
    plain = Gateway(tmp_path, *tls_options, key_dir=keys_copy(server_keys, tmp_path))
    try:
        policy = write_policy(tmp_path, FOREIGN_PIN)
        with hushcall.Client(plain.url, ca_file=str(pki / "ca.pem"), protocol="v2",
                             security_tier="maximum", attestation_policy=policy) as c:
            with pytest.raises(SecurityError) as refused:
                c.chat.completions.create(model="m", messages=user("never sent"))
        assert refused.value.kind == "attestation"
        assert "404" in str(refused.value)
        assert posts(plain) == 0
    finally:
        assert plain.stop() == 0
