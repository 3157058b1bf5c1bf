"""Sweep results: one row per run (cell), aggregated per (model, strategy) over tasks and seeds.

Definitions (all rates are percentages, 0-100):

* ``valid_submission``: the best node's submission got a hidden test score (MLE-bench's "valid
  submission"), when the task is gradable; for an ungradable task, the run's own
  ``summary["valid_submission"]`` (some node produced a submission and was not buggy).
* ``above_median`` / ``any_medal``: from the run's medal report. Tasks without a leaderboard
  (or without answers) have no report: their runs are left out of these columns, and a group
  with no such runs shows "n/a" (an empty cell in the CSV), rather than counting as failures.
* A cell that failed (no ``summary.json``) counts as a run with no valid submission and no medal,
  as MLE-bench counts a missing submission; its costs are unknown and left out of the cost means.
* ``pass@K``: the share of tasks for which ANY of the K seeds achieved the outcome.
* ``mean`` ± ``sem``: the per-run 0/1 outcome averaged over all runs, with the standard error of
  the mean (sample standard deviation, ddof=1, over sqrt(n); 0 when n = 1).
* ``test_score[<task>]``: mean best-node hidden test score over that task's runs that have one
  (scores of different tasks are not comparable, so there is one column per task).
* ``tokens``: prompt + completion tokens per run; ``llm_seconds``, ``wall_seconds`` per run.
* ``budget_tokens`` / ``budget_seconds``: the runs' compute budget (``--budget-tokens``,
  ``--budget-seconds``; empty when not set, and for summaries written before budgets existed);
  ``used_tokens`` / ``used_seconds``: what a run used of it (prompt + completion tokens; LLM +
  script execution seconds), ``stopped_by``: "budget" or "steps". Per model+strategy: the budget
  its runs share (empty when none, "mixed" when they differ), the mean use per run and how many
  runs the budget stopped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from nodes.files import write_atomically

OUTCOMES = ("valid_submission", "above_median", "any_medal")
_OUTCOME_TITLES = {"valid_submission": "valid", "above_median": "above median", "any_medal": "any medal"}


def pass_at_k(per_task_successes: Iterable[Sequence[bool]]) -> float:
    """Fraction of tasks (0-1) where any of the task's attempts succeeded.

    ``per_task_successes`` holds, for each task, the outcomes of its K seeds, e.g.
    ``[[False, True], [False, False]]`` -> 0.5. NaN when there are no tasks.
    """
    tasks = [list(seeds) for seeds in per_task_successes]
    if not tasks:
        return math.nan
    return sum(1 for seeds in tasks if any(bool(s) for s in seeds)) / len(tasks)


def mean_sem(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean: sample std (ddof=1) / sqrt(n); SEM 0 when n == 1.

    ``[1, 0, 0, 1]`` -> (0.5, 0.2887): std = sqrt(1/3), / sqrt(4). (NaN, NaN) when empty.
    """
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    mean = sum(xs) / n
    if n == 1:
        return mean, 0.0
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, math.sqrt(var) / math.sqrt(n)


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    run_id: str
    task_id: str
    task_dir: str
    gradable: bool  # hidden answers and a known grader: the best node gets a test score
    has_medals: bool  # gradable and with a leaderboard: summary.json holds a medal report
    strategy: str
    model: str
    seed: int
    run_path: Path

    @property
    def submission_path(self) -> Path:
        return self.run_path / "submission.csv"


PER_RUN_COLUMNS = [
    "run_id", "task", "strategy", "model", "seed", "status", "steps", "best_node_id", "best_metric",
    "best_node_test_score", "valid_submission", "above_median", "any_medal", "gold_medal",
    "silver_medal", "bronze_medal", "prompt_tokens", "completion_tokens", "reasoning_tokens",
    "tokens", "llm_seconds", "exec_seconds", "wall_seconds", "selection", "best_node_holdout_score",
    "self_test_gap", "holdout_test_gap", "picks_differ", "budget_tokens", "budget_seconds", "used_tokens",
    "used_seconds", "stopped_by", "submission_path",
]
_BUDGET = ("budget_tokens", "budget_seconds", "used_tokens", "used_seconds", "stopped_by")
_COSTS = ("steps", "best_node_id", "best_metric", "best_node_test_score", "prompt_tokens",
          "completion_tokens", "reasoning_tokens", "llm_seconds", "exec_seconds", "wall_seconds")


def run_row(cell: Cell, failure: str | None = None) -> dict[str, Any]:
    """The raw numbers of one cell, read from its ``summary.json`` (a failed cell when absent)."""
    row: dict[str, Any] = {
        "run_id": cell.run_id, "task": cell.task_id, "strategy": cell.strategy, "model": cell.model,
        "seed": cell.seed, "submission_path": str(cell.submission_path),
    }
    path = cell.run_path / "summary.json"
    summary: dict[str, Any] | None = None
    if path.is_file():
        try:
            summary = json.loads(path.read_text())
        except ValueError:
            summary = None
    medal_keys = ("above_median", "any_medal", "gold_medal", "silver_medal", "bronze_medal")
    if summary is None:
        row["status"] = failure or "failed"
        row.update({k: None for k in _COSTS + _BUDGET})
        row["tokens"] = None
        row["valid_submission"] = 0
        row.update({k: (0 if cell.has_medals else None) for k in medal_keys})
        return row
    row["status"] = "ok"
    row.update({k: summary.get(k) for k in _COSTS})
    row["tokens"] = (summary.get("prompt_tokens") or 0) + (summary.get("completion_tokens") or 0)
    if cell.gradable:
        row["valid_submission"] = int(summary.get("best_node_test_score") is not None)
    else:
        row["valid_submission"] = int(bool(summary.get("valid_submission")))
    medals = summary.get("medals")
    row.update({k: (int(bool(medals.get(k))) if isinstance(medals, dict) else None) for k in medal_keys})
    row.update(selection_numbers(summary))
    row.update(budget_numbers(summary))
    return row


def budget_numbers(summary: dict[str, Any]) -> dict[str, Any]:
    """A run's budget columns (None for what its summary does not hold: no budget, or a summary
    written before budgets existed)."""
    budget = summary.get("budget") if isinstance(summary.get("budget"), dict) else {}
    used = summary.get("used") if isinstance(summary.get("used"), dict) else {}
    return {"budget_tokens": budget.get("tokens"), "budget_seconds": budget.get("seconds"),
            "used_tokens": used.get("tokens"), "used_seconds": used.get("seconds"),
            "stopped_by": summary.get("stopped_by")}


def shared_value(values: pd.Series) -> Any:
    """The one value a group's runs share (None when none has one, "mixed" when they differ)."""
    known = list(dict.fromkeys(pd.to_numeric(values).dropna())) if len(values) else []
    if not known:
        return None
    return known[0] if len(known) == 1 else "mixed"


def optimism(validation: Any, test: Any, lower_is_better: bool) -> float | None:
    """How much better a validation number is than the hidden test score, in the task's units
    (positive: validation promised more than the test gave)."""
    if validation is None or test is None:
        return None
    gap = float(validation) - float(test)
    return -gap if lower_is_better else gap


def selection_numbers(summary: dict[str, Any]) -> dict[str, Any]:
    """A run's selection columns: what selected (holdout or self-report), the chosen node's
    validation-test gap by its own metric and by the holdout score, and whether the METRIC lines
    alone would have picked another node (holdout runs only)."""
    selection = summary.get("selection") or {}
    by = selection.get("by") if isinstance(selection, dict) else None
    lower = bool(summary.get("lower_is_better"))
    test = summary.get("best_node_test_score")
    held = summary.get("best_node_holdout_score")
    differ = None
    if by == "holdout" and summary.get("best_node_id"):
        differ = int(summary.get("best_by_self_report_id") != summary.get("best_node_id"))
    return {
        "selection": by,
        "best_node_holdout_score": held,
        "self_test_gap": optimism(summary.get("best_metric"), test, lower),
        "holdout_test_gap": optimism(held, test, lower),
        "picks_differ": differ,
    }


def per_run_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of `run_row` as a frame with a fixed column order."""
    return pd.DataFrame(rows, columns=PER_RUN_COLUMNS)


def aggregate(per_run: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per (model, strategy), in first-appearance order; rates in percent."""
    tasks = list(dict.fromkeys(per_run["task"]))
    out: list[dict[str, Any]] = []
    for (model, strategy), group in per_run.groupby(["model", "strategy"], sort=False):
        row: dict[str, Any] = {"model": model, "strategy": strategy, "n_runs": len(group), "k": k}
        for outcome in OUTCOMES:
            known = group.dropna(subset=[outcome])
            by_task = [list(g[outcome].astype(bool)) for _, g in known.groupby("task", sort=False)]
            mean, sem = mean_sem(list(known[outcome].astype(float)))
            row[f"{outcome}_n"] = len(known)
            row[f"{outcome}_pass_at_k"] = 100 * pass_at_k(by_task)
            row[f"{outcome}_mean"] = 100 * mean
            row[f"{outcome}_sem"] = 100 * sem
        for task in tasks:
            scores = pd.to_numeric(group.loc[group["task"] == task, "best_node_test_score"]).dropna()
            row[f"test_score[{task}]"] = float(scores.mean()) if len(scores) else math.nan
        for col in ("tokens", "llm_seconds", "wall_seconds", "self_test_gap", "holdout_test_gap"):
            values = pd.to_numeric(group[col]).dropna() if col in group else pd.Series(dtype=float)
            row[f"mean_{col}"] = float(values.mean()) if len(values) else math.nan
        differ = pd.to_numeric(group["picks_differ"]).dropna() if "picks_differ" in group else pd.Series()
        row["picks_differ_pct"] = 100 * float(differ.mean()) if len(differ) else math.nan
        row["holdout_runs"] = len(differ)
        for col in ("budget_tokens", "budget_seconds"):
            row[col] = shared_value(group[col]) if col in group else None
        for col in ("used_tokens", "used_seconds"):
            values = pd.to_numeric(group[col]).dropna() if col in group else pd.Series(dtype=float)
            row[f"mean_{col}"] = float(values.mean()) if len(values) else math.nan
        row["budget_stops"] = int((group["stopped_by"] == "budget").sum()) if "stopped_by" in group else 0
        out.append(row)
    return pd.DataFrame(out)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _known(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _shared_text(value: Any, digits: int = 1) -> str:
    return value if isinstance(value, str) else _fmt(value, digits)


def markdown_table(agg: pd.DataFrame, k: int) -> str:
    """The aggregate as a Markdown table, with a short legend."""
    score_cols = [c for c in agg.columns if c.startswith("test_score[")]
    header = ["model", "strategy", "runs"]
    for outcome in OUTCOMES:
        title = _OUTCOME_TITLES[outcome]
        header += [f"{title} pass@{k} %", f"{title} mean ± SEM %"]
    header += [f"test score {c[len('test_score['):-1]}" for c in score_cols]
    header += ["tokens/run", "LLM s/run", "wall s/run", "val-test gap, own metric",
               "val-test gap, holdout", "METRIC lines pick another node %"]
    budgets = any(_known(row.get(c)) for row in agg.to_dict("records")
                  for c in ("budget_tokens", "budget_seconds"))
    if budgets:  # only sweeps with a budget get its columns
        header += ["budget tokens / s", "used tokens / s per run", "stopped by the budget"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in agg.to_dict("records"):
        cells = [str(row["model"]), str(row["strategy"]), str(row["n_runs"])]
        for outcome in OUTCOMES:
            cells.append(_fmt(row[f"{outcome}_pass_at_k"]))
            mean, sem = row[f"{outcome}_mean"], row[f"{outcome}_sem"]
            cells.append("n/a" if math.isnan(mean) else f"{mean:.1f} ± {sem:.1f}")
        cells += [_fmt(row[c], 4) for c in score_cols]
        cells += [_fmt(row["mean_tokens"], 0), _fmt(row["mean_llm_seconds"]), _fmt(row["mean_wall_seconds"])]
        cells += [_fmt(row.get("mean_self_test_gap", math.nan), 4),
                  _fmt(row.get("mean_holdout_test_gap", math.nan), 4),
                  (f"{_fmt(row['picks_differ_pct'])} of {row['holdout_runs']}" if row.get("holdout_runs")
                   else "n/a")]
        if budgets:
            cells += [f"{_shared_text(row.get('budget_tokens'), 0)} / "
                      f"{_shared_text(row.get('budget_seconds'))}",
                      f"{_fmt(row.get('mean_used_tokens', math.nan), 0)} / "
                      f"{_fmt(row.get('mean_used_seconds', math.nan))}",
                      f"{row.get('budget_stops', 0)} of {row['n_runs']}"]
        lines.append("| " + " | ".join(cells) + " |")
    legend = (
        f"\npass@{k}: % of tasks where any of the {k} seeds achieved it. mean ± SEM: per-run 0/1 over all"
        " runs (SEM = sample std / sqrt(n)). Tasks without a leaderboard are left out of the medal columns"
        " (n/a when none). Failed runs count as no submission. test score: mean hidden test score of the"
        " best node over the task's runs that have one. val-test gap: how much better the chosen node's"
        " validation number (its own METRIC line, or the harness's holdout score) was than its hidden"
        " test score, in the tasks' units (mean over runs; positive: validation promised more). METRIC"
        " lines pick another node: runs selected by the holdout where the self-report's best differs.\n"
    )
    if budgets:
        legend += ("budget: the compute budget the runs share (tokens: prompt + completion; seconds: LLM +"
                   " script execution), the mean use per run, and the runs the budget stopped (the others"
                   " ran all their steps).\n")
    return "\n".join(lines) + "\n" + legend


def grade_lines(cells: Iterable[Cell]) -> str:
    """``mlebench grade`` input: every cell, with the path its submission has or would have.

    Cells without a submission keep their would-be path, so `mlebench grade` counts them as
    missing (invalid) submissions rather than leaving the run out.
    """
    return "".join(
        json.dumps({"competition_id": c.task_id, "submission_path": str(c.submission_path.resolve())}) + "\n"
        for c in cells
    )


def write_results(out: Path, cells: list[Cell], failures: dict[str, str], k: int) -> pd.DataFrame:
    """Write per_run.csv, results.csv, results.md and grade.jsonl atomically; return the aggregate."""
    per_run = per_run_frame([run_row(c, failures.get(c.run_id)) for c in cells])
    agg = aggregate(per_run, k)
    write_atomically(out / "per_run.csv", per_run.to_csv(index=False))
    write_atomically(out / "results.csv", agg.to_csv(index=False))
    write_atomically(out / "results.md", markdown_table(agg, k))
    write_atomically(out / "grade.jsonl", grade_lines(cells))
    return agg
