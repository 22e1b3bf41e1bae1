"""The mlock limit exhausted (issue 17's fault, docs/operations.md "Locked
memory"): a gateway and a client process started with RLIMIT_MEMLOCK 0 and
CAP_IPC_LOCK dropped (processes.MEMLOCK_EXHAUSTED: the tests run as root,
whose capability ignores the limit) still answer correctly, report their
memory as not locked (`_metadata.memory_protection.request_locked`, /healthz,
`Response.locked`) and tell of it once per process: one log line and a
counted metric in the gateway, one MemoryLockWarning in the client. The
same steps under the ordinary limit are the control: locked, and silent.

v1 requests are sealed by `cryptography` alone, v2 ones by tinfoil's client;
prlimit and setpriv (util-linux) must be installed: a missing one fails."""

import json
import os
import subprocess
import sys

import ehbp
import httpx
import pytest

from hushcall import memory_lock
from processes import MEMLOCK_EXHAUSTED, ROOT, Gateway, _need, keys_copy
from test_gateway import post_raw
from test_gateway_metrics import scrape, value
from test_gateway_replay import Sender, seal_request
from test_gateway_stream import one_event, summarize

KEY = "k-memlock"
AUTH = {"Authorization": "Bearer " + KEY}
CHAT = "/v1/chat/completions"
V1_CALLS = 3
CLIENT = os.path.join(ROOT, "tests", "python", "memory_lock_client.py")
# A hang guard for the client child, never an assertion.
CLIENT_TIMEOUT = 120


@pytest.fixture(scope="module")
def launcher():
    _need("prlimit", "util-linux")
    _need("setpriv", "util-linux")
    return MEMLOCK_EXHAUSTED


def start_gateway(tmp, server_keys, launcher=()):
    return Gateway(tmp, "--api-key", KEY, "--echo-delay-ms", "1",
                   key_dir=keys_copy(server_keys, tmp), launcher=launcher)


@pytest.fixture(scope="module")
def starved_gw(tmp_path_factory, server_keys, launcher):
    gw = start_gateway(tmp_path_factory.mktemp("gw-memlock-0"), server_keys, launcher)
    yield gw
    assert gw.stop() == 0


@pytest.fixture(scope="module")
def normal_gw(tmp_path_factory, server_keys):
    gw = start_gateway(tmp_path_factory.mktemp("gw-memlock-normal"), server_keys)
    yield gw
    assert gw.stop() == 0


def chat(text, **extra):
    return {"model": "m", "messages": [{"role": "user", "content": text}], **extra}


def v1_protections(gw, sender, first_id):
    """Several sealed v1 requests, each answered right; their memory_protection."""
    protections = []
    for i in range(first_id, first_id + V1_CALLS):
        text = "v1 call %d" % i
        headers = {**sender.headers("memlock-%d" % i), **AUTH}
        status, _, package = post_raw(gw.url, seal_request(gw.url, text), headers)
        assert status == 200, package
        answer = sender.open(package)
        assert answer["choices"][0]["message"]["content"] == "echo: " + text
        protections.append(answer["_metadata"]["memory_protection"])
    return protections


def v2_answers_right(gw):
    """A whole and a streamed answer to tinfoil's client."""
    with httpx.Client(headers=AUTH) as http, ehbp.Client.discover(gw.url,
                                                                  http_client=http) as client:
        answer = client.post(CHAT, json_body=chat("whole v2"))
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"] == "echo: whole v2"
        with client.stream("POST", CHAT, json_body=chat("streamed v2", stream=True)) as answer:
            events = [one_event(piece) for piece in answer]
    assert summarize(events)[0] == "echo: streamed v2"


def health(gw):
    answer = httpx.get(gw.url + "/healthz", headers=AUTH)
    assert answer.status_code == 200
    return answer.json()["memory_protection"]


def lock_warnings_logged(gw):
    return gw.log().count(memory_lock.MESSAGE)


def metric(gw):
    return value(scrape(gw.url, AUTH), "hushcall_gateway_memory_lock_failures_total")


def run_client(url, launcher=()):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    done = subprocess.run([*launcher, sys.executable, CLIENT, url, KEY], env=env,
                          capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ---- the gateway ------------------------------------------------------------------------------

def test_a_gateway_without_locked_memory_answers_says_so_and_warns_once(starved_gw):
    sender = Sender()
    protections = v1_protections(starved_gw, sender, 0)
    v2_answers_right(starved_gw)
    protections += v1_protections(starved_gw, sender, V1_CALLS)  # after v2 too: still once
    assert [p["request_locked"] for p in protections] == [False] * 2 * V1_CALLS
    assert not any(p["mlock_available"] for p in protections)
    # Still guarded: dump exclusion holds without the lock.
    assert all(p["dump_exclusion"] for p in protections)
    assert lock_warnings_logged(starved_gw) == 1
    counted = metric(starved_gw)
    after = health(starved_gw)
    assert after["mlock_available"] is False and after["locked_bytes"] == 0
    assert 0 < counted <= after["lock_failures"]


def test_the_control_gateway_locks_and_stays_silent(normal_gw):
    sender = Sender()
    protections = v1_protections(normal_gw, sender, 0)
    v2_answers_right(normal_gw)
    assert [p["request_locked"] for p in protections] == [True] * V1_CALLS
    assert all(p["mlock_available"] for p in protections)
    assert lock_warnings_logged(normal_gw) == 0
    assert metric(normal_gw) == 0
    after = health(normal_gw)
    assert after["mlock_available"] is True and after["lock_failures"] == 0


# ---- the client -------------------------------------------------------------------------------

def expect_right_answers(report):
    assert report["texts"] == ["echo: call 0", "echo: call 1", "echo: call 2",
                               "echo: async call"]
    assert report["streamed"] == "echo: streamed words"


def test_a_client_without_locked_memory_answers_and_warns_once(normal_gw, launcher):
    report = run_client(normal_gw.url, launcher)
    expect_right_answers(report)
    assert report["lock_failures"] > 0  # the limit really bit in the child
    assert not any(report["locked"])
    assert report["lock_warnings"] == [memory_lock.MESSAGE]


def test_the_control_client_locks_and_stays_silent(normal_gw):
    report = run_client(normal_gw.url)
    expect_right_answers(report)
    assert report["lock_failures"] == 0
    assert all(report["locked"]) and len(report["locked"]) > 5
    assert report["lock_warnings"] == []
