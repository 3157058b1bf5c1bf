"""Files derived from a run's tree: tree.json, best_solution.py, submission.csv, summary.json.

How they are written (atomically) and where a node's submission lives: nodes.files.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodes.budget import Cost
from nodes.files import copy_atomically, submission_path, write_atomically
from nodes.tree import Node, Tree

_TREE_FIELDS = [
    "id", "step", "branch", "parent_id", "stage", "strategy", "plan", "code", "output",
    "exit_code", "timed_out", "metric", "is_buggy", "bug_reason", "review", "review_says_bug",
    "has_submission", "debug_depth", "prompt_tokens", "completion_tokens", "reasoning_tokens",
    "cached_tokens", "llm_calls", "llm_seconds", "exec_seconds", "script_seconds", "llm_error", "reasoning",
    "test_score", "test_valid", "test_reason", "by_holdout", "holdout_score", "holdout_note",
    "self_report_flag", "created_at", "calls", "extra",
]


def tree_json(nodes: list[Node], *, run_id: str, lower_is_better: bool) -> dict[str, Any]:
    """The whole tree as JSON-ready data."""
    return {
        "run_id": run_id,
        "lower_is_better": lower_is_better,
        "nodes": [
            {**n.model_dump(include=set(_TREE_FIELDS)), "output_tail": n.output[-4000:]}
            for n in nodes
        ],
    }


def best_by_self_report(nodes: list[Node], lower_is_better: bool) -> Node | None:
    """The node the scripts' own METRIC lines would pick (earliest wins ties)."""
    good = [n for n in nodes if not n.is_buggy and n.metric is not None and math.isfinite(n.metric)]
    if not good:
        return None
    sign = 1.0 if lower_is_better else -1.0
    return min(good, key=lambda n: (sign * n.metric, n.step))  # type: ignore[operator]


def budget_numbers(
    nodes: list[Node], settings: dict[str, Any], stopped: dict[str, Any] | None,
) -> dict[str, Any]:
    """The run's compute budget (None where not set), what its nodes used of it (nodes.budget:
    prompt + completion tokens, LLM + script execution seconds), and what ended the search:
    the budget or the steps, and the step it stopped at (`stopped`: the search state's record;
    without one, the steps when they were all done)."""
    used = Cost.total(n.cost for n in nodes)
    if stopped is None:
        steps = settings.get("steps")
        stopped = {"by": "steps" if steps is None or len(nodes) >= steps else None, "step": len(nodes)}
    out: dict[str, Any] = {
        "budget": {"tokens": settings.get("budget_tokens"), "seconds": settings.get("budget_seconds")},
        "used": used.as_dict(),
        "stopped_by": stopped.get("by"),
        "stopped_at_step": stopped.get("step"),
    }
    if stopped.get("by") == "budget":
        out["budget_stop"] = {k: stopped[k] for k in ("measure", "limit", "used", "predicted")
                              if k in stopped}
    return out


def summarize(
    nodes: list[Node], tree: Tree, *, run_id: str, wall_seconds: float, settings: dict[str, Any],
    selection: dict[str, Any] | None = None, stopped: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Headline numbers of a run (`stopped`: why the search ended, `budget_numbers`)."""
    best = tree.best()
    best_node = next((n for n in nodes if best is not None and n.id == best.id), None)
    by_self = best_by_self_report(nodes, tree.lower_is_better)
    if selection is None:  # a run written before its selection was recorded: read it off the nodes
        selection = {"by": "holdout" if any(n.by_holdout for n in nodes) else "self_report"}
    graded = [n for n in nodes if n.test_score is not None]
    by_stage = Counter(n.stage for n in nodes)
    buggy_by_stage = Counter(n.stage for n in nodes if n.is_buggy)
    return {
        "run_id": run_id,
        "task": settings.get("task_dir"),
        "strategy": settings.get("strategy"),
        "model": settings.get("model"),
        "steps": len(nodes),
        "best_node_id": best.id if best else None,
        "best_metric": best.metric if best else None,
        "lower_is_better": tree.lower_is_better,
        "valid_submission": any(n.has_submission and not n.is_buggy for n in nodes),
        # the test score of the node picked by validation metric: what would be submitted
        "best_node_test_score": best_node.test_score if best_node else None,
        "best_node_test_valid": best_node.test_valid if best_node else None,
        # what picked the best node: the harness's held split, or the scripts' METRIC lines (why)
        "selection": selection,
        "best_node_holdout_score": best_node.holdout_score if best_node else None,
        # the node the METRIC lines alone would have picked, and its hidden test score
        "best_by_self_report_id": by_self.id if by_self else None,
        "best_by_self_report_test_score": by_self.test_score if by_self else None,
        "self_report_flags": sum(1 for n in nodes if n.self_report_flag),
        "graded_nodes": len(graded),
        "nodes_by_stage": dict(by_stage),
        "buggy_by_stage": dict(buggy_by_stage),
        "buggy_nodes": sum(1 for n in nodes if n.is_buggy),
        "prompt_tokens": sum(n.prompt_tokens for n in nodes),
        "completion_tokens": sum(n.completion_tokens for n in nodes),
        "reasoning_tokens": sum(n.reasoning_tokens for n in nodes),
        "cached_tokens": sum(n.cached_tokens for n in nodes),
        "llm_calls": sum(n.llm_calls for n in nodes),
        # answers lost to the generation cap (cut, not recovered by a retry) and answers cut once
        # then asked again with a larger cap
        "answers_cut": sum(c.answers_cut for n in nodes for c in n.calls),
        "answers_cut_retried": sum(c.retried for n in nodes for c in n.calls),
        "llm_seconds": round(sum(n.llm_seconds for n in nodes), 3),
        "exec_seconds": round(sum(n.exec_seconds for n in nodes), 3),
        "wall_seconds": round(wall_seconds, 3),
        **budget_numbers(nodes, settings, stopped),
        "cost_by_role": cost_by_role(nodes),
    }


def cost_by_role(nodes: list[Node]) -> dict[str, dict[str, float]]:
    """Calls, tokens, LLM seconds, failures and answers cut at the cap (`cut`: lost, `retried`:
    asked again with a larger cap) per role (coder, sampler, planner, reflector, judge, ...)."""
    out: dict[str, dict[str, float]] = {}
    for call in (c for n in nodes for c in n.calls):
        row = out.setdefault(call.role, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                         "reasoning_tokens": 0, "llm_seconds": 0.0, "failed": 0,
                                         "cut": 0, "retried": 0})
        row["calls"] += 1
        row["prompt_tokens"] += call.prompt_tokens
        row["completion_tokens"] += call.completion_tokens
        row["reasoning_tokens"] += call.reasoning_tokens
        row["cut"] += call.answers_cut
        row["retried"] += call.retried
        row["llm_seconds"] = round(row["llm_seconds"] + call.seconds, 3)
        row["failed"] += call.error is not None
    return out


def export_run(
    run_dir: Path, nodes: list[Node], tree: Tree, *, run_id: str, wall_seconds: float,
    settings: dict[str, Any], medal_report: Callable[[float | None], dict[str, Any]] | None = None,
    selection: dict[str, Any] | None = None, stopped: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write every derived file of a run and return the summary (with medals when possible);
    `stopped`: the search state's record of why it ended."""
    write_atomically(
        run_dir / "tree.json",
        json.dumps(tree_json(nodes, run_id=run_id, lower_is_better=tree.lower_is_better), indent=1),
    )
    summary = summarize(nodes, tree, run_id=run_id, wall_seconds=wall_seconds, settings=settings,
                        selection=selection, stopped=stopped)
    if medal_report is not None:
        summary["medals"] = medal_report(summary["best_node_test_score"])
    best = tree.best()
    if best is not None:
        best_node = next(n for n in nodes if n.id == best.id)
        write_atomically(run_dir / "best_solution.py", best_node.code)
        sub = submission_path(run_dir, best.id)
        if sub.is_file():
            copy_atomically(sub, run_dir / "submission.csv")
    write_atomically(run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary
