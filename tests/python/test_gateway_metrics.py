"""The gateway's /metrics (docs/operations.md "Metrics"): scraped before and
after real requests (v1 sealed by `cryptography` alone, v2 by pyhpke and
tinfoil's client), each counter must have moved by exactly what happened;
only API-key holders may scrape the main port; --metrics-port serves on
loopback and takes /metrics off the main port; label values stay in their
documented sets whatever the path; and gateway processes sharing one
PROMETHEUS_MULTIPROC_DIR are summed. TPM quotes against a swtpm (swtpm must
be installed: a missing binary fails, never skips)."""

import json
import os
import re
import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hushcall import gateway_attest, gateway_metrics
from processes import Gateway, keys_copy
from test_ehbp_peer import AES256GCM, chat, post, x25519_request
from test_gateway import post_raw
from test_gateway_attest import start_tpm_gateway, stop_tpm_gateway
from test_gateway_replay import alice, mallory, seal_request  # noqa: F401 (fixtures)
from test_gateway_v2 import pq_request

KEY = "k-metrics"
AUTH = {"Authorization": "Bearer " + KEY}
CANARY = "CANARY-metrics-7f3a"
# The label sets docs/operations.md documents.
ROUTES = set(gateway_metrics.ROUTES.values()) | {"other"}
LABEL_VALUES = {
    "route": ROUTES,
    "protocol": {"v1", "v2", "plaintext", "none"},
    "suite": {"x25519", "xwing", "rsa", "none"},
    "phase": {"open", "backend", "seal"},
    "outcome": {"made", "failed", "rate_refused", "refused", "answered_unchecked"},
}
CODE = re.compile(r"[1-5][0-9][0-9]\Z")


@pytest.fixture(scope="module")
def gw(tmp_path_factory, server_keys, upstream):
    tmp = tmp_path_factory.mktemp("metrics")
    gateway = Gateway(tmp, "--backend", "openai:" + upstream.url, "--api-key", KEY,
                      "--upstream-timeout", "1", key_dir=keys_copy(server_keys, tmp))
    yield gateway
    assert gateway.stop() == 0




def parse(text):
    """{(sample name, sorted label pairs): value} of an exposition."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(url, headers=AUTH):
    answer = httpx.get(url + "/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return parse(answer.text)


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Change:
    """What a block of requests did to the gateway's metrics."""

    def __init__(self, url):
        self.url = url

    def __enter__(self):
        self.before = scrape(self.url)
        return self

    def __exit__(self, *exc):
        self.after = scrape(self.url)

    def __call__(self, name, **labels):
        return value(self.after, name, **labels) - value(self.before, name, **labels)


def requests_total(route, protocol, suite, code):
    return dict(name="hushcall_gateway_requests_total", route=route, protocol=protocol,
                suite=suite, code=str(code))


def v1_post(gw, sender, body, payload_id):
    return post_raw(gw.url, body, {**sender.headers(payload_id), **AUTH})[0]


# ---- v1 ---------------------------------------------------------------------------------------


def test_a_v1_answer_counts_once_with_its_core_times(gw, alice):
    body = seal_request(gw.url, "counted")
    with Change(gw.url) as change:
        assert v1_post(gw, alice, body, "m-1") == 200
    assert change(**requests_total("secure_completion", "v1", "rsa", 200)) == 1
    for phase in ("open", "backend", "seal"):
        assert change("hushcall_gateway_core_seconds_count", phase=phase, protocol="v1") == 1
        assert change("hushcall_gateway_core_seconds_sum", phase=phase, protocol="v1") > 0
    assert change("hushcall_gateway_request_seconds_count", route="secure_completion") == 1
    assert change("hushcall_gateway_replay_refusals_total", protocol="v1") == 0
    assert change("hushcall_gateway_crypto_failures_total", protocol="v1") == 0
    # The scrape that read the "after" values was in flight then; nothing else was.
    assert value(change.after, "hushcall_gateway_requests_in_flight") == 1


def test_a_v1_replay_and_a_tampered_package_count_as_such(gw, alice, mallory):
    body = seal_request(gw.url, "replayed")
    assert v1_post(gw, alice, body, "m-2") == 200
    broken = body.replace(b'"tag": "', b'"tag": "A', 1)
    with Change(gw.url) as change:
        assert v1_post(gw, mallory, body, "m-2") == 409
        assert v1_post(gw, mallory, body, "m-2") == 409
        assert v1_post(gw, alice, broken, "m-3") == 400
    assert change("hushcall_gateway_replay_refusals_total", protocol="v1") == 2
    assert change("hushcall_gateway_crypto_failures_total", protocol="v1") == 1
    assert change(**requests_total("secure_completion", "v1", "rsa", 409)) == 2
    assert change(**requests_total("secure_completion", "v1", "rsa", 400)) == 1
    # The replays were refused after opening; the backend ran for none of them.
    assert change("hushcall_gateway_core_seconds_count", phase="backend", protocol="v1") == 0


def test_upstream_errors_and_timeouts(gw, alice):
    with Change(gw.url) as change:
        assert v1_post(gw, alice, seal_request(gw.url, "x", model="fail-500"), "m-4") == 502
        assert v1_post(gw, alice, seal_request(gw.url, "x", model="fail-503"), "m-5") == 503
        # --upstream-timeout 1: the upstream answers after 3 s.
        assert v1_post(gw, alice, seal_request(gw.url, "x", model="slow-3000"), "m-6") == 504
    assert change("hushcall_gateway_upstream_errors_total", protocol="v1") == 2
    assert change("hushcall_gateway_upstream_timeouts_total", protocol="v1") == 1
    assert change("hushcall_gateway_crypto_failures_total", protocol="v1") == 0
    for code in (502, 503, 504):
        assert change(**requests_total("secure_completion", "v1", "rsa", code)) == 1


# ---- v2 ---------------------------------------------------------------------------------------


def test_v2_answers_by_suite_a_replay_and_a_tampered_body(gw):
    body = json.dumps(chat("sealed v2")).encode()
    enc, framed, _ = x25519_request(gw.url, body)
    pq_enc, hdr, pq_framed, _ = pq_request(gw.url, body, AES256GCM)
    bad_enc, bad_hdr, bad_framed, _ = pq_request(gw.url, body, AES256GCM)
    tampered = bytearray(bad_framed)
    tampered[-1] ^= 1
    with Change(gw.url) as change:
        assert post(gw.url, enc.hex(), framed, **AUTH).status_code == 200
        assert post(gw.url, enc.hex(), framed, **AUTH).status_code == 409
        config = {"Hushcall-Key-Config": hdr.hex()}
        assert post(gw.url, pq_enc.hex(), pq_framed, **config, **AUTH).status_code == 200
        config = {"Hushcall-Key-Config": bad_hdr.hex()}
        assert post(gw.url, bad_enc.hex(), bytes(tampered), **config,
                    **AUTH).status_code == 400
    assert change(**requests_total("api_post", "v2", "x25519", 200)) == 1
    assert change(**requests_total("api_post", "v2", "x25519", 409)) == 1
    assert change(**requests_total("api_post", "v2", "xwing", 200)) == 1
    assert change(**requests_total("api_post", "v2", "xwing", 400)) == 1
    assert change("hushcall_gateway_replay_refusals_total", protocol="v2") == 1
    assert change("hushcall_gateway_crypto_failures_total", protocol="v2") == 1
    assert change("hushcall_gateway_replay_refusals_total", protocol="v1") == 0
    for phase in ("open", "backend", "seal"):
        assert change("hushcall_gateway_core_seconds_count", phase=phase, protocol="v2") == 2


def test_a_v2_upstream_failure_counts_as_v2(gw):
    enc, framed, _ = x25519_request(gw.url, json.dumps(chat("x", model="fail-500")).encode())
    with Change(gw.url) as change:
        assert post(gw.url, enc.hex(), framed, **AUTH).status_code == 502
    assert change("hushcall_gateway_upstream_errors_total", protocol="v2") == 1
    assert change("hushcall_gateway_upstream_errors_total", protocol="v1") == 0


# ---- who may scrape ---------------------------------------------------------------------------


def test_scraping_the_main_port_needs_an_api_key(gw):
    assert httpx.get(gw.url + "/metrics").status_code == 401
    assert httpx.get(gw.url + "/metrics",
                     headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(gw.url + "/metrics",
                     headers={"Authorization": "Bearer " + KEY + "x"}).status_code == 401
    assert scrape(gw.url)  # the right key


def test_without_api_keys_the_main_port_has_no_metrics(echo):
    assert httpx.get(echo.url + "/metrics").status_code == 404


def metrics_port_of(gateway):
    found = re.search(r"metrics on (http://127\.0\.0\.1:\d+)/metrics", gateway.log())
    assert found, gateway.log()
    return found.group(1)


def test_the_metrics_port_is_loopback_and_the_main_port_has_none(tmp_path, server_keys):
    gateway = Gateway(tmp_path, "--api-key", KEY, "--metrics-port", "0",
                      key_dir=keys_copy(server_keys, tmp_path))
    try:
        metrics_url = metrics_port_of(gateway)
        # Not on the main port, not even for a key holder.
        assert httpx.get(gateway.url + "/metrics", headers=AUTH).status_code == 404
        assert httpx.get(gateway.url + "/pki/public_key").status_code == 200
        samples = scrape(metrics_url, headers={})  # no key asked for on loopback
        assert value(samples, **requests_total("public_key", "none", "none", 200)) == 1
        # The main port has no /metrics route: its 404 is "other".
        assert value(samples, **requests_total("other", "none", "none", 404)) == 1
    finally:
        assert gateway.stop() == 0


# ---- bounded labels ---------------------------------------------------------------------------


def test_label_values_stay_in_their_sets_after_odd_paths(gw):
    with Change(gw.url) as change:
        statuses = [httpx.get(gw.url + path, headers=AUTH).status_code for path in (
            "/" + CANARY, "/v1/" + CANARY + "/%2e%2e/x", "/pki/public_key/" + CANARY,
            "/.well-known/" + CANARY)]
        statuses.append(httpx.post(gw.url + "/healthz/" + CANARY, headers=AUTH).status_code)
        answer = httpx.post(gw.url + "/v1/" + CANARY, content=b"{}",
                            headers={"Ehbp-Encapsulated-Key": CANARY,
                                     "Hushcall-Key-Config": CANARY, **AUTH})
    assert answer.status_code == 400
    assert set(statuses) <= {404, 405}
    for code in (404, 405):
        assert change(**requests_total("other", "none", "none", code)) == statuses.count(code)
    # A malformed Hushcall-Key-Config names no suite.
    assert change(**requests_total("api_post", "v2", "none", 400)) == 1
    text = httpx.get(gw.url + "/metrics", headers=AUTH).text
    assert CANARY not in text
    samples = parse(text)
    for (name, labels), _ in samples.items():
        for label, label_value in labels:
            if label == "code":
                assert CODE.match(label_value), (name, label_value)
            elif label != "le":
                assert label_value in LABEL_VALUES[label], (name, label, label_value)


# ---- key rotation -----------------------------------------------------------------------------


def keys_created(gateway):
    return len(re.findall(r"v2 key \d+ \(\w+, [^)]*\) created", gateway.log()))


def test_key_rotations_are_counted(tmp_path, server_keys):
    """Keys that live 3 s rotate every 2 s; the two made at start are not rotations."""
    gateway = Gateway(tmp_path, "--api-key", KEY, "--key-lifetime", "3", "--key-overlap", "1",
                      key_dir=keys_copy(server_keys, tmp_path))
    try:
        deadline = time.monotonic() + 60
        while keys_created(gateway) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        made_before = keys_created(gateway)
        samples = scrape(gateway.url)
        made_after = keys_created(gateway)
    finally:
        assert gateway.stop() == 0
    assert made_before >= 6, gateway.log()
    rotations = {suite: value(samples, "hushcall_gateway_key_rotations_total", suite=suite)
                 for suite in ("x25519", "xwing")}
    assert made_before - 2 <= sum(rotations.values()) <= made_after - 2
    assert rotations["x25519"] >= 1 and rotations["xwing"] >= 1


# ---- several processes ------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_processes_sharing_a_multiprocess_dir_are_summed(tmp_path, server_keys, monkeypatch):
    """Two gateways, one PROMETHEUS_MULTIPROC_DIR and one --metrics-port (as
    processes serving one port share it): either answers the sums."""
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {gateway_metrics.MULTIPROC_ENV: str(shared)}
    keys = keys_copy(server_keys, tmp_path)
    port = str(free_port())
    first = Gateway(tmp_path, "--api-key", KEY, "--metrics-port", port, key_dir=keys, env=env)
    second = Gateway(tmp_path, "--api-key", KEY, "--metrics-port", port, key_dir=keys,
                     env=env)
    try:
        metrics_url = metrics_port_of(first)
        assert metrics_port_of(second) == metrics_url
        for gateway, count in ((first, 2), (second, 3)):
            for _ in range(count):
                assert httpx.get(gateway.url + "/pki/public_key").status_code == 200
        public_keys = requests_total("public_key", "none", "none", 200)
        for _ in range(4):  # whichever process the kernel hands each scrape to
            assert value(scrape(metrics_url, headers={}), **public_keys) == 5
        assert any(name.startswith("gauge_livesum_%d" % second.proc.pid)
                   for name in os.listdir(shared))
        assert second.stop() == 0
        # The parent of several processes reports a dead one: its live gauge goes,
        # what it counted stays.
        monkeypatch.setenv(gateway_metrics.MULTIPROC_ENV, str(shared))
        gateway_metrics.worker_exited(second.proc.pid)
        assert not any(name.startswith("gauge_livesum_%d" % second.proc.pid)
                       for name in os.listdir(shared))
        samples = scrape(metrics_url, headers={})
        assert value(samples, **public_keys) == 5
        assert value(samples, "hushcall_gateway_requests_in_flight") == 0  # none on the main port
    finally:
        first.stop()
        second.stop()


# ---- TPM quotes (each gateway with its own swtpm) ---------------------------------------------


def quotes(samples):
    return {outcome: value(samples, "hushcall_gateway_tpm_quotes_total", outcome=outcome)
            for outcome in ("made", "failed", "rate_refused")}


def quote_everything(gateway, alice, payload_id):
    """One quote of each kind asked for: the key configs', a v2 answer's, a v1
    answer's; their statuses."""
    attested = httpx.get(gateway.url + gateway_attest.ATTESTATION_PATH,
                         params={"nonce": "ab" * 32}, headers=AUTH, timeout=60)
    enc, framed, _ = x25519_request(gateway.url, json.dumps(chat("quoted")).encode())
    v2 = post(gateway.url, enc.hex(), framed, **{"X-Attestation": "required"}, **AUTH)
    body = seal_request(gateway.url, "quoted")
    v1 = post_raw(gateway.url, body, {**alice.headers(payload_id), **AUTH,
                                      "X-Security-Tier": "high"})[0]
    return attested.status_code, v2.status_code, v1


def test_tpm_quotes_made_and_failed(tmp_path, server_keys, alice):
    gateway = start_tpm_gateway(tmp_path, server_keys, "--api-key", KEY,
                                "--tpm-quotes-per-second", "10000", persistent=False)
    try:
        before = quotes(scrape(gateway.url))
        assert quote_everything(gateway, alice, "q-1") == (200, 200, 200)
        made = quotes(scrape(gateway.url))
        gateway.swtpm.stop()  # the TPM is gone under the gateway
        assert quote_everything(gateway, alice, "q-2") == (503, 503, 503)
        failed = quotes(scrape(gateway.url))
    finally:
        stop_tpm_gateway(gateway)
    assert before == {"made": 0, "failed": 0, "rate_refused": 0}
    assert made == {"made": 3, "failed": 0, "rate_refused": 0}
    assert failed == {"made": 3, "failed": 3, "rate_refused": 0}


def test_tpm_calls_refused_by_the_quote_rate_are_counted(tmp_path, server_keys, alice):
    gateway = start_tpm_gateway(tmp_path, server_keys, "--api-key", KEY,
                                "--tpm-quotes-per-second", "0.001", persistent=False)
    try:
        # The bucket's one token goes to the first; the other two are refused.
        assert quote_everything(gateway, alice, "r-1") == (200, 503, 503)
        counted = quotes(scrape(gateway.url))
    finally:
        stop_tpm_gateway(gateway)
    assert counted == {"made": 1, "failed": 0, "rate_refused": 2}
