"""setup.py on a machine without the system development packages: before
anything else it stops with one first line naming the Debian packages to
install (README "Installing"). pkg-config is pointed at a directory holding
the system's .pc files minus the ones a test takes away."""

import os
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
TSS2 = ["tss2-esys.pc", "tss2-mu.pc", "tss2-tctildr.pc", "tss2-rc.pc"]


def system_pc_files():
    """Every .pc file pkg-config finds by default, by name (the first of each)."""
    path = subprocess.run(["pkg-config", "--variable", "pc_path", "pkg-config"],
                          check=True, capture_output=True, text=True).stdout.strip()
    found = {}
    for directory in path.split(os.pathsep):
        if os.path.isdir(directory):
            for name in os.listdir(directory):
                if name.endswith(".pc"):
                    found.setdefault(name, os.path.join(directory, name))
    return found


def run_setup(tmp_path, without=(), **env):
    """`setup.py --name` with pkg-config seeing the system minus `without`."""
    pc_dir = tempfile.mkdtemp(prefix="pkgconfig-", dir=tmp_path)
    available = system_pc_files()
    for name in ["libcrypto.pc", "libcurl.pc"] + TSS2:
        assert name in available, "%s is not installed: run `make deps`" % name
    for name, path in available.items():
        if name not in without:
            os.symlink(path, os.path.join(pc_dir, name))
    env = dict(os.environ, PKG_CONFIG_LIBDIR=pc_dir, PKG_CONFIG_PATH="", **env)
    return subprocess.run([sys.executable, os.path.join(ROOT, "setup.py"), "--name"],
                          capture_output=True, text=True, env=env, cwd=ROOT)


def first_line(text):
    return text.splitlines()[0] if text else ""


@pytest.mark.parametrize("without, packages", [
    (["libcrypto.pc", "libcurl.pc"] + TSS2, "libssl-dev libcurl4-openssl-dev libtss2-dev"),
    (["libcurl.pc"], "libcurl4-openssl-dev"),
    (["tss2-tctildr.pc"], "libtss2-dev"),
])
def test_missing_packages_named_on_the_first_line(tmp_path, without, packages):
    r = run_setup(tmp_path, without)
    assert r.returncode != 0
    assert first_line(r.stderr) == (
        "hushcall needs the Debian packages %s (run `make deps`, or apt-get install %s)"
        % (packages, packages))
    assert r.stdout == "", "setup.py went on after the check"


def test_everything_present_passes(tmp_path):
    r = run_setup(tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hushcall"


def test_without_tpm_needs_no_tss2(tmp_path):
    r = run_setup(tmp_path, TSS2, HUSH_WITH_TPM="OFF")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hushcall"
    # What it still needs, it still names, and only that.
    r = run_setup(tmp_path, TSS2 + ["libcurl.pc"], HUSH_WITH_TPM="OFF")
    assert r.returncode != 0
    assert first_line(r.stderr).startswith(
        "hushcall needs the Debian packages libcurl4-openssl-dev (run `make deps`")
