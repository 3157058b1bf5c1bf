"""`graphs.run --python PATH`: solution scripts run with that interpreter (in both sandbox
backends) and the prompt lists *its* packages. The interpreter here is a wrapper script that
announces itself on stderr and execs this venv's python with an extra site directory holding a
fake distribution (lightgbm 9.9.9, which this venv does not have)."""

from __future__ import annotations

import json
import platform
import re
import sys
from pathlib import Path

import pytest

from graphs.run import main
from nodes.task_context import TaskContext, installed_packages, missing_packages, python_version
from sandbox import Limits, bwrap_available, create_workspace, run_script
from tests.conftest import make_toy_task
from tests.doubles.stub import StubServer

MARKER = "via-wrapper-python"
FAKE_PACKAGE = "lightgbm 9.9.9"


def make_wrapper(root: Path) -> Path:
    """An interpreter wrapper with its own (fake) lightgbm distribution."""
    site = root / "fakesite"
    dist = site / "lightgbm-9.9.9.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lightgbm\nVersion: 9.9.9\n")
    wrapper = root / "python-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "{MARKER}" >&2\nPYTHONPATH="{site}" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def wrapper(tmp_path) -> Path:
    return make_wrapper(tmp_path / "interp")


@pytest.fixture(scope="module")
def stub():
    with StubServer() as server:
        yield server


def test_package_list_and_version_come_from_the_interpreter(wrapper):
    assert "lightgbm" not in installed_packages(), "this venv has lightgbm: the test cannot tell them apart"
    theirs = installed_packages(str(wrapper))
    assert FAKE_PACKAGE in theirs.split(", ")
    assert "pandas " in theirs  # the wrapped venv's own packages are listed too
    assert python_version(str(wrapper)) == platform.python_version()


def test_the_prompt_names_the_well_known_packages_scripts_cannot_import(wrapper):
    ours, theirs = missing_packages().split(", "), missing_packages(str(wrapper)).split(", ")
    assert "lightgbm" in ours and "lightgbm" not in theirs  # the interpreter scripts run with decides
    assert set(ours) - set(theirs) == {"lightgbm"}
    installed = {p.split(" ")[0] for p in installed_packages().split(", ")}
    assert not installed & set(ours) and "pandas" not in ours  # only what is missing, by import name
    assert "sklearn" not in ours and "scikit-learn" not in ours
    base = dict(description="d", data_preview="p", packages=installed_packages(), python_version="3.11",
                time_limit="60 seconds", hardware="cpu", metric_hint="m", sample_submission=None)
    prompt = TaskContext(**base, missing=missing_packages()).system_prompt()
    line = next(x for x in prompt.splitlines() if x.startswith("- Not installed"))
    assert line == f"- Not installed, so importing them fails: {missing_packages()}."
    assert "Not installed" not in TaskContext(**base).system_prompt()  # a context stored before it


@pytest.mark.parametrize("backend", ["plain", "bwrap"])
def test_scripts_run_with_the_interpreter_in_the_sandbox(tmp_path, wrapper, backend):
    if backend == "bwrap" and not bwrap_available():
        pytest.skip("bubblewrap does not work here")
    public = tmp_path / "public"
    public.mkdir()
    ws = create_workspace(tmp_path / "ws", public)
    code = 'import importlib.metadata as m\nprint("LGB", m.version("lightgbm"))\n'
    result = run_script(code, ws, timeout_s=30, backend=backend, limits=Limits(python=str(wrapper)))
    assert result.exit_code == 0, result.output
    assert MARKER in result.output and "LGB 9.9.9" in result.output
    # without it: this interpreter, which has no lightgbm
    plain = run_script(code, ws, timeout_s=30, backend=backend)
    assert plain.exit_code != 0 and MARKER not in plain.output and "PackageNotFoundError" in plain.output


def test_graphs_run_with_python_runs_scripts_through_it(tmp_path, wrapper, stub):
    task = make_toy_task(tmp_path / "toy")
    runs = tmp_path / "runs"
    stub.bodies.clear()
    assert main(["--task", str(task), "--base-url", stub.base_url, "--python", str(wrapper), "--steps", "1",
                 "--run-id", "p", "--run-dir", str(runs), "--exec-timeout", "20"]) == 0
    assert json.loads((runs / "p" / "run.json").read_text())["python"] == str(wrapper)
    (node,) = json.loads((runs / "p" / "tree.json").read_text())["nodes"]
    assert node["exit_code"] is not None and MARKER in node["output"], node["output"]
    prompts = [json.dumps(b.get("messages")) for b in stub.bodies]
    assert prompts and all(FAKE_PACKAGE in p for p in prompts), "the prompt did not list the interpreter's packages"


def test_graphs_run_without_python_lists_this_interpreters_packages(tmp_path, stub):
    task = make_toy_task(tmp_path / "toy")
    stub.bodies.clear()
    assert main(["--task", str(task), "--base-url", stub.base_url, "--steps", "1", "--run-dir",
                 str(tmp_path / "runs"), "--exec-timeout", "20"]) == 0
    prompts = [json.dumps(b.get("messages")) for b in stub.bodies]
    installed = [re.search(r"Installed packages you may use: ([^.]*)", p) for p in prompts]
    assert prompts and all(m and "lightgbm" not in m.group(1) for m in installed)
    assert all("- Not installed, so importing them fails: lightgbm, " in p for p in prompts)


def _error_of(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_python_is_one_line_and_writes_nothing(tmp_path, stub, capsys):
    task = make_toy_task(tmp_path / "toy")
    runs = tmp_path / "runs"
    not_exec = tmp_path / "not-exec"
    not_exec.write_text("#!/bin/sh\n")
    not_python = tmp_path / "not-python"
    not_python.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    not_python.chmod(0o755)
    for path, pattern in ((tmp_path / "missing", "no such file"), (not_exec, "not executable"),
                          (not_python, "does not run Python (exit 3): broken")):
        assert main(["--task", str(task), "--base-url", stub.base_url, "--python", str(path),
                     "--run-dir", str(runs)]) == 2
        line = _error_of(capsys)
        assert pattern in line and str(path) in line, line
    assert not runs.exists()


def test_resume_checks_and_can_move_the_interpreter(tmp_path, stub, capsys):
    task = make_toy_task(tmp_path / "toy")
    runs = tmp_path / "runs"
    first = make_wrapper(tmp_path / "a")
    args = ["--base-url", stub.base_url, "--run-dir", str(runs), "--exec-timeout", "20"]
    assert main(["--task", str(task), "--python", str(first), "--steps", "1", "--run-id", "r", *args]) == 0
    first.unlink()  # the stored interpreter is gone: resuming is refused in one line
    capsys.readouterr()
    assert main(["--resume", "r", "--steps", "2", *args]) == 2
    assert "no such file" in _error_of(capsys)
    moved = make_wrapper(tmp_path / "b")
    assert main(["--resume", "r", "--steps", "2", "--python", str(moved), *args]) == 0
    assert json.loads((runs / "r" / "run.json").read_text())["python"] == str(moved)
    nodes = json.loads((runs / "r" / "tree.json").read_text())["nodes"]
    assert len(nodes) == 2 and MARKER in nodes[1]["output"]
