"""The numbers and text of a run report, derived from the run's `tree.json` and `summary.json`.

Which node is best and why, each node's status, outcome counts, tokens by role, a strategy
node's candidates or rounds, the tree's drawing positions and the headline facts. No plotting
and no HTML here (views.report.figures, views.report.html); nothing touches the run's state.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nodes.budget import describe_stop
from nodes.execute import (
    ABSENT_DROP_STAGE,
    COUNTERPART_STAGE,
    HARNESS_STAGES,
    HOISTED_STAGE,
    IMPORTS_STAGE,
    MOVED_STAGE,
    OUTLINE_STAGE,
    PARENT_STAGE,
    REMOVED_API_STAGE,
    REORDERED_STAGE,
    SHELL_STAGE,
    SUBSTITUTED_STAGE,
    TEST_ROWS_STAGE,
    UNVECTORIZED_STAGE,
    VECTORIZED_STAGE,
)
from nodes.operators import UNCHANGED_STAGE

STAGES = ("draft", "improve", "debug")
STATUSES = ("valid", "buggy")


class ReportError(Exception):
    """A run directory that cannot be reported on; shown as one line, exit code 2."""


# ----------------------------------------------------------------------------- reading a run


def load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's `tree.json` and `summary.json` (an empty dict when there is no summary yet)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"run directory {run_dir} does not exist")
    tree_path = run_dir / "tree.json"
    if not tree_path.is_file():
        raise ReportError(f"no tree.json in {run_dir} (is it a run directory?)")
    try:
        tree = json.loads(tree_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReportError(f"{tree_path} is not valid JSON: {exc}") from exc
    if not isinstance(tree, dict) or not isinstance(tree.get("nodes"), list):
        raise ReportError(f"{tree_path} has no 'nodes' list")
    summary: dict[str, Any] = {}
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ReportError(f"{summary_path} is not valid JSON: {exc}") from exc
    return tree, summary


def _ordered(nodes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(nodes, key=lambda n: (n.get("step", 0), n.get("branch", 0), n["id"]))


def _is_good(node: dict[str, Any]) -> bool:
    return not node.get("is_buggy", True) and node.get("metric") is not None


def _score(node: dict[str, Any]) -> float | None:
    """What selection ranked the node by: the harness's holdout score in a run that holds a
    split, else its own metric (nodes.tree.Node.score)."""
    if node.get("is_buggy", True):
        return None
    return node.get("holdout_score") if node.get("by_holdout") else node.get("metric")


def _better(a: float, b: float, lower_is_better: bool) -> bool:
    return a < b if lower_is_better else a > b


def best_node_id(nodes: list[dict[str, Any]], lower_is_better: bool) -> str | None:
    """The search's own rule: best score (holdout score, else metric) among valid nodes, the
    earliest on ties."""
    best: dict[str, Any] | None = None
    for node in _ordered(n for n in nodes if _score(n) is not None):
        if best is None or _better(_score(node), _score(best), lower_is_better):  # type: ignore[arg-type]
            best = node
    return best["id"] if best else None


def node_status(node: dict[str, Any], best_id: str | None) -> str:
    """'best', 'buggy' or 'valid': the colour class of a node."""
    if node["id"] == best_id:
        return "best"
    return "buggy" if node.get("is_buggy", True) else "valid"


def outcome_counts(nodes: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Valid and buggy nodes per stage, e.g. {"draft": {"valid": 3, "buggy": 2}, ...}."""
    counts = {stage: {"valid": 0, "buggy": 0} for stage in STAGES}
    for node in nodes:
        row = counts.setdefault(node.get("stage", "?"), {"valid": 0, "buggy": 0})
        row["buggy" if node.get("is_buggy", True) else "valid"] += 1
    return counts


def _tokens_by_role(node: dict[str, Any]) -> dict[str, int]:
    calls = node.get("calls") or []
    if not calls:
        total = (node.get("prompt_tokens") or 0) + (node.get("completion_tokens") or 0)
        return {"unattributed": total} if total else {}
    out: Counter[str] = Counter()
    for call in calls:
        out[call.get("role", "?")] += (call.get("prompt_tokens") or 0) + (call.get("completion_tokens") or 0)
    return dict(out)


def strategy_trials(node: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A strategy node's candidates or rounds as (kind, trials).

    kind is "candidate" (self-consistency attempts) or "round" (reflection loops); each trial is
    {"label": 1-based number, "metric", "failed", "kept"}. ("", []) for a plain node.
    """
    details = (node.get("extra") or {}).get("strategy") or {}
    if details.get("attempts"):
        kept = details.get("kept")
        return "candidate", [
            {"label": int(a.get("index", i)) + 1, "metric": a.get("metric"),
             "failed": a.get("failure") is not None or a.get("metric") is None,
             "kept": a.get("index", i) == kept}
            for i, a in enumerate(details["attempts"])
        ]
    if details.get("rounds"):
        kept = details.get("kept_round")
        return "round", [
            {"label": int(r.get("round", i + 1)), "metric": r.get("metric"),
             "failed": r.get("failure") is not None or r.get("metric") is None,
             "kept": r.get("round", i + 1) == kept}
            for i, r in enumerate(details["rounds"])
        ]
    return "", []


# ----------------------------------------------------------------------------- positions


def _steps(nodes: list[dict[str, Any]]) -> list[int]:
    return [int(n.get("step", i)) for i, n in enumerate(nodes)]


def _spread(n: int) -> list[float]:
    if n <= 1:
        return [0.0]
    width = 0.6
    return [-width / 2 + width * i / (n - 1) for i in range(n)]


def tree_layout(nodes: list[dict[str, Any]]) -> dict[str, tuple[int, float]]:
    """(depth, row) of every node: a leaf per row, a parent centred on its children.

    Roots and children go in step order. A node whose parent is missing is drawn as a root.
    """
    ids = {n["id"] for n in nodes}
    children: dict[str | None, list[str]] = {}
    for node in _ordered(nodes):
        parent = node.get("parent_id") if node.get("parent_id") in ids else None
        children.setdefault(parent, []).append(node["id"])
    pos: dict[str, tuple[int, float]] = {}
    next_row = 0
    # iterative post-order walk: improve chains can be as deep as the run is long
    for root in children.get(None, []):
        stack: list[tuple[str, int, bool]] = [(root, 0, False)]
        while stack:
            node_id, depth, expanded = stack.pop()
            kids = children.get(node_id, [])
            if not kids:
                pos[node_id] = (depth, float(next_row))
                next_row += 1
            elif expanded:
                pos[node_id] = (depth, (pos[kids[0]][1] + pos[kids[-1]][1]) / 2)
            else:
                stack.append((node_id, depth, True))
                stack.extend((k, depth + 1, False) for k in reversed(kids))
    for node in _ordered(nodes):  # only a corrupt tree (a parent cycle) leaves nodes unplaced
        if node["id"] not in pos:
            pos[node["id"]] = (0, float(next_row))
            next_row += 1
    return pos


# ----------------------------------------------------------------------------- text


def _fmt(value: Any, digits: int = 6) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}g}"
    return str(value)


def _finite(value: Any) -> Any:
    # JSON has no NaN or Infinity: the page's JSON.parse would fail on them
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _seconds(value: Any) -> str:
    return "–" if value is None else f"{float(value):.2f} s"


def _headline(tree: dict[str, Any], summary: dict[str, Any], nodes: list[dict[str, Any]],
              best_id: str | None) -> list[tuple[str, str]]:
    lower = bool(tree.get("lower_is_better", summary.get("lower_is_better", False)))
    best = next((n for n in nodes if n["id"] == best_id), None)
    facts = [
        ("task", _fmt(summary.get("task"))),
        ("strategy", _fmt(summary.get("strategy") or (nodes[0].get("strategy") if nodes else None))),
        ("model", _fmt(summary.get("model"))),
        ("nodes", f"{len(nodes)} ({sum(1 for n in nodes if n.get('is_buggy', True))} buggy)"),
        ("best validation metric",
         (f"{_fmt(best['metric'])} (node {best['id']}; {'lower' if lower else 'higher'} is better)"
          if best else "none (no valid node)")),
    ]
    repairs = repair_text(nodes)
    if repairs:
        facts.append(("repairs inside the steps", repairs))
    selection = summary.get("selection") if summary else None
    if isinstance(selection, dict) and selection.get("by") == "holdout":
        facts.append(("selected by", f"the harness's held split ({selection.get('rows', '?')} training "
                                     "rows, scored with the task's grader)"))
        if best is not None:
            facts.append(("holdout score of best node", _fmt(best.get("holdout_score"))))
        other = summary.get("best_by_self_report_id")
        if other:
            same = other == (best or {}).get("id")
            other_test = _fmt(summary.get("best_by_self_report_test_score"))
            facts.append(("the METRIC lines alone would pick",
                          "the same node" if same else f"node {other} (hidden test score {other_test})"))
        facts.append(("self-reports far better than the holdout", _fmt(summary.get("self_report_flags", 0))))
    elif isinstance(selection, dict) and selection.get("reason"):
        facts.append(("selected by", f"the scripts' METRIC lines (no held split: {selection['reason']})"))
    if best is not None and best.get("test_valid") is not None:
        facts.append(("hidden test score of best node", _medal_text(best.get("test_score"), summary)))
    if summary:
        prompt, completion = summary.get("prompt_tokens") or 0, summary.get("completion_tokens") or 0
        facts += [
            ("valid submission", _fmt(summary.get("valid_submission"))),
            ("tokens", f"{prompt + completion} (prompt {prompt}, completion {completion}) "
                       f"in {summary.get('llm_calls', 0)} LLM calls"),
            ("time", f"LLM {_seconds(summary.get('llm_seconds'))}, "
                     f"execution {_seconds(summary.get('exec_seconds'))}, "
                     f"wall {_seconds(summary.get('wall_seconds'))}"),
        ]
        budget_line = _budget_text(summary)
        if budget_line:
            facts.append(("compute budget", budget_line))
        if "answers_cut" in summary:
            facts.append(("answers cut at the token cap",
                          f"{summary['answers_cut']} lost, {summary.get('answers_cut_retried', 0)} "
                          "recovered by a retry with a larger cap"))
    return facts


# what the harness did to scripts without an LLM call, in the order the report lists it:
# (stage, what it did, what the run did then when it counts as fixed)
_HARNESS_LINES = (
    (IMPORTS_STAGE, "imports added by the harness", "passed the static check"),
    (MOVED_STAGE, "imports moved to the module that has the name by the harness", "passed the static check"),
    (OUTLINE_STAGE, "outline lines added by the harness", "passed the static check"),
    (SHELL_STAGE, "notebook shell lines taken out by the harness", "passed the static check"),
    (HOISTED_STAGE, "definitions moved above their first use by the harness", "passed the static check"),
    (REORDERED_STAGE, "assignments moved above their first use by the harness",
     "no longer used above them"),
    (SUBSTITUTED_STAGE, "a missing gradient-boosting package replaced with scikit-learn's by the harness",
     "no longer imported it"),
    (COUNTERPART_STAGE, "a split's line written from another split's by the harness",
     "passed the static check"),
    (REMOVED_API_STAGE, "calls of a removed API rewritten by the harness", "got past that error"),
    (UNVECTORIZED_STAGE, "a second text vectorizer taken out of a pipeline by the harness",
     "got past that error"),
    (ABSENT_DROP_STAGE, "a drop of the target from the test table let pass by the harness",
     "got past that error"),
    (TEST_ROWS_STAGE, "a validation split's predictions in the submission made the test rows' by the harness",
     "got past that error"),
    (VECTORIZED_STAGE, "a text vectorizer put before an estimator given raw strings by the harness",
     "got past those strings"),
)


def repair_text(nodes: list[dict[str, Any]]) -> str:
    """What the repairs inside the steps did: the repair calls and how many got past the
    failure, those set aside, what the harness did to scripts (\"\" when there was nothing)."""
    records = [r for n in nodes for r in ((n.get("extra") or {}).get("repairs") or [])]
    again = [r for r in records if r.get("stage") == UNCHANGED_STAGE]
    calls = [r for r in records if r.get("stage") not in HARNESS_STAGES and r.get("stage") != UNCHANGED_STAGE]
    into_parent = [r for r in records if r.get("stage") == PARENT_STAGE]
    parts = []
    if calls:
        fixed = sum(1 for r in calls if r.get("fixed"))
        parts.append(f"{len(calls)} repair calls, {fixed} got past the failure")
        spliced = sum(1 for r in calls if r.get("fragment"))
        if spliced:
            parts.append(f"{spliced} answers were fragments of the script, put in their place")
        aside = sum(1 for r in calls if r.get("kept") == "before")
        if aside:
            parts.append(f"{aside} repaired scripts set aside (they got less far than the script "
                         "before them)")
    if again:
        parts.append(f"{len(again)} improve answers changed nothing and were asked again "
                     f"({sum(1 for r in again if r.get('fixed'))} then changed the program)")
    if into_parent:
        kept = sum(1 for r in into_parent if r.get("kept") != "before")
        parts.append(f"{len(into_parent)} debug or improve answers were fragments of the parent's script, "
                     f"put in their place by the harness ({kept} kept)")
    for stage, what, then in _HARNESS_LINES:
        done = [r for r in records if r.get("stage") == stage]
        if done:
            parts.append(f"{what} {len(done)} times ({sum(1 for r in done if r.get('fixed'))} then {then})")
    return "; ".join(parts)


def _budget_text(summary: dict[str, Any]) -> str:
    """The budget, what was used of it and whether it stopped the search ("" without one)."""
    budget = summary.get("budget") or {}
    used = summary.get("used") or {}
    parts = [f"{_fmt(used.get(k))} of {_fmt(budget[k])} {unit}"
             for k, unit in (("tokens", "tokens"), ("seconds", "s")) if budget.get(k) is not None]
    if not parts:
        return ""
    stop = summary.get("budget_stop")
    ended = (describe_stop(stop, int(summary.get("stopped_at_step") or 0))
             if summary.get("stopped_by") == "budget" and isinstance(stop, dict) else "not reached")
    return f"{', '.join(parts)} used; {ended}"


def _medal_text(score: Any, summary: dict[str, Any]) -> str:
    if score is None:
        return "invalid submission"
    text = _fmt(score)
    medals = summary.get("medals")
    if isinstance(medals, dict) and medals:
        won = [m for m in ("gold", "silver", "bronze") if medals.get(f"{m}_medal")]
        text += (f" ({won[0]} medal" if won else " (no medal") + (
            ", above median)" if medals.get("above_median") else ", not above median)")
    return text


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def score_table(nodes: list[dict[str, Any]]) -> list[str]:
    """report.md's per-node scores: the script's own metric, the harness's holdout score and the
    hidden test score, for every node that ran cleanly (empty when no node did)."""
    good = [n for n in nodes if not n.get("is_buggy", True)]
    if not good:
        return []
    lines = ["| node | stage | self-reported | holdout | hidden test | flag |", "|---|---|---|---|---|---|"]
    for n in good:
        held = _fmt(n.get("holdout_score")) if n.get("by_holdout") else "-"
        if n.get("by_holdout") and n.get("holdout_score") is None and n.get("holdout_note"):
            held = f"none ({n['holdout_note']})"
        flag = "far better than holdout" if n.get("self_report_flag") else ""
        lines.append(f"| {_md(n['id'])} | {_md(n.get('stage'))} | {_fmt(n.get('metric'))} | {_md(held)} | "
                     f"{_fmt(n.get('test_score'))} | {flag} |")
    return [*lines, ""]
