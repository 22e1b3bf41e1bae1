"""The gateway's files that change while it serves (docs/operations.md,
"Reloading"): the clients' API keys from --api-key-file, refused at start
when the file is not fit to hold them, and SIGHUP, which rereads that file
and the TLS certificate and key, keeps what was in use when the new ones do
not load, and with --processes reaches every worker. Real gateways on
loopback; each waits for the log line that says the reload was done."""

import http.client
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.parse

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from processes import ROOT, Gateway, _env, keys_copy

LOG_WAIT = 60.0  # seconds a gateway gets to log a reload; never asserted on
SECRET = "k3y-that-must-never-be-printed"


def wait_for_log(gw, text, count=1):
    """Until `text` is in the gateway's log `count` times; fails the test after LOG_WAIT."""
    deadline = time.monotonic() + LOG_WAIT
    while gw.log().count(text) < count:
        if time.monotonic() > deadline or gw.proc.poll() is not None:
            pytest.fail("the gateway did not log %r %d times:\n%s" % (text, count, gw.log()))
        time.sleep(0.05)


def hang_up(gw, text, count=1):
    """SIGHUP, then the log line that says it was handled (the count-th of them)."""
    gw.proc.send_signal(signal.SIGHUP)
    wait_for_log(gw, text, count)


# ---- --api-key-file -----------------------------------------------------------


def key_file(tmp_path, text, mode=0o600, name="api-keys"):
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def binary_key_file(tmp_path, data):
    path = key_file(tmp_path, "")
    path.write_bytes(data)
    return path


def serve_refused(tmp_path, path, as_nobody=False):
    """`serve --api-key-file path` (as user nobody when asked, for a file it
    may not read): its exit status and stderr."""
    argv = ["serve", "--port", "0", "--key-dir", str(tmp_path / "keys"),
            "--api-key-file", str(path)]
    # Imported while still root: nobody may not read this interpreter's own files.
    drop = "import os; os.setgid(65534); os.setuid(65534); " if as_nobody else ""
    code = ("import hushcall.cli, hushcall.gateway, sys; %s"
            "sys.exit(hushcall.cli.main(%r))" % (drop, argv))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(), timeout=60)
    return done.returncode, done.stderr


REFUSALS = {
    "missing": (lambda d: d / "absent", "No such file or directory"),
    "empty": (lambda d: key_file(d, ""), "holds no key"),
    "only comments": (lambda d: key_file(d, "# %s\n\n   \n" % SECRET), "holds no key"),
    "group-readable": (lambda d: key_file(d, SECRET + "\n", 0o640), "open to group or others"),
    "world-readable": (lambda d: key_file(d, SECRET + "\n", 0o604), "open to group or others"),
    "a directory": (lambda d: d, "not a regular file"),
    "not UTF-8": (lambda d: binary_key_file(d, b"ok\n" + SECRET.encode() + b"\xff\n"),
                  "line 2 is not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_an_unfit_key_file_is_refused_at_start(tmp_path, case):
    make, reason = REFUSALS[case]
    path = make(tmp_path)
    status, stderr = serve_refused(tmp_path, path)
    assert status == 1, stderr
    assert "hushcall serve: ApiKeyFileError: --api-key-file %s" % path in stderr
    assert reason in stderr and SECRET not in stderr
    assert not (tmp_path / "keys").exists()  # refused before any key was made


def test_an_unreadable_key_file_is_refused_at_start(tmp_path):
    path = key_file(tmp_path, SECRET + "\n", 0o600)
    if os.geteuid() == 0:
        os.chmod(tmp_path, 0o755)  # nobody reaches the file, and may not read it
        status, stderr = serve_refused(tmp_path, path, as_nobody=True)
    else:
        path.chmod(0o000)
        status, stderr = serve_refused(tmp_path, path)
    assert status == 1, stderr
    assert "ApiKeyFileError: --api-key-file %s: Permission denied" % path in stderr
    assert SECRET not in stderr


def metrics(gw, key):
    return httpx.get(gw.url + "/metrics", headers={"Authorization": "Bearer " + key},
                     timeout=30).status_code


def test_keys_from_the_file_and_the_command_line_and_reloaded(tmp_path, server_keys):
    path = key_file(tmp_path, "# the first client\nfile-key-one\n\n  file-key-two  \n")
    gw = Gateway(tmp_path, "--no-v2", "--api-key-file", str(path), "--api-key", "argv-key",
                 key_dir=keys_copy(server_keys, tmp_path))
    try:
        for key in ("file-key-one", "file-key-two", "argv-key"):
            assert metrics(gw, key) == 200, key
        for key in ("# the first client", "wrong", "file-key-on"):
            assert metrics(gw, key) == 401, key
        # A key revoked and one added: SIGHUP rereads the file.
        key_file(tmp_path, "file-key-three\n", name="next")
        os.replace(tmp_path / "next", path)
        hang_up(gw, "SIGHUP: 2 API keys in use")
        assert metrics(gw, "file-key-three") == 200
        assert metrics(gw, "argv-key") == 200
        assert metrics(gw, "file-key-one") == 401
        # A file gone unfit keeps the keys in use.
        key_file(tmp_path, SECRET + "\n", 0o644, name="next")
        os.replace(tmp_path / "next", path)
        hang_up(gw, "SIGHUP: API keys not reloaded, the 2 in use stay")
        assert metrics(gw, "file-key-three") == 200
        assert metrics(gw, SECRET) == 401
    finally:
        assert gw.stop() == 0
    log = gw.log()
    for key in ("file-key-one", "file-key-two", "file-key-three", "argv-key", SECRET):
        assert key not in log


# ---- SIGHUP and TLS -------------------------------------------------------------


@pytest.fixture(scope="module")
def two_pkis(tmp_path_factory):
    """Two throwaway PKIs: a certificate and its renewal (another key)."""
    pkis = []
    for name in ("first", "renewed"):
        d = tmp_path_factory.mktemp("pki-" + name)
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "interop",
                                                      "make_test_ca.py"), str(d)],
                       check=True, timeout=60)
        pkis.append(d)
    return pkis


def der(pki):
    return ssl.PEM_cert_to_DER_cert((pki / "server.pem").read_text())


def install(pki, tmp_path, key_from=None):
    """Put a certificate and key where the gateway reads them, each file
    replaced whole (as a renewal does)."""
    for name, source in (("server.pem", pki), ("server.key", key_from or pki)):
        staged = tmp_path / (name + ".new")
        shutil.copyfile(source / name, staged)
        staged.chmod(0o600)
        os.replace(staged, tmp_path / name)


def encrypt_key(path):
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"a password")))


def tls_gateway(tmp_path, server_keys, *args):
    return Gateway(tmp_path, "--no-v2", "--tls-cert", str(tmp_path / "server.pem"),
                   "--tls-key", str(tmp_path / "server.key"), *args,
                   key_dir=keys_copy(server_keys, tmp_path))


def connect(gw):
    """A fresh TLS connection; the certificate is compared, not verified."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return http.client.HTTPSConnection("127.0.0.1", urllib.parse.urlsplit(gw.url).port,
                                       context=context, timeout=30)


def healthz(connection):
    """GET /healthz on `connection`: (status, the worker that answered, the
    certificate it was served)."""
    connection.request("GET", "/healthz")
    answer = connection.getresponse()
    answer.read()
    return (answer.status, answer.getheader("Hushcall-Worker"),
            connection.sock.getpeercert(binary_form=True))


def test_sighup_serves_a_renewed_certificate_and_refuses_a_bad_one(tmp_path, server_keys,
                                                                  two_pkis):
    first, renewed = two_pkis
    install(first, tmp_path)
    gw = tls_gateway(tmp_path, server_keys)
    try:
        kept_open = connect(gw)
        assert healthz(kept_open)[::2] == (200, der(first))
        install(renewed, tmp_path)
        hang_up(gw, "SIGHUP: TLS certificate reloaded")
        assert healthz(connect(gw))[::2] == (200, der(renewed))
        # The connection made before goes on, with the certificate it was made with.
        assert healthz(kept_open)[::2] == (200, der(first))
        kept_open.close()
        # A key that is not the certificate's, the right key encrypted, then a key
        # file gone: each refused, the renewed certificate stays.
        install(first, tmp_path, key_from=renewed)
        hang_up(gw, "TLS certificate not reloaded", 1)
        install(renewed, tmp_path)
        encrypt_key(tmp_path / "server.key")
        hang_up(gw, "TLS certificate not reloaded", 2)
        (tmp_path / "server.key").unlink()
        hang_up(gw, "TLS certificate not reloaded", 3)
        assert healthz(connect(gw))[::2] == (200, der(renewed))
    finally:
        assert gw.stop() == 0


def test_sighup_reaches_every_worker(tmp_path, server_keys, two_pkis):
    first, renewed = two_pkis
    install(first, tmp_path)
    gw = tls_gateway(tmp_path, server_keys, "--processes", "2")
    try:
        install(renewed, tmp_path)
        hang_up(gw, "SIGHUP: TLS certificate reloaded", 2)
        served = {}  # worker -> certificate, from fresh connections spread by the kernel
        for _ in range(200):
            status, worker, certificate = healthz(connect(gw))
            assert status == 200
            served.setdefault(worker, set()).add(certificate)
            if len(served) == 2:
                break
        assert served == {"0": {der(renewed)}, "1": {der(renewed)}}
    finally:
        assert gw.stop() == 0


def test_sighup_without_anything_to_reload_is_ignored(tmp_path, server_keys):
    gw = Gateway(tmp_path, "--no-v2", key_dir=keys_copy(server_keys, tmp_path))
    try:
        hang_up(gw, "SIGHUP ignored: no --tls-cert or --api-key-file to reload")
        assert httpx.get(gw.url + "/healthz", timeout=30).status_code == 200
        assert gw.proc.poll() is None
    finally:
        assert gw.stop() == 0
