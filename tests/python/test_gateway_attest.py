"""The gateway's TPM attestation on protocol v2 (docs/attestation.md "Attest,
then send" and "Enrolling an AIK", docs/gateway.md "TPM attestation"): the
key-config attestation bound to a client's nonce, per-answer quotes bound to
the exchange's enc and response nonce (whole answers and streams), and the
enrolment endpoints, against a swtpm manufactured with an EK certificate from
a local CA and a persistent AIK.

Quotes are checked twice: by hushcall's own `_core.attest_verify_bound` and
by tpm2-tools' `tpm2_checkquote` (not ours), each with qualifying data
computed here with hashlib from the doc's formula. The EK certificate's chain
is checked by `openssl verify`, and a credential made by `tpm2_makecredential`
(not ours) is activated beside one made by `_core.Enrolment`.

swtpm, swtpm-tools, tpm2-tools and openssl must be installed: a missing
binary fails, never skips. Each gateway has its own swtpm."""

import base64
import hashlib
import json
import os
import secrets
import struct
import subprocess
import time

import httpx
import pytest

from hushcall import _core
from processes import EkCa, Gateway, Swtpm, _need, keys_copy, tpm_env
from test_ehbp_peer import AES256GCM, chat, open_answer, post, x25519_request

HANDLE = "0x81000002"
ATTESTATION = "/.well-known/hushcall-attestation"
ENROLLMENT = ATTESTATION + "/enrollment"
ACTIVATION = ATTESTATION + "/activation"
KEY_LABEL = b"hushcall-v2 key attestation\x00"
ANSWER_LABEL = b"hushcall-v2 answer attestation\x00"
QUIET_TSS = {"TSS2_LOG": "all+none"}
NOT_ACTIVATED = {"detail": "The credential did not activate"}
CREDENTIAL_MAGIC = 0xBADCC0DE  # tpm2-tools' credential file header


# ---- qualifying data, from the doc's formula (not from the core) -------------------------

def key_config_qualifying(nonce, configs):
    return hashlib.sha256(KEY_LABEL + nonce + configs).digest()


def answer_qualifying(enc, response_nonce):
    return hashlib.sha256(ANSWER_LABEL + response_nonce + enc).digest()


def fingerprint(tpm_attestation):
    """sha256: of the marshalled TPMT_PUBLIC (the TPM2B_PUBLIC without its size)."""
    public = base64.b64decode(tpm_attestation["aik_pubkey_b64"])
    (size,) = struct.unpack(">H", public[:2])
    assert size == len(public) - 2
    return "sha256:" + hashlib.sha256(public[2:]).hexdigest()


def pin(tpm_attestation):
    return json.dumps({"aik_fingerprints": [fingerprint(tpm_attestation)]})


def verify(tpm_attestation, qualifying, policy):
    return _core.attest_verify_bound(json.dumps(tpm_attestation), qualifying, policy)


# ---- the gateways -------------------------------------------------------------------------

def start_tpm_gateway(tmp, server_keys, *args, ek_ca=None, persistent=True):
    """A swtpm (manufactured by `ek_ca` if given), its AIK made persistent
    before the gateway connects, and a gateway quoting with it."""
    tpm = Swtpm(tmp, ek_ca=ek_ca)
    try:
        handle_args = ()
        if persistent:
            tpm.make_persistent_key(HANDLE)
            handle_args = ("--tpm-handle", HANDLE)
        gw = Gateway(tmp, "--tpm", tpm.tcti, *handle_args, *args,
                     key_dir=keys_copy(server_keys, tmp), env=QUIET_TSS)
    except BaseException:
        tpm.stop()
        raise
    gw.swtpm = tpm
    return gw


def stop_tpm_gateway(gw):
    try:
        assert gw.stop() == 0, gw.log()
    finally:
        gw.swtpm.stop()


@pytest.fixture(scope="module")
def ek_ca(tmp_path_factory):
    return EkCa(tmp_path_factory.mktemp("ekca"))


@pytest.fixture(scope="module")
def gw(tmp_path_factory, server_keys, ek_ca):
    """A manufactured TPM, a persistent AIK, quotes unthrottled for the module."""
    gw = start_tpm_gateway(tmp_path_factory.mktemp("attest-gw"), server_keys,
                           "--tpm-quotes-per-second", "10000", ek_ca=ek_ca)
    yield gw
    stop_tpm_gateway(gw)


def attest(url, nonce):
    answer = httpx.get(url + ATTESTATION, params={"nonce": nonce.hex()}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["cache-control"] == "no-store"
    document = answer.json()
    assert sorted(document) == ["key_configs", "tpm_attestation"]
    return base64.b64decode(document["key_configs"], validate=True), document["tpm_attestation"]


def served_list(url):
    answer = httpx.get(url + "/.well-known/hushcall-hpke-keys")
    assert answer.status_code == 200
    return answer.content


# ---- the key-config attestation ---------------------------------------------------------

def test_the_attestation_quotes_the_served_list_bound_to_the_nonce(gw):
    nonce = secrets.token_bytes(32)
    configs, quote = attest(gw.url, nonce)
    assert configs == served_list(gw.url)  # no rotation within the test
    assert quote["is_available"] is True
    qualifying = key_config_qualifying(nonce, configs)
    assert _core.attest_key_config_qualifying(nonce, configs) == qualifying
    verdict = verify(quote, qualifying, pin(quote))
    assert verdict["verified"] is True, verdict
    assert verdict["aik_fingerprint"] == fingerprint(quote)
    unpinned = verify(quote, qualifying, None)
    assert (unpinned["verified"], unpinned["reason"]) == (False, "unpinned aik")


def test_a_quote_does_not_verify_for_another_nonce_or_other_configs(gw):
    nonce, other = secrets.token_bytes(32), secrets.token_bytes(32)
    configs, quote = attest(gw.url, nonce)
    _, other_quote = attest(gw.url, other)
    policy = pin(quote)
    for qualifying in (key_config_qualifying(other, configs),
                       key_config_qualifying(nonce, configs + b"\x00"),
                       key_config_qualifying(nonce, configs[:-1] + bytes([configs[-1] ^ 1]))):
        verdict = verify(quote, qualifying, policy)
        assert (verdict["verified"], verdict["reason"]) == (False, "wrong qualifying data")
    # the other nonce's quote is another quote, and verifies only for its own nonce
    assert other_quote["quote_b64"] != quote["quote_b64"]
    assert verify(other_quote, key_config_qualifying(other, configs), policy)["verified"]
    assert not verify(other_quote, key_config_qualifying(nonce, configs), policy)["verified"]


def checkquote(tmp_path, quote, qualifying):
    """tpm2_checkquote (tpm2-tools, no TPM needed) on a quote saved to files:
    its exit status. -m is the TPMS_ATTEST without its TPM2B size."""
    tool = _need("tpm2_checkquote", "tpm2-tools")
    attest_bytes = base64.b64decode(quote["quote_b64"])
    files = {"pub": base64.b64decode(quote["aik_pubkey_b64"]), "msg": attest_bytes[2:],
             "sig": base64.b64decode(quote["signature_b64"])}
    paths = {}
    for name, data in files.items():
        paths[name] = str(tmp_path / ("%s-%d.bin" % (name, time.monotonic_ns())))
        with open(paths[name], "wb") as f:
            f.write(data)
    proc = subprocess.run([tool, "-u", paths["pub"], "-m", paths["msg"], "-s", paths["sig"],
                           "-g", "sha256", "-q", qualifying.hex()],
                          env=tpm_env(), capture_output=True, text=True, timeout=60)
    return proc.returncode


def test_tpm2_checkquote_accepts_the_quote_for_its_nonce_only(gw, tmp_path):
    nonce = secrets.token_bytes(32)
    configs, quote = attest(gw.url, nonce)
    assert checkquote(tmp_path, quote, key_config_qualifying(nonce, configs)) == 0
    assert checkquote(tmp_path, quote,
                      key_config_qualifying(secrets.token_bytes(32), configs)) != 0


def test_the_quoted_configs_follow_rotation(tmp_path, server_keys):
    gw = start_tpm_gateway(tmp_path, server_keys, "--key-lifetime", "4", "--key-overlap", "2",
                           persistent=False)
    try:
        nonce = secrets.token_bytes(32)
        before, quote = attest(gw.url, nonce)
        while served_list(gw.url) == before:  # polled, no deadline asserted
            time.sleep(0.1)
        after, rotated = attest(gw.url, nonce)  # the same nonce on purpose
        assert after != before
        # ephemeral AIKs: nothing to pin, so the verdict is "unpinned aik" once the data match
        assert verify(rotated, key_config_qualifying(nonce, after), None)["reason"] == \
            "unpinned aik"
        assert verify(rotated, key_config_qualifying(nonce, before), None)["reason"] == \
            "wrong qualifying data"
        assert verify(quote, key_config_qualifying(nonce, after), None)["reason"] == \
            "wrong qualifying data"
    finally:
        stop_tpm_gateway(gw)


@pytest.mark.parametrize("query", [
    {},                                       # missing
    {"nonce": "ab" * 31},                     # short
    {"nonce": "ab" * 33},                     # long
    {"nonce": "AB" * 32},                     # uppercase
    {"nonce": "zz" * 32},                     # not hex
    {"nonce": ""},
    [("nonce", "ab" * 32), ("nonce", "cd" * 32)],  # twice
])
def test_a_bad_nonce_gets_400(gw, query):
    answer = httpx.get(gw.url + ATTESTATION, params=query)
    assert answer.status_code == 400
    assert "nonce" in answer.json()["detail"]


def test_a_gateway_without_tpm_has_no_attestation(echo):
    for method, path in (("GET", ATTESTATION + "?nonce=" + "ab" * 32), ("GET", ENROLLMENT),
                         ("POST", ACTIVATION)):
        answer = httpx.request(method, echo.url + path)
        assert (answer.status_code, answer.json()) == (404, {"detail": "No TPM attestation"})


def test_the_quote_rate_limit_applies(tmp_path, server_keys):
    gw = start_tpm_gateway(tmp_path, server_keys, "--tpm-quotes-per-second", "0.001",
                           persistent=False)
    try:
        nonce = secrets.token_bytes(32)
        attest(gw.url, nonce)  # the bucket's one token
        answer = httpx.get(gw.url + ATTESTATION, params={"nonce": nonce.hex()})
        assert answer.status_code == 503
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.json() == {"detail": "TPM quote rate exceeded"}
        # every TPM round trip takes from the same bucket: enrolment and answers too
        for method, path in (("GET", ENROLLMENT), ("POST", ACTIVATION)):
            answer = httpx.request(method, gw.url + path, json={
                "id_object": "AAAA", "encrypted_secret": "AAAA"})
            assert (answer.status_code, answer.json()["detail"]) == \
                (503, "TPM quote rate exceeded")
        enc, body, _ = x25519_request(gw.url, json.dumps(chat("x")).encode())
        answer = post(gw.url, enc.hex(), body, **{"X-Attestation": "required"})
        assert (answer.status_code, answer.json()["detail"]) == (503, "TPM quote rate exceeded")
    finally:
        stop_tpm_gateway(gw)


# ---- per-answer quotes --------------------------------------------------------------------

def sealed_post(url, document, **headers):
    """A v2 request sealed by pyca's HPKE (not ours): (answer, enc, opened body)."""
    enc, body, sender = x25519_request(url, json.dumps(document).encode())
    answer = post(url, enc.hex(), body, **headers)
    assert answer.status_code == 200, answer.text
    secret = sender.export(b"ehbp response", 32)
    plaintext, _ = open_answer(answer, enc, secret, AES256GCM)
    return answer, enc, plaintext


def answer_quote(answer):
    return json.loads(base64.b64decode(answer.headers["hushcall-attestation"], validate=True))


def exchange_qualifying(answer, enc):
    return answer_qualifying(enc, bytes.fromhex(answer.headers["ehbp-response-nonce"]))


@pytest.mark.parametrize("headers", [{"X-Attestation": "required"},
                                     {"X-Security-Tier": "high"},
                                     {"X-Security-Tier": "maximum"}])
@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_asked_for_a_quote_carries_one_bound_to_its_exchange(gw, tmp_path, headers,
                                                                       stream):
    document = dict(chat("quote me"), stream=True) if stream else chat("quote me")
    answer, enc, plaintext = sealed_post(gw.url, document, **headers)
    assert b"quote" in plaintext and (b"[DONE]" in plaintext) == stream
    quote = answer_quote(answer)
    qualifying = exchange_qualifying(answer, enc)
    assert _core.attest_answer_qualifying(
        enc, bytes.fromhex(answer.headers["ehbp-response-nonce"])) == qualifying
    verdict = verify(quote, qualifying, pin(quote))
    assert verdict["verified"] is True, verdict
    assert checkquote(tmp_path, quote, qualifying) == 0


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_not_asked_for_a_quote_has_none(gw, stream):
    document = dict(chat("plain"), stream=True) if stream else chat("plain")
    for headers in ({}, {"X-Security-Tier": "standard"}):
        answer, _, _ = sealed_post(gw.url, document, **headers)
        assert "hushcall-attestation" not in answer.headers


def test_a_quote_relayed_onto_another_exchange_does_not_verify(gw):
    first, first_enc, _ = sealed_post(gw.url, chat("one"), **{"X-Attestation": "required"})
    second, second_enc, _ = sealed_post(gw.url, chat("two"), **{"X-Attestation": "required"})
    quote = answer_quote(first)
    verdict = verify(quote, exchange_qualifying(second, second_enc), pin(quote))
    assert (verdict["verified"], verdict["reason"]) == (False, "wrong qualifying data")
    assert verify(quote, exchange_qualifying(first, first_enc), pin(quote))["verified"]


def test_a_bad_attestation_header_or_tier_gets_400_before_the_body(gw):
    enc, body, _ = x25519_request(gw.url, json.dumps(chat("x")).encode())
    for headers, detail in (({"X-Attestation": "please"}, "Invalid X-Attestation header"),
                            ({"X-Security-Tier": "extreme"}, "Invalid security tier")):
        answer = post(gw.url, enc.hex(), body, **headers)
        assert (answer.status_code, answer.json()) == (400, {"detail": detail})
    duplicate = httpx.post(gw.url + "/v1/chat/completions", content=body, headers=[
        ("Ehbp-Encapsulated-Key", enc.hex()), ("X-Attestation", "required"),
        ("X-Attestation", "required")])
    assert (duplicate.status_code, duplicate.json()) == \
        (400, {"detail": "Duplicate X-Attestation header"})
    # the request was never opened, so the same enc still answers
    answer = post(gw.url, enc.hex(), body)
    assert answer.status_code == 200


def test_maximum_without_a_tpm_gets_503_before_the_body_is_read(echo):
    enc, body, _ = x25519_request(echo.url, json.dumps(chat("x")).encode())
    answer = post(echo.url, enc.hex(), body, **{"X-Security-Tier": "maximum"})
    assert answer.status_code == 503
    assert "maximum" in answer.json()["detail"]
    assert post(echo.url, enc.hex(), body).status_code == 200  # not opened before


# ---- enrolment ----------------------------------------------------------------------------

def enrollment(url):
    answer = httpx.get(url + ENROLLMENT, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    document = answer.json()
    assert sorted(document) == ["aik_public", "ek_certificate"]
    return (base64.b64decode(document["ek_certificate"], validate=True),
            base64.b64decode(document["aik_public"], validate=True))


def activate(url, id_object, encrypted_secret):
    return httpx.post(url + ACTIVATION, timeout=60, json={
        "id_object": base64.b64encode(id_object).decode(),
        "encrypted_secret": base64.b64encode(encrypted_secret).decode()})


def openssl(*argv, data=None):
    proc = subprocess.run([_need("openssl", "openssl"), *argv], input=data,
                          capture_output=True, timeout=60)
    return proc


def test_the_ek_certificate_chains_to_the_ek_ca_and_the_aik_is_the_quoting_key(gw, ek_ca,
                                                                               tmp_path):
    ek_certificate, aik_public = enrollment(gw.url)
    cert = tmp_path / "ek.der"
    cert.write_bytes(ek_certificate)
    pem = openssl("x509", "-inform", "DER", "-in", str(cert)).stdout
    (tmp_path / "ek.pem").write_bytes(pem)
    # the root is the anchor, the intermediate untrusted: as the clients check it
    with open(ek_ca.ca_file, "rb") as f:
        root, inter = f.read().split(b"-----END CERTIFICATE-----\n")[:2]
    (tmp_path / "root.pem").write_bytes(root + b"-----END CERTIFICATE-----\n")
    (tmp_path / "inter.pem").write_bytes(inter + b"-----END CERTIFICATE-----\n")
    verified = openssl("verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
                       str(tmp_path / "inter.pem"), str(tmp_path / "ek.pem"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # the AIK enrolled is the one that signs the quotes
    _, quote = attest(gw.url, secrets.token_bytes(32))
    assert base64.b64decode(quote["aik_pubkey_b64"]) == aik_public


def test_a_credential_made_by_the_core_activates_and_finishes(gw, ek_ca):
    ek_certificate, aik_public = enrollment(gw.url)
    enrolment = _core.Enrolment(ek_certificate, ek_ca.ca_file, aik_public)
    answer = activate(gw.url, enrolment.id_object, enrolment.encrypted_secret)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    secret = base64.b64decode(answer.json()["secret"], validate=True)
    enrolment.finish(secret)  # raises unless the secret is the one sealed
    _, quote = attest(gw.url, secrets.token_bytes(32))
    assert enrolment.aik_fingerprint == fingerprint(quote)


def ek_public_pem(ek_certificate, tmp_path):
    cert = tmp_path / "ek-for-key.der"
    cert.write_bytes(ek_certificate)
    proc = openssl("x509", "-inform", "DER", "-in", str(cert), "-noout", "-pubkey")
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "ek-public.pem"
    path.write_bytes(proc.stdout)
    return str(path)


def tpm2_makecredential(ek_certificate, aik_public, secret, tmp_path):
    """(id_object, encrypted_secret) made by tpm2-tools (no TPM: -T none)
    for the AIK's name (nameAlg SHA-256 || SHA-256 of its TPMT_PUBLIC)."""
    name = b"\x00\x0b" + hashlib.sha256(aik_public[2:]).digest()
    secret_path, out = tmp_path / "secret.bin", tmp_path / "credential.bin"
    secret_path.write_bytes(secret)
    proc = subprocess.run(
        [_need("tpm2_makecredential", "tpm2-tools"), "-T", "none", "-G", "rsa",
         "-u", ek_public_pem(ek_certificate, tmp_path), "-s", str(secret_path),
         "-n", name.hex(), "-o", str(out)],
        env=tpm_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    blob = out.read_bytes()
    magic, version = struct.unpack(">II", blob[:8])
    assert (magic, version) == (CREDENTIAL_MAGIC, 1)
    (id_size,) = struct.unpack(">H", blob[8:10])
    id_object, encrypted_secret = blob[8:10 + id_size], blob[10 + id_size:]
    return id_object, encrypted_secret


def test_a_credential_made_by_tpm2_tools_activates_to_its_secret(gw, tmp_path):
    ek_certificate, aik_public = enrollment(gw.url)
    secret = secrets.token_bytes(32)
    id_object, encrypted_secret = tpm2_makecredential(ek_certificate, aik_public, secret,
                                                      tmp_path)
    answer = activate(gw.url, id_object, encrypted_secret)
    assert answer.status_code == 200, answer.text
    assert base64.b64decode(answer.json()["secret"]) == secret


def test_a_tampered_credential_is_refused_and_the_gateway_still_serves(gw, ek_ca):
    ek_certificate, aik_public = enrollment(gw.url)
    enrolment = _core.Enrolment(ek_certificate, ek_ca.ca_file, aik_public)
    id_object = bytearray(enrolment.id_object)
    id_object[-1] ^= 1  # the encrypted identity: its HMAC no longer checks
    answer = activate(gw.url, bytes(id_object), enrolment.encrypted_secret)
    assert (answer.status_code, answer.json()) == (400, NOT_ACTIVATED)
    # a credential for another AIK's name does not activate either
    other = bytearray(aik_public)
    other[-1] ^= 1
    foreign = _core.Enrolment(ek_certificate, ek_ca.ca_file, bytes(other))
    answer = activate(gw.url, foreign.id_object, foreign.encrypted_secret)
    assert (answer.status_code, answer.json()) == (400, NOT_ACTIVATED)
    # the TPM still quotes and activates
    attest(gw.url, secrets.token_bytes(32))
    answer = activate(gw.url, enrolment.id_object, enrolment.encrypted_secret)
    assert answer.status_code == 200


@pytest.mark.parametrize("body", [
    b"not json",
    b"[]",
    b'{"id_object": "AAAA"}',
    b'{"id_object": "AAAA", "encrypted_secret": "AAAA", "more": 1}',
    b'{"id_object": "AAAA", "encrypted_secret": "AAAA", "id_object": "AAAA"}',
    b'{"id_object": "AAA*", "encrypted_secret": "AAAA"}',
    b'{"id_object": 1, "encrypted_secret": "AAAA"}',
    b'{"id_object": "", "encrypted_secret": "AAAA"}',
    b'{"id_object": "AAAA", "encrypted_secret": NaN}',
])
def test_a_malformed_activation_gets_400(gw, body):
    answer = httpx.post(gw.url + ACTIVATION, content=body,
                        headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert "detail" in answer.json()


def test_junk_blobs_get_400_and_an_oversized_body_413(gw):
    answer = activate(gw.url, b"\x00\x02ab", b"\x00\x01c")
    assert answer.status_code == 400
    answer = httpx.post(gw.url + ACTIVATION, content=b"{" + b" " * 10000 + b"}")
    assert answer.status_code == 413


def test_enrollment_names_what_the_gateway_lacks(tmp_path, server_keys, ek_ca):
    for name in ("ephemeral", "plain"):
        (tmp_path / name).mkdir()
    ephemeral = start_tpm_gateway(tmp_path / "ephemeral", server_keys, ek_ca=ek_ca,
                                  persistent=False)
    try:
        answer = httpx.get(ephemeral.url + ENROLLMENT, timeout=60)
        assert answer.status_code == 404
        assert "--tpm-handle" in answer.json()["detail"]
    finally:
        stop_tpm_gateway(ephemeral)
    unmanufactured = start_tpm_gateway(tmp_path / "plain", server_keys)
    try:
        answer = httpx.get(unmanufactured.url + ENROLLMENT, timeout=60)
        assert answer.status_code == 404
        assert "EK certificate" in answer.json()["detail"]
    finally:
        stop_tpm_gateway(unmanufactured)


def test_a_tpm_that_fails_gets_503_and_the_gateway_goes_on(tmp_path, server_keys):
    gw = start_tpm_gateway(tmp_path, server_keys, persistent=False)
    try:
        gw.swtpm.stop()  # the TPM is gone under the gateway
        answer = httpx.get(gw.url + ATTESTATION, params={"nonce": "ab" * 32}, timeout=60)
        assert (answer.status_code, answer.json()) == (503, {"detail": "TPM unavailable"})
        enc, body, _ = x25519_request(gw.url, json.dumps(chat("x")).encode())
        answer = post(gw.url, enc.hex(), body, **{"X-Attestation": "required"})
        assert answer.status_code == 503
        assert "hushcall-attestation" not in answer.headers
        # a request that asks for no quote is answered as before
        answer, _, plaintext = sealed_post(gw.url, chat("still here"))
        assert b"still here" in plaintext
    finally:
        stop_tpm_gateway(gw)
