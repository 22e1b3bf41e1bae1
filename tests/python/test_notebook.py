"""A Jupyter notebook run by nbclient on a real ipykernel against the NOMYO peer
(tests/interop/nomyo_peer.py): top-level ``await client.create(...)`` works in
the kernel's running loop, and nothing of the prompt or the answer lands in the
notebook as it would be saved, while the shape and ``_metadata`` are shown. A
control notebook that displays ``resp.to_dict()`` does leak the canary, so the
scan is shown to find it.

The canary reaches the kernel through its environment, never through a cell's
source, so the whole saved notebook (sources included) can be scanned."""

import json
import os
import sys
import uuid

import ipykernel  # noqa: F401  (the kernel the notebook runs on; make deps installs it)
import nbclient
import nbformat
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.abspath(os.path.join(HERE, os.pardir, os.pardir, "python"))
CANARY_ENV = "HUSHCALL_NOTEBOOK_CANARY"
KERNEL = "hushcall-test-python3"


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernelspec of our own that runs this very interpreter, found first via
    JUPYTER_PATH, and an environment in which the kernel imports hushcall from
    python/ and holds a fresh canary."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "hushcall test (%s)" % sys.executable,
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    paths = [PYTHON_DIR] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    # Keep the kernel from writing history or reading a user's startup files.
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    canary = "hushcall-nb-canary-" + uuid.uuid4().hex
    monkeypatch.setenv(CANARY_ENV, canary)
    return canary


def notebook(peer, *cells):
    setup = (
        "import os, hushcall\n"
        "client = hushcall.SecureChatCompletion(base_url=%r, allow_http=True, key_bits=2048)"
        % peer
    )
    ask = (
        "resp = await client.create(model=\"m\", messages=[{\"role\": \"user\", "
        "\"content\": os.environ[%r]}])" % CANARY_ENV
    )
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": KERNEL, "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (setup, ask) + cells]
    return nb


def run(nb, tmp_path):
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL, timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    return nb


def errors(nb):
    return [
        (i, out.get("ename"), out.get("evalue"))
        for i, cell in enumerate(nb.cells)
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]


def test_notebook_outputs_hold_no_content(peer, kernel_env, tmp_path):
    canary = kernel_env
    nb = run(
        notebook(
            peer,
            "import sys\nsys.executable",
            "resp",
            "print(len(resp[\"choices\"]))",
            "resp._metadata[\"is_encrypted\"]",
        ),
        tmp_path,
    )
    assert errors(nb) == []

    # The kernel is this interpreter.
    exe = nb.cells[2].outputs[0]["data"]["text/plain"]
    assert exe == repr(sys.executable)

    saved = nbformat.writes(nb)
    assert canary not in saved
    assert "echo: " + canary not in saved
    # nor in the JSON-escaped form, or split across lines (it is plain hex, so
    # escaping cannot change it, but the check is cheap)
    assert canary not in saved.replace("\\n", "").replace("\n", "")

    # The response's display: its shape and _metadata.
    display = nb.cells[3].outputs
    assert len(display) == 1 and display[0]["output_type"] == "execute_result"
    plain = display[0]["data"]["text/plain"]
    assert "choices" in plain and "_metadata" in plain, plain
    assert "'is_encrypted': True" in plain, plain
    assert "text/html" not in display[0]["data"] or canary not in display[0]["data"]["text/html"]

    printed = nb.cells[4].outputs
    assert [o.get("text") for o in printed] == ["1\n"]

    flag = nb.cells[5].outputs
    assert len(flag) == 1 and flag[0]["data"]["text/plain"] == "True"


def test_control_to_dict_leaks_into_outputs(peer, kernel_env, tmp_path):
    """The same scan finds the canary when the notebook shows a plain copy."""
    canary = kernel_env
    nb = run(notebook(peer, "resp.to_dict()"), tmp_path)
    assert errors(nb) == []
    saved = nbformat.writes(nb)
    assert canary in saved
    assert "echo: " + canary in saved
