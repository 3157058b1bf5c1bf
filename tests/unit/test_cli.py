"""The command line: bad input gives one line and exit code 2, and loses nothing."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, make_toy_task
from tests.doubles.stub import StubServer


def cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "graphs.run", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(proc, pattern):
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert pattern in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def stub():
    with StubServer() as server:
        yield server


def test_missing_task_dir(tmp_path, stub):
    proc = cli("--task", tmp_path / "nope", "--base-url", stub.base_url, "--run-dir", tmp_path / "runs")
    assert_one_line_error(proc, "does not exist")
    assert not (tmp_path / "runs").exists()


def test_malformed_config(tmp_path, stub):
    task = make_toy_task(tmp_path / "t")
    (task / "config.yaml").write_text("id: t\ndataset:\n  answers: missing/answers.csv\n")
    proc = cli("--task", task, "--base-url", stub.base_url, "--run-dir", tmp_path / "runs")
    assert_one_line_error(proc, "answers file 'missing/answers.csv' does not exist")


def test_unknown_strategy(tmp_path, stub):
    proc = cli("--task", make_toy_task(tmp_path / "t"), "--strategy", "telepathy",
               "--base-url", stub.base_url, "--run-dir", tmp_path / "runs")
    assert_one_line_error(proc, "unknown strategy 'telepathy'")


def test_unreachable_endpoint_writes_nothing(tmp_path):
    proc = cli("--task", make_toy_task(tmp_path / "t"), "--base-url", "http://127.0.0.1:9/v1",
               "--run-dir", tmp_path / "runs")
    assert_one_line_error(proc, "cannot reach the LLM endpoint")
    assert not (tmp_path / "runs").exists()


def test_model_not_served(tmp_path, stub):
    proc = cli("--task", make_toy_task(tmp_path / "t"), "--base-url", stub.base_url,
               "--model", "gpt-17", "--run-dir", tmp_path / "runs")
    assert_one_line_error(proc, "model 'gpt-17' is not served")


@pytest.mark.parametrize("args, pattern", [
    (["--steps", "0"], "--steps: must be at least 1"),
    (["--steps", "many"], "--steps"),
    (["--exec-timeout", "-5"], "--exec-timeout"),
    (["--debug-prob", "1.5"], "--debug-prob"),
    (["--budget-tokens", "0"], "--budget-tokens: must be at least 1"),
    (["--budget-tokens", "lots"], "--budget-tokens"),
    (["--budget-seconds", "0"], "--budget-seconds: must be positive"),
    (["--budget-seconds", "-3.5"], "--budget-seconds: must be positive"),
    (["--bogus-flag"], "unrecognized arguments"),
])
def test_invalid_flags(tmp_path, args, pattern):
    proc = cli("--task", tmp_path, *args)
    assert_one_line_error(proc, pattern)


def test_no_task(tmp_path):
    assert_one_line_error(cli("--run-dir", tmp_path), "--task DIR is required")


def test_unknown_local_model_and_corrupt_weights(tmp_path):
    task = make_toy_task(tmp_path / "t")
    proc = cli("--task", task, "--local-model", "7b", "--run-dir", tmp_path / "runs")
    assert_one_line_error(proc, "unknown local model '7b'")
    # a cached embedded model that fails its hash is refused, not used
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    from serving.local import LOCAL_MODELS

    bad = cache / "models" / LOCAL_MODELS["0.5b"].filename
    bad.write_bytes(b"not a gguf")
    proc = cli("--task", task, "--local-model", "0.5b", "--run-dir", tmp_path / "runs",
               env={"ITS_MLE_CACHE": str(cache)})
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert bad.exists()  # the user's file is reported, never silently deleted
    assert not (tmp_path / "runs").exists()


def test_resume_unknown_run_and_bad_resume_keeps_files(tmp_path, stub):
    runs = tmp_path / "runs"
    assert_one_line_error(cli("--resume", "nope", "--run-dir", runs), "no run 'nope'")
    task = make_toy_task(tmp_path / "t")
    ok = cli("--task", task, "--base-url", stub.base_url, "--steps", "2", "--run-dir", runs,
             "--exec-timeout", "30")
    assert ok.returncode == 0, ok.stderr
    (run_path,) = runs.iterdir()
    before = {p.name: p.read_bytes() for p in run_path.iterdir() if p.is_file()}
    assert {"tree.json", "summary.json", "run.json", "nodes.sqlite", "checkpoints.sqlite"} <= set(before)
    bad = cli("--resume", run_path.name, "--run-dir", runs, "--base-url", "http://127.0.0.1:9/v1")
    assert_one_line_error(bad, "cannot reach")
    after = {p.name: p.read_bytes() for p in run_path.iterdir() if p.is_file()}
    assert after == before


def test_plain_folder_asks_direction_once_and_writes_outputs(tmp_path, stub):
    task = make_toy_task(tmp_path / "plain", with_config=False)
    runs = tmp_path / "runs"
    proc = cli("--task", task, "--base-url", stub.base_url, "--steps", "3", "--run-dir", runs,
               "--exec-timeout", "30")
    assert proc.returncode == 0, proc.stderr
    assert "higher is better (asked the model)" in proc.stdout
    (run_path,) = runs.iterdir()
    assert proc.stdout.splitlines()[0].startswith(f"run id: {run_path.name}")
    settings = json.loads((run_path / "run.json").read_text())
    assert settings["lower_is_better"] is False and settings["metric_name"] == "accuracy"
    tree = json.loads((run_path / "tree.json").read_text())
    assert len(tree["nodes"]) == 3
    for key in ("id", "parent_id", "stage", "plan", "code", "output_tail", "exit_code", "metric",
                "is_buggy", "review", "prompt_tokens", "completion_tokens", "reasoning_tokens",
                "llm_seconds", "exec_seconds"):
        assert key in tree["nodes"][0]
    summary = json.loads((run_path / "summary.json").read_text())
    # 3 steps: a draft budget of 1 (nodes.operators.draft_budget), then debug or improve
    assert summary["steps"] == 3 and summary["nodes_by_stage"]["draft"] == 1
    assert sum(summary["nodes_by_stage"].values()) == 3
    assert summary["prompt_tokens"] > 0 and summary["wall_seconds"] > 0
    # no grader named: the held rows are scored with ours of the metric the model named
    assert "validation held by the harness: 10 of 40 training rows" in proc.stdout
    assert "scored with grader 'accuracy'" in proc.stdout
    assert summary["selection"]["by"] == "holdout" and summary["selection"]["rows"] == 10
    assert all(n["by_holdout"] for n in tree["nodes"])
    view = run_path / "holdout" / "view"
    assert len((view / "train.csv").read_text().splitlines()) == 31  # header + 30 rows


def test_no_holdout_says_so_and_selects_by_the_metric_lines(tmp_path, stub):
    runs = tmp_path / "runs"
    proc = cli("--task", make_toy_task(tmp_path / "t"), "--base-url", stub.base_url, "--steps", "1",
               "--run-dir", runs, "--exec-timeout", "30", "--no-holdout")
    assert proc.returncode == 0, proc.stderr
    line = ("no held validation split (switched off with --no-holdout): selection uses the scripts' "
            "own METRIC lines")
    assert line in proc.stdout.splitlines()
    (run_path,) = runs.iterdir()
    summary = json.loads((run_path / "summary.json").read_text())
    assert summary["selection"] == {"by": "self_report", "reason": "switched off with --no-holdout",
                                    "line": line}
    assert not (run_path / "holdout" / "view").exists()


def test_bundled_task_run_is_graded_with_medal_report(tmp_path, stub):
    from tasks.prepare import prepare_task

    task = prepare_task("tumor-diagnosis")
    runs = tmp_path / "runs"
    proc = cli("--task", task, "--base-url", stub.base_url, "--steps", "3", "--run-dir", runs,
               "--exec-timeout", "30", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    (run_path,) = runs.iterdir()
    summary = json.loads((run_path / "summary.json").read_text())
    # the scripted solutions submit the sample file (all "benign"): the majority-class score
    board = (task / "leaderboard.csv").read_text().splitlines()
    majority = float(next(line for line in board if line.startswith("majority-class")).split(",")[1])
    assert summary["best_node_test_score"] == pytest.approx(majority, abs=1e-6)
    medals = summary["medals"]
    assert medals["valid_submission"] is True and medals["any_medal"] is False
    assert medals["above_median"] is False and medals["gold_threshold"] >= medals["bronze_threshold"]
    assert "hidden test score of the best node" in proc.stdout
    nodes = json.loads((run_path / "tree.json").read_text())["nodes"]
    assert all((n["test_score"] is not None) == n["has_submission"] for n in nodes)


def test_named_run_id_and_collision(tmp_path, stub):
    task = make_toy_task(tmp_path / "t")
    runs = tmp_path / "runs"
    args = ["--task", task, "--base-url", stub.base_url, "--steps", "1", "--run-dir", runs,
            "--exec-timeout", "30", "--run-id", "cell-a.1"]
    assert cli(*args).returncode == 0
    assert (runs / "cell-a.1" / "summary.json").is_file()
    assert_one_line_error(cli(*args), "already exists")
    assert_one_line_error(cli(*args[:-1], "bad/id"), "may only hold")


def test_r1_defaults_apply_and_can_be_overridden(tmp_path, toy_task):
    """An R1 distill gets temperature 0.6, top-p 0.95 and no system message unless told otherwise."""
    from graphs.run import main
    from tests.doubles.stub import StubServer

    with StubServer(model="deepseek-r1-distill-qwen-7b") as server:
        assert main(["--task", str(toy_task), "--base-url", server.base_url, "--steps", "1", "--run-dir",
                     str(tmp_path / "a"), "--exec-timeout", "30", "--sandbox", "plain"]) == 0
        default = [b for b in server.bodies if "Your job: write" in json.dumps(b)][-1]
        assert default["temperature"] == 0.6 and default["top_p"] == 0.95
        assert [m["role"] for m in default["messages"]] == ["user"]
        assert main(["--task", str(toy_task), "--base-url", server.base_url, "--steps", "1", "--run-dir",
                     str(tmp_path / "b"), "--exec-timeout", "30", "--sandbox", "plain", "--temperature", "0.2",
                     "--top-p", "0.5", "--system-prompt", "on"]) == 0
        chosen = [b for b in server.bodies if "Your job: write" in json.dumps(b)][-1]
        assert chosen["temperature"] == 0.2 and chosen["top_p"] == 0.5
        assert [m["role"] for m in chosen["messages"]] == ["system", "user"]


def test_mlebench_grader_is_used_when_installed(tmp_path, toy_task, monkeypatch):
    """With the `mlebench` package importable, its registry and grade_csv grade the submissions."""
    import sys
    import types

    from grading.hidden import hidden_grader_for
    from tasks.competition import load_competition

    seen = {}

    class Registry:
        def set_data_dir(self, data_dir):
            seen["data_dir"] = data_dir
            return self

        def get_competition(self, competition_id):
            if competition_id != "toy":
                raise ValueError(f"unknown competition {competition_id}")
            return "COMPETITION"

    def grade_csv(path, competition):
        seen["graded"] = (path, competition)
        return types.SimpleNamespace(score=0.42, valid_submission=True)

    grade_mod = types.ModuleType("mlebench.grade")
    grade_mod.grade_csv = grade_csv
    registry_mod = types.ModuleType("mlebench.registry")
    registry_mod.registry = Registry()
    monkeypatch.setitem(sys.modules, "mlebench", types.ModuleType("mlebench"))
    monkeypatch.setitem(sys.modules, "mlebench.grade", grade_mod)
    monkeypatch.setitem(sys.modules, "mlebench.registry", registry_mod)
    comp = load_competition(toy_task)
    grade = hidden_grader_for(comp)
    result = grade(tmp_path / "sub.csv")
    assert (result.score, result.valid) == (0.42, True)
    assert seen == {"data_dir": comp.root.parent, "graded": (tmp_path / "sub.csv", "COMPETITION")}
    # a competition MLE-bench does not know falls back to our own grader
    other = comp.model_copy(update={"id": "not-in-mlebench"})
    ours = hidden_grader_for(other)
    graded_by_ours = ours(comp.sample_submission)  # all-zero labels: our accuracy grader scores it
    assert graded_by_ours.valid and graded_by_ours.score != 0.42


def test_mlebench_grader_scores_the_held_rows_on_their_labels(tmp_path, toy_task, monkeypatch):
    """The held split is graded by MLE-bench's grade_csv too, on a copy of its competition whose
    answers are the held rows' labels (MLE-bench's Competition is a dataclass)."""
    import dataclasses
    import sys
    import types

    from grading.hidden import grading_plan, hidden_grading_plan
    from tasks.competition import load_competition

    @dataclasses.dataclass(frozen=True)
    class Competition:
        id: str
        answers: object

    comp = load_competition(toy_task)
    registry_mod = types.ModuleType("mlebench.registry")
    registry_mod.registry = types.SimpleNamespace(
        set_data_dir=lambda _d: registry_mod.registry,
        get_competition=lambda cid: Competition(cid, comp.answers))
    graded = []

    def grade_csv(path, competition):
        graded.append(competition.answers)
        return types.SimpleNamespace(score=0.5, valid_submission=True)

    grade_mod = types.ModuleType("mlebench.grade")
    grade_mod.grade_csv = grade_csv
    monkeypatch.setitem(sys.modules, "mlebench", types.ModuleType("mlebench"))
    monkeypatch.setitem(sys.modules, "mlebench.grade", grade_mod)
    monkeypatch.setitem(sys.modules, "mlebench.registry", registry_mod)
    held, line = grading_plan(comp, tmp_path / "held.csv")
    hidden, _ = hidden_grading_plan(comp)
    held(tmp_path / "a.csv")
    hidden(tmp_path / "b.csv")
    assert "MLE-bench" in line and graded == [tmp_path / "held.csv", comp.answers]


def _no_description(t):
    (t / "description.md").unlink()


def _no_data(t):
    for f in (t / "prepared" / "public").iterdir():
        f.unlink()


def _answers_named_but_missing(t):  # an unknown grader is not bad input (test_mlebench_layout.py)
    (t / "prepared" / "private" / "answers.csv").unlink()


def _undecodable_description(t):
    (t / "description.md").write_bytes(b"\xff\xfe\x00 not text")


def _description_is_a_directory(t):
    (t / "description.md").unlink()
    (t / "description.md").mkdir()


def _binary_sample_submission(t):
    (t / "prepared" / "public" / "sample_submission.csv").write_bytes(b"")


def _bad_yaml(t):
    (t / "config.yaml").write_text("id: [unclosed\n")


def _config_not_a_mapping(t):
    (t / "config.yaml").write_text("- just\n- a list\n")


@pytest.mark.parametrize("damage, pattern", [
    (_no_description, "has no description.md"),
    (_no_data, "holds no data files"),
    (_answers_named_but_missing, "answers file 'prepared/private/answers.csv' does not exist"),
    (_undecodable_description, "cannot read"),
    (_description_is_a_directory, "has no description.md"),
    (_binary_sample_submission, "sample submission file"),
    (_bad_yaml, "is not valid YAML"),
    (_config_not_a_mapping, "must be a mapping"),
])
def test_malformed_task_is_refused_and_earlier_runs_are_kept(tmp_path, stub, damage, pattern):
    runs = tmp_path / "runs"
    good = cli("--task", make_toy_task(tmp_path / "good"), "--base-url", stub.base_url, "--steps", "1",
               "--run-dir", runs, "--exec-timeout", "30", "--run-id", "earlier")
    assert good.returncode == 0, good.stderr
    before = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()}
    task = make_toy_task(tmp_path / "bad")
    damage(task)
    proc = cli("--task", task, "--base-url", stub.base_url, "--run-dir", runs)
    assert_one_line_error(proc, pattern)
    assert [p.name for p in runs.iterdir()] == ["earlier"]  # no half-made run ...
    assert {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()} == before  # ... nothing lost


def test_run_dir_that_cannot_be_created(tmp_path, stub):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    proc = cli("--task", make_toy_task(tmp_path / "t"), "--base-url", stub.base_url,
               "--run-dir", blocker / "runs")
    assert_one_line_error(proc, "cannot create the run directory")
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize("args, pattern", [
    (["--mem-limit-mb", "0"], "--mem-limit-mb: must be at least 1"),
    (["--max-procs", "-1"], "--max-procs"),
    (["--cpu-limit", "zero"], "--cpu-limit"),
    (["--sandbox", "docker"], "invalid choice: 'docker'"),
    (["--samples", "0"], "--samples"),
    (["--sampling", "telepathic"], "--sampling"),
])
def test_invalid_sandbox_and_strategy_flags(tmp_path, args, pattern):
    assert_one_line_error(cli("--task", tmp_path, *args), pattern)


def test_sandbox_limits_reach_the_run(tmp_path, stub):
    runs = tmp_path / "runs"
    proc = cli("--task", make_toy_task(tmp_path / "t"), "--base-url", stub.base_url, "--steps", "1",
               "--run-dir", runs, "--exec-timeout", "30", "--run-id", "lim", "--mem-limit-mb", "300",
               "--max-procs", "64", "--max-file-mb", "5", "--cpu-limit", "20")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((runs / "lim" / "run.json").read_text())
    assert (saved["mem_limit_mb"], saved["max_procs"], saved["max_file_mb"], saved["cpu_limit_s"]) == (
        300, 64, 5, 20.0)
    from graphs.settings import RunSettings
    limits = RunSettings.model_validate(saved).limits()
    assert (limits.memory_bytes, limits.processes, limits.file_bytes, limits.cpu_seconds) == (
        300 * 2**20, 64, 5 * 2**20, 20.0)


def test_local_threads_size_the_embedded_server(tmp_path, monkeypatch):
    """--local-threads N gives the embedded llama.cpp server N threads; without it, every core
    this process may use (its affinity, not the machine's count)."""
    import graphs.run as run_mod
    from graphs.settings import RunSettings

    made = []

    class FakeServer:  # records what the run would start; starts nothing
        def __init__(self, path, **kwargs):
            made.append(kwargs["n_threads"])
            self.base_url = "http://127.0.0.1:9/v1"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(run_mod, "LocalServer", FakeServer)
    monkeypatch.setattr(run_mod, "ensure_local_model", lambda key, progress: tmp_path / "m.gguf")
    monkeypatch.setattr(run_mod.os, "cpu_count", lambda: 64)  # the machine; not ours to use
    monkeypatch.setattr(run_mod, "usable_cores", lambda: 8)
    settings = RunSettings(run_id="t", task_dir=str(tmp_path), local_model="0.5b")
    for threads in (3, None):
        with run_mod.endpoint(settings, tmp_path, lambda m: None, local_threads=threads):
            pass
    assert made == [3, 8]
    args = run_mod.build_parser().parse_args(["--task", "x", "--local-threads", "2"])
    assert args.local_threads == 2
