#!/usr/bin/env python3
"""Runs the Lua binding's tests: `python3 tests/lua/run.py --build-dir build`.

Starts on loopback the independent NOMYO peer (tests/interop/nomyo_peer.py),
the independent EHBP peer (tests/interop/ehbp_server.py) twice (with our
post-quantum suite, and --plain-ehbp: X25519 alone), the reference gateway
(`python -m hushcall serve`, echo backend streaming with a pause of
ECHO_DELAY_MS between words, API key "lua-key"), a software TPM (swtpm) with a
persistent attestation key and a second gateway quoting with it (`--tpm
--tpm-handle`, no API key), a second swtpm and the EHBP peer attesting with it
over HTTPS (`--tpm --aik-handle --tls-cert`, a test CA from
tests/interop/make_test_ca.py); exports where they listen and both AIKs'
fingerprints (read from the TPMs), runs every tests/lua/test_*.lua with lua5.4
and then <build>/test_lua_states (two Lua states in two threads), prints each
one's output, stops the servers and exits non-zero if anything failed.
Nothing is ever skipped: a missing interpreter, module, harness or swtpm is a failure."""

import argparse
import glob
import hashlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
HERE = os.path.join(ROOT, "tests", "lua")
PEER = os.path.join(ROOT, "tests", "interop", "nomyo_peer.py")
EHBP_PEER = os.path.join(ROOT, "tests", "interop", "ehbp_server.py")
MAKE_TEST_CA = os.path.join(ROOT, "tests", "interop", "make_test_ca.py")
API_KEY = "lua-key"
# Between the words of a streamed echo: long enough that a stream is seen
# chunk by chunk (and a long one outlasts its cancellation), short enough
# for the short streams of the tests.
ECHO_DELAY_MS = 20
START_TIMEOUT = 60.0
TEST_TIMEOUT = 600.0
# The TPM gateway's attestation key: persistent, so a policy can pin it.
AIK_HANDLE = "0x81000002"
AIK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"


def die(message):
    print("run.py: FAIL: " + message, file=sys.stderr, flush=True)
    sys.exit(1)


class Process:
    """A child with its output in a log file (self.proc, self._log, self.log_path)."""

    def log(self):
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        """SIGTERM and wait; SIGKILL if it will not go. The exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


class Child(Process):
    """A server started as a subprocess; its first stdout line names its port."""

    def __init__(self, name, argv, log_path, env):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "w+")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, env=env,
                                     text=True, cwd=ROOT)
        self.first_line = self._read_line()

    def _read_line(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if line:
                    return line.strip()
            if self.proc.poll() is not None:
                break
        if self.proc.poll() is None:  # never leave a half-started server behind
            self.proc.kill()
            self.proc.wait()
        raise RuntimeError("%s did not start (exit %s):\n%s"
                           % (self.name, self.proc.poll(), self.log()))


class Swtpm(Process):
    """`swtpm socket --tpm2` on a free pair of loopback ports (server P,
    control P+1, as tss2's swtpm TCTI expects); ready once both accept."""

    ATTEMPTS = 5

    def __init__(self, state_dir, log_path):
        self.name = "swtpm"
        self.log_path = log_path
        binary = shutil.which("swtpm")
        if binary is None:
            raise RuntimeError("swtpm not found; install the Debian package swtpm "
                               "(`make deps`)")
        for attempt in range(self.ATTEMPTS):
            port = self._free_port_pair()
            state = os.path.join(state_dir, "state-%d" % attempt)
            os.makedirs(state)
            self._log = open(log_path, "a")
            self.proc = subprocess.Popen(
                [binary, "socket", "--tpm2",
                 "--server", "type=tcp,port=%d,bindaddr=127.0.0.1" % port,
                 "--ctrl", "type=tcp,port=%d,bindaddr=127.0.0.1" % (port + 1),
                 "--tpmstate", "dir=" + state, "--flags", "not-need-init,startup-clear"],
                stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._accepts(port) and self._accepts(port + 1):
                    self.tcti = "swtpm:host=127.0.0.1,port=%d" % port
                    return
                time.sleep(0.02)
            if self.proc.poll() is None:  # up but not listening: give up
                self.stop()
                raise RuntimeError("swtpm did not accept connections within %.0f s:\n%s"
                                   % (START_TIMEOUT, self.log()))
            self._log.close()  # exited: a port was taken in between, try another pair
        raise RuntimeError("swtpm would not start:\n%s" % self.log())

    def make_persistent_key(self, handle, env):
        """An ECC P-256 restricted signing key made persistent at `handle`
        with tpm2-tools, before the gateway connects (swtpm serves one
        connection at a time)."""
        ctx = os.path.join(os.path.dirname(self.log_path), "aik-primary.ctx")
        for argv in (["tpm2_createprimary", "-Q", "-C", "e", "-G", "ecc256:ecdsa-sha256:null",
                      "-a", AIK_ATTRIBUTES, "-c", ctx],
                     ["tpm2_evictcontrol", "-Q", "-C", "o", "-c", ctx, handle],
                     ["tpm2_flushcontext", "-t"]):
            self._tool(argv, env)

    def aik_fingerprint(self, handle, env):
        """The key's fingerprint as policies pin it (docs/attestation.md: sha256: and
        the hex SHA-256 of its TPMT_PUBLIC), read from the TPM itself."""
        public = os.path.join(os.path.dirname(self.log_path), "aik.pub")
        self._tool(["tpm2_readpublic", "-c", handle, "-o", public], env)
        with open(public, "rb") as f:
            return "sha256:" + hashlib.sha256(f.read()[2:]).hexdigest()  # past TPM2B's size

    def _tool(self, argv, env):
        tool = shutil.which(argv[0])
        if tool is None:
            raise RuntimeError("%s not found; install the Debian package tpm2-tools "
                               "(`make deps`)" % argv[0])
        proc = subprocess.run([tool, "-T", self.tcti, *argv[1:]], env=env,
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s%s" % (" ".join(argv), proc.returncode,
                                                          proc.stdout, proc.stderr))

    @staticmethod
    def _free_port_pair():
        for _ in range(100):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
        raise RuntimeError("no free pair of loopback ports for swtpm")

    @staticmethod
    def _accepts(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False


def start_gateway(name, extra_args, tmp, env, children):
    gateway = Child(name,
                    [sys.executable, "-m", "hushcall", "serve", "--port", "0",
                     "--key-dir", os.path.join(tmp, "gateway-keys"), *extra_args],
                    os.path.join(tmp, name + ".log"), env)
    children.append(gateway)
    prefix = "listening on "
    if not gateway.first_line.startswith(prefix):
        raise RuntimeError("the %s said %r, not 'listening on <url>'"
                           % (name, gateway.first_line))
    return gateway.first_line[len(prefix):].strip().rstrip("/")


def sanitizer_preload(module):
    """The sanitizer runtimes (libasan, libtsan) a module built with
    HUSH_SANITIZE links against: lua5.4 itself is not instrumented, so they
    must be preloaded into it."""
    try:
        out = subprocess.run(["ldd", module], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return re.findall(r"lib[at]san\.so\.\d+ => (\S+)", out)


def check_closing_line(output):
    """True when the output ends with "N passed, 0 failed" with N > 0."""
    lines = [l for l in output.splitlines() if l.strip()]
    m = re.match(r"^(\d+) passed, (\d+) failed$", lines[-1]) if lines else None
    return bool(m) and int(m.group(1)) > 0 and int(m.group(2)) == 0


def run_one(label, argv, env):
    print("# ---- %s" % label, flush=True)
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=TEST_TIMEOUT,
                              errors="replace")
        output, code = proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) \
            else (e.stdout or "")
        output += "\n# TIMED OUT after %.0f s" % TEST_TIMEOUT
        code = -1
    sys.stdout.write(output)
    if output and not output.endswith("\n"):
        sys.stdout.write("\n")
    ok = code == 0 and check_closing_line(output)
    if code == 0 and not ok:
        print("# %s exited 0 without a closing \"N passed, 0 failed\" line" % label)
    print("# %s: exit %s in %.1f s" % (label, code, time.monotonic() - start), flush=True)
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("--lua", default="lua5.4")
    parser.add_argument("tests", nargs="*",
                        help="test files to run (default: every tests/lua/test_*.lua)")
    args = parser.parse_args()

    build = os.path.abspath(os.path.join(ROOT, args.build_dir))
    lua = shutil.which(args.lua)
    if lua is None:
        die("%s not found; install it with `make deps` (Debian packages lua5.4 liblua5.4-dev)"
            % args.lua)
    module = os.path.join(build, "lua", "hushcall", "core.so")
    if not os.path.isfile(module):
        die("%s is missing; build it with `make build` (or `cmake --build %s`)"
            % (module, args.build_dir))
    harness = os.path.join(build, "test_lua_states")
    if not os.path.isfile(os.path.join(ROOT, "lua", "hushcall.lua")):
        die("lua/hushcall.lua is missing")
    tests = args.tests or sorted(glob.glob(os.path.join(HERE, "test_*.lua")))
    if not tests:
        die("no tests/lua/test_*.lua found")

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(ROOT, "python"), env.get("PYTHONPATH")) if p)

    tmp = tempfile.mkdtemp(prefix="hushcall-lua-")
    children = []
    results = []
    try:
        try:
            peer = Child("nomyo_peer", [sys.executable, PEER, "--port", "0", "--bits", "2048"],
                         os.path.join(tmp, "peer.log"), env)
            children.append(peer)
            if not peer.first_line.startswith("READY "):
                raise RuntimeError("nomyo_peer said %r, not READY <port>" % peer.first_line)
            peer_url = "http://127.0.0.1:%d" % int(peer.first_line.split()[1])
            ehbp = Child("ehbp_server", [sys.executable, EHBP_PEER, "--port", "0"],
                         os.path.join(tmp, "ehbp.log"), env)
            children.append(ehbp)
            if not ehbp.first_line.startswith("READY "):
                raise RuntimeError("ehbp_server said %r, not READY <port>" % ehbp.first_line)
            ehbp_url = "http://127.0.0.1:%d" % int(ehbp.first_line.split()[1])
            plain_ehbp = Child("plain_ehbp_server",
                               [sys.executable, EHBP_PEER, "--port", "0", "--plain-ehbp"],
                               os.path.join(tmp, "plain-ehbp.log"), env)
            children.append(plain_ehbp)
            if not plain_ehbp.first_line.startswith("READY "):
                raise RuntimeError("ehbp_server --plain-ehbp said %r, not READY <port>"
                                   % plain_ehbp.first_line)
            plain_ehbp_url = "http://127.0.0.1:%d" % int(plain_ehbp.first_line.split()[1])

            gateway_url = start_gateway("gateway", ["--api-key", API_KEY,
                                                    "--echo-delay-ms", str(ECHO_DELAY_MS)],
                                        tmp, env, children)

            swtpm_dir = os.path.join(tmp, "swtpm")
            os.makedirs(swtpm_dir)
            tpm = Swtpm(swtpm_dir, os.path.join(tmp, "swtpm.log"))
            children.append(tpm)
            # Same key directory: the key the first gateway made is reused.
            tpm_env = dict(env, TSS2_LOG="all+none")
            tpm.make_persistent_key(AIK_HANDLE, tpm_env)
            tpm_gateway_aik = tpm.aik_fingerprint(AIK_HANDLE, tpm_env)
            tpm_gateway_url = start_gateway("tpm-gateway",
                                            ["--tpm", tpm.tcti, "--tpm-handle", AIK_HANDLE],
                                            tmp, tpm_env, children)

            # The EHBP peer attesting (--tpm) with a swtpm of its own (the gateway
            # holds the first one's only connection), over HTTPS: a client allows
            # the maximum tier only there.
            peer_tpm_dir = os.path.join(tmp, "peer-swtpm")
            os.makedirs(peer_tpm_dir)
            pki = os.path.join(tmp, "pki")
            subprocess.run([sys.executable, MAKE_TEST_CA, pki], check=True, timeout=120,
                           env=env, stdout=subprocess.DEVNULL)
            peer_tpm = Swtpm(peer_tpm_dir, os.path.join(peer_tpm_dir, "swtpm.log"))
            children.append(peer_tpm)
            peer_tpm.make_persistent_key(AIK_HANDLE, tpm_env)
            tpm_peer_aik = peer_tpm.aik_fingerprint(AIK_HANDLE, tpm_env)
            tpm_peer = Child("tpm_ehbp_server",
                             [sys.executable, EHBP_PEER, "--port", "0", "--tpm", peer_tpm.tcti,
                              "--aik-handle", AIK_HANDLE,
                              "--tls-cert", os.path.join(pki, "server.pem"),
                              "--tls-key", os.path.join(pki, "server.key")],
                             os.path.join(tmp, "tpm-ehbp.log"), tpm_env)
            children.append(tpm_peer)
            if not tpm_peer.first_line.startswith("READY "):
                raise RuntimeError("ehbp_server --tpm said %r, not READY <port>"
                                   % tpm_peer.first_line)
            tpm_peer_url = "https://127.0.0.1:%d" % int(tpm_peer.first_line.split()[1])
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
            die("could not start the servers: %s\n(the gateway needs the Python extension: "
                "`make build-python`)" % e)

        env["HUSH_PEER_URL"] = peer_url
        env["HUSH_EHBP_PEER_URL"] = ehbp_url
        env["HUSH_EHBP_PLAIN_PEER_URL"] = plain_ehbp_url
        env["HUSH_GATEWAY_URL"] = gateway_url
        env["HUSH_GATEWAY_API_KEY"] = API_KEY
        env["HUSH_TPM_GATEWAY_URL"] = tpm_gateway_url
        env["HUSH_TPM_GATEWAY_AIK_FINGERPRINT"] = tpm_gateway_aik
        env["HUSH_EHBP_TPM_PEER_URL"] = tpm_peer_url
        env["HUSH_EHBP_TPM_PEER_AIK_FINGERPRINT"] = tpm_peer_aik
        env["HUSH_EHBP_TPM_PEER_CA"] = os.path.join(pki, "ca.pem")
        env["HUSH_TEST_TMP"] = tmp
        env["HUSH_LUA_BUILD_DIR"] = build
        env["HUSH_REPO_ROOT"] = ROOT
        env["LUA_CPATH"] = os.path.join(build, "lua", "?.so") + ";;"
        env["LUA_PATH"] = "%s;%s;;" % (os.path.join(ROOT, "lua", "?.lua"),
                                       os.path.join(HERE, "?.lua"))
        print("# peer %s, gateway %s, tpm gateway %s (%s), tpm ehbp peer %s (%s)"
              % (peer_url, gateway_url, tpm_gateway_url, tpm.tcti, tpm_peer_url,
                 peer_tpm.tcti), flush=True)
        preload = sanitizer_preload(module)
        if preload:
            # Only the Lua runs get it (the servers are already started);
            # the tests drop it again for the tools they call (curl, python).
            env["LD_PRELOAD"] = ":".join(preload + [p for p in [env.get("LD_PRELOAD")] if p])
            # The shells and tools the tests start inherit the runtime too,
            # and they are not leak-clean: leak checking stays off unless
            # asked for.
            if "detect_leaks" not in env.get("ASAN_OPTIONS", ""):
                env["ASAN_OPTIONS"] = ":".join(
                    p for p in (env.get("ASAN_OPTIONS"), "detect_leaks=0") if p)
            print("# sanitizer build: LD_PRELOAD=%s ASAN_OPTIONS=%s"
                  % (env["LD_PRELOAD"], env.get("ASAN_OPTIONS", "")), flush=True)

        for path in tests:
            name = os.path.relpath(path, ROOT)
            results.append((name, run_one(name, [lua, path], env)))

        if args.tests:
            pass  # an explicit selection runs only those files
        elif os.path.isfile(harness) and os.access(harness, os.X_OK):
            results.append(("test_lua_states", run_one("test_lua_states", [harness], env)))
        else:
            print("# ---- test_lua_states\nnot ok - %s is missing; it is built by the CMake "
                  "target test_lua_states (`make build`)" % harness, flush=True)
            results.append(("test_lua_states", False))
    finally:
        for child in reversed(children):
            code = child.stop()
            if code not in (0, -signal.SIGTERM):
                print("# %s exited %s; its log:\n%s" % (child.name, code, child.log()),
                      flush=True)
        shutil.rmtree(tmp, ignore_errors=True)

    failed = [name for name, ok in results if not ok]
    print("lua tests: %d passed, %d failed%s"
          % (len(results) - len(failed), len(failed),
             (": " + ", ".join(failed)) if failed else ""), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
