"""benchmark.sweep: the grid, resumability, input checks, and results recomputed independently."""

from __future__ import annotations

import io
import json
import math
import statistics
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmark.results import aggregate, mean_sem, pass_at_k
from benchmark.sweep import main, parse_model_spec, run_id_for
from tests.conftest import make_toy_task
from tests.doubles.stub import StubServer

RESULT_FILES = ("results.md", "results.csv", "per_run.csv", "grade.jsonl")


# --- pure functions -------------------------------------------------------------------------

def test_pass_at_k_hand_values():
    assert pass_at_k([[False, True], [False, False]]) == 0.5
    assert pass_at_k([[True], [True], [False]]) == pytest.approx(2 / 3)
    assert pass_at_k([[False, False, False]]) == 0.0
    assert math.isnan(pass_at_k([]))


def test_mean_sem_hand_values():
    mean, sem = mean_sem([1, 0, 0, 1])  # std = sqrt(((.5^2) * 4) / 3) = 0.57735; / 2
    assert mean == 0.5 and sem == pytest.approx(0.288675, abs=1e-6)
    assert mean_sem([1, 1, 1]) == (1.0, 0.0)
    assert mean_sem([0.3]) == (0.3, 0.0)
    mean, sem = mean_sem([2.0, 4.0, 9.0])  # mean 5, var (9+1+16)/2 = 13, sem sqrt(13)/sqrt(3)
    assert mean == 5.0 and sem == pytest.approx(math.sqrt(13 / 3))
    assert all(math.isnan(x) for x in mean_sem([]))


def test_aggregate_leaves_tasks_without_leaderboard_out_of_medal_columns():
    rows = [  # task "plain" has no leaderboard (medals None); one failed cell on task "lb"
        {"task": "plain", "model": "m", "strategy": "aide", "valid_submission": 1, "above_median": None,
         "any_medal": None, "best_node_test_score": None, "tokens": 10, "llm_seconds": 1.0, "wall_seconds": 2.0},
        {"task": "lb", "model": "m", "strategy": "aide", "valid_submission": 1, "above_median": 1,
         "any_medal": 0, "best_node_test_score": 0.8, "tokens": 30, "llm_seconds": 3.0, "wall_seconds": 4.0},
        {"task": "lb", "model": "m", "strategy": "aide", "valid_submission": 0, "above_median": 0,
         "any_medal": 0, "best_node_test_score": None, "tokens": None, "llm_seconds": None, "wall_seconds": None},
    ]
    agg = aggregate(pd.DataFrame(rows), k=2).iloc[0]
    assert agg["n_runs"] == 3 and agg["above_median_n"] == 2
    assert agg["valid_submission_pass_at_k"] == 100.0
    assert agg["valid_submission_mean"] == pytest.approx(200 / 3)
    assert agg["above_median_pass_at_k"] == 100.0 and agg["above_median_mean"] == 50.0
    assert agg["any_medal_pass_at_k"] == 0.0
    assert agg["test_score[lb]"] == 0.8 and math.isnan(agg["test_score[plain]"])
    assert agg["mean_tokens"] == 20.0 and agg["mean_wall_seconds"] == 3.0
    only_plain = aggregate(pd.DataFrame(rows[:1]), k=1).iloc[0]
    assert only_plain["above_median_n"] == 0 and math.isnan(only_plain["above_median_mean"])


def test_model_specs_and_run_ids():
    assert parse_model_spec("local:0.5b").run_args() == ["--local-model", "0.5b"]
    spec = parse_model_spec("deepseek-r1-distill-qwen-7b@http://gpu:8000/v1")
    assert spec.run_args() == ["--model", "deepseek-r1-distill-qwen-7b", "--base-url", "http://gpu:8000/v1"]
    assert run_id_for("my task", "aide", "org/model:q4", 3) == "my-task__aide__org-model-q4__s3"


# --- end to end -----------------------------------------------------------------------------

def _task(root: Path, comp_id: str, variant: int, leaderboard: list[float]) -> Path:
    task = make_toy_task(root)
    (task / "config.yaml").write_text((task / "config.yaml").read_text().replace("id: toy", f"id: {comp_id}"))
    # the scripted endpoint's scripts all work on variant 1 and all crash on variant 0
    outcome = "working" if variant else "crash"
    (task / "description.md").write_text((task / "description.md").read_text() + f"\nstub-outcome: {outcome}\n")
    pd.DataFrame({"score": leaderboard}).to_csv(task / "leaderboard.csv", index=False)
    return task


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    # the toy submission scores 0.5: a medal on a 0..0.6 board, below median on a 0.2..1.0 board
    ta = _task(tmp / "ta", "toy-a", 1, [0.6 * i / 29 for i in range(30)])
    tb = _task(tmp / "tb", "toy-b", 0, [0.2 + 0.8 * i / 29 for i in range(30)])
    out = tmp / "out"
    with StubServer(model="m-a") as a, StubServer(model="m-b") as b:
        argv = ["--tasks", str(ta), str(tb), "--strategies", "aide", "self_consistency", "--models",
                f"m-a@{a.base_url}",
                f"m-b@{b.base_url}", "--seeds", "2", "--steps", "2", "--exec-timeout", "30", "--out", str(out)]
        assert main(argv) == 0
        yield {"argv": argv, "out": out, "stubs": (a, b), "tasks": {"toy-a": ta, "toy-b": tb}}


def _expected(out: Path) -> dict[tuple[str, str], dict]:
    """results.csv recomputed straight from the runs' summary.json files."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for path in sorted((out / "runs").glob("*/summary.json")):
        s = json.loads(path.read_text())
        task, strategy, model, seed = path.parent.name.split("__")
        groups.setdefault((model, strategy), []).append({**s, "task": task})
    expected = {}
    for key, runs in groups.items():
        row: dict = {"n_runs": len(runs)}
        outcomes = {
            "valid_submission": [int(r["best_node_test_score"] is not None) for r in runs],
            "above_median": [int(r["medals"]["above_median"]) for r in runs],
            "any_medal": [int(r["medals"]["any_medal"]) for r in runs],
        }
        for name, vals in outcomes.items():
            tasks = sorted({r["task"] for r in runs})
            passed = [any(v for v, r in zip(vals, runs) if r["task"] == t) for t in tasks]
            row[f"{name}_pass_at_k"] = 100 * sum(passed) / len(tasks)
            row[f"{name}_mean"] = 100 * sum(vals) / len(vals)
            row[f"{name}_sem"] = 100 * statistics.stdev(vals) / math.sqrt(len(vals))
            row[f"{name}_n"] = len(vals)
        for t in ("toy-a", "toy-b"):
            scores = [r["best_node_test_score"] for r in runs
                      if r["task"] == t and r["best_node_test_score"] is not None]
            row[f"test_score[{t}]"] = sum(scores) / len(scores) if scores else math.nan
        row["mean_tokens"] = statistics.mean(r["prompt_tokens"] + r["completion_tokens"] for r in runs)
        row["mean_llm_seconds"] = statistics.mean(r["llm_seconds"] for r in runs)
        row["mean_wall_seconds"] = statistics.mean(r["wall_seconds"] for r in runs)
        # accuracy (higher is better): the chosen node's validation minus its test score
        for col, key_ in (("mean_self_test_gap", "best_metric"), ("mean_holdout_test_gap", "best_node_holdout_score")):
            gaps = [r[key_] - r["best_node_test_score"] for r in runs
                    if r[key_] is not None and r["best_node_test_score"] is not None]
            row[col] = statistics.mean(gaps) if gaps else math.nan
        held = [r for r in runs if r["selection"]["by"] == "holdout" and r["best_node_id"]]
        row["holdout_runs"] = len(held)
        row["picks_differ_pct"] = (100 * statistics.mean(
            int(r["best_by_self_report_id"] != r["best_node_id"]) for r in held) if held else math.nan)
        # no budget in this sweep: empty budget columns, every run ended by its steps
        row["budget_tokens"] = row["budget_seconds"] = math.nan
        row["mean_used_tokens"] = statistics.mean(r["used"]["tokens"] for r in runs)
        row["mean_used_seconds"] = statistics.mean(r["used"]["seconds"] for r in runs)
        row["budget_stops"] = sum(r["stopped_by"] == "budget" for r in runs)
        expected[key] = row
    return expected


def test_results_csv_matches_summaries(sweep):
    out = sweep["out"]
    assert len(list((out / "runs").glob("*/summary.json"))) == 16  # 2 tasks x 2 strategies x 2 models x 2 seeds
    results = pd.read_csv(out / "results.csv")
    expected = _expected(out)
    assert sorted(zip(results["model"], results["strategy"])) == sorted(expected)
    checked = 0
    for row in results.to_dict("records"):
        exp = expected[(row["model"], row["strategy"])]
        assert row["k"] == 2
        assert set(row) == set(exp) | {"model", "strategy", "k"}
        for col, value in exp.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(row[col]), col
            else:
                assert row[col] == pytest.approx(value, rel=1e-9, abs=1e-9), col
            checked += 1
    assert len(results) == 4 and checked == 4 * 27  # every column of every model+strategy row
    # the scripted endpoint makes the data non-degenerate: with aide, task A succeeds (with a
    # medal) and B does not
    aide = results[results["strategy"] == "aide"]
    assert set(aide["valid_submission_pass_at_k"]) == {50.0}
    assert set(aide["any_medal_mean"]) == {50.0}
    # toy-a's runs hold a split (40 training rows: 10 held) and have a best node
    assert set(aide["holdout_runs"]) == {2}
    md = (out / "results.md").read_text()
    assert "| m-a | aide | 4 | 50.0 | 50.0 ± 28.9 |" in md


def test_per_run_and_grade_files(sweep):
    out = sweep["out"]
    per_run = pd.read_csv(out / "per_run.csv")
    assert len(per_run) == 16 and set(per_run["status"]) == {"ok"}
    assert sorted(per_run["seed"].tolist()) == [0] * 8 + [1] * 8
    for row in per_run.to_dict("records"):
        s = json.loads((out / "runs" / row["run_id"] / "summary.json").read_text())
        assert row["prompt_tokens"] == s["prompt_tokens"] and row["wall_seconds"] == s["wall_seconds"]
        assert row["any_medal"] == int(s["medals"]["any_medal"])
    lines = [json.loads(x) for x in (out / "grade.jsonl").read_text().splitlines()]
    assert len(lines) == 16
    assert sorted({x["competition_id"] for x in lines}) == ["toy-a", "toy-b"]
    for x in lines:
        path = Path(x["submission_path"])
        assert path.is_absolute() and path.name == "submission.csv"
        assert path.parent.parent == (out / "runs").resolve()
        # with aide every toy-a run has a best node (and so a submission); toy-b runs have none
        if "__aide__" in path.parent.name:
            assert path.is_file() == (x["competition_id"] == "toy-a")


def test_rerun_skips_finished_cells_and_rewrites_identical_results(sweep, monkeypatch):
    out = sweep["out"]
    before = {name: (out / name).read_bytes() for name in RESULT_FILES}
    requests = [s.requests for s in sweep["stubs"]]

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    monkeypatch.setattr(sys, "stdout", tty)  # exercise the rich progress bar
    assert main(sweep["argv"]) == 0
    assert [s.requests for s in sweep["stubs"]] == requests
    assert {name: (out / name).read_bytes() for name in RESULT_FILES} == before
    assert "done already, skipped" in tty.getvalue()


def test_unfinished_cell_is_resumed(sweep):
    # a run with run.json but no summary.json is continued with --resume, not started again
    out = sweep["out"]
    victim = out / "runs" / "toy-b__aide__m-a__s1"
    (victim / "summary.json").unlink()
    assert main(sweep["argv"]) == 0
    assert (victim / "summary.json").is_file()
    assert len(pd.read_csv(out / "per_run.csv")) == 16
    log = (out / "logs" / "toy-b__aide__m-a__s1.log").read_text()
    assert "--resume toy-b__aide__m-a__s1" in log


@pytest.mark.parametrize("change", [
    {"--models": ["no-url-here"]},
    {"--models": ["local:7b"]},
    {"--tasks": ["/definitely/missing/task"]},
    {"--strategies": ["nope"]},
    {"--models": ["m@http://127.0.0.1:9/v1"]},  # nothing listens on the discard port
])
def test_bad_input_exits_2_without_writing(sweep, tmp_path, capsys, change):
    argv = list(sweep["argv"])
    for flag, values in change.items():
        i = argv.index(flag)
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        argv[i + 1:j] = values
    out = tmp_path / "fresh"
    argv[argv.index("--out") + 1] = str(out)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_failing_cell_is_recorded_and_the_sweep_goes_on(sweep, tmp_path, monkeypatch, capsys):
    import benchmark.cell as sweep_mod

    real = sweep_mod.graph_run.main
    calls = []

    def flaky(argv, **kw):
        calls.append(argv)
        if "toy-a__aide__m-a__s0" in argv:
            raise RuntimeError("boom")
        return real(argv, **kw)

    monkeypatch.setattr(sweep_mod.graph_run, "main", flaky)
    argv = list(sweep["argv"])
    argv[argv.index("--seeds") + 1] = "1"
    argv[argv.index("--out") + 1] = str(tmp_path / "out")
    argv[argv.index("--tasks") + 1:argv.index("--strategies")] = [str(sweep["tasks"]["toy-a"])]
    capsys.readouterr()
    assert main(argv) == 1
    assert len(calls) == 4  # 1 task x 2 strategies x 2 models x 1 seed: the failure stopped nothing
    # the crash's last line is in the progress line and the table, not only in the log
    failed = [line for line in capsys.readouterr().out.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "FAILED (exit 1: RuntimeError: boom); see " in failed[0], failed
    per_run = pd.read_csv(tmp_path / "out" / "per_run.csv").set_index("run_id")
    assert per_run.loc["toy-a__aide__m-a__s0", "status"] == "failed (exit 1: RuntimeError: boom)"
    assert per_run.loc["toy-a__aide__m-a__s0", "valid_submission"] == 0
    assert per_run.loc["toy-a__aide__m-b__s0", "status"] == "ok"
    assert "RuntimeError: boom" in (tmp_path / "out" / "logs" / "toy-a__aide__m-a__s0.log").read_text()


def test_sweep_compares_strategies_at_their_compute(tmp_path):
    """Two strategies in one grid: one results row each, with self-consistency's extra samples
    showing up as extra tokens and calls (the table compares strategies at equal compute)."""
    task = _task(tmp_path / "t", "toy-s", 1, [0.6 * i / 29 for i in range(30)])
    out = tmp_path / "out"
    with StubServer(model="m") as server:
        assert main(["--tasks", str(task), "--strategies", "aide", "self_consistency", "--models",
                     f"m@{server.base_url}", "--seeds", "1", "--steps", "2", "--exec-timeout", "30",
                     "--out", str(out)]) == 0
    results = pd.read_csv(out / "results.csv").set_index("strategy")
    assert sorted(results.index) == ["aide", "self_consistency"]
    summaries = {p.parent.name.split("__")[1]: json.loads(p.read_text())
                 for p in (out / "runs").glob("*/summary.json")}
    # the stub honours `n`: each step's four samples come from one request with four choices
    assert summaries["self_consistency"]["cost_by_role"]["sampler"]["calls"] == 2
    (sc_tree,) = (out / "runs").glob("*__self_consistency__*/tree.json")
    calls = [c for n in json.loads(sc_tree.read_text())["nodes"] for c in n["calls"] if c["role"] == "sampler"]
    assert sum(c["choices"] for c in calls) == 2 * 4
    assert "sampler" not in summaries["aide"]["cost_by_role"]
    # more tokens than aide, though the prompt of each n-request is counted once
    assert results.loc["self_consistency", "mean_tokens"] > results.loc["aide", "mean_tokens"]
    sc, aide = summaries["self_consistency"], summaries["aide"]
    assert sc["completion_tokens"] > 2 * aide["completion_tokens"]
