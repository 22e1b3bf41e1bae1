"""Child processes the gateway tests run on loopback: the gateway itself
(`python -m hushcall serve`), the fake OpenAI upstream
(tests/interop/fake_openai.py) and the EHBP peer (tests/interop/ehbp_server.py). Each is started, waited for until it names
its port, and stopped; one that does not start fails the test, never skips it."""

import os
import select
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
FAKE_OPENAI = os.path.join(ROOT, "tests", "interop", "fake_openai.py")
EHBP_SERVER = os.path.join(ROOT, "tests", "interop", "ehbp_server.py")
START_TIMEOUT = 60.0
# A command prefix that runs a child with no locked memory to spare: RLIMIT_MEMLOCK
# 0 and CAP_IPC_LOCK dropped (root's capability would ignore the limit).
MEMLOCK_EXHAUSTED = ("prlimit", "--memlock=0:0", "setpriv", "--bounding-set=-ipc_lock",
                     "--inh-caps=-ipc_lock")


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
    """`python -m hushcall serve --port 0 ...`, after `launcher` (a command
    prefix such as MEMLOCK_EXHAUSTED) if any; `url` is where it listens."""

    def __init__(self, tmp_path, *args, key_dir=None, env=None, launcher=()):
        self.key_dir = str(key_dir or tmp_path / "gateway-keys")
        argv = [*launcher, sys.executable, "-m", "hushcall", "serve", "--port", "0",
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


class EhbpPeer(Child):
    """tests/interop/ehbp_server.py; `url` is its origin (http://127.0.0.1:P)."""

    def __init__(self, tmp_path, *args):
        argv = [sys.executable, EHBP_SERVER, "--port", "0", *args]
        super().__init__(argv, tmp_path / ("ehbp-peer-%d.log" % time.monotonic_ns()))
        if not self.first_line.startswith("READY "):
            self.kill()
            pytest.fail("unexpected first line %r:\n%s" % (self.first_line, self.log()))
        self.url = "http://127.0.0.1:%d" % int(self.first_line.split()[1])


def peer_control(url, **order):
    """Send the EHBP peer's /__control `order`; its answer (counts included)."""
    answer = httpx.post(url + "/__control", json=order)
    assert answer.status_code == 200, answer.text
    return answer.json()


REDIS_ATTEMPTS = 5


class RedisServer:
    """`redis-server` on a free loopback port, nothing saved to disk, `args`
    added to its command line; `url` is its redis:// URL, or with `tls` (a
    certificate and key PEM file) its rediss:// one, speaking TLS only.
    stop() and start() again keep the port, so a gateway configured with
    `url` sees the same Redis come back (empty)."""

    def __init__(self, tmp_path, *args, tls=None):
        self.binary = _need("redis-server", "redis-server")
        self.args = args
        self.tls = tls
        self.dir = os.path.join(str(tmp_path), "redis-%d" % time.monotonic_ns())
        os.makedirs(self.dir)
        self.log_path = self.dir + ".log"
        self.proc = None
        for _ in range(REDIS_ATTEMPTS):  # a free port may be taken before redis binds it
            self.port = _free_port()
            if self.start():
                self.url = "%s://127.0.0.1:%d/0" % ("rediss" if tls else "redis", self.port)
                return
        pytest.fail("redis-server would not start:\n%s" % self.log())

    def start(self):
        """Start it on self.port; False when the port was taken meanwhile."""
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            cert, key = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert,
                      "--tls-key-file", key, "--tls-auth-clients", "no"]
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [self.binary, *listen, "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.dir, *self.args],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if _accepts(self.port):
                return True
            time.sleep(0.02)
        self.stop()
        pytest.fail("redis-server did not accept connections within %.0f s:\n%s"
                    % (START_TIMEOUT, self.log()))

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        terminate(self.proc)


# ---- a software TPM ------------------------------------------------------------

SWTPM_ATTEMPTS = 5
AIK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"


def _need(binary, package):
    import shutil
    path = shutil.which(binary)
    if path is None:
        pytest.fail("%s not found: install the Debian package %s (`make deps`)"
                    % (binary, package))
    return path


def _free_port_pair():
    """A port P with P and P+1 both free on 127.0.0.1 right now."""
    import socket
    for _ in range(100):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port >= 65535:
            continue
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        finally:
            t.close()
        return port
    pytest.fail("no free pair of loopback ports")


def terminate(proc):
    """SIGTERM, then SIGKILL after 10 s: `proc`'s exit status (None for no process)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode if proc is not None else None


def _free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _accepts(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def tpm_env():
    """The environment for children that talk to a TPM: tss2's stderr quiet."""
    env = _env()
    env["TSS2_LOG"] = "all+none"
    return env


class EkCa:
    """A local EK certificate authority as TPM vendors run one
    (swtpm_localca): a self-signed root and an intermediate that signs EK
    certificates, made in a fresh directory on first use. `ca_file` is the
    PEM a client trusts (root, then intermediate: `--ek-ca`)."""

    def __init__(self, tmp_path):
        _need("swtpm_localca", "swtpm-tools")
        self.dir = os.path.join(str(tmp_path), "ekca-%d" % time.monotonic_ns())
        os.makedirs(self.dir)
        self.localca_conf = os.path.join(self.dir, "localca.conf")
        with open(self.localca_conf, "w") as f:
            f.write("statedir = %s\nsigningkey = %s/signkey.pem\n"
                    "issuercert = %s/issuercert.pem\ncertserial = %s/certserial\n"
                    % (self.dir, self.dir, self.dir, self.dir))
        self.localca_options = os.path.join(self.dir, "localca.options")
        with open(self.localca_options, "w") as f:
            f.write("--platform-manufacturer hushcall-test\n--platform-version 2.1\n"
                    "--platform-model swtpm\n")
        self.setup_conf = os.path.join(self.dir, "swtpm_setup.conf")
        with open(self.setup_conf, "w") as f:
            f.write("create_certs_tool = %s\ncreate_certs_tool_config = %s\n"
                    "create_certs_tool_options = %s\n"
                    % (shutil.which("swtpm_localca"), self.localca_conf, self.localca_options))
        self.ca_file = os.path.join(self.dir, "ek-ca.pem")

    def provision(self, state_dir):
        """Manufacture a TPM in `state_dir`: EKs (RSA-2048 at NV 0x01C00002
        with its certificate, and swtpm's ECC one) signed by this CA."""
        setup = _need("swtpm_setup", "swtpm-tools")
        proc = subprocess.run(
            [setup, "--tpm2", "--tpmstate", state_dir, "--create-ek-cert", "--config",
             self.setup_conf, "--overwrite"],
            capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            pytest.fail("swtpm_setup failed (%d):\n%s%s"
                        % (proc.returncode, proc.stdout, proc.stderr))
        if not os.path.exists(self.ca_file):  # the CA exists after its first certificate
            with open(self.ca_file, "w") as out:
                for name in ("swtpm-localca-rootca-cert.pem", "issuercert.pem"):
                    with open(os.path.join(self.dir, name)) as f:
                        out.write(f.read())


class Swtpm:
    """`swtpm socket --tpm2` on a free pair of loopback ports (server P,
    control P+1, as tss2's swtpm TCTI expects), state in a fresh directory
    under tmp_path. `tcti` is the TCTI string for it. With `ek_ca` (an
    EkCa) the TPM is manufactured first, its EK certificate signed by it."""

    def __init__(self, tmp_path, ek_ca=None):
        binary = _need("swtpm", "swtpm")
        self.proc = None
        for attempt in range(SWTPM_ATTEMPTS):
            self.dir = os.path.join(str(tmp_path), "swtpm-%d" % time.monotonic_ns())
            os.makedirs(self.dir)
            if ek_ca is not None:
                ek_ca.provision(self.dir)
            port = _free_port_pair()
            self.log_path = self.dir + ".log"
            with open(self.log_path, "w") as log:
                proc = subprocess.Popen(
                    [binary, "socket", "--tpm2",
                     "--server", "type=tcp,port=%d,bindaddr=127.0.0.1" % port,
                     "--ctrl", "type=tcp,port=%d,bindaddr=127.0.0.1" % (port + 1),
                     "--tpmstate", "dir=" + self.dir,
                     "--flags", "not-need-init,startup-clear"],
                    stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break  # a port was taken in between: try another pair
                if _accepts(port) and _accepts(port + 1):
                    self.proc, self.port = proc, port
                    self.tcti = "swtpm:host=127.0.0.1,port=%d" % port
                    return
                time.sleep(0.02)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                pytest.fail("swtpm did not accept connections within %.0f s:\n%s"
                            % (START_TIMEOUT, self.log()))
        pytest.fail("swtpm would not start:\n%s" % self.log())

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def tool(self, *argv):
        """Run a tpm2-tools command against this TPM; fail the test if it fails."""
        path = _need(argv[0], "tpm2-tools")
        proc = subprocess.run([path, "-T", self.tcti, *argv[1:]], env=tpm_env(),
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            pytest.fail("%s failed (%d):\n%s%s" % (" ".join(argv), proc.returncode,
                                                    proc.stdout, proc.stderr))
        return proc.stdout

    def make_persistent_key(self, handle, attributes=AIK_ATTRIBUTES):
        """An ECC P-256 restricted signing key made persistent at `handle`
        ("0x81000002"). Run it before a gateway connects: swtpm serves one
        connection at a time."""
        ctx = os.path.join(self.dir + "-primary-%s.ctx" % handle)
        self.tool("tpm2_createprimary", "-Q", "-C", "e", "-G", "ecc256:ecdsa-sha256:null",
                  "-a", attributes, "-c", ctx)
        self.tool("tpm2_evictcontrol", "-Q", "-C", "o", "-c", ctx, handle)
        # No resource manager: free the transient slots tpm2-tools left loaded.
        self.tool("tpm2_flushcontext", "-t")

    def stop(self):
        return terminate(self.proc)


def keys_copy(server_keys, tmp_path):
    """A gateway's own copy of the session's server key directory (conftest's
    server_keys): RSA-4096 keys take seconds to make, copies do not."""
    d = tmp_path / ("keys-%d" % time.monotonic_ns())
    shutil.copytree(server_keys, d)
    return d
