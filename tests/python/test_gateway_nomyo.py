"""The public `nomyo` client against the reference gateway (`python -m hushcall
serve`, docs/gateway.md): a completion end to end through the echo backend,
and every error the gateway answers arriving as the exception class, status
code and detail that nomyo gives it.

Every gateway here shares one key directory, so the RSA-4096 server key is
made once for the module. `nomyo` must be installed: a missing import fails
this module."""

import asyncio
import socket
import time
import warnings

import httpx
import pytest

import nomyo  # noqa: E402  (required: no importorskip)
from nomyo import SecureCompletionClient as nomyo_scc

from processes import FakeOpenAI, Gateway, Swtpm

# nomyo warns about HTTP base URLs and, without its optional extras, about
# secure memory: expected here.
pytestmark = pytest.mark.filterwarnings("ignore")

API_KEYS = ("gw-key-one", "gw-key-two")
MAXIMUM_REFUSED = ("Security tier 'maximum' requires TPM attestation, "
                   "which this gateway does not offer")
QUESTION = "what is the capital of France today?"


# ---- the gateways (module scope: started once, stopped at the end) ----------


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gateway-key") / "keys"


def _gateway(tmp_path_factory, key_dir, *args):
    gw = Gateway(tmp_path_factory.mktemp("gw"), *args, key_dir=key_dir)
    try:
        yield gw
    finally:
        assert gw.stop() == 0, gw.log()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, key_dir):
    """Echo backend, two accepted API keys."""
    yield from _gateway(tmp_path_factory, key_dir, "--api-key", *API_KEYS)


@pytest.fixture(scope="module")
def limited(tmp_path_factory, key_dir):
    """Echo backend, one request a second, a bucket of one."""
    yield from _gateway(tmp_path_factory, key_dir, "--rate-limit", "1", "--rate-burst", "1")


@pytest.fixture(scope="module")
def small_body(tmp_path_factory, key_dir):
    yield from _gateway(tmp_path_factory, key_dir, "--max-body-bytes", "100000")


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


@pytest.fixture(scope="module")
def upstream_down(tmp_path_factory, key_dir):
    url = "http://127.0.0.1:%d/v1" % _closed_port()
    yield from _gateway(tmp_path_factory, key_dir, "--backend", "openai:" + url)


@pytest.fixture(scope="module")
def fake_openai(tmp_path_factory):
    fake = FakeOpenAI(tmp_path_factory.mktemp("fake-openai"))
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def upstream_fake(tmp_path_factory, key_dir, fake_openai):
    yield from _gateway(tmp_path_factory, key_dir, "--backend", "openai:" + fake_openai.url)


@pytest.fixture(scope="module")
def tpm_gateway(tmp_path_factory, key_dir):
    """Echo backend, high-tier answers quoted by a software TPM."""
    tpm = Swtpm(tmp_path_factory.mktemp("swtpm"))
    try:
        gw = Gateway(tmp_path_factory.mktemp("gw"), "--tpm", tpm.tcti, key_dir=key_dir,
                     env={"TSS2_LOG": "all+none"})
        try:
            yield gw
        finally:
            assert gw.stop() == 0, gw.log()
    finally:
        tpm.stop()


# ---- helpers -----------------------------------------------------------------


def nomyo_client(url, **kwargs):
    kwargs.setdefault("max_retries", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = nomyo.SecureChatCompletion(base_url=url, allow_http=True, **kwargs)
    client.client.key_size = 2048  # the client's key; the server's stays RSA-4096
    return client


def run(coro):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return asyncio.run(coro)


def ask(url, question=QUESTION, client_kwargs=None, messages=None, **create_kwargs):
    client = nomyo_client(url, **(client_kwargs or {}))
    messages = messages or [{"role": "user", "content": question}]
    return run(client.create(model="echo-model", messages=messages, **create_kwargs))


def refused(url, question=QUESTION, client_kwargs=None, **create_kwargs):
    """The exception nomyo raises for one request."""
    with pytest.raises(Exception) as info:
        ask(url, question, client_kwargs, **create_kwargs)
    return info.value


def healthz(url, api_key):
    r = httpx.get(url + "/healthz", headers={"Authorization": "Bearer " + api_key})
    assert r.status_code == 200
    return r.json()


def assert_no_prompt(e, question=QUESTION):
    assert question not in str(e)
    assert question not in repr(getattr(e, "error_details", None))


# ---- a completion end to end -----------------------------------------------


def check_answer(url, resp, question, prompt_words, tier):
    assert resp["object"] == "chat.completion"
    assert resp["model"] == "echo-model"
    (choice,) = resp["choices"]
    assert choice["message"] == {"role": "assistant", "content": "echo: " + question}
    assert choice["finish_reason"] == "stop"
    assert choice["index"] == 0
    completion_words = 1 + len(question.split())
    assert resp["usage"] == {"prompt_tokens": prompt_words,
                             "completion_tokens": completion_words,
                             "total_tokens": prompt_words + completion_words}
    meta = resp["_metadata"]
    assert meta["server"] == "hushcall-gateway"
    assert meta["backend"] == "echo"
    assert meta["security_tier"] == tier
    # This request's secure-memory facts, never process-wide counters: the
    # machine's booleans as /healthz tells a known caller, and this request's bytes.
    protection = meta["memory_protection"]
    health = healthz(url, API_KEYS[0])["memory_protection"]
    assert set(protection) == {"platform", "mlock_available", "request_locked", "dump_exclusion",
                               "wipe_on_fork", "openssl_secure_heap", "request_bytes",
                               "answer_bytes"}
    for name in ("platform", "mlock_available", "dump_exclusion", "wipe_on_fork",
                 "openssl_secure_heap"):
        assert protection[name] == health[name], (name, protection, health)
    assert protection["request_bytes"] > 0 and protection["answer_bytes"] > 0
    # what nomyo adds when it opens the answer
    assert meta["is_encrypted"] is True
    assert meta["encryption_algorithm"] == "hybrid-aes256-rsa4096"
    assert resp["id"] == "chatcmpl-" + meta["payload_id"]
    assert len(meta["payload_id"]) == 36
    # Unix seconds as an int, as NOMYO sends it: nomyo copies it untouched.
    assert type(meta["processed_at"]) is int
    assert 1_700_000_000 < meta["processed_at"] <= time.time()


def test_create_end_to_end(gateway):
    messages = [{"role": "system", "content": "be brief please"},
                {"role": "user", "content": "an earlier question"},
                {"role": "assistant", "content": "an earlier answer"},
                {"role": "user", "content": QUESTION}]
    resp = ask(gateway.url, client_kwargs={"api_key": API_KEYS[0]}, messages=messages,
               temperature=0.3, max_tokens=50)
    prompt_words = sum(len(m["content"].split()) for m in messages)
    check_answer(gateway.url, resp, QUESTION, prompt_words, "standard")


def test_create_text_parts_and_second_key(gateway):
    question = "grüße 你好 🔐 \"quoted\" text"
    messages = [{"role": "user", "content": [{"type": "text", "text": "grüße 你好 "},
                                             {"type": "text", "text": "🔐 \"quoted\" text"}]}]
    resp = ask(gateway.url, client_kwargs={"api_key": API_KEYS[1]}, messages=messages)
    check_answer(gateway.url, resp, question, len(question.split()), "standard")


@pytest.mark.parametrize("tier", ["standard", "high"])
def test_create_with_tier(gateway, tier):
    resp = ask(gateway.url, "tier %s please" % tier, client_kwargs={"api_key": API_KEYS[0]},
               security_tier=tier)
    check_answer(gateway.url, resp, "tier %s please" % tier, 3, tier)


def test_log_names_key_labels_never_keys(gateway):
    ask(gateway.url, client_kwargs={"api_key": API_KEYS[1]})
    log = gateway.log()
    assert "key#2" in log
    for key in API_KEYS:
        assert key not in log
    assert QUESTION not in log


# ---- errors, as nomyo raises them ----------------------------------------


@pytest.mark.parametrize("api_key", [None, "not-a-key", API_KEYS[0] + "x"])
def test_bad_api_key(gateway, api_key):
    e = refused(gateway.url, client_kwargs={"api_key": api_key})
    assert type(e) is nomyo_scc.AuthenticationError, repr(e)
    assert e.status_code == 401
    assert e.error_details == {"detail": "Invalid API key"}
    assert str(e) == "Invalid API key"


def test_rate_limit(limited):
    # The first request takes the bucket's only token; the next, a few
    # milliseconds later, finds it empty (a token comes back after 1 s).
    async def main():
        client = nomyo_client(limited.url)
        first = await client.create(model="m", messages=[{"role": "user", "content": "one"}])
        with pytest.raises(Exception) as info:
            await client.create(model="m", messages=[{"role": "user", "content": "two"}])
        return first, info.value

    first, e = run(main())
    assert first["choices"][0]["message"]["content"] == "echo: one"
    assert type(e) is nomyo_scc.RateLimitError, repr(e)
    assert e.status_code == 429
    assert e.error_details == {"detail": "Rate limit exceeded"}


def test_rate_limit_retry_after(limited):
    # nomyo does not expose headers: a raw POST shows Retry-After. The rate
    # limit is checked before the body, so any body will do.
    statuses = []
    for _ in range(3):
        r = httpx.post(limited.url + "/v1/chat/secure_completion", content=b"{}",
                       headers={"X-Payload-ID": "p", "X-Public-Key": "k"})
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert r.json() == {"detail": "Rate limit exceeded"}
            assert r.headers["Retry-After"] == "1"
            break
    assert statuses[-1] == 429, statuses


def test_maximum_tier_refused(gateway):
    # nomyo retries 503; max_retries=0 makes it raise at once.
    e = refused(gateway.url, client_kwargs={"api_key": API_KEYS[0]}, security_tier="maximum")
    assert type(e) is nomyo_scc.ServiceUnavailableError, repr(e)
    assert e.status_code == 503
    assert e.error_details == {"detail": MAXIMUM_REFUSED}


class _AnyTier(str):
    """A tier that nomyo's client-side check (`tier in ["standard", "high",
    "maximum"]`) accepts whatever its value: the list's `==` defers to this
    subclass's reflected __eq__. nomyo then sends the value as it is."""

    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


def test_invalid_tier(gateway):
    # nomyo 0.2.9 validates the tier itself (SecureCompletionClient.
    # send_secure_request) and never sends an unknown one ...
    with pytest.raises(ValueError, match="Invalid security_tier"):
        ask(gateway.url, client_kwargs={"api_key": API_KEYS[0]}, security_tier="secret")
    # ... so the gateway's own check is reached through nomyo's real request
    # path with a tier that passes nomyo's check but is sent as "secret".
    e = refused(gateway.url, client_kwargs={"api_key": API_KEYS[0]},
                security_tier=_AnyTier("secret"))
    assert type(e) is nomyo_scc.InvalidRequestError, repr(e)
    assert e.status_code == 400
    assert e.error_details == {"detail": "Invalid security tier"}


def test_body_too_large(small_body):
    # nomyo has no class for 413: its catch-all APIError, which keeps the
    # detail in the message but no error_details.
    question = "x" * 200_000
    e = refused(small_body.url, question)
    assert type(e) is nomyo_scc.APIError, repr(e)
    assert e.status_code == 413
    assert str(e) == "Unexpected status code: 413 Request body too large"
    # the gateway still answers after refusing (it closed that connection)
    assert ask(small_body.url, "small")["choices"][0]["message"]["content"] == "echo: small"


def test_upstream_down(upstream_down):
    e = refused(upstream_down.url)
    assert type(e) is nomyo_scc.ServiceUnavailableError, repr(e)
    assert e.status_code == 503
    # docs/gateway.md fixes the status, not the words; these are the core's
    # (core/src/server/upstream.c).
    assert e.error_details == {"detail": "Upstream unavailable"}
    assert_no_prompt(e)


def test_upstream_error(upstream_fake):
    client = nomyo_client(upstream_fake.url)
    with pytest.raises(Exception) as info:
        run(client.create(model="fail-500", messages=[{"role": "user", "content": QUESTION}]))
    e = info.value
    # nomyo retries 502 and has no class for it: APIError with the body kept.
    assert type(e) is nomyo_scc.APIError, repr(e)
    assert e.status_code == 502
    assert e.error_details == {"detail": "Upstream answered HTTP 500"}
    # the upstream's own error body (which may quote the prompt) is not passed on
    assert_no_prompt(e)


def test_upstream_answers(upstream_fake):
    # the same gateway does answer when the upstream does
    resp = ask(upstream_fake.url)
    assert resp["_metadata"]["backend"] == "openai"
    assert resp["_metadata"]["server"] == "hushcall-gateway"
    assert resp["_metadata"]["security_tier"] == "standard"
    assert resp["_metadata"]["payload_id"] and resp["_metadata"]["is_encrypted"] is True
    # the upstream's own _metadata is replaced, its answer passed through
    assert "fake-upstream" not in repr(resp["_metadata"])
    assert resp["model"] == "echo-model"
    assert resp["choices"][0]["message"] == {"role": "assistant",
                                             "content": "upstream: " + QUESTION}
    assert resp["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_tpm_attestation_read_by_nomyo(tpm_gateway):
    """NOMYO's security guide: the quote is in _metadata["tpm_attestation"],
    for the user to check; nomyo passes it through untouched. The gateway
    quotes the high tier (docs/attestation.md)."""
    import base64
    import hashlib
    import re

    resp = ask(tpm_gateway.url, "attest this", security_tier="high")
    assert resp["choices"][0]["message"]["content"] == "echo: attest this"
    meta = resp["_metadata"]
    att = meta["tpm_attestation"]
    assert isinstance(att, dict)
    assert att["is_available"] is True
    assert att["pcr_banks"] == "sha256:0,7,10"
    assert isinstance(att["pcr_values"], dict) and set(att["pcr_values"]) == {"sha256"}
    bank = att["pcr_values"]["sha256"]
    assert isinstance(bank, dict) and set(bank) == {"0", "7", "10"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in bank.values())
    blobs = {name: base64.b64decode(att[name], validate=True)
             for name in ("aik_pubkey_b64", "quote_b64", "signature_b64")}
    # TPM2B_ATTEST: size, TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE, the signer's
    # name, then the qualifying data: SHA-256 of nomyo's own payload id, first 16 bytes.
    quote = blobs["quote_b64"]
    assert int.from_bytes(quote[:2], "big") == len(quote) - 2
    assert quote[2:6] == b"\xffTCG" and quote[6:8] == b"\x80\x18"
    name_len = int.from_bytes(quote[8:10], "big")
    at = 10 + name_len
    extra_len = int.from_bytes(quote[at:at + 2], "big")
    assert quote[at + 2:at + 2 + extra_len] == \
        hashlib.sha256(meta["payload_id"].encode()).digest()[:16]
    # /healthz keeps it to callers with an API key (this gateway has none); the log says it.
    assert " tpm=sha256:0,7,10 " in tpm_gateway.log()


def test_tpm_gateway_standard_tier_not_quoted_for_nomyo(tpm_gateway):
    resp = ask(tpm_gateway.url, "no quote needed")
    assert resp["choices"][0]["message"]["content"] == "echo: no quote needed"
    assert resp["_metadata"]["tpm_attestation"] == {"is_available": True, "quoted": False}
