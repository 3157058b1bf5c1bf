"""SIGKILL the agent at several points; `--resume` must finish with the same tree as an
uninterrupted run against the same deterministic scripted endpoint."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_toy_task
from tests.doubles.stub import StubServer

STEPS = 7
COMPARED = ("id", "step", "parent_id", "stage", "plan", "code", "metric", "is_buggy",
            "bug_reason", "review", "exit_code", "has_submission", "debug_depth", "holdout_score",
            "test_score")


def start(args, env=None):
    proc = subprocess.Popen([sys.executable, "-m", "graphs.run", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    return proc, lines


def wait_for(cond, timeout=90):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def run_dirs(runs: Path) -> list[Path]:
    """The run directories under `runs` (a killed run's claim leaves its lock file beside them)."""
    return [p for p in runs.iterdir() if p.is_dir()] if runs.exists() else []


def tree_of(run_path: Path):
    nodes = json.loads((run_path / "tree.json").read_text())["nodes"]
    return [{k: n[k] for k in COMPARED} for n in nodes]


@pytest.fixture(scope="module")
def stub():
    # slow enough that a kill can land inside an LLM call or a script's execution (a script
    # sleeps 2 s before it prints: on a loaded machine, 0.6 s and once (a fresh-clone CI on
    # 2 cores) over 1 s passed between the script's log appearing and the kill landing)
    with StubServer(delay_s=0.3, exec_sleep=2.0) as server:
        yield server


def uninterrupted(tmp: Path, stub: StubServer, steps: int = STEPS) -> tuple[Path, list[dict]]:
    """A run nobody kills, in SQLite files: (its task, its tree)."""
    task = make_toy_task(tmp / "toy")
    out = subprocess.run([sys.executable, "-m", "graphs.run", "--task", str(task), "--base-url",
                          stub.base_url, "--steps", str(steps), "--run-dir", str(tmp / "runs"),
                          "--exec-timeout", "30", "--seed", "7"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    (run_path,) = (tmp / "runs").iterdir()
    return task, tree_of(run_path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, stub):
    return uninterrupted(tmp_path_factory.mktemp("ref"), stub)


def resumed_to(runs: Path, run_id: str, expected: list[dict]) -> None:
    """`--resume` the run; it finishes with the tree an uninterrupted run built, none lost or repeated."""
    resumed = subprocess.run([sys.executable, "-m", "graphs.run", "--resume", run_id, "--run-dir", str(runs)],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    got = tree_of(runs / run_id)
    assert [n["id"] for n in got] == [f"{s:05d}-0" for s in range(len(expected))]
    assert got == expected


def scripts_running_under(run_path: Path) -> list[int]:
    """Pids of processes whose working directory is inside the run (its scripts)."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(run_path) + "/"):
            found.append(int(name))
    return found


def _between_nodes(lines, run_path, stub):
    return lambda: any("node 00002-0" in line for line in lines)


def _mid_llm_call(lines, run_path, stub):
    base = stub.requests
    return lambda: stub.requests >= base + 5  # a request is in flight (0.3 s delay)


def _mid_execution(lines, run_path, stub):
    return lambda: (run_path() / "workspaces" / "00003-0" / "output.log").exists()


def _mid_review(lines, run_path, stub):
    return lambda: any("node 00001-0" in line for line in lines) and stub.requests % 2 == 0


@pytest.mark.parametrize("kill_when", [_between_nodes, _mid_llm_call, _mid_execution, _mid_review])
def test_killed_run_resumes_to_the_same_tree(tmp_path, stub, reference, kill_when):
    task, expected = reference
    runs = tmp_path / "runs"

    def run_path():
        found = run_dirs(runs)
        return found[0] if found else runs / "pending"

    proc, lines = start(["--task", task, "--base-url", stub.base_url, "--steps", STEPS,
                         "--run-dir", runs, "--exec-timeout", "30", "--seed", "7"])
    wait_for(kill_when(lines, run_path, stub))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    run_id = run_path().name
    assert not (run_path() / "tree.json").exists()  # it really died mid-run
    plan = (run_path() / "holdout" / "plan.json").read_bytes()  # the split was made before any step
    # no script outlives the agent (a killed process may take a moment to exit on a loaded machine)
    wait_for(lambda: not scripts_running_under(run_path()), timeout=5)
    if kill_when is _mid_execution:  # every scripted script prints only after its 1 s sleep:
        log = run_path() / "workspaces" / "00003-0" / "output.log"
        assert log.read_text() == ""  # the script died with the agent instead of finishing
    resumed = subprocess.run([sys.executable, "-m", "graphs.run", "--resume", run_id,
                              "--run-dir", str(runs)], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stdout
    assert (run_path() / "holdout" / "plan.json").read_bytes() == plan  # the same held rows
    assert "validation held by the harness" in resumed.stdout
    got = tree_of(run_path())
    assert [n["id"] for n in got] == [f"{s:05d}-0" for s in range(STEPS)]  # none lost or repeated
    assert got == expected
    assert not (runs / f"{run_id}.lock").exists()  # the dead run's claim was taken over and released


def test_finished_run_can_be_extended(tmp_path, stub):
    task = make_toy_task(tmp_path / "toy")
    runs = tmp_path / "runs"
    first = subprocess.run([sys.executable, "-m", "graphs.run", "--task", str(task), "--base-url",
                            stub.base_url, "--steps", "2", "--run-dir", str(runs), "--exec-timeout", "30"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    (run_path,) = runs.iterdir()
    more = subprocess.run([sys.executable, "-m", "graphs.run", "--resume", run_path.name,
                           "--run-dir", str(runs), "--steps", "4"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert more.returncode == 0, more.stderr
    assert [n["step"] for n in json.loads((run_path / "tree.json").read_text())["nodes"]] == [0, 1, 2, 3]


def test_repeated_kills_at_arbitrary_moments(tmp_path, stub, reference):
    """Kill, resume, kill again... at staggered times until the run completes by itself."""
    task, expected = reference
    runs = tmp_path / "runs"
    args = ["--task", task, "--base-url", stub.base_url, "--steps", STEPS, "--run-dir", runs,
            "--exec-timeout", "30", "--seed", "7"]
    kills = 0
    for delay in [1.7, 2.3, 3.1, 1.1, 2.9, 3.7, 60.0, 60.0]:
        proc, _ = start(args)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
            started = run_dirs(runs)
            if started and (started[0] / "run.json").exists():  # else: killed before it began
                args = ["--resume", started[0].name, "--run-dir", runs]
            continue
        assert proc.returncode == 0
        break
    assert kills >= 3
    (finished,) = [d for d in runs.iterdir() if (d / "tree.json").exists()]
    assert tree_of(finished) == expected


def test_killed_fan_out_reruns_only_unfinished_candidates(tmp_path):
    """SIGKILL a self-consistency fan-out while two of its four candidates have finished and two
    are still running: the resume re-executes only those two, and the tree matches a run that
    was never interrupted."""
    task = make_toy_task(tmp_path / "toy")
    with StubServer(exec_sleep=1.5) as server:  # honours n: all samples come from one request
        def args(runs, run_id):
            return ["--task", task, "--base-url", server.base_url, "--strategy", "self_consistency",
                    "--samples", "4", "--workers", "2", "--steps", "2", "--run-dir", runs,
                    "--exec-timeout", "30", "--run-id", run_id, "--sandbox", "plain",
                    "--repairs", "0",  # a repaired branch reruns as a unit: test_strategy_repairs.py
                    # the stub's scripts all copy the sample, so on the held split they tie: no
                    # judge call, the requests after the resume are countable
                    "--no-judge"]

        ref = subprocess.run([sys.executable, "-m", "graphs.run", *map(str, args(tmp_path / "ref", "sc"))],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert ref.returncode == 0, ref.stdout + ref.stderr
        runs = tmp_path / "runs"
        proc, _ = start(args(runs, "sc"))
        fan_out = runs / "sc" / "workspaces" / "00000-0"

        def finished(i):  # every scripted script writes its output only after its sleep
            log = fan_out / f"s{i}" / "output.log"
            return log.is_file() and log.stat().st_size > 0

        wait_for(lambda: sum(finished(i) for i in range(4)) == 2)
        time.sleep(0.4)  # the two finished branches have reported back and been checkpointed
        done = [i for i in range(4) if finished(i)]
        assert len(done) == 2  # the other two are still sleeping in their scripts
        stamps = {i: (fan_out / f"s{i}" / "output.log").stat().st_mtime_ns for i in done}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        requests_before = server.requests
        resumed = subprocess.run([sys.executable, "-m", "graphs.run", "--resume", "sc", "--run-dir", str(runs)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for i in done:  # the finished candidates were not executed again
        assert (fan_out / f"s{i}" / "output.log").stat().st_mtime_ns == stamps[i]
    for i in set(range(4)) - set(done):
        assert finished(i)
    # after the resume: review of step 0, then step 1's one sampling request and its review
    assert server.requests - requests_before == 3
    assert tree_of(runs / "sc") == tree_of(tmp_path / "ref" / "sc")


KILL_IN_CHECKPOINT = """
import contextlib, os, signal
from langgraph.checkpoint.sqlite import SqliteSaver

_cursor = SqliteSaver.cursor
_target = int(os.environ["ITS_MLE_KILL_AT_CHECKPOINT"])
_seen = [0]


class _Cursor:
    def __init__(self, cur):
        self._cur = cur

    def execute(self, sql, *args):
        result = self._cur.execute(sql, *args)
        if sql.lstrip().startswith("INSERT OR REPLACE INTO checkpoints"):
            _seen[0] += 1
            if _seen[0] == _target:  # the row is written, the transaction not committed
                open(os.environ["ITS_MLE_KILL_MARK"], "w").write(str(_seen[0]))
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    def __getattr__(self, name):
        return getattr(self._cur, name)


@contextlib.contextmanager
def _killing_cursor(self, transaction=True):
    with _cursor(self, transaction) as cur:
        yield _Cursor(cur)


SqliteSaver.cursor = _killing_cursor
"""


@pytest.mark.parametrize("nth", [4, 13])
def test_killed_mid_checkpoint_write_resumes_to_the_same_tree(tmp_path, stub, reference, nth):
    """SIGKILL inside the SQLite transaction that writes a checkpoint (row inserted, not committed)."""
    task, expected = reference
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_IN_CHECKPOINT)
    mark = tmp_path / "killed-at"
    env = {**os.environ, "PYTHONPATH": f"{hook}:{ROOT}", "ITS_MLE_KILL_AT_CHECKPOINT": str(nth),
           "ITS_MLE_KILL_MARK": str(mark)}
    runs = tmp_path / "runs"
    proc, lines = start(["--task", task, "--base-url", stub.base_url, "--steps", STEPS, "--run-dir", runs,
                         "--exec-timeout", "30", "--seed", "7", "--run-id", "cp"], env=env)
    assert proc.wait(timeout=120) == -signal.SIGKILL, "".join(lines)
    assert mark.read_text() == str(nth) and not (runs / "cp" / "tree.json").exists()
    resumed_to(runs, "cp", expected)


KILL_AFTER_NODE = """
import importlib, os, signal

_module, _name = os.environ["ITS_MLE_KILL_STORE"].rsplit(".", 1)
_store = getattr(importlib.import_module(_module), _name)
_put = _store.put


def _killing_put(self, node):
    _put(self, node)
    if node.step == int(os.environ["ITS_MLE_KILL_AFTER_STEP"]):  # the node is written, the
        os.kill(os.getpid(), signal.SIGKILL)  # superstep's checkpoint is not


_store.put = _killing_put
"""


def killed_after_a_node(tmp_path: Path, store: str, step: int) -> dict[str, str]:
    """The environment of a run that SIGKILLs itself right after `store`'s put of step `step`'s
    node: inside the record task, before its checkpoint."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_AFTER_NODE)
    return {**os.environ, "PYTHONPATH": f"{hook}:{ROOT}", "ITS_MLE_KILL_STORE": store,
            "ITS_MLE_KILL_AFTER_STEP": str(step)}


def test_killed_inside_record_resumes_without_its_workspaces(tmp_path, stub, reference):
    """Killed after step 2's node was written but before its checkpoint, then resumed where the
    step's workspace is gone (as on another machine): the step runs again and its node keeps the
    id the killed task wrote (overwritten, not a second one beside it)."""
    task, expected = reference
    runs = tmp_path / "runs"
    proc, lines = start(["--task", task, "--base-url", stub.base_url, "--steps", STEPS, "--run-dir", runs,
                         "--exec-timeout", "30", "--seed", "7", "--run-id", "rec"],
                        env=killed_after_a_node(tmp_path, "nodes.tree.NodeStore", 2))
    assert proc.wait(timeout=120) == -signal.SIGKILL, "".join(lines)
    ran = sorted(p.name for p in (runs / "rec" / "workspaces").iterdir())
    assert ran[-1].startswith("00002-")
    shutil.rmtree(runs / "rec" / "workspaces")
    resumed_to(runs, "rec", expected)
    again = sorted(p.name for p in (runs / "rec" / "workspaces").iterdir() if p.name.startswith("00002-"))
    assert again and ran[-1] not in again  # step 2's script ran again, in a workspace of its own
