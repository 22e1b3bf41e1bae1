"""bench/soak.py and bench/load.py at a tiny size, so the programs cannot
rot between the runs that give their figures (docs/operations.md "Soak and
load"). Each must exit 0 (every answer right; for the soak, the gateway's
processes flat and their pids unchanged) and print its table: a row per
sample, a row per cell. No figure is judged."""

import os
import re
import signal
import subprocess
import sys

import pytest

from processes import ROOT, _env

RUN_TIMEOUT = 300

SMOKE = {
    "soak": ["--requests", "600", "--in-flight", "32", "--sample-every", "200"],
    "load": ["--requests", "120", "--v1-requests", "12", "--in-flight", "32"],
}


def run(program):
    """Run bench/<program>.py in a session of its own, so that a run that
    overstays its timeout is killed with the gateway and redis it started."""
    argv = [sys.executable, os.path.join(ROOT, "bench", program + ".py"), *SMOKE[program]]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(), start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail("%s did not finish in %d s:\n%s" % (program, RUN_TIMEOUT, out))
    return proc.returncode, out


def soak_rows(out):
    """{requests done: row} of the soak's sample table."""
    rows = re.findall(r"^\s+(\d+)\s+[\d.]+(?:\s+[\d.]+\s+\d+\s+\d+){3}\s*$", out, re.M)
    return [int(r) for r in rows]


def load_cells(out):
    """[(processes, store, protocol, failed)] of the load table."""
    return re.findall(r"^\s+([12])\s+(in-process|redis)\s+(v1|v2)\s+\d+\s+[\d.]+\s+[\d.]+\s+"
                      r"[\d.]+\s+(\d+)\s", out, re.M)


def test_soak_and_load_run_and_print_their_tables():
    status, out = run("soak")
    assert status == 0, out
    assert re.search(r"^\s+requests\s+seconds\s+parent\s+worker 1\s+worker 2\s*$", out, re.M), out
    assert soak_rows(out) == [200, 400, 600], out
    assert "600 requests: 600 answered right, 0 failed" in out, out
    assert len(re.findall(r"^  (parent|worker [12]) +RSS .* flat$", out, re.M)) == 3, out
    assert "verdict: flat" in out, out

    status, out = run("load")
    assert status == 0, out
    assert re.search(r"^procs\s+store\s+proto\s+requests\s+req/s\s+p50 ms\s+p99 ms", out, re.M), out
    cells = load_cells(out)
    assert sorted(c[:3] for c in cells) == sorted(
        (p, s, v) for p in "12" for s in ("in-process", "redis") for v in ("v1", "v2")), out
    assert all(c[3] == "0" for c in cells), out
    assert "load: every answer right" in out, out
