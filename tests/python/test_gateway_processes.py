"""Several gateway processes on one port and one key directory
(docs/operations.md, "Several processes and machines"): `serve --processes 2`
answers v1 and v2 from both workers, survives a worker killed mid-request
(restarting it), and stops whole on SIGTERM; two separate gateways on one
key directory publish byte-identical key configs through a rotation, and
each answers requests sealed to the other's. Which worker answered is told
by the Hushcall-Worker header and the worker= field of the access log."""

import errno
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import ehbp
import httpx
import pytest

import hushcall
from processes import Gateway, _env, keys_copy
from test_ehbp_peer import chat

V1 = {"allow_http": True, "protocol": "v1", "key_bits": 2048}
V2 = {"allow_http": True, "protocol": "v2"}
# New connections are spread over the workers by a hash of their addresses:
# this many without reaching one of two workers happens with odds 2**-ATTEMPTS.
ATTEMPTS = 64
STARTED = re.compile(r"worker (\d+) started: pid (\d+)")


def wait_until(condition):
    """Poll until `condition` holds (no deadline asserted: pytest's own
    timeout, if any, bounds it)."""
    while not condition():
        time.sleep(0.1)


def worker_pids(gw):
    """Each worker's latest pid, from the parent's log."""
    return {int(i): int(pid) for i, pid in STARTED.findall(gw.log())}


def answered_by(gw, path, status=200):
    """The workers whose access log has a line for `path` with `status`."""
    return set(int(w) for w in re.findall(
        r"path=%s status=%d .*worker=(\d+)" % (re.escape(path), status), gw.log()))


def ask(url, options, text):
    """One chat completion from a fresh client (a new connection): its content."""
    with hushcall.Client(url, **options).create(
            model="m", messages=[{"role": "user", "content": text}]) as answer:
        return answer["choices"][0]["message"]["content"]


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def two_workers(tmp_path, server_keys):
    gw = Gateway(tmp_path, "--processes", "2", key_dir=keys_copy(server_keys, tmp_path))
    yield gw
    gw.stop()


def test_both_workers_answer_v1_and_v2(two_workers):
    gw = two_workers
    assert sorted(worker_pids(gw)) == [0, 1]
    for n in range(ATTEMPTS):
        assert ask(gw.url, V1, "v1 %d" % n) == "echo: v1 %d" % n
        assert ask(gw.url, V2, "v2 %d" % n) == "echo: v2 %d" % n
        if answered_by(gw, "/v1/chat/secure_completion") == {0, 1} and \
                answered_by(gw, "/v1/chat/completions") == {0, 1}:
            break
    assert answered_by(gw, "/v1/chat/secure_completion") == {0, 1}
    assert answered_by(gw, "/v1/chat/completions") == {0, 1}
    headers = {httpx.get(gw.url + "/healthz").headers["Hushcall-Worker"]
               for _ in range(ATTEMPTS)}
    assert headers == {"0", "1"}, "each answer names its worker by index"


def half_sent_requests(url, count):
    """`count` connections, each holding a v1 request whose body is half sent."""
    port = int(url.rsplit(":", 1)[1])
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /v1/chat/secure_completion HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\"")
        held.append(sock)
    return held


def finish(sock):
    """Send the rest of the body: the status line of the answer, or None
    when the connection was closed (EOF or reset) without one."""
    try:
        sock.sendall(b":1}")
        sock.shutdown(socket.SHUT_WR)
        head = sock.recv(64)
    except (ConnectionResetError, BrokenPipeError):
        return None
    except OSError as e:
        if e.errno != errno.ENOTCONN:  # a reset that came before the shutdown
            raise
        return None
    finally:
        sock.close()
    return head.split(b"\r\n")[0] if head else None


def test_a_worker_killed_mid_request_closes_its_connections_and_is_restarted(two_workers):
    gw = two_workers
    killed = worker_pids(gw)[0]
    held = half_sent_requests(gw.url, 16)
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: "worker 0 (pid %d) exited" % killed in gw.log())
    outcomes = [finish(sock) for sock in held]
    answered = [o for o in outcomes if o is not None]
    assert None in outcomes, "the killed worker's requests end with a clean close"
    assert answered, "the other worker's are answered"
    assert all(o.startswith(b"HTTP/1.1 4") for o in answered), outcomes
    assert ask(gw.url, V2, "next") == "echo: next", "the next call succeeds"
    wait_until(lambda: worker_pids(gw)[0] != killed)
    assert gone(killed)
    restarted = worker_pids(gw)[0]
    for n in range(ATTEMPTS):
        if httpx.get(gw.url + "/healthz").headers["Hushcall-Worker"] == "0":
            break
    else:
        pytest.fail("the restarted worker 0 (pid %d) never answered" % restarted)


def stream_through(url, words, first_chunk, outcomes):
    """Stream an echo of `words`, setting `first_chunk` once the first chunk
    came; append the text, or the error that ended the stream."""
    try:
        with hushcall.Client(url, **V2).create(model="m", messages=[
                {"role": "user", "content": words}], stream=True) as chunks:
            text = []
            for chunk in chunks:
                first_chunk.set()
                if chunk.choices:
                    text.append(chunk.choices[0].delta.get("content") or "")
        outcomes.append("".join(text))
    except hushcall.HushcallError as e:
        outcomes.append(e)
    finally:
        first_chunk.set()


def test_a_worker_killed_mid_stream_ends_its_streams_cleanly(tmp_path, server_keys):
    # A stream holds a worker thread while it runs: threads enough for all of them.
    gw = Gateway(tmp_path, "--processes", "2", "--echo-delay-ms", "300", "--workers", "16",
                 key_dir=keys_copy(server_keys, tmp_path))
    try:
        # 18 s of stream each, all started at once: every one is still streaming when
        # the worker is killed unless starting them took longer than that.
        words = " ".join("w%d" % n for n in range(60))
        outcomes, started = [], [threading.Event() for _ in range(12)]
        threads = [threading.Thread(target=stream_through, args=(gw.url, words, first, outcomes))
                   for first in started]
        for thread in threads:
            thread.start()
        for first in started:
            first.wait()
        assert outcomes == [], "every stream still running"
        os.kill(worker_pids(gw)[0], signal.SIGKILL)
        for thread in threads:
            thread.join()
        errors = [o for o in outcomes if isinstance(o, Exception)]
        assert errors, "the killed worker's streams end in an error"
        assert all(isinstance(e, hushcall.HushcallError) for e in errors)
        assert ("echo: " + words) in outcomes, "the other worker's streams complete"
        assert set(outcomes) - set(errors) == {"echo: " + words}, "no stream is cut short"
        assert ask(gw.url, V2, "next") == "echo: next", "the next call succeeds"
    finally:
        assert gw.stop() == 0


def test_sigterm_stops_the_parent_and_every_worker(tmp_path, server_keys):
    gw = Gateway(tmp_path, "--processes", "2", key_dir=keys_copy(server_keys, tmp_path))
    pids = worker_pids(gw)
    assert gw.stop(signal.SIGTERM) == 0
    assert all(gone(pid) for pid in pids.values())
    log = gw.log()
    for index, pid in pids.items():
        assert "worker %d (pid %d) stopped with status 0" % (index, pid) in log


def keys_of(url):
    answer = httpx.get(url + "/.well-known/hushcall-hpke-keys")
    assert answer.status_code == 200
    return answer.content


def test_two_gateways_on_one_key_directory_publish_the_same_keys_through_rotations(
        tmp_path, server_keys):
    keys = keys_copy(server_keys, tmp_path)
    # A rotation every 4 s; next keys on disk 2 s ahead, each gateway rereads the directory
    # every 0.5 s.
    rotation = ("--key-lifetime", "8", "--key-overlap", "4", "--key-publish-lead", "2")
    a = Gateway(tmp_path, *rotation, key_dir=keys)
    b = Gateway(tmp_path, *rotation, key_dir=keys)
    try:
        seen = []
        # A fetch from b between two equal ones from a must equal them: the lists
        # change only forward (keys are added, then expire), never back.
        while len(seen) < 3:
            first, middle, last = keys_of(a.url), keys_of(b.url), keys_of(a.url)
            if first == last:
                assert middle == first, "b publishes what a does at the same moment"
                if not seen or seen[-1] != first:
                    seen.append(first)
        assert len(set(seen)) == 3, "two rotations observed"
        # A request sealed to either gateway's newest EHBP config is answered by both.
        for discovered, other in ((a, b), (b, a)):
            identity = ehbp.Client.discover(discovered.url).server_identity
            for target in (discovered, other):
                with ehbp.Client(target.url, identity) as client:
                    answer = client.post("/v1/chat/completions", json_body=chat("across"))
                assert answer.json()["choices"][0]["message"]["content"] == "echo: across"
    finally:
        assert a.stop() == 0
        assert b.stop() == 0
    files = os.listdir(os.path.join(keys, "v2-keys"))
    assert not [f for f in files if f.startswith(".")], "no write left half done"


def test_a_worker_that_cannot_start_fails_serve_loudly(tmp_path, server_keys):
    missing = str(tmp_path / "missing.pem")
    proc = subprocess.run(
        [sys.executable, "-m", "hushcall", "serve", "--port", "0", "--processes", "2",
         "--key-dir", str(keys_copy(server_keys, tmp_path)),
         "--tls-cert", missing, "--tls-key", missing],
        env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == "", "never said it was listening"
    assert "worker 0: FileNotFoundError" in proc.stderr
    assert "WorkerStartError: a worker did not start" in proc.stderr
    assert "Traceback" not in proc.stderr
