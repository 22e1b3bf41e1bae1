"""Shared setup for the Python binding's tests: find the package in python/ when
it is not installed (after `python3 setup.py build_ext --inplace`), and the
fixtures several modules share, each started once per test module: `peer`,
the independent NOMYO server (tests/interop/nomyo_peer.py); `upstream`, the
fake OpenAI server (tests/interop/fake_openai.py); `echo`, a gateway with
the echo backend."""

import os
import subprocess
import sys

import pytest

from processes import terminate

_PYTHON_DIR = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "python")

try:
    import hushcall  # noqa: F401  (installed, or on PYTHONPATH)
except ImportError:
    sys.path.insert(0, os.path.abspath(_PYTHON_DIR))

PEER = os.path.join(os.path.dirname(__file__), os.pardir, "interop", "nomyo_peer.py")


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    # stderr goes to a file: a pipe nobody reads could fill up and stall the peer.
    log_path = tmp_path_factory.mktemp("peer") / "stderr.log"
    with open(log_path, "w+") as log:
        proc = subprocess.Popen(
            [sys.executable, PEER, "--port", "0", "--bits", "2048"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            line = proc.stdout.readline()
            if not line.startswith("READY "):
                proc.kill()
                proc.wait(timeout=10)
                log.seek(0)
                pytest.fail("the NOMYO peer did not start: %r\n%s" % (line, log.read()))
            yield "http://127.0.0.1:%d" % int(line.split()[1])
        finally:
            terminate(proc)
            proc.stdout.close()


@pytest.fixture(scope="session")
def server_keys(tmp_path_factory):
    """One RSA-4096 server key directory for the session's gateways (copy it
    with processes.keys_copy); tests of key making start without one."""
    from hushcall import _core

    d = tmp_path_factory.mktemp("server") / "keys"
    _core.KeyPair.generate(4096).save(str(d))
    return d


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    from processes import FakeOpenAI

    fake = FakeOpenAI(tmp_path_factory.mktemp("upstream"))
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def echo(tmp_path_factory, server_keys):
    from processes import Gateway, keys_copy

    tmp = tmp_path_factory.mktemp("echo")
    gw = Gateway(tmp, key_dir=keys_copy(server_keys, tmp))
    yield gw
    gw.stop()
