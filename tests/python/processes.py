"""Child processes the gateway tests run on loopback: the gateway itself
(`python -m hushcall serve`) and the fake OpenAI upstream
(tests/interop/fake_openai.py). Each is started, waited for until it names
its port, and stopped; one that does not start fails the test, never skips it."""

import os
import select
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
FAKE_OPENAI = os.path.join(ROOT, "tests", "interop", "fake_openai.py")
START_TIMEOUT = 60.0


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(ROOT, "python"), env.get("PYTHONPATH")) if p)
    return env


class Child:
    """A started child: its first stdout line, its stderr in a file."""

    def __init__(self, argv, log_path, env=None):
        self.log_path = str(log_path)
        self._log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log,
                                     env=env or _env(), text=True)
        self.first_line = self._read_line()

    def _read_line(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                return self.proc.stdout.readline()
            if self.proc.poll() is not None:
                break
        self.kill()
        pytest.fail("%s did not start:\n%s" % (self.proc.args, self.log()))

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self, signum=signal.SIGTERM, timeout=30):
        """Signal the child and return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail("%s ignored signal %d" % (self.proc.args, signum))
        self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Gateway(Child):
    """`python -m hushcall serve --port 0 ...`; `url` is where it listens."""

    def __init__(self, tmp_path, *args, key_dir=None, env=None):
        self.key_dir = str(key_dir or tmp_path / "gateway-keys")
        argv = [sys.executable, "-m", "hushcall", "serve", "--port", "0",
                "--key-dir", self.key_dir, *args]
        full_env = _env()
        full_env.update(env or {})
        super().__init__(argv, tmp_path / ("gateway-%d.log" % time.monotonic_ns()), full_env)
        if not self.first_line.startswith("listening on "):
            self.kill()
            pytest.fail("unexpected first line %r:\n%s" % (self.first_line, self.log()))
        self.url = self.first_line.split()[-1]


class FakeOpenAI(Child):
    """tests/interop/fake_openai.py; `url` is its OpenAI base URL (…/v1)."""

    def __init__(self, tmp_path, *args):
        argv = [sys.executable, FAKE_OPENAI, "--port", "0", *args]
        super().__init__(argv, tmp_path / ("fake-openai-%d.log" % time.monotonic_ns()))
        if not self.first_line.startswith("READY "):
            self.kill()
            pytest.fail("unexpected first line %r:\n%s" % (self.first_line, self.log()))
        self.port = int(self.first_line.split()[1])
        self.url = "http://127.0.0.1:%d/v1" % self.port
