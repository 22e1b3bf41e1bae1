"""Enrolment from Python: the binding of the v2 qualifying data (checked
against docs/attestation.md's formulas computed here with hashlib),
attest_verify_bound on quotes tpm2_quote made on a swtpm, _core.Enrolment,
and `python -m hushcall attest enroll` end to end against the independent
peer (tests/interop/ehbp_server.py --tpm) on a swtpm manufactured with an EK
certificate from a local CA: the policy written and usable, and every
refusal (another CA, another TPM's AIK, a lying attestation, an existing
file) exiting 1 with nothing written. Nothing is skipped."""

import base64
import hashlib
import http.server
import json
import os
import stat
import subprocess
import sys
import threading

import httpx
import pytest

from hushcall import _core
from hushcall.errors import InvalidArgumentError, SecurityError
from processes import ROOT, EhbpPeer, peer_control as control, EkCa, Swtpm, _env

AIK_HANDLE = "0x81000002"
PCRS = "sha256:0,7,10"
ATTESTATION = "/.well-known/hushcall-attestation"
ENROLLMENT = ATTESTATION + "/enrollment"
ACTIVATION = ATTESTATION + "/activation"


def readpublic_fingerprint(tpm, tmp_path):
    """"sha256:" and hex SHA-256 of the persistent AIK's TPMT_PUBLIC as
    tpm2_readpublic writes it (a TPM2B_PUBLIC: the size prefix dropped)."""
    out = tmp_path / ("aik-%s.pub" % os.urandom(4).hex())
    tpm.tool("tpm2_readpublic", "-Q", "-c", AIK_HANDLE, "-o", str(out))
    return "sha256:" + hashlib.sha256(out.read_bytes()[2:]).hexdigest(), out.read_bytes()


# ---- fixtures: two TPMs of one CA, another CA, the peer on TPM A -----------------

@pytest.fixture(scope="module")
def ek_ca(tmp_path_factory):
    return EkCa(tmp_path_factory.mktemp("ek-ca"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    """A CA that signed another TPM, not ours: its file exists after that."""
    ca = EkCa(tmp_path_factory.mktemp("other-ca"))
    ca.provision(str(tmp_path_factory.mktemp("other-tpm-state")))
    return ca


@pytest.fixture(scope="module")
def tpm_a(tmp_path_factory, ek_ca):
    sim = Swtpm(tmp_path_factory.mktemp("swtpm-a"), ek_ca=ek_ca)
    sim.make_persistent_key(AIK_HANDLE)
    # Read before the peer holds the TPM (swtpm serves one connection at a time).
    sim.aik_fingerprint, sim.aik_public = readpublic_fingerprint(
        sim, tmp_path_factory.mktemp("aik-a"))
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def tpm_b(tmp_path_factory, ek_ca):
    """Another TPM manufactured by the same CA; tpm2-tools use it directly."""
    sim = Swtpm(tmp_path_factory.mktemp("swtpm-b"), ek_ca=ek_ca)
    sim.make_persistent_key(AIK_HANDLE)
    sim.aik_fingerprint, sim.aik_public = readpublic_fingerprint(
        sim, tmp_path_factory.mktemp("aik-b"))
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def peer(tmp_path_factory, tpm_a):
    child = EhbpPeer(tmp_path_factory.mktemp("peer"), "--tpm", tpm_a.tcti,
                     "--aik-handle", AIK_HANDLE, "--pcrs", PCRS)
    yield child.url
    assert child.stop() == 0


@pytest.fixture
def honest(peer):
    yield peer
    control(peer, attest={})



# ---- the qualifying data, from docs/attestation.md ---------------------------------

def test_key_config_qualifying_is_the_documented_hash():
    for configs in (b"\x00", os.urandom(7), os.urandom(3000)):
        nonce = os.urandom(32)
        expected = hashlib.sha256(b"hushcall-v2 key attestation\x00" + nonce + configs).digest()
        assert _core.attest_key_config_qualifying(nonce, configs) == expected
    a = _core.attest_key_config_qualifying(bytes(32), b"\x01\x02")
    assert a != _core.attest_key_config_qualifying(bytes(31) + b"\x01", b"\x02")


def test_answer_qualifying_is_the_documented_hash():
    for enc in (os.urandom(32), os.urandom(1120)):  # X25519's and X-Wing's enc
        response_nonce = os.urandom(32)
        expected = hashlib.sha256(
            b"hushcall-v2 answer attestation\x00" + response_nonce + enc).digest()
        assert _core.attest_answer_qualifying(enc, response_nonce) == expected


def test_qualifying_arguments_are_checked():
    with pytest.raises(ValueError, match="nonce must be 32 bytes"):
        _core.attest_key_config_qualifying(bytes(31), b"x")
    with pytest.raises(ValueError, match="response_nonce must be 32 bytes"):
        _core.attest_answer_qualifying(b"enc", bytes(33))
    with pytest.raises(InvalidArgumentError):
        _core.attest_key_config_qualifying(bytes(32), b"")
    with pytest.raises(TypeError):
        _core.attest_answer_qualifying("enc", bytes(32))


# ---- attest_verify_bound on tpm2_quote's quotes --------------------------------------

def tpm2_quote(tpm, tmp_path, qualifying):
    """The tpm_attestation object of a quote tpm2_quote makes with the AIK."""
    msg, sig = tmp_path / "quote.msg", tmp_path / "quote.sig"
    tpm.tool("tpm2_quote", "-Q", "-c", AIK_HANDLE, "-l", PCRS, "-q", qualifying.hex(),
             "-m", str(msg), "-s", str(sig), "-g", "sha256")
    values = {}
    for line in tpm.tool("tpm2_pcrread", PCRS).splitlines():
        index, sep, value = line.strip().partition(":")
        if sep and index.strip().isdigit():
            values[index.strip()] = value.strip().lower().removeprefix("0x")
    quote = msg.read_bytes()
    return {"is_available": True, "pcr_banks": PCRS, "pcr_values": {"sha256": values},
            "aik_pubkey_b64": base64.b64encode(tpm.aik_public).decode(),
            "quote_b64": base64.b64encode(len(quote).to_bytes(2, "big") + quote).decode(),
            "signature_b64": base64.b64encode(sig.read_bytes()).decode()}


def test_verify_bound_checks_a_tpm2_quote(tpm_b, tmp_path):
    nonce, configs = os.urandom(32), os.urandom(40)
    qualifying = _core.attest_key_config_qualifying(nonce, configs)
    attestation = tpm2_quote(tpm_b, tmp_path, qualifying)
    text = json.dumps(attestation)
    pin = json.dumps({"aik_fingerprints": [tpm_b.aik_fingerprint]})
    assert _core.attest_verify_bound(text, qualifying, pin) == {
        "verified": True, "reason": "ok", "aik_fingerprint": tpm_b.aik_fingerprint}
    assert _core.attest_verify_bound(text.encode(), qualifying, pin.encode())["verified"]
    # Another nonce, other configs: the quote was not made for them.
    for other in (_core.attest_key_config_qualifying(os.urandom(32), configs),
                  _core.attest_key_config_qualifying(nonce, configs + b"\x00")):
        verdict = _core.attest_verify_bound(text, other, pin)
        assert (verdict["verified"], verdict["reason"]) == (False, "wrong qualifying data")
    verdict = _core.attest_verify_bound(text, qualifying, None)
    assert (verdict["verified"], verdict["reason"]) == (False, "unpinned aik")
    other_pin = json.dumps({"aik_fingerprints": ["sha256:" + "0" * 64]})
    verdict = _core.attest_verify_bound(text, qualifying, other_pin)
    assert (verdict["verified"], verdict["reason"]) == (False, "aik not in policy")
    wrong_pcr = json.dumps({"aik_fingerprints": [tpm_b.aik_fingerprint],
                            "pcrs": {"sha256": {"7": "ab" * 32}}})
    verdict = _core.attest_verify_bound(text, qualifying, wrong_pcr)
    assert (verdict["verified"], verdict["reason"]) == (False, "pcr value not in policy: sha256:7")


def test_verify_bound_refuses_bad_input_with_errors():
    with pytest.raises(ValueError, match="qualifying must be 32 bytes"):
        _core.attest_verify_bound("{}", bytes(16))
    with pytest.raises(ValueError):
        _core.attest_verify_bound("{", bytes(32))  # MalformedJSONError is a ValueError
    with pytest.raises(SecurityError) as info:
        _core.attest_verify_bound("{}", bytes(32), '{"aik_fingerprints": "x"}')
    assert info.value.kind == "format"
    verdict = _core.attest_verify_bound('{"is_available": false}', bytes(32))
    assert verdict == {"verified": False, "reason": "tpm not available", "aik_fingerprint": None}


# ---- _core.Enrolment against the peer's endpoints --------------------------------------

def enrolment_of(peer, ca_file):
    answer = httpx.get(peer + ENROLLMENT)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return _core.Enrolment(base64.b64decode(body["ek_certificate"]), ca_file,
                           base64.b64decode(body["aik_public"]))


def activate(peer, enrolment):
    return httpx.post(peer + ACTIVATION, json={
        "id_object": base64.b64encode(enrolment.id_object).decode(),
        "encrypted_secret": base64.b64encode(enrolment.encrypted_secret).decode()})


def test_enrolment_proves_the_peers_aik(honest, tpm_a, ek_ca):
    enrolment = enrolment_of(honest, ek_ca.ca_file)
    assert enrolment.aik_fingerprint == tpm_a.aik_fingerprint
    answer = activate(honest, enrolment)
    assert answer.status_code == 200, answer.text
    enrolment.finish(base64.b64decode(answer.json()["secret"]))
    with pytest.raises(InvalidArgumentError, match="already finished"):
        enrolment.finish(base64.b64decode(answer.json()["secret"]))


def test_enrolment_refuses_a_wrong_secret_once_and_for_all(honest, ek_ca):
    enrolment = enrolment_of(honest, ek_ca.ca_file)
    secret = base64.b64decode(activate(honest, enrolment).json()["secret"])
    with pytest.raises(SecurityError) as info:
        enrolment.finish(bytes(a ^ b for a, b in zip(secret, b"\x01" + bytes(31))))
    assert info.value.kind == "attestation"
    with pytest.raises(InvalidArgumentError):
        enrolment.finish(secret)  # the right one, too late: no second guess


def test_enrolment_refuses_another_ca_and_junk(honest, other_ca, ek_ca, tpm_a):
    with pytest.raises(SecurityError, match="does not chain to the CA") as info:
        enrolment_of(honest, other_ca.ca_file)
    assert info.value.kind == "attestation"
    cert = base64.b64decode(httpx.get(honest + ENROLLMENT).json()["ek_certificate"])
    with pytest.raises(SecurityError, match="ek_certificate"):
        _core.Enrolment(b"\x30\x03junk", ek_ca.ca_file, tpm_a.aik_public)
    with pytest.raises(SecurityError, match="aik_public"):
        _core.Enrolment(cert, ek_ca.ca_file, tpm_a.aik_public + b"\x00")


# ---- the CLI ---------------------------------------------------------------------------

def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "hushcall", "attest", "enroll", *args],
                          env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def assert_refused(code, stderr, reason, out):
    assert code == 1, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr  # one line, no traceback
    assert reason in stderr, stderr
    assert not os.path.exists(out)
    assert [n for n in os.listdir(os.path.dirname(out)) if n.startswith(".policy-")] == []


def test_cli_writes_a_policy_that_verifies_the_gateway(honest, tpm_a, ek_ca, tmp_path):
    out = tmp_path / "policy.json"
    code, stdout, stderr = run_cli(honest, "--ek-ca", ek_ca.ca_file, "--out", str(out))
    assert code == 0, stderr
    assert tpm_a.aik_fingerprint in stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["policy.json"]  # no staged file left
    policy = json.loads(out.read_text())
    assert policy["aik_fingerprints"] == [tpm_a.aik_fingerprint]
    assert sorted(policy["pcrs"]["sha256"], key=int) == ["0", "7", "10"]
    # Usable: a fresh attestation verifies under it, PCRs included.
    nonce = os.urandom(32)
    body = httpx.get(honest + ATTESTATION, params={"nonce": nonce.hex()}).json()
    qualifying = _core.attest_key_config_qualifying(nonce, base64.b64decode(body["key_configs"]))
    verdict = _core.attest_verify_bound(json.dumps(body["tpm_attestation"]), qualifying,
                                        out.read_text())
    assert (verdict["verified"], verdict["reason"]) == (True, "ok"), verdict
    # An existing file is kept unless --force.
    before = out.read_bytes()
    code, _, stderr = run_cli(honest, "--ek-ca", ek_ca.ca_file, "--out", str(out))
    assert code == 1 and "exists" in stderr, stderr
    assert out.read_bytes() == before
    code, _, stderr = run_cli(honest, "--ek-ca", ek_ca.ca_file, "--out", str(out), "--force")
    assert code == 0, stderr
    assert json.loads(out.read_text())["aik_fingerprints"] == [tpm_a.aik_fingerprint]


def test_cli_refuses_another_ca(honest, other_ca, tmp_path):
    out = str(tmp_path / "policy.json")
    code, _, stderr = run_cli(honest, "--ek-ca", other_ca.ca_file, "--out", out)
    assert_refused(code, stderr, "does not chain to the CA", out)


def test_cli_refuses_an_attestation_made_for_another_nonce(honest, ek_ca, tmp_path):
    control(honest, attest={"stale_nonce": True})
    out = str(tmp_path / "policy.json")
    code, _, stderr = run_cli(honest, "--ek-ca", ek_ca.ca_file, "--out", out)
    assert_refused(code, stderr, "wrong qualifying data", out)


def test_cli_refuses_plain_http_beyond_loopback(ek_ca, tmp_path):
    out = str(tmp_path / "policy.json")
    code, _, stderr = run_cli("http://192.0.2.1:9", "--ek-ca", ek_ca.ca_file, "--out", out)
    assert_refused(code, stderr, "loopback", out)


class LyingGateway:
    """A proxy to the peer that shows the peer's EK certificate with another
    TPM's AIK: the server a client must not believe."""

    def __init__(self, target, aik_public):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                proxy.forward(self, None)

            def do_POST(self):
                proxy.forward(self, self.rfile.read(int(self.headers["Content-Length"])))

            def log_message(self, *args):
                pass

        self.target, self.aik_public = target, aik_public
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, handler, body):
        answer = httpx.request(handler.command, self.target + handler.path, content=body,
                               headers={"Content-Type": "application/json"})
        content = answer.content
        if handler.path == ENROLLMENT and answer.status_code == 200:
            lie = answer.json()
            lie["aik_public"] = base64.b64encode(self.aik_public).decode()
            content = json.dumps(lie).encode()
        handler.send_response(answer.status_code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_cli_refuses_the_aik_of_another_tpm(honest, tpm_b, ek_ca, tmp_path):
    liar = LyingGateway(honest, tpm_b.aik_public)
    try:
        out = str(tmp_path / "policy.json")
        code, _, stderr = run_cli(liar.url, "--ek-ca", ek_ca.ca_file, "--out", out)
    finally:
        liar.close()
    # TPM A holds no key of TPM B's AIK's name: the credential does not activate.
    assert_refused(code, stderr, "The credential did not activate", out)
