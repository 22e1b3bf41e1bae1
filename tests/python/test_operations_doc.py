"""docs/operations.md kept honest: every gateway command line in it (the
systemd unit's ExecStart, and each `python -m hushcall serve ...` in its code
blocks) parses with the gateway's own command-line parser, every option
existing and every value valid, its systemd unit passes
`systemd-analyze verify` without a warning, reloads with SIGHUP, and takes
the clients' API keys from a file the setup makes so that the gateway's own
check accepts it."""

import os
import re
import shlex
import subprocess

import pytest

from hushcall import cli, gateway, gateway_reload
from processes import ROOT, _need

DOC = os.path.join(ROOT, "docs", "operations.md")
UNIT_PATH = "/etc/systemd/system/hushcall-gateway.service"
ENV_FILE_PATH = "/etc/hushcall/gateway.env"
CODE_BLOCK = re.compile(r"^```[\w-]*\n(.*?)^```", re.M | re.S)
# systemd's expansion in ExecStart: $NAME splits at spaces into words, ${NAME} is one word.
UNBRACED_VARIABLE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
BRACED_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# The setup's way of making an empty file with its owner and mode.
INSTALLED_FILE = re.compile(r"^install -m (0[0-7]{3}) -o (\S+) -g (\S+) /dev/null (\S+)", re.M)
# The doc's way of leaving options out of a command line.
ELIDED = "..."


def code_blocks():
    with open(DOC) as f:
        return CODE_BLOCK.findall(f.read())


def names(block, path):
    return re.match(r"# %s[ \n]" % re.escape(path), block) is not None


def block_starting(first_line):
    """The one code block whose first line names it (a file's path, then
    perhaps a remark)."""
    found = [b for b in code_blocks() if names(b, first_line)]
    assert len(found) == 1, "docs/operations.md: expected one code block for %s" % first_line
    return found[0]


def joined_lines(text):
    """Lines with their backslash continuations joined, as a shell and systemd read them."""
    return re.sub(r"\\\n\s*", " ", text).splitlines()


def unit_settings():
    """(section, key, value) of every setting of the documented unit, in order."""
    settings, section = [], None
    for line in joined_lines(block_starting(UNIT_PATH)):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.append((section, key.strip(), value.strip()))
    return settings


def unit_setting(key):
    values = [value for _, name, value in unit_settings() if name == key]
    assert len(values) == 1, "the unit has %d %s= settings" % (len(values), key)
    return values[0]


def environment_file():
    """The documented EnvironmentFile's variables."""
    variables = {}
    for line in block_starting(ENV_FILE_PATH).splitlines()[1:]:
        name, _, value = line.partition("=")
        variables[name] = value
    return variables


def exec_start_argv():
    """ExecStart as systemd runs it, its variables taken from the documented
    EnvironmentFile: a variable it does not set fails the test."""
    assert unit_setting("EnvironmentFile") == ENV_FILE_PATH
    variables = environment_file()
    argv = []
    for word in shlex.split(unit_setting("ExecStart")):
        unbraced = UNBRACED_VARIABLE.match(word)
        if unbraced:
            assert unbraced.group(1) in variables, "ExecStart uses $%s, unset" % unbraced.group(1)
            argv.extend(variables[unbraced.group(1)].split())
            continue
        for name in BRACED_VARIABLE.findall(word):
            assert name in variables, "ExecStart uses ${%s}, unset" % name
        argv.append(BRACED_VARIABLE.sub(lambda m: variables[m.group(1)], word))
    return argv


def serve_options(argv):
    """The options after `python -m hushcall serve` (or `hushcall serve`)."""
    for i in range(len(argv) - 1):
        if argv[i].endswith("hushcall") and argv[i + 1] == "serve":
            if argv[i] == "hushcall" and i > 0 and argv[i - 1] == "-m":
                assert re.search(r"python[\d.]*$", argv[i - 2]), argv
            return [word for word in argv[i + 2:] if word != ELIDED]
    raise AssertionError("not a hushcall serve command line: %r" % argv)


def documented_serve_lines():
    """Every serve command line in the doc's code blocks but the unit's."""
    lines = []
    for block in code_blocks():
        if names(block, UNIT_PATH):
            continue
        for line in joined_lines(block):
            if re.search(r"\bhushcall serve\b", line):
                lines.append(line.strip())
    return lines


def parsed(options, monkeypatch, environment=()):
    """The GatewayConfig `serve` makes of these options, through cli.main
    with gateway.run replaced: argparse and serve's own checks, no serving.
    A refused option fails the test with the parser's message."""
    configs = []
    monkeypatch.setattr(gateway, "run", configs.append)
    monkeypatch.delenv(cli.REPLAY_STORE_ENV, raising=False)
    for name, value in environment:
        monkeypatch.setenv(name, value)
    try:
        status = cli.main(["serve", *options])
    except SystemExit as e:
        pytest.fail("`serve %s` is refused (exit %s)" % (shlex.join(options), e.code))
    assert status == 0 and len(configs) == 1
    return configs[0]


def test_the_units_exec_start_parses(monkeypatch):
    environment = [(name, value) for name, value in environment_file().items()
                   if name == cli.REPLAY_STORE_ENV]  # the one the parser checks
    config = parsed(serve_options(exec_start_argv()), monkeypatch, environment)
    assert config.api_keys == [], "API keys on the unit's command line, readable in /proc"
    assert config.replay_store == environment_file()[cli.REPLAY_STORE_ENV]
    # systemd must give the requests in flight their --shutdown-timeout, and more.
    assert float(unit_setting("TimeoutStopSec")) > config.shutdown_timeout
    assert unit_setting("KillSignal") == "SIGTERM"
    assert config.key_dir.startswith("/var/lib/%s/" % unit_setting("StateDirectory"))


def installed_files():
    """path -> (mode, owner) of the files the documented setup makes."""
    setup = [b for b in code_blocks() if b.startswith("useradd ")]
    assert len(setup) == 1, "docs/operations.md: expected one setup block (useradd ...)"
    return {path: (int(mode, 8), owner)
            for mode, owner, _, path in INSTALLED_FILE.findall(setup[0])}


def test_the_units_api_key_file_is_one_the_gateway_accepts(monkeypatch, tmp_path):
    """The key file the unit names is made by the setup, owned by the unit's
    user, with a mode the gateway's own check accepts."""
    config = parsed(serve_options(exec_start_argv()), monkeypatch)
    files = installed_files()
    assert config.api_key_file in files, "the setup does not make %s" % config.api_key_file
    mode, owner = files[config.api_key_file]
    assert owner == unit_setting("User")
    made = tmp_path / "api-keys"
    made.write_text("# a client\nsome-key\n")
    made.chmod(mode)
    assert gateway_reload.read_api_key_file(str(made)) == ["some-key"]


def test_the_unit_reloads_with_sighup():
    # $MAINPID is the parent under --processes: it forwards SIGHUP to the workers.
    assert unit_setting("ExecReload") == "/bin/kill -HUP $MAINPID"


def test_every_documented_serve_command_line_parses(monkeypatch):
    lines = documented_serve_lines()
    assert len(lines) >= 2, "docs/operations.md has fewer serve command lines than it had"
    for line in lines:
        parsed(serve_options(shlex.split(line, comments=True)), monkeypatch)


def test_systemd_analyze_verifies_the_unit(tmp_path):
    """The unit as documented, but for the interpreter's path, which is a
    stub here (verify checks that the command is executable)."""
    systemd_analyze = _need("systemd-analyze", "systemd")
    interpreter = exec_start_argv()[0]
    stub = tmp_path / "python"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = block_starting(UNIT_PATH).replace("ExecStart=%s " % interpreter,
                                             "ExecStart=%s " % stub, 1)
    assert str(stub) in unit
    path = tmp_path / os.path.basename(UNIT_PATH)
    path.write_text(unit)
    done = subprocess.run([systemd_analyze, "verify", str(path)], capture_output=True,
                          text=True, timeout=60)
    report = done.stdout + done.stderr
    assert done.returncode == 0 and report == "", report
