"""A competition's own grader, run in a separate process, out of the agent's sight.

MLE-bench competitions carry `grade.py` beside `config.yaml` with
`grade(submission: DataFrame, answers: DataFrame) -> float`, raising `InvalidSubmissionError` for a
submission it cannot score, and name it in the config as `grade_fn: mlebench.competitions.<id>.grade:grade`.
`TaskGrader` loads that function in a child Python process (never in the agent, never in the
sandbox the scripts run in) and grades one submission file per call:

    python -m grading.task_grader (--grade-py PATH | --grade-fn MODULE:FN) [--check]
        [--answers CSV --submission CSV]

prints one JSON line `{"score": float|null, "valid": bool, "reason": str|null}`. `--check` only
loads the function (`{"ok": true}` or `{"ok": false, "reason": "..."}`), so a grader that cannot
be imported here (a grade.py that needs the `mlebench` package) is found once, at the start of a
run. A grade.py inside an mle-bench checkout (`<repo>/mlebench/competitions/<id>/grade.py`) gets
`<repo>` on its import path, so its `mlebench.*` imports resolve from the checkout.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRADE_TIMEOUT_S = 600.0


def _checkout_roots(path: Path) -> list[str]:
    """Ancestors of `path` holding an importable `mlebench` package (an mle-bench checkout)."""
    return [str(parent) for parent in path.resolve().parents
            if (parent / "mlebench" / "__init__.py").is_file()]


def _load(grade_py: str | None, grade_fn: str | None) -> Any:
    if grade_py:
        path = Path(grade_py)
        sys.path[:0] = [str(path.parent), *_checkout_roots(path)]
        spec = importlib.util.spec_from_file_location("its_mle_task_grade", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        fn = getattr(module, "grade", None)
        if not callable(fn):
            raise ImportError(f"{path} defines no grade(submission, answers) function")
        return fn
    module_name, _, fn_name = str(grade_fn).partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, fn_name or "grade", None)
    if not callable(fn):
        raise ImportError(f"{grade_fn}: no such function")
    return fn


def _one_line(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text[:400]


def _child(args: argparse.Namespace) -> dict[str, Any]:
    try:
        fn = _load(args.grade_py, args.grade_fn)
    except BaseException as exc:  # noqa: BLE001 - any failure to load is reported, not raised
        return {"ok": False, "reason": _one_line(exc)}
    if args.check:
        return {"ok": True}
    import pandas as pd

    answers = pd.read_csv(args.answers)
    try:
        submission = pd.read_csv(args.submission)
    except Exception as exc:  # noqa: BLE001
        return {"score": None, "valid": False, "reason": f"unreadable submission CSV: {_one_line(exc)}"}
    try:
        score = fn(submission, answers)
    except Exception as exc:  # noqa: BLE001 - InvalidSubmissionError or a grader failure
        kind = type(exc).__name__
        reason = (str(exc) if kind == "InvalidSubmissionError"
                  else f"the task's grader raised {_one_line(exc)}")
        return {"score": None, "valid": False, "reason": " ".join(reason.split())[:400] or kind}
    try:
        value = float(score)
    except (TypeError, ValueError):
        return {"score": None, "valid": False,
                "reason": f"the task's grader returned {score!r}, not a number"}
    if not math.isfinite(value):
        return {"score": None, "valid": False, "reason": f"the task's grader returned {value}"}
    return {"score": value, "valid": True, "reason": None}


@dataclass(frozen=True)
class TaskGradeResult:
    score: float | None
    valid: bool
    reason: str | None


class TaskGrader:
    """The task's own grade function, called in a child process per submission."""

    def __init__(self, *, grade_py: Path | None = None, grade_fn: str | None = None,
                 python: str | None = None, timeout_s: float = GRADE_TIMEOUT_S) -> None:
        if (grade_py is None) == (grade_fn is None):
            raise ValueError("give exactly one of grade_py and grade_fn")
        self.grade_py = grade_py
        self.grade_fn = grade_fn
        self.python = python or sys.executable
        self.timeout_s = timeout_s
        self.label = str(grade_py) if grade_py is not None else str(grade_fn)

    def _run(self, *extra: str) -> dict[str, Any]:
        which = (["--grade-py", str(self.grade_py)] if self.grade_py is not None
                 else ["--grade-fn", str(self.grade_fn)])
        project = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (project, os.environ.get("PYTHONPATH", "")) if p)}
        try:
            proc = subprocess.run([self.python, "-m", "grading.task_grader", *which, *extra],
                                  capture_output=True, text=True, timeout=self.timeout_s, env=env,
                                  cwd=project)
        except subprocess.TimeoutExpired:
            return {"ok": False, "valid": False, "score": None,
                    "reason": f"the task's grader took longer than {self.timeout_s:g} s"}
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {"ok": False, "valid": False, "score": None,
                    "reason": f"the task's grader process failed (exit {proc.returncode}): {tail[:300]}"}
        return json.loads(lines[-1])

    def check(self) -> str | None:
        """None when the grade function loads here; else the one-line reason it does not."""
        out = self._run("--check")
        return None if out.get("ok") else str(out.get("reason") or "cannot load the task's grader")

    def grade(self, submission: Path, answers: Path) -> TaskGradeResult:
        out = self._run("--answers", str(answers), "--submission", str(submission))
        return TaskGradeResult(score=out.get("score"), valid=bool(out.get("valid")), reason=out.get("reason"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grading.task_grader")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--grade-py")
    which.add_argument("--grade-fn")
    p.add_argument("--check", action="store_true")
    p.add_argument("--answers")
    p.add_argument("--submission")
    args = p.parse_args(argv)
    if not args.check and not (args.answers and args.submission):
        p.error("--answers and --submission are needed unless --check")
    print(json.dumps(_child(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
