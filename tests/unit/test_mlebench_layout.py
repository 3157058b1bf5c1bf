"""MLE-bench competitions as they are: free-form grader names, the task's own grade.py, config
and data apart (an mle-bench checkout + its data dir), the direction from the leaderboard's order,
and endpoint runs that never touch the embedded model."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from grading.graders import GRADERS, grade_submission, grader_key, resolve_grader
from grading.hidden import hidden_grading_plan
from grading.task_grader import TaskGrader
from tasks.competition import load_competition
from tests.conftest import ROOT
from tests.doubles.stub import StubServer

COMP_ID = "widget-sales"


def make_checkout(tmp: Path, *, grader: str = "auc-roc", grade_py: str | None = None,
                  leaderboard: str | None = None) -> tuple[Path, Path]:
    """An mle-bench checkout (`repo/mlebench/competitions/<id>/`) and its data dir, as
    `mlebench prepare` leaves them: (competition dir, data dir)."""
    repo, data = tmp / "mle-bench", tmp / "data"
    pkg = repo / "mlebench"
    comp = pkg / "competitions" / COMP_ID
    comp.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "competitions" / "__init__.py").write_text("")
    (pkg / "grade_helpers.py").write_text("class InvalidSubmissionError(Exception):\n    pass\n")
    (comp / "config.yaml").write_text(textwrap.dedent(f"""\
        id: {COMP_ID}
        name: Widget Sales
        competition_type: simple
        awards_medals: true
        prizes: null
        description: mlebench/competitions/{COMP_ID}/description.md

        dataset:
          answers: {COMP_ID}/prepared/private/test.csv
          sample_submission: {COMP_ID}/prepared/public/sample_submission.csv

        grader:
          name: {grader}
          grade_fn: mlebench.competitions.{COMP_ID}.grade:grade

        preparer: mlebench.competitions.{COMP_ID}.prepare:prepare
        """))
    (comp / "description.md").write_text("# Widget sales\nPredict whether a widget `sold` (0/1).\n")
    if grade_py is not None:
        (comp / "grade.py").write_text(grade_py)
    if leaderboard is not None:
        (comp / "leaderboard.csv").write_text(leaderboard)
    public, private = data / COMP_ID / "prepared" / "public", data / COMP_ID / "prepared" / "private"
    public.mkdir(parents=True)
    private.mkdir(parents=True)
    rows = pd.DataFrame({"wid": range(60), "price": [i % 9 for i in range(60)],
                         "sold": [int(i % 9 > 4) for i in range(60)]})
    rows.iloc[:40].to_csv(public / "train.csv", index=False)
    rows.iloc[40:].drop(columns=["sold"]).to_csv(public / "test.csv", index=False)
    pd.DataFrame({"wid": rows.wid.iloc[40:], "sold": 0.5}).to_csv(public / "sample_submission.csv", index=False)
    rows.iloc[40:][["wid", "sold"]].to_csv(private / "test.csv", index=False)
    return comp, data


# A grade.py in MLE-bench's style: imports from the checkout's `mlebench` package, raises its
# InvalidSubmissionError, and scores in a way none of our graders does (so a score proves it ran).
OWN_GRADE = textwrap.dedent("""\
    import pandas as pd
    from mlebench.grade_helpers import InvalidSubmissionError

    def grade(submission: pd.DataFrame, answers: pd.DataFrame) -> float:
        if "sold" not in submission.columns:
            raise InvalidSubmissionError("the submission has no 'sold' column")
        merged = answers.merge(submission, on="wid", suffixes=("", "_pred"))
        if len(merged) != len(answers):
            raise InvalidSubmissionError("ids do not match")
        return 1000.0 + float((merged["sold_pred"] - merged["sold"]).abs().mean())
    """)


@pytest.mark.parametrize("name,ours,lower", [
    ("auc-roc", "roc_auc", False), ("accuracy", "accuracy", False),
    ("multi-class-log-loss", "log_loss", True), ("log-loss", "log_loss", True),
    ("micro-f1-score", "f1_micro", False), ("macro-f1-score", "f1_macro", False),
    ("root-mean-squared-error", "rmse", True), ("root_mean_squared_error", "rmse", True),
    ("mean-absolute-error", "mae", True), ("quadratic-weighted-kappa", "quadratic_weighted_kappa", False),
    ("matthews-correlation-coefficient", "mcc", False), ("column-wise ROC AUC", "roc_auc", False),
    ("levenshtein-distance", None, True), ("mean-column-wise-rmsle", None, True),
    ("MAP@5", None, False), ("kendall-tau", None, False), ("mean-average-precision", None, False),
    ("rmse", "rmse", True), ("f1_macro", "f1_macro", False),
])
def test_mlebench_grader_names_resolve(name, ours, lower):
    assert resolve_grader(name) == (ours, lower)
    assert ours is None or ours in GRADERS


def test_unknown_grader_name_resolves_to_nothing():
    assert resolve_grader("jigsaw-unintended-bias-score") == (None, None)
    assert grader_key(" Multi-Class Log_Loss ") == "multi_class_log_loss"


def test_new_graders_score_what_they_name(tmp_path):
    answers = pd.DataFrame({"id": range(6), "y": [0, 1, 2, 2, 1, 0]})
    perfect = grade_submission("quadratic_weighted_kappa", answers.copy(), answers)
    assert perfect.valid and perfect.score == pytest.approx(1.0)
    off = answers.assign(y=[0, 1, 2, 1, 1, 0])
    assert 0 < grade_submission("quadratic_weighted_kappa", off, answers).score < 1
    assert grade_submission("f1_micro", off, answers).score == pytest.approx(5 / 6)
    labels = answers.assign(y=["a", "b", "c", "c", "b", "a"])
    assert not grade_submission("quadratic_weighted_kappa", labels, answers).valid


def test_checkout_and_data_dir_apart_load(tmp_path, monkeypatch):
    comp_dir, data = make_checkout(tmp_path, grade_py=OWN_GRADE)
    monkeypatch.setenv("MLEBENCH_DATA_DIR", str(data))
    comp = load_competition(comp_dir)
    assert comp.id == COMP_ID and comp.grader == "auc-roc"
    assert comp.public_dir == (data / COMP_ID / "prepared" / "public")
    assert comp.answers == (data / COMP_ID / "prepared" / "private" / "test.csv").resolve()
    assert comp.grade_py == comp_dir / "grade.py"
    assert comp.grade_fn == f"mlebench.competitions.{COMP_ID}.grade:grade"
    assert (comp.lower_is_better, comp.direction_source) == (False, "grader")


def test_task_grade_py_runs_in_a_separate_process(tmp_path, monkeypatch):
    comp_dir, data = make_checkout(tmp_path, grade_py=OWN_GRADE)
    monkeypatch.setenv("MLEBENCH_DATA_DIR", str(data))
    comp = load_competition(comp_dir)
    grade, how = hidden_grading_plan(comp)
    assert "the task's own grader" in how and "grade.py" in how
    sample = comp.sample_submission
    result = grade(sample)
    assert result.valid and result.score == pytest.approx(1000.5)  # |0.5 - y| is 0.5 everywhere
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"wid": range(40, 60), "other": 1}).to_csv(bad, index=False)
    result = grade(bad)
    assert (result.valid, result.score) == (False, None)
    assert result.reason == "the submission has no 'sold' column"
    # the grade function never ran in this process
    assert "its_mle_task_grade" not in sys.modules and "mlebench.grade_helpers" not in sys.modules


def test_grade_fn_is_used_when_importable(tmp_path, monkeypatch):
    comp_dir, data = make_checkout(tmp_path, grade_py=OWN_GRADE)
    sample = data / COMP_ID / "prepared" / "public" / "sample_submission.csv"
    answers = data / COMP_ID / "prepared" / "private" / "test.csv"
    monkeypatch.setenv("PYTHONPATH", str(comp_dir.parent.parent.parent))
    grader = TaskGrader(grade_fn=f"mlebench.competitions.{COMP_ID}.grade:grade")
    assert grader.check() is None
    assert grader.grade(sample, answers).score == pytest.approx(1000.5)
    missing = TaskGrader(grade_fn="mlebench.competitions.nope.grade:grade")
    assert "ModuleNotFoundError" in (missing.check() or "")


def test_grade_py_that_cannot_load_falls_back_to_our_grader(tmp_path, monkeypatch):
    needs = "from mlebench.competitions.utils import prepare_for_auroc_metric\n\ndef grade(s, a):\n    return 0.0\n"
    comp_dir, data = make_checkout(tmp_path, grade_py=needs)
    monkeypatch.setenv("MLEBENCH_DATA_DIR", str(data))
    comp = load_competition(comp_dir.resolve())
    grade, how = hidden_grading_plan(comp)
    assert how.startswith("grader 'auc-roc' as our 'roc_auc'") and "does not load here" in how
    result = grade(comp.sample_submission)
    assert result.valid and result.score == pytest.approx(0.5)  # a constant prediction: AUC 0.5


def test_unknown_grader_without_own_grade_warns(tmp_path, monkeypatch):
    comp_dir, data = make_checkout(tmp_path, grader="jigsaw-unintended-bias-score")
    monkeypatch.setenv("MLEBENCH_DATA_DIR", str(data))
    grade, how = hidden_grading_plan(load_competition(comp_dir))
    assert grade is None
    assert how.startswith("warning: grader 'jigsaw-unintended-bias-score' is unknown here")
    assert "the run goes on without hidden grading" in how


def test_direction_from_the_leaderboard_order(tmp_path, monkeypatch):
    board = "teamName,score\nA,0.11\nB,0.2\nC,0.35\n"
    comp_dir, data = make_checkout(tmp_path, grader="some-error-we-do-not-know", leaderboard=board)
    monkeypatch.setenv("MLEBENCH_DATA_DIR", str(data))
    comp = load_competition(comp_dir)
    assert (comp.lower_is_better, comp.direction_source) == (True, "leaderboard")
    assert comp.leaderboard == comp_dir / "leaderboard.csv"


def test_lfs_pointer_leaderboard_is_a_note_not_a_board(tmp_path, monkeypatch):
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n"
    comp_dir, data = make_checkout(tmp_path, grader="kendall-tau", leaderboard=pointer)
    monkeypatch.setenv("MLEBENCH_DATA_DIR", str(data))
    comp = load_competition(comp_dir)
    assert comp.leaderboard is None and (comp.lower_is_better, comp.direction_source) == (False, "grader")
    assert len(comp.notes) == 1 and "Git LFS pointer" in comp.notes[0]


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "graphs.run", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


@pytest.fixture(scope="module")
def stub():
    with StubServer() as server:
        yield server


def _empty_cache_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No embedded-model cache and no package index: fetching the weights could only fail."""
    cache = tmp_path / "its-mle-cache"
    cache.mkdir()
    return {"ITS_MLE_CACHE": str(cache), "HOME": str(tmp_path / "home"), "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
            "PIP_NO_INDEX": "1", **extra}


def test_cli_runs_a_checkout_competition_with_its_own_grader(tmp_path, stub):
    comp_dir, data = make_checkout(tmp_path, grader="widget-weirdness", grade_py=OWN_GRADE)
    env = _empty_cache_env(tmp_path, MLEBENCH_DATA_DIR=str(data))
    proc = _cli("--task", comp_dir, "--base-url", stub.base_url, "--steps", 2, "--run-dir", tmp_path / "runs",
                "--run-id", "r", "--exec-timeout", 30, env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "hidden grading: the task's own grader" in proc.stdout
    tree = json.loads((tmp_path / "runs" / "r" / "tree.json").read_text())
    nodes = tree["nodes"] if isinstance(tree, dict) else tree
    scored = [n for n in nodes if n.get("test_score") is not None]
    assert scored and all(n["test_score"] >= 1000 for n in scored)  # grade.py's numbers, not ours
    assert not any((tmp_path / "its-mle-cache").iterdir())  # the embedded model was never touched


def test_cli_unknown_grader_warns_and_goes_on(tmp_path, stub):
    comp_dir, data = make_checkout(tmp_path, grader="jigsaw-unintended-bias-score")
    env = _empty_cache_env(tmp_path, MLEBENCH_DATA_DIR=str(data))
    proc = _cli("--task", comp_dir, "--base-url", stub.base_url, "--steps", 1, "--run-dir", tmp_path / "runs",
                "--run-id", "r", "--exec-timeout", 30, env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    warnings = [line for line in proc.stdout.splitlines() if "warning: grader" in line]
    assert len(warnings) == 1 and "without hidden grading" in warnings[0]
    summary = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert summary["best_node_test_score"] is None


def test_endpoint_run_never_touches_the_embedded_model(tmp_path, stub, toy_task):
    """`--base-url` with an empty ITS_MLE_CACHE and no package index: the run finishes, and
    nothing is fetched, assembled or verified (the cache stays empty)."""
    env = _empty_cache_env(tmp_path)
    proc = _cli("--task", toy_task, "--base-url", stub.base_url, "--steps", 1, "--run-dir", tmp_path / "runs",
                "--exec-timeout", 30, env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "assembl" not in proc.stdout.lower() and "fetch" not in proc.stdout.lower()
    assert not any((tmp_path / "its-mle-cache").iterdir())
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*.gguf"))
