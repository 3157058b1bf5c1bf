"""benchmark.sweep at scale: a sweep file, cells in child processes and on a real local Ray, a Ray
worker killed mid-cell, two drivers on one grid, and the endpoint cap of the scheduling loop."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmark.cell import CellJob, CellOutcome
from benchmark.executors import Executor
from benchmark.sweep import main, plan_for
from serving.process import free_port
from tests.conftest import ROOT, make_toy_task
from tests.doubles.stub import StubServer
from tests.unit.test_kill_resume import wait_for

# what differs between two runs of the same grid: times, and where the outputs are
TIMING = {"llm_seconds", "exec_seconds", "wall_seconds", "submission_path", "mean_llm_seconds",
          "mean_wall_seconds", "used_seconds", "mean_used_seconds"}
TREE_FIELDS = ("id", "step", "parent_id", "stage", "plan", "code", "metric", "is_buggy", "exit_code",
               "has_submission", "holdout_score", "test_score")


def _tasks(root: Path) -> list[Path]:
    out = []
    for name, outcome in (("toy-a", "working"), ("toy-b", "crash")):
        task = make_toy_task(root / name)
        (task / "config.yaml").write_text((task / "config.yaml").read_text().replace("id: toy", f"id: {name}"))
        (task / "description.md").write_text((task / "description.md").read_text() + f"\nstub-outcome: {outcome}\n")
        out.append(task)
    return out


def _grid(tasks: list[Path], url: str, out: Path, *extra: str) -> list[str]:
    return ["--tasks", *map(str, tasks), "--strategies", "aide", "self_reflection", "--models", f"m@{url}",
            "--seeds", "2", "--steps", "2", "--exec-timeout", "30", "--out", str(out), *extra]


def _table(out: Path, name: str) -> pd.DataFrame:
    frame = pd.read_csv(out / name)
    keys = [c for c in ("run_id", "model", "strategy") if c in frame.columns]
    return frame.drop(columns=[c for c in frame.columns if c in TIMING]).sort_values(keys).reset_index(drop=True)


def _tree(run_path: Path) -> list[dict]:
    return [{k: n[k] for k in TREE_FIELDS} for n in json.loads((run_path / "tree.json").read_text())["nodes"]]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The same 8-cell grid (2 tasks x 2 strategies x 2 seeds) run in this process, one cell at a time."""
    tmp = tmp_path_factory.mktemp("grid")
    tasks = _tasks(tmp)
    with StubServer(model="m") as stub:
        serial = tmp / "serial"
        assert main(_grid(tasks, stub.base_url, serial)) == 0
        yield {"tasks": tasks, "stub": stub, "serial": serial, "tmp": tmp}


def _same_tables(a: Path, b: Path) -> None:
    for name in ("per_run.csv", "results.csv"):
        pd.testing.assert_frame_equal(_table(a, name), _table(b, name), check_exact=False, rtol=1e-9)
    for run in sorted((a / "runs").glob("*/tree.json")):
        assert _tree(run.parent) == _tree(b / "runs" / run.parent.name), run.parent.name


def test_local_workers_write_the_serial_table(grid):
    out = grid["tmp"] / "local2"
    assert main(_grid(grid["tasks"], grid["stub"].base_url, out, "--workers", "2")) == 0
    assert len(pd.read_csv(out / "per_run.csv")) == 8
    _same_tables(grid["serial"], out)
    # the cells really ran in child processes: their logs name pids other than this one
    pids = {int(p.read_text()) for p in (out / "logs").glob("*.pid")}
    assert pids and os.getpid() not in pids


def test_ray_writes_the_serial_table(grid, capsys):
    out = grid["tmp"] / "ray"
    assert main(_grid(grid["tasks"], grid["stub"].base_url, out, "--executor", "ray", "--workers", "2")) == 0
    printed = capsys.readouterr().out
    assert "started a local Ray with 2 CPUs" in printed
    _same_tables(grid["serial"], out)
    pids = {int(p.read_text()) for p in (out / "logs").glob("*.pid")}
    assert pids and os.getpid() not in pids
    saved = yaml.safe_load((out / "sweep.yaml").read_text())
    assert saved["executor"] == "ray" and saved["workers"] == 2 and saved["seeds"] == 2


@contextlib.contextmanager
def _ray_head(token: str | None = None):
    """A real Ray cluster started as users start one (`ray start --head`, 2 CPUs, the scripted
    endpoint's resource declared), in its own process group; its address, then it is stopped.
    Token auth is off unless `token` is given (Ray turns it on by itself where ~/.ray/auth_token
    exists, which an earlier local Ray may have written)."""
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay short
    log = temp / "head.log"
    env = {**os.environ, "RAY_AUTH_MODE": "token" if token else "disabled"}
    if token:
        env["RAY_AUTH_TOKEN"] = token
    with log.open("w") as sink:
        head = subprocess.Popen(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port", str(port),
             "--num-cpus", "2", "--resources", json.dumps({"endpoint:m": 1}), "--include-dashboard=false",
             "--disable-usage-stats", "--temp-dir", str(temp)],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    try:
        wait_for(lambda: "Ray runtime started" in log.read_text() or head.poll() is not None, timeout=180)
        assert head.poll() is None, log.read_text()[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def ray_cluster():
    with _ray_head() as address:
        yield address


def test_a_sweep_on_a_started_ray_cluster_writes_the_serial_table(grid, ray_cluster, capsys):
    out = grid["tmp"] / "cluster"
    assert main(_grid(grid["tasks"], grid["stub"].base_url, out, "--executor", "ray",
                      "--ray-address", ray_cluster, "--endpoint-concurrency", "1")) == 0
    printed = capsys.readouterr().out
    assert f"connected to the Ray cluster at {ray_cluster}" in printed
    assert "declares no" not in printed  # the cluster's own endpoint:m resource keeps the cap of 1
    _same_tables(grid["serial"], out)
    pids = {int(p.read_text()) for p in (out / "logs").glob("*.pid")}
    assert pids and os.getpid() not in pids
    assert yaml.safe_load((out / "sweep.yaml").read_text())["ray_address"] == ray_cluster


def test_a_cluster_that_wants_a_token_is_one_line_and_exit_2(grid):
    # in a process of its own: a local ray.init() (an earlier test's) sets RAY_AUTH_MODE=token in
    # its process, after which that process sends the token of ~/.ray/auth_token by itself
    out = grid["tmp"] / "token"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    with _ray_head(token=secrets.token_hex(32)) as address:
        args = _grid(grid["tasks"], grid["stub"].base_url, out, "--executor", "ray", "--ray-address", address)
        proc = subprocess.run([sys.executable, "-m", "benchmark.sweep", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: the Ray cluster at {address} requires its auth token: run the sweep with "
        "RAY_AUTH_MODE=token (the token from ~/.ray/auth_token or $RAY_AUTH_TOKEN)")
    assert (out / "sweep.yaml").is_file() and not list((out / "runs").iterdir())  # nothing ran


def test_a_ray_address_nobody_answers_at_exits_2_before_writing(grid, capsys):
    port = free_port()  # free once closed: nothing listens there
    out = grid["tmp"] / "nobody"
    args = _grid(grid["tasks"], grid["stub"].base_url, out, "--executor", "ray")
    assert main([*args, "--ray-address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: no Ray cluster answers at 127.0.0.1:{port}") and len(err.splitlines()) == 1
    assert main([*args, "--ray-address", "headnode"]) == 2
    assert "is not HOST:PORT, ray://HOST:PORT or auto" in capsys.readouterr().err
    assert not out.exists()


def test_each_endpoint_cap_follows_the_workers_the_user_asked_for(grid):
    """Locally the cap defaults to --workers (1); on Ray with no --workers the cells may use the
    whole cluster, so no cap; an explicit --workers or --endpoint-concurrency is kept on both."""
    base = _grid(grid["tasks"], grid["stub"].base_url, grid["tmp"] / "unused")
    assert plan_for(base).model_caps == {"m": 1}
    assert plan_for([*base, "--executor", "ray"]).model_caps == {}
    assert plan_for([*base, "--executor", "ray", "--workers", "1"]).model_caps == {"m": 1}
    assert plan_for([*base, "--executor", "ray", "--endpoint-concurrency", "3"]).model_caps == {"m": 3}
    assert plan_for([*base, "--workers", "2"]).model_caps == {"m": 2}


def test_local_model_cells_that_share_a_machine_share_its_cores(grid, monkeypatch):
    """An embedded model's server runs inside its cell and takes every core; several such cells
    on one machine would each start a server of all the cores, which llama.cpp cannot survive
    (~1 token/s instead of ~25 on 2 cores). So each gets the cores over the workers (on Ray: the
    CPUs a cell reserves), when it starts and when it resumes; a served model's cells get nothing."""
    import benchmark.sweep as sweep_mod

    monkeypatch.setattr(sweep_mod, "usable_cores", lambda: 4)
    base = _grid(grid["tasks"], grid["stub"].base_url, grid["tmp"] / "unused")
    at = base.index("--models") + 1
    base[at:at + 1] = ["local:0.5b", base[at]]

    def threads(*extra: str) -> dict[str, tuple[str | None, str | None]]:
        plan = plan_for([*base, *extra])
        out = {}
        for cell in plan.cells:
            job = plan.job(cell)
            got = [argv[argv.index("--local-threads") + 1] if "--local-threads" in argv else None
                   for argv in (job.start_argv, job.resume_argv)]
            out[cell.model] = tuple(got)
        return out

    assert threads() == {"local-0.5b": (None, None), "m": (None, None)}  # one cell at a time: every core
    assert threads("--workers", "2") == {"local-0.5b": ("2", "2"), "m": (None, None)}
    assert threads("--workers", "3") == {"local-0.5b": ("1", "1"), "m": (None, None)}
    assert threads("--executor", "ray") == {"local-0.5b": ("1", "1"), "m": (None, None)}
    assert threads("--executor", "ray", "--cell-cpus", "2") == {"local-0.5b": ("2", "2"), "m": (None, None)}


def test_a_killed_ray_worker_is_retried_and_its_cell_resumes(tmp_path):
    (task,) = _tasks(tmp_path)[:1]
    with StubServer(model="m", exec_sleep=1.0) as stub:
        args = ["--tasks", str(task), "--strategies", "aide", "--models", f"m@{stub.base_url}", "--seeds", "1",
                "--steps", "4", "--exec-timeout", "30"]
        ref = tmp_path / "ref"
        assert main([*args, "--out", str(ref)]) == 0
        out = tmp_path / "ray"
        result: list[int] = []
        driver = threading.Thread(target=lambda: result.append(
            main([*args, "--out", str(out), "--executor", "ray", "--workers", "1"])))
        driver.start()
        (run_id,) = [p.name for p in (ref / "runs").iterdir() if p.is_dir()]
        pid_file = out / "logs" / f"{run_id}.pid"
        # kill the worker once the run has finished a node and is executing another's script
        wait_for(lambda: (out / "runs" / run_id / "workspaces" / "00002-0").exists() and pid_file.exists(),
                 timeout=240)
        victim = int(pid_file.read_text())
        assert victim != os.getpid()
        os.kill(victim, signal.SIGKILL)
        driver.join(timeout=600)
    assert result == [0]
    assert int(pid_file.read_text()) != victim  # a new worker took the cell
    log = (out / "logs" / f"{run_id}.log").read_text()
    assert log.count("$ python -m graphs.run") == 2 and f"--resume {run_id}" in log
    assert _tree(out / "runs" / run_id) == _tree(ref / "runs" / run_id)
    per_run = pd.read_csv(out / "per_run.csv")
    assert per_run["status"].tolist() == ["ok"]


@pytest.mark.parametrize("claims", ["lock files", "postgres"])
def test_two_drivers_on_one_grid_never_run_a_cell_twice(tmp_path, request, claims):
    tasks = _tasks(tmp_path)[:1]  # 4 cells for 2 drivers with 2 workers each: they must meet
    out = tmp_path / "out"
    database = ["--checkpointer", request.getfixturevalue("postgres_url")] if claims == "postgres" else []
    with StubServer(model="m", exec_sleep=0.5) as stub:
        argv = [sys.executable, "-m", "benchmark.sweep",
                *_grid(tasks, stub.base_url, out, "--workers", "2", *database)]
        drivers = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                   for _ in range(2)]
        outputs = [d.communicate(timeout=900)[0] for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outputs
    for text in outputs:  # each driver ends with the whole table
        assert "sweep: 4/4 runs finished" in text
    logs = sorted((out / "logs").glob("*.log"))
    assert len(logs) == 4
    for log in logs:  # started once, by one driver, never resumed by the other
        assert log.read_text().count("$ python -m graphs.run") == 1, log.name
    assert any("running elsewhere" in text for text in outputs)  # they did meet on some cell
    if database:  # the cells kept their checkpoints in the database, not in their directories
        assert not list((out / "runs").glob("*/checkpoints.sqlite"))
        assert all(json.loads(p.read_text())["checkpointer"] for p in (out / "runs").glob("*/run.json"))


def test_a_sweep_file_sets_each_strategy_and_model(tmp_path, capsys):
    (task,) = _tasks(tmp_path)[:1]
    out = tmp_path / "out"
    with StubServer(model="m") as stub:
        config = tmp_path / "sweep.yaml"
        config.write_text(yaml.safe_dump({
            "tasks": [str(task)], "seeds": 1, "steps": 2, "out": str(out),
            "settings": {"exec-timeout": 45, "holdout": False}, "budget": {"tokens": 123456},
            "strategies": ["aide", {"name": "self_consistency", "label": "sc2", "settings": {"samples": 2}},
                           {"name": "self_consistency", "label": "sc3", "settings": {"samples": 3}}],
            "models": [{"spec": f"m@{stub.base_url}", "settings": {"max-tokens": 1500, "temperature": 0.4}}],
        }))
        code = main(["--config", str(config), "--", "--repairs", "1"])
        assert code == 0, [line for line in capsys.readouterr().out.splitlines() if "FAILED" in line]
    runs = {p.name.split("__")[1]: json.loads((p / "run.json").read_text())
            for p in (out / "runs").iterdir() if p.is_dir()}
    assert sorted(runs) == ["aide", "sc2", "sc3"]
    assert runs["sc2"]["strategy"] == runs["sc3"]["strategy"] == "self_consistency"
    assert (runs["sc2"]["samples"], runs["sc3"]["samples"]) == (2, 3)
    for settings in runs.values():
        assert settings["exec_timeout"] == 45 and settings["holdout"] is False and settings["repairs"] == 1
        assert settings["max_tokens"] == 1500 and settings["temperature"] == 0.4
        assert settings["budget_tokens"] == 123456 and settings["budget_seconds"] is None
    assert sorted(pd.read_csv(out / "results.csv")["strategy"]) == ["aide", "sc2", "sc3"]
    assert set(pd.read_csv(out / "per_run.csv")["budget_tokens"]) == {123456}
    saved = yaml.safe_load((out / "sweep.yaml").read_text())
    assert [s["label"] for s in saved["strategies"]] == [None, "sc2", "sc3"]
    assert saved["passthrough"] == ["--repairs", "1"]


@pytest.mark.parametrize("settings, message", [
    ({"exec-timout": 30}, "'exec-timout' is not a graphs.run setting (did you mean 'exec-timeout'?)"),
    ({"seed": 3}, "'seed' is set by the grid itself"),
    ({"repairs": -1}, "settings: argument --repairs"),
    ({"llm-review": "no"}, "'llm-review' is a switch"),
])
def test_a_bad_sweep_file_exits_2_without_writing(tmp_path, capsys, settings, message):
    (task,) = _tasks(tmp_path)[:1]
    config = tmp_path / "sweep.yaml"
    out = tmp_path / "out"
    config.write_text(yaml.safe_dump({"tasks": [str(task)], "seeds": 1, "steps": 1, "out": str(out),
                                      "strategies": ["aide"], "models": ["local:0.5b"], "settings": settings}))
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_a_sweep_without_a_grid_or_with_a_broken_file_exits_2(tmp_path, capsys):
    assert main(["--tasks", "x"]) == 2
    assert "the grid needs --strategies, --models, --seeds, --steps" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [a\n")
    assert main(["--config", str(bad)]) == 2
    assert "is not valid YAML" in capsys.readouterr().err
    bad.write_text(yaml.safe_dump({"tasks": ["a"], "seeds": 0, "steps": 1, "strategies": ["aide"],
                                   "models": ["local:0.5b"]}))
    assert main(["--config", str(bad)]) == 2
    assert "seeds: Input should be greater than or equal to 1" in capsys.readouterr().err


class _Recording(Executor):
    """An executor whose jobs finish when the test says; records what ran at once."""

    def __init__(self, slots: int, busy_once: set[str] = frozenset()) -> None:
        self.slots = slots
        self.running: list[CellJob] = []
        self.peak: dict[str, int] = {}
        self.order: list[str] = []
        self.busy_once = set(busy_once)

    def _submit(self, job: CellJob) -> str:
        self.running.append(job)
        self.order.append(job.run_id)
        now = sum(1 for j in self.running if j.endpoint == job.endpoint)
        self.peak[job.endpoint] = max(self.peak.get(job.endpoint, 0), now)
        assert len(self.running) <= self.slots
        return job.run_id

    def _wait(self, handles: list[str]) -> list[tuple[str, CellOutcome]]:
        job = self.running.pop(0)  # the oldest finishes first
        status = "busy" if job.run_id in self.busy_once else "finished"
        self.busy_once.discard(job.run_id)
        return [(job.run_id, CellOutcome(job.run_id, status))]


def _job(run_id: str, endpoint: str) -> CellJob:
    return CellJob(run_id=run_id, run_path=f"/x/{run_id}", log_path=f"/x/{run_id}.log", start_argv=(),
                   resume_argv=(), endpoint=endpoint)


def test_the_scheduling_loop_keeps_each_endpoint_under_its_cap(monkeypatch):
    monkeypatch.setattr("benchmark.executors.BUSY_RETRY_S", 0.01)
    jobs = [_job(f"a{i}", "a") for i in range(5)] + [_job(f"b{i}", "b") for i in range(5)]
    executor = _Recording(slots=4, busy_once={"a1"})
    done: list[str] = []
    busy: list[str] = []
    executor.run(jobs, lambda j, o: done.append(j.run_id), caps={"a": 1, "b": 3},
                 on_busy=lambda j, o: busy.append(j.run_id))
    assert sorted(done) == sorted(j.run_id for j in jobs)  # every job once, the busy one after its retry
    assert busy == ["a1"] and executor.order.count("a1") == 2
    assert executor.peak == {"a": 1, "b": 3}
