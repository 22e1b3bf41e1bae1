"""TPM 2.0 attestation end to end (docs/attestation.md): the reference gateway
(`python -m hushcall serve --tpm TCTI`) quoting the answers of the high and
maximum tiers and those asked for with `X-Attestation: required` with a
software TPM (swtpm), at most --tpm-quotes-per-second, and hushcall's clients
verifying each quote into `_metadata.attestation`: verified only under a
policy that pins the AIK, "unpinned aik" otherwise, refusing answers under
`require_attestation` and the maximum tier, and applying policy files (PCR
baselines, pinned AIKs).

swtpm and tpm2-tools must be installed: a missing binary fails, never skips.
Each TPM gateway has its own swtpm (swtpm serves one connection at a time)."""

import asyncio
import base64
import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

import hushcall
from processes import Gateway, ROOT, Swtpm, _env, keys_copy

FAST = {"allow_http": True, "protocol": "v1", "key_bits": 2048}
QUIET_TSS = {"TSS2_LOG": "all+none"}
DEFAULT_PCRS = "sha256:0,7,10"
PERSISTENT_HANDLE = "0x81000002"
MAXIMUM_REFUSED = ("Security tier 'maximum' requires TPM attestation, "
                   "which this gateway does not offer")
HEX64 = re.compile(r"[0-9a-f]{64}")
# A pin no TPM here has: it lets attestation be required where none can verify.
FOREIGN_PIN = {"aik_fingerprints": ["sha256:" + "1" * 64]}
NOT_QUOTED = {"is_available": True, "quoted": False}


def user(text):
    return [{"role": "user", "content": text}]


def content(answer):
    return answer["choices"][0]["message"]["content"]


def healthz(url, **kwargs):
    with urllib.request.urlopen(url + "/healthz", timeout=10, **kwargs) as r:
        return json.loads(r.read())


def write_policy(tmp_path, policy):
    path = tmp_path / ("policy-%d.json" % time.monotonic_ns())
    path.write_text(policy if isinstance(policy, str) else json.dumps(policy))
    return str(path)


def post_raw(url, headers):
    """POST a body that never opens; (status, headers, JSON body) for the
    refusals the gateway makes before it reads the body."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", "/v1/chat/secure_completion", body=b"{}",
                     headers=dict({"X-Payload-ID": "raw-1", "X-Public-Key": "not-a-key"},
                                  **headers))
        r = conn.getresponse()
        return r.status, r.headers, json.loads(r.read())
    finally:
        conn.close()


# ---- the gateways (module scope) ---------------------------------------------------


def _tpm_gateway(tmp_path_factory, server_keys, *args, persistent_key=None):
    tmp = tmp_path_factory.mktemp("tpm-gw")
    tpm = Swtpm(tmp)
    gw = None
    try:
        if persistent_key:
            tpm.make_persistent_key(persistent_key)  # before the gateway connects
        gw = Gateway(tmp, "--tpm", tpm.tcti, *args, key_dir=keys_copy(server_keys, tmp),
                     env=QUIET_TSS)
        gw.swtpm = tpm
        yield gw
    finally:
        if gw is not None:
            assert gw.stop() == 0, gw.log()
        tpm.stop()


def _plain_gateway(tmp_path_factory, server_keys, *args):
    tmp = tmp_path_factory.mktemp("plain-gw")
    gw = Gateway(tmp, *args, key_dir=keys_copy(server_keys, tmp))
    try:
        yield gw
    finally:
        assert gw.stop() == 0, gw.log()


@pytest.fixture(scope="module")
def tpm_gw(tmp_path_factory, server_keys):
    """--tpm with the defaults: ECC P-256 ephemeral AIK, sha256:0,7,10."""
    yield from _tpm_gateway(tmp_path_factory, server_keys)


@pytest.fixture(scope="module")
def rsa_gw(tmp_path_factory, server_keys):
    yield from _tpm_gateway(tmp_path_factory, server_keys, "--tpm-key-alg", "rsa")


@pytest.fixture(scope="module")
def pcrs_gw(tmp_path_factory, server_keys):
    yield from _tpm_gateway(tmp_path_factory, server_keys, "--tpm-pcrs", "sha256:0,1+sha1:7")


@pytest.fixture(scope="module")
def pinned_gw(tmp_path_factory, server_keys):
    """Quotes with a persistent restricted ECC key made in the swtpm with tpm2-tools."""
    yield from _tpm_gateway(tmp_path_factory, server_keys, "--tpm-handle", PERSISTENT_HANDLE,
                            persistent_key=PERSISTENT_HANDLE)


@pytest.fixture(scope="module")
def pin(pinned_gw, tmp_path_factory):
    """The pinned gateway's AIK fingerprint and PCR values, learnt from an
    (unpinned) high-tier answer, and a policy file pinning that AIK."""
    answer = hushcall.Client(pinned_gw.url, **FAST).create(
        model="m", messages=user("learn the aik"), security_tier="high")
    att, quote = check_quote(answer, DEFAULT_PCRS, {"sha256": ["0", "7", "10"]}, pinned=False)
    path = write_policy(tmp_path_factory.mktemp("pin"),
                        {"aik_fingerprints": [att["aik_fingerprint"]]})
    return {"fingerprint": att["aik_fingerprint"], "pcrs": quote["pcr_values"], "policy": path}


@pytest.fixture(scope="module")
def foreign_pin(tmp_path_factory):
    return write_policy(tmp_path_factory.mktemp("foreign-pin"), FOREIGN_PIN)


@pytest.fixture(scope="module")
def plain_gw(tmp_path_factory, server_keys):
    """No TPM."""
    yield from _plain_gateway(tmp_path_factory, server_keys)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki") / "pki"
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "interop", "make_test_ca.py"),
                    str(d)], check=True, timeout=60)
    return d


def _tls(pki):
    return ("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"))


@pytest.fixture(scope="module")
def tls_tpm_gw(tmp_path_factory, server_keys, pki):
    """https, quoting with a persistent key: the maximum tier needs a pinned AIK."""
    yield from _tpm_gateway(tmp_path_factory, server_keys, "--tpm-handle", PERSISTENT_HANDLE,
                            *_tls(pki), persistent_key=PERSISTENT_HANDLE)


@pytest.fixture(scope="module")
def tls_plain_gw(tmp_path_factory, server_keys, pki):
    yield from _plain_gateway(tmp_path_factory, server_keys, *_tls(pki))


# ---- what every quoted answer carries --------------------------------------------


def check_quote(answer, pcr_banks, expected_pcrs, pinned=True):
    """The quote block and its verdict: verified when the client pins the AIK,
    "unpinned aik" otherwise, the PCR values kept either way. Returns
    (attestation, quote) as dicts."""
    meta = answer["_metadata"]
    quote = meta["tpm_attestation"].to_dict()
    assert set(quote) == {"is_available", "pcr_banks", "pcr_values", "aik_pubkey_b64",
                          "quote_b64", "signature_b64"}
    assert quote["is_available"] is True
    assert quote["pcr_banks"] == pcr_banks
    assert {bank: sorted(values, key=int) for bank, values in quote["pcr_values"].items()} \
        == expected_pcrs
    for bank, values in quote["pcr_values"].items():
        width = {"sha1": 40, "sha256": 64, "sha384": 96, "sha512": 128}[bank]
        for value in values.values():
            assert re.fullmatch("[0-9a-f]{%d}" % width, value), (bank, value)
    for blob in ("aik_pubkey_b64", "quote_b64", "signature_b64"):
        assert base64.b64decode(quote[blob], validate=True)

    att = meta["attestation"].to_dict()
    assert att["verified"] is pinned, att
    assert att["reason"] == ("ok" if pinned else "unpinned aik")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", att["aik_fingerprint"])
    # The fingerprint is SHA-256 over the marshalled TPMT_PUBLIC (TPM2B_PUBLIC minus its size).
    aik = base64.b64decode(quote["aik_pubkey_b64"])
    assert int.from_bytes(aik[:2], "big") == len(aik) - 2
    assert att["aik_fingerprint"] == "sha256:" + hashlib.sha256(aik[2:]).hexdigest()
    assert att["pcrs"] == quote["pcr_values"]
    return att, quote


def check_not_quoted(answer):
    assert answer["_metadata"]["tpm_attestation"].to_dict() == NOT_QUOTED
    att = answer["_metadata"]["attestation"].to_dict()
    assert att == {"verified": False, "reason": "not quoted", "aik_fingerprint": None,
                   "pcrs": None}


def aik_type(quote):
    """TPMT_PUBLIC.type of the AIK: 0x0001 RSA, 0x0023 ECC."""
    return int.from_bytes(base64.b64decode(quote["aik_pubkey_b64"])[2:4], "big")


DEFAULT_EXPECTED = {"sha256": ["0", "7", "10"]}


# ---- when the gateway quotes ---------------------------------------------------------


def test_standard_answer_is_not_quoted(tpm_gw):
    """A TPM round trip only when it is asked for: not for the standard tier."""
    answer = hushcall.Client(tpm_gw.url, **FAST).create(model="m", messages=user("no quote"))
    assert content(answer) == "echo: no quote"
    check_not_quoted(answer)


def test_high_tier_is_quoted_but_unpinned(tpm_gw):
    client = hushcall.Client(tpm_gw.url, **FAST)
    first = client.create(model="m", messages=user("quote me"), security_tier="high")
    assert content(first) == "echo: quote me"
    att, quote = check_quote(first, DEFAULT_PCRS, DEFAULT_EXPECTED, pinned=False)
    assert aik_type(quote) == 0x0023
    # The default AIK is ephemeral: a new key for every quote, which nothing can pin.
    second = client.create(model="m", messages=user("again"), security_tier="high")
    att2, _ = check_quote(second, DEFAULT_PCRS, DEFAULT_EXPECTED, pinned=False)
    assert att2["aik_fingerprint"] != att["aik_fingerprint"]
    assert att2["pcrs"] == att["pcrs"]


def test_header_asks_for_a_quote(pinned_gw, pin):
    """require_attestation sends X-Attestation: required, so a standard-tier
    call is quoted too; under the pin it verifies."""
    client = hushcall.Client(pinned_gw.url, require_attestation=True,
                             attestation_policy=pin["policy"], **FAST)
    answer = client.create(model="m", messages=user("asked"))
    assert content(answer) == "echo: asked"
    assert answer["_metadata"]["security_tier"] == "standard"
    att, _ = check_quote(answer, DEFAULT_PCRS, DEFAULT_EXPECTED)
    assert att["aik_fingerprint"] == pin["fingerprint"]
    # The same policy without require_attestation: no header, no quote.
    answer = hushcall.Client(pinned_gw.url, attestation_policy=pin["policy"], **FAST).create(
        model="m", messages=user("not asked"))
    check_not_quoted(answer)


@pytest.mark.parametrize("value", ["yes", "Required", "", "optional", "required, yes"])
def test_other_attestation_header_values_are_400(tpm_gw, value):
    before = tpm_gw.log().count("open_ms=")
    status, _, body = post_raw(tpm_gw.url, {"X-Attestation": value})
    assert (status, body) == (400, {"detail": "Invalid X-Attestation header"})
    assert tpm_gw.log().count("open_ms=") == before  # refused before the core saw it


def test_rsa_aik(rsa_gw):
    answer = hushcall.Client(rsa_gw.url, **FAST).create(model="m", messages=user("rsa"),
                                                       security_tier="high")
    _, quote = check_quote(answer, DEFAULT_PCRS, DEFAULT_EXPECTED, pinned=False)
    assert aik_type(quote) == 0x0001


def test_custom_pcr_selection(pcrs_gw):
    answer = hushcall.Client(pcrs_gw.url, **FAST).create(model="m", messages=user("pcrs"),
                                                        security_tier="high")
    check_quote(answer, "sha256:0,1+sha1:7", {"sha256": ["0", "1"], "sha1": ["7"]},
                pinned=False)


def test_async_client_verifies(pinned_gw, pin):
    async def main():
        async with hushcall.AsyncClient(pinned_gw.url, require_attestation=True,
                                        attestation_policy=pin["policy"], **FAST) as c:
            return await asyncio.gather(*(c.create(model="m", messages=user("a%d" % i))
                                          for i in range(3)))

    answers = asyncio.run(main())
    assert [content(a) for a in answers] == ["echo: a0", "echo: a1", "echo: a2"]
    for a in answers:
        check_quote(a, DEFAULT_PCRS, DEFAULT_EXPECTED)


def test_start_log_names_the_pcrs(tpm_gw, pcrs_gw, plain_gw):
    # /healthz keeps the details to callers with an API key (these gateways have none).
    assert " tpm=%s " % DEFAULT_PCRS in tpm_gw.log()
    assert " tpm=sha256:0,1+sha1:7 " in pcrs_gw.log()
    assert " tpm=- " in plain_gw.log()
    assert healthz(tpm_gw.url) == {"status": "ok"}


# ---- the quote rate ------------------------------------------------------------------


def test_quotes_past_the_rate_are_503(tmp_path, server_keys):
    """--tpm-quotes-per-second: one bucket for the gateway; a request that
    needs a quote past it is refused before the core opens it, the others
    are answered unquoted."""
    tpm = Swtpm(tmp_path)
    gw = Gateway(tmp_path, "--tpm", tpm.tcti, "--tpm-quotes-per-second", "0.01",
                 key_dir=keys_copy(server_keys, tmp_path), env=QUIET_TSS)
    try:
        client = hushcall.Client(gw.url, max_retries=0, **FAST)
        first = client.create(model="m", messages=user("the one quote"), security_tier="high")
        check_quote(first, DEFAULT_PCRS, DEFAULT_EXPECTED, pinned=False)
        opened = gw.log().count("open_ms=")
        for headers in ({"X-Security-Tier": "high"}, {"X-Security-Tier": "maximum"},
                        {"X-Attestation": "required"}):
            status, response_headers, body = post_raw(gw.url, headers)
            assert (status, body) == (503, {"detail": "TPM quote rate exceeded"}), headers
            assert 1 <= int(response_headers["Retry-After"]) <= 100
        with pytest.raises(hushcall.ServiceUnavailableError) as e:
            client.create(model="m", messages=user("CANARY-second"), security_tier="high")
        assert e.value.error_details == {"detail": "TPM quote rate exceeded"}
        check_not_quoted(client.create(model="m", messages=user("standard still served")))
        assert gw.log().count("open_ms=") == opened + 1  # only the standard one was opened
        assert gw.log().count("status=503") == 4
    finally:
        assert gw.stop() == 0, gw.log()
        tpm.stop()


@pytest.mark.parametrize("rate", ["0", "-1", "many"])
def test_quote_rate_must_be_positive(rate, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hushcall", "serve", "--port", "0", "--key-dir", str(tmp_path),
         "--tpm", "swtpm:host=127.0.0.1,port=9", "--tpm-quotes-per-second", rate],
        env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--tpm-quotes-per-second" in proc.stderr
    assert "listening on" not in proc.stdout


# ---- the maximum tier (https only) ----------------------------------------------


def test_maximum_refused_over_http_by_the_client(tpm_gw):
    answered = "path=/v1/chat/secure_completion"
    before = tpm_gw.log().count(answered)
    with pytest.raises(hushcall.InvalidArgumentError) as e:
        hushcall.Client(tpm_gw.url, **FAST).create(model="m", messages=user("x"),
                                                  security_tier="maximum")
    assert "https" in str(e.value)
    assert tpm_gw.log().count(answered) == before  # refused before anything was sent


def test_maximum_over_tls_with_a_pinned_tpm(tls_tpm_gw, pki, tmp_path):
    assert tls_tpm_gw.url.startswith("https://127.0.0.1:")
    tls = {"ca_file": str(pki / "ca.pem"), "key_bits": 2048, "protocol": "v1"}
    learnt = hushcall.Client(tls_tpm_gw.url, **tls).create(
        model="m", messages=user("learn"), security_tier="high")
    att, _ = check_quote(learnt, DEFAULT_PCRS, DEFAULT_EXPECTED, pinned=False)
    policy = write_policy(tmp_path, {"aik_fingerprints": [att["aik_fingerprint"]]})
    client = hushcall.Client(tls_tpm_gw.url, attestation_policy=policy, **tls)
    answer = client.create(model="m", messages=user("maximum"), security_tier="maximum")
    assert content(answer) == "echo: maximum"
    assert answer["_metadata"]["security_tier"] == "maximum"
    check_quote(answer, DEFAULT_PCRS, DEFAULT_EXPECTED)


def test_maximum_needs_a_pinned_aik(tls_tpm_gw, pki, tmp_path):
    """Refused before anything is sent, for the client's tier and a call's."""
    answered = "path=/v1/chat/secure_completion"
    before = tls_tpm_gw.log().count(answered)
    tls = {"ca_file": str(pki / "ca.pem"), "key_bits": 2048, "protocol": "v1"}
    unpinned = write_policy(tmp_path, {"pcrs": {}})
    for extra in ({}, {"attestation_policy": unpinned}):
        with pytest.raises(hushcall.InvalidArgumentError) as e:
            hushcall.Client(tls_tpm_gw.url, security_tier="maximum", **extra, **tls)
        assert "maximum" in str(e.value) and "aik_fingerprints" in str(e.value)
    with pytest.raises(hushcall.InvalidArgumentError) as e:
        hushcall.Client(tls_tpm_gw.url, **tls).create(model="m", messages=user("x"),
                                                      security_tier="maximum")
    assert "aik_fingerprints" in str(e.value)
    assert tls_tpm_gw.log().count(answered) == before


def test_maximum_over_tls_without_tpm(tls_plain_gw, pki, foreign_pin):
    tls = {"ca_file": str(pki / "ca.pem"), "key_bits": 2048, "protocol": "v1", "max_retries": 0,
           "attestation_policy": foreign_pin}
    client = hushcall.Client(tls_plain_gw.url, **tls)
    with pytest.raises(hushcall.ServiceUnavailableError) as e:
        client.create(model="m", messages=user("maximum"), security_tier="maximum")
    assert e.value.status_code == 503
    assert e.value.error_details == {"detail": MAXIMUM_REFUSED}

    # The same through the asynchronous API.
    async def main():
        async with hushcall.AsyncClient(tls_plain_gw.url, **tls) as c:
            return await c.create(model="m", messages=user("maximum"), security_tier="maximum")

    with pytest.raises(hushcall.ServiceUnavailableError) as e:
        asyncio.run(main())
    assert e.value.status_code == 503
    assert e.value.error_details == {"detail": MAXIMUM_REFUSED}
    # The other tiers still work there, unattested.
    answer = client.create(model="m", messages=user("high"), security_tier="high")
    assert answer["_metadata"]["attestation"]["verified"] is False


# ---- a gateway without a TPM -------------------------------------------------------


def test_no_tpm_answer_is_unverified(plain_gw):
    answer = hushcall.Client(plain_gw.url, **FAST).create(model="m", messages=user("plain"))
    assert content(answer) == "echo: plain"
    assert answer["_metadata"]["tpm_attestation"].to_dict() == {"is_available": False}
    att = answer["_metadata"]["attestation"].to_dict()
    assert att["verified"] is False
    assert att["reason"] == "tpm not available"
    assert "pcrs" not in att or not att["pcrs"]


def test_require_attestation_needs_a_pinned_aik(plain_gw, tmp_path):
    unpinned = write_policy(tmp_path, {"pcrs": {}, "aik_fingerprints": []})
    for extra in ({}, {"attestation_policy": unpinned}):
        with pytest.raises(hushcall.InvalidArgumentError) as e:
            hushcall.Client(plain_gw.url, require_attestation=True, **extra, **FAST)
        assert "require_attestation" in str(e.value)
        assert "aik_fingerprints" in str(e.value)
        with pytest.raises(hushcall.InvalidArgumentError) as e:
            hushcall.AsyncClient(plain_gw.url, require_attestation=True, **extra, **FAST)
        assert "aik_fingerprints" in str(e.value)


def test_require_attestation_refuses_no_tpm(plain_gw, foreign_pin):
    client = hushcall.Client(plain_gw.url, require_attestation=True, max_retries=0,
                             attestation_policy=foreign_pin, **FAST)
    answered = "path=/v1/chat/secure_completion status=200"
    before = plain_gw.log().count(answered)
    answer = None
    with pytest.raises(hushcall.SecurityError) as e:
        answer = client.create(model="m", messages=user("never released"))
    assert answer is None
    assert e.value.kind == "attestation"
    assert "tpm not available" in str(e.value)
    assert "never released" not in str(e.value)
    # The gateway did answer (200): the client refused the answer, not the server.
    deadline = time.monotonic() + 5
    while plain_gw.log().count(answered) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert plain_gw.log().count(answered) == before + 1


def test_require_attestation_async_refuses_no_tpm(plain_gw, foreign_pin):
    async def main():
        async with hushcall.AsyncClient(plain_gw.url, require_attestation=True,
                                        attestation_policy=foreign_pin, max_retries=0,
                                        **FAST) as c:
            return await c.create(model="m", messages=user("x"))

    with pytest.raises(hushcall.SecurityError) as e:
        asyncio.run(main())
    assert e.value.kind == "attestation"
    assert "tpm not available" in str(e.value)


# ---- policies -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reported_pcrs(tpm_gw):
    answer = hushcall.Client(tpm_gw.url, **FAST).create(model="m", messages=user("baseline"),
                                                       security_tier="high")
    return answer["_metadata"]["tpm_attestation"]["pcr_values"].to_dict()


def test_policy_baseline_matches(pinned_gw, pin, tmp_path):
    policy = write_policy(tmp_path, {"pcrs": pin["pcrs"],
                                     "aik_fingerprints": [pin["fingerprint"]]})
    client = hushcall.Client(pinned_gw.url, attestation_policy=policy, require_attestation=True,
                             **FAST)
    answer = client.create(model="m", messages=user("baseline"))
    check_quote(answer, DEFAULT_PCRS, DEFAULT_EXPECTED)
    # A subset of the quoted PCRs is a baseline too.
    subset = write_policy(tmp_path, {"pcrs": {"sha256": {"7": pin["pcrs"]["sha256"]["7"]}},
                                     "aik_fingerprints": [pin["fingerprint"]]})
    answer = hushcall.Client(pinned_gw.url, attestation_policy=subset, **FAST).create(
        model="m", messages=user("subset"), security_tier="high")
    assert answer["_metadata"]["attestation"]["verified"] is True


def test_policy_baseline_without_a_pin_is_unpinned(tpm_gw, reported_pcrs, tmp_path):
    """Matching PCR values signed by a key nobody pinned prove nothing more."""
    policy = write_policy(tmp_path, {"pcrs": reported_pcrs})
    answer = hushcall.Client(tpm_gw.url, attestation_policy=policy, **FAST).create(
        model="m", messages=user("baseline"), security_tier="high")
    check_quote(answer, DEFAULT_PCRS, DEFAULT_EXPECTED, pinned=False)


def _mismatched(reported_pcrs):
    wrong = dict(reported_pcrs["sha256"])
    wrong["0"] = "ab" * 32
    assert wrong["0"] != reported_pcrs["sha256"]["0"]
    return {"pcrs": {"sha256": wrong}}


def test_policy_pcr_mismatch(tpm_gw, reported_pcrs, tmp_path):
    policy = write_policy(tmp_path, _mismatched(reported_pcrs))
    answer = hushcall.Client(tpm_gw.url, attestation_policy=policy, **FAST).create(
        model="m", messages=user("mismatch"), security_tier="high")
    assert content(answer) == "echo: mismatch"
    att = answer["_metadata"]["attestation"].to_dict()
    assert att["verified"] is False
    assert att["reason"] == "pcr value not in policy: sha256:0"
    assert att["pcrs"] is None


def test_policy_pcr_unquoted(tpm_gw, tmp_path):
    # A PCR the policy names but the quote leaves out cannot match.
    policy = write_policy(tmp_path, {"pcrs": {"sha256": {"3": "00" * 32}}})
    answer = hushcall.Client(tpm_gw.url, attestation_policy=policy, **FAST).create(
        model="m", messages=user("unquoted"), security_tier="high")
    att = answer["_metadata"]["attestation"].to_dict()
    assert att["verified"] is False
    assert att["reason"] == "pcr value not in policy: sha256:3"


def test_policy_pcr_mismatch_required(pinned_gw, pin, tmp_path):
    policy = write_policy(tmp_path, dict(_mismatched(pin["pcrs"]),
                                         aik_fingerprints=[pin["fingerprint"]]))
    client = hushcall.Client(pinned_gw.url, attestation_policy=policy, require_attestation=True,
                             max_retries=0, **FAST)
    with pytest.raises(hushcall.SecurityError) as e:
        client.create(model="m", messages=user("refused"))
    assert e.value.kind == "attestation"
    assert "pcr value not in policy: sha256:0" in str(e.value)


def test_pinned_aik(pinned_gw, tmp_path):
    client = hushcall.Client(pinned_gw.url, **FAST)
    a1 = client.create(model="m", messages=user("pin one"), security_tier="high")
    a2 = client.create(model="m", messages=user("pin two"), security_tier="high")
    att1, quote = check_quote(a1, DEFAULT_PCRS, DEFAULT_EXPECTED, pinned=False)
    att2, _ = check_quote(a2, DEFAULT_PCRS, DEFAULT_EXPECTED, pinned=False)
    assert aik_type(quote) == 0x0023
    fingerprint = att1["aik_fingerprint"]
    assert att2["aik_fingerprint"] == fingerprint  # the same persistent key each time

    pinned = write_policy(tmp_path, {"aik_fingerprints": ["sha256:" + "0" * 64, fingerprint]})
    pinned_client = hushcall.Client(pinned_gw.url, attestation_policy=pinned,
                                    require_attestation=True, **FAST)
    for text in ("pinned one", "pinned two"):
        answer = pinned_client.create(model="m", messages=user(text))
        assert content(answer) == "echo: " + text
        att, _ = check_quote(answer, DEFAULT_PCRS, DEFAULT_EXPECTED)
        assert att["aik_fingerprint"] == fingerprint

    other = write_policy(tmp_path, FOREIGN_PIN)
    answer = hushcall.Client(pinned_gw.url, attestation_policy=other, **FAST).create(
        model="m", messages=user("other key"), security_tier="high")
    att = answer["_metadata"]["attestation"].to_dict()
    assert att["verified"] is False
    assert att["reason"] == "aik not in policy"
    assert att["pcrs"] is None
    with pytest.raises(hushcall.SecurityError) as e:
        hushcall.Client(pinned_gw.url, attestation_policy=other, require_attestation=True,
                        max_retries=0, **FAST).create(model="m", messages=user("x"))
    assert e.value.kind == "attestation" and "aik not in policy" in str(e.value)


def test_ephemeral_aik_fails_a_pin(tpm_gw, tmp_path):
    """An ephemeral AIK is never the pinned one."""
    client = hushcall.Client(tpm_gw.url, **FAST)
    answer = client.create(model="m", messages=user("eph"), security_tier="high")
    fingerprint = answer["_metadata"]["attestation"]["aik_fingerprint"]
    policy = write_policy(tmp_path, {"aik_fingerprints": [fingerprint]})
    answer = hushcall.Client(tpm_gw.url, attestation_policy=policy, **FAST).create(
        model="m", messages=user("eph again"), security_tier="high")
    assert answer["_metadata"]["attestation"]["reason"] == "aik not in policy"


@pytest.mark.parametrize("text", [
    '{"pcrs": {"sha256": {"0": "00"}}}',                   # wrong length for the bank
    '{"pcrs": {"sha256": {"0": "' + "zz" * 32 + '"}}}',     # not hex
    '{"pcrs": {"md5": {"0": "' + "00" * 16 + '"}}}',        # unknown bank
    '{"pcrs": {"sha256": {"24": "' + "00" * 32 + '"}}}',    # no such PCR
    '{"aik_fingerprints": ["md5:00"]}',
    '{"aik_fingerprints": "sha256:' + "0" * 64 + '"}',      # not a list
    '{"pcr": {}}',                                          # unknown member
    '[]',
])
def test_malformed_policy_refused_at_construction(tmp_path, text):
    path = write_policy(tmp_path, text)
    with pytest.raises(hushcall.SecurityError) as e:
        hushcall.Client("http://127.0.0.1:9", attestation_policy=path, **FAST)
    assert e.value.kind == "format", (e.value.kind, str(e.value))


def test_policy_not_json_refused_at_construction(tmp_path):
    path = write_policy(tmp_path, '{"pcrs": ')
    with pytest.raises(hushcall.MalformedJSONError) as e:
        hushcall.Client("http://127.0.0.1:9", attestation_policy=path, **FAST)
    assert e.value.kind == "json"


def test_missing_policy_refused_at_construction(tmp_path):
    with pytest.raises(hushcall.HushcallError) as e:
        hushcall.Client("http://127.0.0.1:9", attestation_policy=str(tmp_path / "none.json"),
                        **FAST)
    assert type(e.value) is hushcall.HushcallError
    assert e.value.kind == "not_found"
    assert "attestation policy" in str(e.value)


# ---- a TPM that fails ------------------------------------------------------------------


def test_tpm_failure_is_503_never_an_unquoted_answer(tmp_path, server_keys):
    """docs/attestation.md: an answer that should carry a quote never goes out without one."""
    tpm = Swtpm(tmp_path)
    gw = Gateway(tmp_path, "--tpm", tpm.tcti, key_dir=keys_copy(server_keys, tmp_path),
                 env=QUIET_TSS)
    try:
        client = hushcall.Client(gw.url, max_retries=0, **FAST)
        answer = client.create(model="m", messages=user("while it lasts"), security_tier="high")
        assert answer["_metadata"]["attestation"]["reason"] == "unpinned aik"
        tpm.stop()
        with pytest.raises(hushcall.ServiceUnavailableError) as e:
            client.create(model="m", messages=user("CANARY-tpm-gone"), security_tier="high")
        assert e.value.status_code == 503

        async def main():
            async with hushcall.AsyncClient(gw.url, max_retries=0, **FAST) as c:
                return await c.create(model="m", messages=user("CANARY-tpm-gone"),
                                      security_tier="high")

        with pytest.raises(hushcall.ServiceUnavailableError) as e:
            asyncio.run(main())
        assert e.value.status_code == 503
        assert isinstance(e.value.error_details["detail"], str)
        assert "CANARY" not in json.dumps(e.value.error_details)
        assert "CANARY" not in gw.log()
    finally:
        assert gw.stop() == 0, gw.log()
        tpm.stop()


def test_unreachable_tpm_stops_the_gateway_at_start(tmp_path, server_keys):
    proc = subprocess.run(
        [sys.executable, "-m", "hushcall", "serve", "--port", "0",
         "--key-dir", str(keys_copy(server_keys, tmp_path)),
         "--tpm", "swtpm:host=127.0.0.1,port=9"],
        env=dict(_env(), **QUIET_TSS), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "listening on" not in proc.stdout
    assert "TPM" in proc.stderr and "swtpm:host=127.0.0.1,port=9" in proc.stderr


def test_every_pcr_of_every_bank(tmp_path, server_keys):
    """The longest selection there is (273 characters of pcr_banks) is quoted and checks out."""
    every = ",".join(str(i) for i in range(24))
    pcrs = "+".join("%s:%s" % (bank, every) for bank in ("sha1", "sha256", "sha384", "sha512"))
    tpm = Swtpm(tmp_path)
    gw = Gateway(tmp_path, "--tpm", tpm.tcti, "--tpm-pcrs", pcrs,
                 key_dir=keys_copy(server_keys, tmp_path), env=QUIET_TSS)
    try:
        assert " tpm=%s " % pcrs in gw.log()
        answer = hushcall.Client(gw.url, **FAST).create(
            model="m", messages=user("all of them"), security_tier="high")
        expected = [str(i) for i in range(24)]
        check_quote(answer, pcrs, {bank: expected
                                   for bank in ("sha1", "sha256", "sha384", "sha512")},
                    pinned=False)
    finally:
        assert gw.stop() == 0, gw.log()
        tpm.stop()
