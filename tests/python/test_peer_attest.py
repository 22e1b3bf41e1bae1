"""The EHBP peer's attestation (tests/interop/ehbp_server.py --tpm) proven right
before our clients are tested against it: its quotes checked by tpm2-tools'
tpm2_checkquote (nobody here wrote it) and by the core's
attest_verify_bound, with the qualifying data computed here from
docs/attestation.md; each attest control shown to produce the attack it names
(the quote then fails for that reason, and passes for what it was really made
for); its enrolment endpoints checked with pyca `cryptography` (the EK
certificate's chain) and tpm2_makecredential (a credential made without us),
then `python -m hushcall attest enroll` run against it.

A swtpm manufactured with an EK certificate from a local CA, a persistent
AIK at 0x81000002 made before the peer connects. Nothing is skipped."""

import base64
import hashlib
import json
import os
import struct
import subprocess
import sys

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

from hushcall import _core
from processes import ROOT, EhbpPeer, peer_control as control, EkCa, Swtpm, tpm_env

AIK_HANDLE = "0x81000002"
PCRS = "sha256:0,7,10"
CHAT = "/v1/chat/completions"
ATTESTATION = "/.well-known/hushcall-attestation"
PYTHON_DIR = os.path.join(ROOT, "python")
TPM2_ALG = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D}


@pytest.fixture(scope="module")
def ek_ca(tmp_path_factory):
    return EkCa(tmp_path_factory.mktemp("ek-ca"))


@pytest.fixture(scope="module")
def tpm(tmp_path_factory, ek_ca):
    sim = Swtpm(tmp_path_factory.mktemp("swtpm"), ek_ca=ek_ca)
    sim.make_persistent_key(AIK_HANDLE)
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def peer(tmp_path_factory, tpm):
    child = EhbpPeer(tmp_path_factory.mktemp("peer"), "--tpm", tpm.tcti,
                     "--aik-handle", AIK_HANDLE, "--pcrs", PCRS)
    yield child.url
    assert child.stop() == 0


@pytest.fixture
def honest(peer):
    """The peer, its attest controls restored after the test."""
    yield peer
    control(peer, attest={})



# ---- the qualifying data, from docs/attestation.md ----------------------------------

def key_config_qualifying(nonce, configs):
    return hashlib.sha256(b"hushcall-v2 key attestation\x00" + nonce + configs).digest()


def answer_qualifying(response_nonce, enc):
    return hashlib.sha256(b"hushcall-v2 answer attestation\x00" + response_nonce + enc).digest()


def attest(peer, nonce=None):
    """(nonce, key-config list, tpm_attestation) of a key-config attestation."""
    nonce = nonce or os.urandom(32)
    answer = httpx.get(peer + ATTESTATION, params={"nonce": nonce.hex()})
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    return nonce, base64.b64decode(body["key_configs"]), body["tpm_attestation"]


# ---- tpm2_checkquote ---------------------------------------------------------------

def pcr_file(attestation):
    """tpm2-tools' serialized PCR file (what tpm2_quote -o writes by default): the
    in-memory TPML_PCR_SELECTION, a count, then that many TPML_DIGESTs of up to 8."""
    selections, digests = [], []
    for bank in attestation["pcr_banks"].split("+"):
        alg, _, indices = bank.partition(":")
        bitmap = bytearray(4)
        for index in sorted(int(i) for i in indices.split(",")):
            bitmap[index // 8] |= 1 << (index % 8)
            digests.append(bytes.fromhex(attestation["pcr_values"][alg][str(index)]))
        selections.append(struct.pack("<HB4sx", TPM2_ALG[alg], 3, bytes(bitmap)))
    selection = struct.pack("<I", len(selections)) + b"".join(selections).ljust(16 * 8, b"\0")
    lists = [digests[i:i + 8] for i in range(0, len(digests), 8)]
    body = b"".join(struct.pack("<I", len(chunk))
                    + b"".join(struct.pack("<H", len(d)) + d.ljust(64, b"\0") for d in chunk)
                    .ljust(8 * 66, b"\0") for chunk in lists)
    return selection + struct.pack("<I", len(lists)) + body


def checkquote(tmp_path, attestation, qualifying):
    """tpm2_checkquote on the attestation's AIK, quote, signature and PCRs; (ok, output)."""
    files = {"aik.pub": base64.b64decode(attestation["aik_pubkey_b64"]),
             "quote": base64.b64decode(attestation["quote_b64"])[2:],  # the bare TPMS_ATTEST
             "signature": base64.b64decode(attestation["signature_b64"]),
             "pcrs": pcr_file(attestation)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    proc = subprocess.run(
        ["tpm2_checkquote", "-u", str(tmp_path / "aik.pub"), "-m", str(tmp_path / "quote"),
         "-s", str(tmp_path / "signature"), "-f", str(tmp_path / "pcrs"), "-g", "sha256",
         "-q", qualifying.hex()], env=tpm_env(), capture_output=True, text=True, timeout=60)
    return proc.returncode == 0, proc.stdout + proc.stderr


def fingerprint(attestation):
    return "sha256:" + hashlib.sha256(
        base64.b64decode(attestation["aik_pubkey_b64"])[2:]).hexdigest()


def core_verdict(attestation, qualifying):
    policy = json.dumps({"aik_fingerprints": [fingerprint(attestation)]})
    return _core.attest_verify_bound(json.dumps(attestation), qualifying, policy)


def assert_verifies(tmp_path, attestation, qualifying):
    ok, output = checkquote(tmp_path, attestation, qualifying)
    assert ok, output
    verdict = core_verdict(attestation, qualifying)
    assert (verdict["verified"], verdict["reason"]) == (True, "ok"), verdict


def assert_wrong_qualifying(tmp_path, attestation, qualifying):
    ok, output = checkquote(tmp_path, attestation, qualifying)
    assert not ok and "error validating nonce" in output.lower(), output  # its extraData
    verdict = core_verdict(attestation, qualifying)
    assert (verdict["verified"], verdict["reason"]) == (False, "wrong qualifying data"), verdict


# ---- the key-config attestation ------------------------------------------------------

def test_a_key_config_attestation_verifies_for_its_nonce_and_the_configs_served(honest, tmp_path):
    nonce, configs, attestation = attest(honest)
    assert configs == httpx.get(honest + "/.well-known/hushcall-hpke-keys").content
    assert attestation["is_available"] is True and attestation["pcr_banks"] == PCRS
    assert sorted(attestation["pcr_values"]["sha256"], key=int) == ["0", "7", "10"]
    assert_verifies(tmp_path, attestation, key_config_qualifying(nonce, configs))
    assert_wrong_qualifying(tmp_path, attestation, key_config_qualifying(os.urandom(32), configs))


def test_the_quoted_pcr_values_are_the_tpms_and_checked(honest, tpm, tmp_path):
    nonce, configs, attestation = attest(honest)
    values = tpm_pcr_values(tpm)  # the peer is idle: swtpm is free for tpm2-tools
    assert attestation["pcr_values"]["sha256"] == values
    attestation["pcr_values"]["sha256"]["7"] = "ab" * 32
    ok, output = checkquote(tmp_path, attestation, key_config_qualifying(nonce, configs))
    assert not ok, output
    verdict = core_verdict(attestation, key_config_qualifying(nonce, configs))
    assert (verdict["verified"], verdict["reason"]) == (False, "pcr digest mismatch"), verdict


def tpm_pcr_values(tpm):
    """{"0": hex, "7": ..., "10": ...} as tpm2_pcrread prints them."""
    values = {}
    for line in tpm.tool("tpm2_pcrread", PCRS).splitlines():
        index, sep, value = line.strip().partition(":")
        if sep and index.strip().isdigit():
            values[index.strip()] = value.strip().lower().removeprefix("0x")
    return values


def test_the_nonce_must_be_64_lowercase_hex_digits(honest):
    for query in ({}, {"nonce": ""}, {"nonce": "ab" * 31}, {"nonce": "ab" * 33},
                  {"nonce": "AB" * 32}, {"nonce": "zz" * 32}):
        answer = httpx.get(honest + ATTESTATION, params=query)
        assert answer.status_code == 400, (query, answer.text)
        assert "nonce" in answer.json()["detail"]


def test_each_attestation_served_is_counted(honest):
    before = control(honest)["attestations"]
    attest(honest)
    attest(honest)
    assert control(honest)["attestations"] == before + 2


def test_a_new_key_config_after_rotation_is_attested(honest, tmp_path):
    _, old, _ = attest(honest)
    control(honest, rotate=True)
    nonce, configs, attestation = attest(honest)
    assert configs != old
    assert_verifies(tmp_path, attestation, key_config_qualifying(nonce, configs))


# ---- per-answer quotes -----------------------------------------------------------------

def sealed_post(peer, body, **headers):
    """A request sealed here to the peer's EHBP config (pyhpke); (enc, answer)."""
    config = httpx.get(peer + "/.well-known/hpke-keys").content
    suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256,
                            AEADId.AES256_GCM)
    public = suite.kem.deserialize_public_key(config[3:35])  # key id, KEM id, then Npk
    enc, sender = suite.create_sender_context(public, info=b"ehbp request")
    sealed = sender.seal(json.dumps(body).encode(), b"")
    headers["Ehbp-Encapsulated-Key"] = enc.hex()
    answer = httpx.post(peer + CHAT, content=struct.pack(">I", len(sealed)) + sealed,
                        headers=headers)
    assert answer.status_code == 200, answer.text
    return enc, answer


def chat(text, **extra):
    return dict({"model": "m", "messages": [{"role": "user", "content": text}]}, **extra)


def answer_quote(answer):
    return json.loads(base64.b64decode(answer.headers["hushcall-attestation"], validate=True))


@pytest.mark.parametrize("headers", [{"X-Attestation": "required"},
                                     {"X-Security-Tier": "high"},
                                     {"X-Security-Tier": "maximum"}])
def test_an_answer_asked_for_a_quote_carries_one_bound_to_its_enc_and_nonce(honest, tmp_path,
                                                                           headers):
    enc, answer = sealed_post(honest, chat("quote me"), **headers)
    nonce = bytes.fromhex(answer.headers["ehbp-response-nonce"])
    attestation = answer_quote(answer)
    assert_verifies(tmp_path, attestation, answer_qualifying(nonce, enc))
    assert_wrong_qualifying(tmp_path, attestation, answer_qualifying(nonce, os.urandom(32)))


def test_a_streamed_answer_carries_its_quote_too(honest, tmp_path):
    enc, answer = sealed_post(honest, chat("a stream", stream=True),
                              **{"X-Attestation": "required"})
    assert answer.headers["content-type"].startswith("text/event-stream")
    nonce = bytes.fromhex(answer.headers["ehbp-response-nonce"])
    assert_verifies(tmp_path, answer_quote(answer), answer_qualifying(nonce, enc))


def test_an_answer_not_asked_for_a_quote_has_none_and_a_bad_ask_is_400(honest):
    _, answer = sealed_post(honest, chat("no quote"), **{"X-Security-Tier": "standard"})
    assert "hushcall-attestation" not in answer.headers
    refused = httpx.post(honest + CHAT, content=b"", headers={"X-Attestation": "yes"})
    assert (refused.status_code, refused.text) == (400, "Invalid X-Attestation header")


# ---- the controls: each an attack ------------------------------------------------------

def test_stale_nonce_serves_the_quote_made_for_the_previous_nonce(honest, tmp_path):
    first_nonce, _, _ = attest(honest)
    control(honest, attest={"stale_nonce": True})
    nonce, configs, attestation = attest(honest)
    assert_wrong_qualifying(tmp_path, attestation, key_config_qualifying(nonce, configs))
    assert_verifies(tmp_path, attestation, key_config_qualifying(first_nonce, configs))
    control(honest, attest={})
    nonce, configs, attestation = attest(honest)
    assert_verifies(tmp_path, attestation, key_config_qualifying(nonce, configs))


def test_other_configs_quotes_a_list_one_byte_away_from_the_one_served(honest, tmp_path):
    control(honest, attest={"other_configs": True})
    nonce, configs, attestation = attest(honest)
    assert configs == httpx.get(honest + "/.well-known/hushcall-hpke-keys").content
    assert_wrong_qualifying(tmp_path, attestation, key_config_qualifying(nonce, configs))
    other = configs[:-1] + bytes([configs[-1] ^ 0x01])
    assert_verifies(tmp_path, attestation, key_config_qualifying(nonce, other))


def test_relay_answer_gives_the_previous_exchanges_quote(honest, tmp_path):
    ask = {"X-Attestation": "required"}
    first_enc, first = sealed_post(honest, chat("first"), **ask)
    control(honest, attest={"relay_answer": True})
    enc, answer = sealed_post(honest, chat("second"), **ask)
    assert answer.headers["hushcall-attestation"] == first.headers["hushcall-attestation"]
    nonce = bytes.fromhex(answer.headers["ehbp-response-nonce"])
    attestation = answer_quote(answer)
    assert_wrong_qualifying(tmp_path, attestation, answer_qualifying(nonce, enc))
    first_nonce = bytes.fromhex(first.headers["ehbp-response-nonce"])
    assert_verifies(tmp_path, attestation, answer_qualifying(first_nonce, first_enc))


def test_no_answer_quote_omits_the_header(honest):
    control(honest, attest={"no_answer_quote": True})
    _, answer = sealed_post(honest, chat("unquoted"), **{"X-Attestation": "required"})
    assert "hushcall-attestation" not in answer.headers
    control(honest, attest={})
    _, answer = sealed_post(honest, chat("quoted"), **{"X-Attestation": "required"})
    assert "hushcall-attestation" in answer.headers


def test_unavailable_answers_404_and_serves_no_attestation(honest):
    before = control(honest, attest={"unavailable": True})["attestations"]
    answer = httpx.get(honest + ATTESTATION, params={"nonce": os.urandom(32).hex()})
    assert (answer.status_code, answer.json()) == (404, {"detail": "No TPM attestation"})
    assert control(honest, attest={})["attestations"] == before
    attest(honest)


def test_an_unknown_attest_control_is_refused(honest):
    answer = httpx.post(honest + "/__control", json={"attest": {"stale": True}})
    assert answer.status_code == 400
    assert "stale_nonce" in answer.json()["attest"]


# ---- enrolment ---------------------------------------------------------------------------

def enrollment(peer):
    answer = httpx.get(peer + ATTESTATION + "/enrollment")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return (x509.load_der_x509_certificate(base64.b64decode(body["ek_certificate"])),
            base64.b64decode(body["aik_public"]))


def test_the_ek_certificate_chains_to_the_ca_and_the_aik_is_the_quoting_key(peer, ek_ca):
    ek_cert, aik_public = enrollment(peer)
    with open(ek_ca.ca_file, "rb") as f:
        root, intermediate = x509.load_pem_x509_certificates(f.read())
    ek_cert.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    _, _, attestation = attest(peer)
    assert base64.b64decode(attestation["aik_pubkey_b64"]) == aik_public


def make_credential(tmp_path, ek_cert, aik_public, secret):
    """(id_object, encrypted_secret) made by tpm2_makecredential (no TPM involved)."""
    ek_pem = tmp_path / "ek.pem"
    ek_pem.write_bytes(ek_cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "secret").write_bytes(secret)
    name = "000b" + hashlib.sha256(aik_public[2:]).hexdigest()  # nameAlg || H(TPMT_PUBLIC)
    subprocess.run(["tpm2_makecredential", "-Q", "-T", "none", "-G", "rsa", "-u", str(ek_pem),
                    "-s", str(tmp_path / "secret"), "-n", name, "-o", str(tmp_path / "cred")],
                   env=tpm_env(), check=True, capture_output=True, timeout=60)
    blob = (tmp_path / "cred").read_bytes()
    assert blob[:8] == struct.pack(">II", 0xBADCC0DE, 1)
    (id_len,) = struct.unpack_from(">H", blob, 8)
    return blob[8:10 + id_len], blob[10 + id_len:]


def activate(peer, id_object, encrypted_secret):
    return httpx.post(peer + ATTESTATION + "/activation",
                      json={"id_object": base64.b64encode(id_object).decode(),
                            "encrypted_secret": base64.b64encode(encrypted_secret).decode()})


def test_a_credential_for_the_aik_activates_and_a_tampered_one_does_not(peer, tmp_path):
    ek_cert, aik_public = enrollment(peer)
    secret = os.urandom(32)
    id_object, encrypted_secret = make_credential(tmp_path, ek_cert, aik_public, secret)
    answer = activate(peer, id_object, encrypted_secret)
    assert answer.status_code == 200, answer.text
    assert base64.b64decode(answer.json()["secret"]) == secret

    tampered = id_object[:10] + bytes([id_object[10] ^ 0x01]) + id_object[11:]
    refused = activate(peer, tampered, encrypted_secret)
    assert (refused.status_code, refused.json()) == (
        400, {"detail": "The credential did not activate"})
    again = activate(peer, id_object, encrypted_secret)  # the TPM stays usable
    assert base64.b64decode(again.json()["secret"]) == secret


def test_a_credential_for_another_name_does_not_activate(peer, tmp_path):
    ek_cert, aik_public = enrollment(peer)
    other = aik_public[:-1] + bytes([aik_public[-1] ^ 0x01])
    id_object, encrypted_secret = make_credential(tmp_path, ek_cert, other, os.urandom(32))
    assert activate(peer, id_object, encrypted_secret).status_code == 400


def test_malformed_activation_bodies_are_400(peer):
    for body in ({}, {"id_object": "!!", "encrypted_secret": "AA=="},
                 {"id_object": base64.b64encode(b"\x00\x05ab").decode(),
                  "encrypted_secret": base64.b64encode(b"\x00\x00").decode()}):
        answer = httpx.post(peer + ATTESTATION + "/activation", json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["detail"] != "The credential did not activate"


# ---- without a TPM -------------------------------------------------------------------------

def test_a_peer_without_a_tpm_has_no_attestation_and_refuses_the_maximum_tier(tmp_path):
    child = EhbpPeer(tmp_path)
    try:
        for path in (ATTESTATION + "?nonce=" + "00" * 32, ATTESTATION + "/enrollment"):
            answer = httpx.get(child.url + path)
            assert (answer.status_code, answer.json()) == (404, {"detail": "No TPM attestation"})
        refused = httpx.post(child.url + CHAT, content=b"x",
                             headers={"X-Security-Tier": "maximum"})
        assert refused.status_code == 503
        _, answer = sealed_post(child.url, chat("plain"), **{"X-Attestation": "required"})
        assert "hushcall-attestation" not in answer.headers
    finally:
        assert child.stop() == 0


# ---- hushcall's enrolment against the peer -------------------------------------------------

def enroll(peer, ca_file, out):
    return subprocess.run([sys.executable, "-m", "hushcall", "attest", "enroll", peer,
                           "--ek-ca", ca_file, "--out", str(out)],
                          env=cli_env(), capture_output=True, text=True, timeout=120)


def cli_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PYTHON_DIR, env.get("PYTHONPATH")) if p)
    return env


def test_hushcall_enrols_the_peers_aik_and_the_policy_verifies_its_quotes(peer, ek_ca, tmp_path):
    out = tmp_path / "policy.json"
    proc = enroll(peer, ek_ca.ca_file, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    policy = json.loads(out.read_text())
    nonce, configs, attestation = attest(peer)
    assert policy["aik_fingerprints"] == [fingerprint(attestation)]
    assert policy["pcrs"] == attestation["pcr_values"]
    verdict = _core.attest_verify_bound(json.dumps(attestation),
                                        key_config_qualifying(nonce, configs), json.dumps(policy))
    assert (verdict["verified"], verdict["reason"]) == (True, "ok"), verdict


def test_hushcall_enrolment_under_another_ca_writes_nothing(peer, tmp_path):
    other = EkCa(tmp_path)
    (tmp_path / "other-tpm").mkdir()
    other.provision(str(tmp_path / "other-tpm"))  # a CA exists after its first certificate
    out = tmp_path / "policy.json"
    proc = enroll(peer, other.ca_file, out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "does not chain to the CA" in proc.stderr, proc.stderr
    assert not out.exists()
