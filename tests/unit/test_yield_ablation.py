"""benchmark.yield_ablation keeps its rows across machines and records what selection_gap reads."""

from __future__ import annotations

import json
import subprocess

import pytest

from benchmark import selection_gap, yield_ablation


def _tree(run, nodes, *, lower=False, valid_submission=True, prompt_tokens=3000, completion_tokens=1000):
    run.mkdir(parents=True)
    (run / "tree.json").write_text(json.dumps({"lower_is_better": lower, "nodes": nodes}))
    (run / "summary.json").write_text(json.dumps({
        "valid_submission": valid_submission, "llm_seconds": 40.0, "best_node_test_score": 0.9,
        "wall_seconds": 100.0, "selection": {"by": "holdout"}, "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens}))


def _node(step, *, buggy=False, metric=None, holdout=None, test=None, bug="", repairs=0):
    calls = [{"role": "repairer"}] * repairs + [{"role": "coder"}]
    return {"step": step, "stage": "draft", "is_buggy": buggy, "metric": metric, "holdout_score": holdout,
            "test_score": test, "bug_reason": bug, "calls": calls}


@pytest.fixture
def no_prepare(monkeypatch, tmp_path):
    import tasks.prepare

    monkeypatch.setattr(tasks.prepare, "prepare_task", lambda name: tmp_path / "tasks" / name)


def test_rows_already_measured_are_not_run_again(tmp_path, monkeypatch, no_prepare):
    out = tmp_path / "out"
    out.mkdir()
    kept = {"variant": "all", "task": "t", "seed": 0, "steps": 10, "model": "1.5b", "server": "embedded",
            "nodes": 10, "valid_nodes": 4, "valid_submission": True, "llm_s_per_step": 50.0,
            "repairs_per_node": 0.5, "test_score": 0.8, "commit": yield_ablation.code_version()}
    (out / "yield.jsonl").write_text(json.dumps(kept) + "\n")
    ran = []

    def fake_run(cmd):
        ran.append(cmd)
        run_id = cmd[cmd.index("--run-id") + 1]
        _tree(out / "runs" / run_id, [_node(1, metric=0.5, holdout=0.4, test=0.45),
                                      _node(2, buggy=True, bug="NameError:\n  name 'model'", repairs=2)],
              valid_submission=False)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(yield_ablation, "launch", fake_run)
    assert yield_ablation.main(["--tasks", "t", "--seeds", "0", "--variants", "all", "no-repairs",
                                "--out", str(out)]) == 0
    # only the variant not in the file ran, with its flag and the embedded model
    (cmd,) = ran
    assert cmd[cmd.index("--run-id") + 1] == "t-s0-no-repairs"
    assert cmd[cmd.index("--repairs") + 1] == "0" and cmd[cmd.index("--local-model") + 1] == "1.5b"
    rows = yield_ablation.read_rows(out / "yield.jsonl")
    assert [r["variant"] for r in rows] == ["all", "no-repairs"]
    new = rows[1]
    assert new["commit"] == yield_ablation.code_version() != "unknown"
    assert (new["nodes"], new["valid_nodes"], new["repairs_per_node"], new["llm_s_per_step"]) == (2, 1, 1.0, 20.0)
    # 4,000 tokens over 2 steps, 1,000 of them completions; the kept row predates tokens
    assert (new["tokens_per_step"], new["completion_tokens_per_step"]) == (2000, 500)
    assert "tokens_per_step" not in rows[0]
    assert new["node_records"][1] == {"step": 2, "stage": "draft", "buggy": True, "metric": None,
                                      "holdout": None, "test": None, "repairs": 2, "imports_added": 0, "outline_added": 0,
                                      "shell_removed": 0, "imports_moved": 0, "asked_again": 0, "vectorized": 0, "hoisted": 0,
                                      "counterparts": 0, "api_rewrites": 0, "reordered": 0, "substituted": 0, "test_rows": 0, "absent_drops": 0, "unvectorized": 0,
                                      "fragments_spliced": 0, "parent_splices": 0, "repairs_set_aside": 0,
                                      "remedies": [], "bug": "NameError: name 'model'"}
    md = (out / "yield.md").read_text()
    # the pair (no-repairs against all on t, seed 0): 1 - 4 valid nodes, 0 - 1 submissions
    # LLM s/step 20.0 - 50.0; no tokens difference, as the `all` row has none
    assert "| no-repairs | 1 | -3 | -1 | -30.0 | - |" in md
    # an `all` row of another commit measured other code: nothing pairs with it
    assert yield_ablation.paired_effects([{**kept, "commit": "0123abcd"}, new]) == {}
    # a second call finds both rows and runs nothing
    ran.clear()
    assert yield_ablation.main(["--tasks", "t", "--seeds", "0", "--variants", "all", "no-repairs",
                                "--out", str(out)]) == 0
    assert ran == [] and len(yield_ablation.read_rows(out / "yield.jsonl")) == 2
    # --report rewrites the table from the rows alone
    (out / "yield.md").unlink()
    assert yield_ablation.main(["--out", str(out), "--report"]) == 0
    assert ran == [] and (out / "yield.md").read_text() == md
    # once the `all` row's run directory is there, --report adds its tokens to the kept row
    _tree(out / "runs" / "t-s0-all", [_node(1)] * 10, prompt_tokens=20000, completion_tokens=5000)
    assert yield_ablation.main(["--out", str(out), "--report"]) == 0
    filled = yield_ablation.read_rows(out / "yield.jsonl")
    assert (filled[0]["tokens_per_step"], filled[0]["completion_tokens_per_step"]) == (2500, 500)
    assert filled[1] == new  # measured with tokens: unchanged
    assert "| no-repairs | 1 | -3 | -1 | -30.0 | -500 |" in (out / "yield.md").read_text()


def test_jobs_run_at_once_against_one_endpoint(tmp_path, monkeypatch, no_prepare):
    import threading

    out = tmp_path / "out"
    both_in = threading.Barrier(2, timeout=10)  # fails unless two runs are in flight together

    def fake_run(cmd):
        both_in.wait()
        run_id = cmd[cmd.index("--run-id") + 1]
        _tree(out / "runs" / run_id, [_node(1, metric=0.5, holdout=0.4, test=0.45)])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(yield_ablation, "launch", fake_run)
    assert yield_ablation.main(["--tasks", "t", "--seeds", "0", "1", "--variants", "all", "--jobs", "2",
                                "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--out", str(out)]) == 0
    rows = yield_ablation.read_rows(out / "yield.jsonl")
    assert sorted(r["seed"] for r in rows) == [0, 1]
    assert {(r["model"], r["server"], r["jobs"]) for r in rows} == {("m", "http://127.0.0.1:9/v1", 2)}


def test_native_without_a_binary_is_one_line_and_exit_2(tmp_path, monkeypatch, no_prepare, capsys):
    monkeypatch.setenv("ITS_MLE_LLAMA_SERVER", str(tmp_path / "absent"))
    monkeypatch.setenv("ITS_MLE_CACHE", str(tmp_path / "cache"))
    import serving.weights

    monkeypatch.setattr(serving.weights, "ensure_local_model", lambda name, progress=None: tmp_path / "m.gguf")
    assert yield_ablation.main(["--tasks", "t", "--seeds", "0", "--variants", "all", "--jobs", "2",
                                "--native", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "llama-server" in err[0]


def test_selection_gap_reads_the_rows(tmp_path):
    # higher is better; the holdout orders the graded nodes as the test does, the METRIC lines reverse it
    records = [{"step": i, "stage": "draft", "buggy": False, "metric": m, "holdout": h, "test": t,
                "repairs": 0, "bug": ""}
               for i, (m, h, t) in enumerate([(0.9, 0.1, 0.2), (0.8, 0.2, 0.3), (0.7, 0.3, 0.4)])]
    records.append({"step": 3, "stage": "debug", "buggy": True, "metric": None, "holdout": None, "test": None,
                    "repairs": 1, "bug": "crash"})
    row = {"variant": "no-repairs", "task": "t", "seed": 1, "lower_is_better": False, "node_records": records}
    old = {"variant": "all", "task": "t", "seed": 0}  # a row from before rows carried node records
    rows_file = tmp_path / "yield.jsonl"
    rows_file.write_text(json.dumps(row) + "\n" + json.dumps(old) + "\n")
    assert selection_gap.main(["--rows", str(rows_file), "--out", str(tmp_path / "sel")]) == 0
    (got,) = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert got["run"] == "t-s1-no-repairs" and got["graded_nodes"] == 3
    assert got["rho_holdout"] == pytest.approx(1.0) and got["rho_self"] == pytest.approx(-1.0)
    assert (got["hit_self"], got["hit_holdout"]) == (0, 1)


def test_grid_keeps_the_newest_run_of_each_task_and_seed_at_the_common_step_count():
    def row(task, seed, valid, commit, *, steps=10, variant="all", submission=True):
        return {"variant": variant, "task": task, "seed": seed, "steps": steps, "nodes": steps,
                "valid_nodes": valid, "valid_submission": submission, "commit": commit}

    rows = [row("a", 0, 1, "old"), row("a", 0, 5, "new"), row("a", 1, 2, "new"),
            row("b", 0, 0, "new", submission=False), row("b", 1, 4, "short", steps=4),
            row("b", 1, 9, "new", variant="no-repairs")]
    lines = yield_ablation.grid(rows)
    assert lines[0].startswith("The newest `all` run of each task and seed (10 steps)")
    assert "3 of 4 cells are at new." in lines[0]
    assert lines[2:] == ["| task | seed 0 | seed 1 |", "|---|---|---|",
                         "| a | 5/10 yes (new) | 2/10 yes (new) |",
                         "| b | 0/10 no (new) | - |"]
    assert yield_ablation.grid([row("a", 0, 1, "x", variant="no-repairs")]) == []
    measured = [{**r, "llm_s_per_step": 1.0, "repairs_per_node": 0.0, "test_score": None} for r in rows[:2]]
    assert "| a | 5/10 yes (new) |" in yield_ablation.table(measured).splitlines()
