"""After a run: an interactive `tree.html` and `report/report.md` with figures, from `tree.json`.

    python -m graphs.report RUN_DIR

`tree.html` is one self-contained page (no network): the search tree, nodes filled by status
(buggy / valid / best) and shaped and outlined by stage; clicking a node shows its plan, code,
output, review, metric, hidden test score, cost and, for strategy runs, its candidates or rounds.
`report/report.md` has a headline table from `summary.json` and PNG figures beside it. The figure
builders return matplotlib Figures, so a notebook can show them. Everything is derived from the
run's files; nothing here touches the run's state.
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from matplotlib.figure import Figure
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from graphs.cli_args import EXIT_USAGE, OneLineParser
from graphs.export import write_atomically, write_bytes_atomically
from nodes.budget import describe_stop

STAGES = ("draft", "improve", "debug")
STATUSES = ("valid", "buggy")
STATUS_COLOURS = {"buggy": "#e45756", "valid": "#54a24b", "best": "#f2b701"}
STAGE_COLOURS = {"draft": "#4c78a8", "improve": "#9d5fb8", "debug": "#e8871e"}
_TEMPLATES = Path(__file__).parent / "templates"
_DPI = 100


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


# ----------------------------------------------------------------------------- figures


def _steps(nodes: list[dict[str, Any]]) -> list[int]:
    return [int(n.get("step", i)) for i, n in enumerate(nodes)]


def metric_figure(nodes: list[dict[str, Any]], lower_is_better: bool) -> Figure:
    """Validation metric per node (and the harness's holdout score, in a run that holds a
    split), the best so far by what selection ranks, and that node's hidden test score."""
    nodes = _ordered(nodes)
    fig = Figure(figsize=(8, 4.2), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    direction = "lower" if lower_is_better else "higher"
    ax.set_title(f"Validation metric per node ({direction} is better)")
    ax.set_xlabel("step")
    ax.set_ylabel("validation metric")
    for stage in STAGES:
        good = [n for n in nodes if _is_good(n) and n.get("stage") == stage]
        if good:
            ax.scatter(_steps(good), [n["metric"] for n in good], s=28, color=STAGE_COLOURS[stage],
                       label=f"{stage} (valid)", zorder=3)
    held = [n for n in nodes if n.get("by_holdout") and _score(n) is not None]
    if held:
        ax.scatter(_steps(held), [n["holdout_score"] for n in held], s=46, facecolors="none",
                   edgecolors="black", label="holdout score (harness)", zorder=4)
    buggy = [n for n in nodes if not _is_good(n)]
    if buggy:
        # x in data coordinates, y pinned just above the axis: nodes without a metric
        ax.scatter(_steps(buggy), [0.03] * len(buggy), marker="x", color=STATUS_COLOURS["buggy"],
                   transform=ax.get_xaxis_transform(), label="buggy (no metric)", zorder=3)
    best_x, best_y, test_x, test_y = [], [], [], []
    best: dict[str, Any] | None = None
    for node in nodes:
        score = _score(node)
        if score is not None and (best is None or _better(score, _score(best), lower_is_better)):  # type: ignore[arg-type]
            best = node
        if best is not None:
            best_x.append(node.get("step", 0))
            best_y.append(_score(best))
            if best.get("test_score") is not None:
                test_x.append(node.get("step", 0))
                test_y.append(best["test_score"])
    if best_x:
        what = "holdout score" if held else "validation"
        ax.step(best_x, best_y, where="post", color="black", linewidth=1.6, label=f"best {what} so far")
    if test_x:
        ax.step(test_x, test_y, where="post", color="#d62728", linestyle="--", linewidth=1.6,
                label="hidden test score of that node")
    if not best_x:
        ax.text(0.5, 0.5, "no valid node", transform=ax.transAxes, ha="center", va="center", color="grey")
    if nodes:
        ax.set_xlim(min(_steps(nodes)) - 0.5, max(_steps(nodes)) + 0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="best")
    return fig


def outcomes_figure(nodes: list[dict[str, Any]]) -> Figure:
    """Stacked bars per stage: valid and buggy nodes."""
    counts = outcome_counts(nodes)
    stages = list(counts)
    fig = Figure(figsize=(5.5, 3.8), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    bottom = [0] * len(stages)
    for status in STATUSES:
        heights = [counts[s][status] for s in stages]
        bars = ax.bar(stages, heights, bottom=bottom, color=STATUS_COLOURS[status], label=status)
        ax.bar_label(bars, labels=[str(h) if h else "" for h in heights], label_type="center")
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_title("Node outcomes per stage")
    ax.set_ylabel("nodes")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize="small")
    return fig


def cost_figure(nodes: list[dict[str, Any]]) -> Figure:
    """Per node: tokens (stacked by LLM role) and seconds (LLM, execution)."""
    nodes = _ordered(nodes)
    fig = Figure(figsize=(9, 5.6), dpi=_DPI, layout="constrained")
    ax_tok, ax_sec = fig.subplots(2, 1, sharex=True)
    xs = _steps(nodes)
    per_node = [_tokens_by_role(n) for n in nodes]
    roles = list(dict.fromkeys(r for row in per_node for r in row))
    palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#bab0ac"]
    bottom = [0] * len(nodes)
    for i, role in enumerate(roles):
        heights = [row.get(role, 0) for row in per_node]
        ax_tok.bar(xs, heights, bottom=bottom, color=palette[i % len(palette)], label=role)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax_tok.set_title("Tokens per node (prompt + completion, by role)")
    ax_tok.set_ylabel("tokens")
    if roles:
        ax_tok.legend(fontsize="small", ncols=min(len(roles), 4))
    llm = [float(n.get("llm_seconds") or 0) for n in nodes]
    exe = [float(n.get("exec_seconds") or 0) for n in nodes]
    ax_sec.bar(xs, llm, color="#4c78a8", label="LLM")
    ax_sec.bar(xs, exe, bottom=llm, color="#72b7b2", label="execution")
    ax_sec.set_title("Seconds per node")
    ax_sec.set_ylabel("seconds")
    ax_sec.set_xlabel("step")
    ax_sec.legend(fontsize="small")
    ax_sec.xaxis.get_major_locator().set_params(integer=True)
    for ax in (ax_tok, ax_sec):
        ax.grid(axis="y", alpha=0.3)
    return fig


def strategy_figure(nodes: list[dict[str, Any]]) -> Figure | None:
    """Candidates (self-consistency) or rounds (reflection loops) per expansion; None for plain runs.

    Left: each trial's validation metric by node step (kept one starred, failed ones as x at the
    bottom). Right: how many trials at each candidate index / round number ran valid or failed.
    """
    nodes = _ordered(nodes)
    trials = [(n, *strategy_trials(n)) for n in nodes]
    trials = [t for t in trials if t[2]]
    if not trials:
        return None
    kind = trials[0][1]
    strategy = (trials[0][0].get("extra") or {}).get("strategy", {}).get("strategy", "strategy")
    fig = Figure(figsize=(10, 4.2), dpi=_DPI, layout="constrained")
    ax_m, ax_c = fig.subplots(1, 2, width_ratios=[3, 2])
    kept_pts, other_pts, failed_x = [], [], []
    for node, _, node_trials in trials:
        step = node.get("step", 0)
        offsets = _spread(len(node_trials))
        for trial, dx in zip(node_trials, offsets):
            if trial["failed"]:
                failed_x.append(step + dx)
            elif trial["kept"]:
                kept_pts.append((step + dx, trial["metric"]))
            else:
                other_pts.append((step + dx, trial["metric"]))
        line = [(step + dx, t["metric"]) for t, dx in zip(node_trials, offsets) if not t["failed"]]
        if kind == "round" and len(line) > 1:
            ax_m.plot(*zip(*line), color="grey", linewidth=0.8, zorder=2)
    if other_pts:
        ax_m.scatter(*zip(*other_pts), s=22, color="#4c78a8", label=f"{kind} (valid)", zorder=3)
    if kept_pts:
        ax_m.scatter(*zip(*kept_pts), s=90, marker="*", color=STATUS_COLOURS["best"],
                     edgecolors="black", linewidths=0.5, label=f"kept {kind}", zorder=4)
    if failed_x:
        ax_m.scatter(failed_x, [0.03] * len(failed_x), marker="x", color=STATUS_COLOURS["buggy"],
                     transform=ax_m.get_xaxis_transform(), label=f"failed {kind}", zorder=3)
    ax_m.set_title(f"{strategy}: validation metric of each {kind} per node")
    ax_m.set_xlabel(f"step ({kind}s side by side)")
    ax_m.set_ylabel("validation metric")
    steps = [n.get("step", 0) for n, _, _ in trials]
    ax_m.set_xlim(min(steps) - 0.5, max(steps) + 0.5)
    ax_m.xaxis.get_major_locator().set_params(integer=True)
    ax_m.grid(alpha=0.3)
    ax_m.legend(fontsize="small")
    per_label: dict[int, Counter[str]] = {}
    for _, _, node_trials in trials:
        for trial in node_trials:
            per_label.setdefault(trial["label"], Counter())["failed" if trial["failed"] else "valid"] += 1
    labels = sorted(per_label)
    valid = [per_label[x]["valid"] for x in labels]
    failed = [per_label[x]["failed"] for x in labels]
    names = [str(x) for x in labels]
    ax_c.bar(names, valid, color=STATUS_COLOURS["valid"], label="valid")
    ax_c.bar(names, failed, bottom=valid, color=STATUS_COLOURS["buggy"], label="failed")
    ax_c.set_title(f"Outcome by {kind}")
    ax_c.set_xlabel(kind)
    ax_c.set_ylabel("count over nodes")
    ax_c.yaxis.get_major_locator().set_params(integer=True)
    ax_c.legend(fontsize="small")
    return fig


def _spread(n: int) -> list[float]:
    if n <= 1:
        return [0.0]
    width = 0.6
    return [-width / 2 + width * i / (n - 1) for i in range(n)]


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (Agg)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


# ----------------------------------------------------------------------------- tree.html


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


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=True,  # code, output and reviews are untrusted model output
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["seconds"] = _seconds
    return env


_FORMATTER = HtmlFormatter(nowrap=True, style="default")


def highlight_python(code: str) -> Markup:
    """Python source as highlighted, escaped HTML (pygments, no external resources)."""
    return Markup(highlight(code, PythonLexer(), _FORMATTER))


def _strategy_view(node: dict[str, Any]) -> dict[str, Any] | None:
    details = (node.get("extra") or {}).get("strategy")
    if not isinstance(details, dict) or not details:
        return None
    facts = [(k, v) for k, v in details.items() if not isinstance(v, (list, dict))]
    tables, other = [], {}
    for key, value in details.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(c for row in value for c in row))
            if key == "attempts":
                kept = [row.get("index", i) == details.get("kept") for i, row in enumerate(value)]
            elif key == "rounds":
                kept = [row.get("round", i + 1) == details.get("kept_round") for i, row in enumerate(value)]
            else:
                kept = [False] * len(value)
            rows = [{"cells": [row.get(c) for c in columns], "kept": k} for row, k in zip(value, kept)]
            title = "candidates" if key == "attempts" else key
            tables.append({"title": title, "columns": columns, "rows": rows})
        elif isinstance(value, (list, dict)):
            other[key] = value
    return {"facts": facts, "tables": tables,
            "other": json.dumps(other, indent=1, default=str) if other else ""}


def _node_view(node: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "id": node["id"],
        "step": node.get("step"),
        "stage": node.get("stage", "?"),
        "status": status,
        "parent_id": node.get("parent_id"),
        "strategy": node.get("strategy"),
        "plan": node.get("plan") or "",
        "code_html": highlight_python(node.get("code") or ""),
        "output_tail": node.get("output_tail", node.get("output")) or "",
        "exit_code": node.get("exit_code"),
        "timed_out": node.get("timed_out"),
        "review": node.get("review") or "",
        "bug_reason": node.get("bug_reason"),
        "llm_error": node.get("llm_error"),
        "metric": node.get("metric"),
        "debug_depth": node.get("debug_depth"),
        "test_score": node.get("test_score"),
        "test_valid": node.get("test_valid"),
        "test_reason": node.get("test_reason"),
        "by_holdout": bool(node.get("by_holdout")),
        "holdout_score": node.get("holdout_score"),
        "holdout_note": node.get("holdout_note"),
        "self_report_flag": node.get("self_report_flag"),
        "reasoning": node.get("reasoning") or "",
        "cost": [
            ("prompt tokens", _fmt(node.get("prompt_tokens"))),
            ("completion tokens", _fmt(node.get("completion_tokens"))),
            ("reasoning tokens", _fmt(node.get("reasoning_tokens"))),
            ("cached prompt tokens", _fmt(node.get("cached_tokens"))),
            ("LLM calls", _fmt(node.get("llm_calls"))),
            ("LLM time", _seconds(node.get("llm_seconds"))),
            ("execution time", _seconds(node.get("exec_seconds"))),
        ],
        "calls": node.get("calls") or [],
        "repairs": (node.get("extra") or {}).get("repairs") or [],
        "notes": (node.get("extra") or {}).get("notes") or [],
        "strategy_view": _strategy_view(node),
    }


# layout of the drawing, in SVG pixels
_COL, _ROW, _PAD_X, _PAD_Y, _LABEL = 110, 30, 24, 22, 120


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


def render_tree_html(tree: dict[str, Any], summary: dict[str, Any]) -> str:
    """The self-contained interactive page of the tree."""
    nodes = _ordered(tree["nodes"])
    lower = bool(tree.get("lower_is_better", summary.get("lower_is_better", False)))
    best_id = summary.get("best_node_id") if summary else None
    if best_id not in {n["id"] for n in nodes}:
        best_id = best_node_id(nodes, lower)
    pos = tree_layout(nodes)
    status = {n["id"]: node_status(n, best_id) for n in nodes}

    def xy(node_id: str) -> tuple[float, float]:
        depth, row = pos[node_id]
        return _PAD_X + depth * _COL, _PAD_Y + row * _ROW

    svg_nodes, edges = [], []
    for node in nodes:
        x, y = xy(node["id"])
        label = f"#{node.get('step')}"
        if _is_good(node):
            label += f"  {_fmt(node['metric'], 4)}"
        svg_nodes.append({"id": node["id"], "x": x, "y": y, "stage": node.get("stage", "?"),
                          "status": status[node["id"]], "label": label,
                          "title": f"{node['id']} {node.get('stage')} ({status[node['id']]})"})
        parent = node.get("parent_id")
        if parent in pos:
            px, py = xy(parent)
            mid = (px + x) / 2
            edges.append({"d": f"M{px:.1f},{py:.1f} C{mid:.1f},{py:.1f} {mid:.1f},{y:.1f} {x:.1f},{y:.1f}",
                          "stage": node.get("stage", "?"), "child": node["id"]})
    depth = max((d for d, _ in pos.values()), default=0)
    rows = max((r for _, r in pos.values()), default=0)
    data = [{"id": n["id"], "parent_id": n.get("parent_id"), "step": n.get("step"),
             "stage": n.get("stage"), "status": status[n["id"]], "metric": _finite(n.get("metric")),
             "holdout_score": _finite(n.get("holdout_score")),
             "test_score": _finite(n.get("test_score"))} for n in nodes]
    return _env().get_template("tree.html.j2").render(
        run_id=tree.get("run_id") or summary.get("run_id") or "run",
        headline=_headline(tree, summary, nodes, best_id),
        width=int(_PAD_X * 2 + depth * _COL + _LABEL),
        height=int(_PAD_Y * 2 + rows * _ROW),
        svg_nodes=svg_nodes,
        edges=edges,
        details=[_node_view(n, status[n["id"]]) for n in nodes],
        node_data=data,
        initial=best_id or (nodes[-1]["id"] if nodes else None),
        stage_colours=STAGE_COLOURS,
        status_colours=STATUS_COLOURS,
        pygments_css=Markup(_FORMATTER.get_style_defs(".highlight")),
    )


# ----------------------------------------------------------------------------- report.md


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


def report_markdown(tree: dict[str, Any], summary: dict[str, Any], figures: dict[str, str]) -> str:
    """report.md: headline table, figures (relative links), outcome and cost-by-role tables."""
    nodes = _ordered(tree["nodes"])
    lower = bool(tree.get("lower_is_better", summary.get("lower_is_better", False)))
    best_id = summary.get("best_node_id") or best_node_id(nodes, lower)
    run_id = tree.get("run_id") or summary.get("run_id") or "run"
    lines = [f"# Run report: {_md(run_id)}", "", "| | |", "|---|---|"]
    lines += [f"| {_md(k)} | {_md(v)} |" for k, v in _headline(tree, summary, nodes, best_id)]
    lines += ["", "Interactive tree (click a node for its plan, code, output and review): "
              "[tree.html](../tree.html)", ""]
    sections = {
        "metric": "Validation metric over steps",
        "outcomes": "Node outcomes per stage",
        "cost": "Tokens and seconds per node",
        "strategy": "Strategy: candidates and rounds",
    }
    for key, title in sections.items():
        if key not in figures:
            continue
        lines += [f"## {title}", "", f"![{title}]({figures[key]})", ""]
        if key == "outcomes":
            counts = outcome_counts(nodes)
            lines += ["| stage | valid | buggy |", "|---|---|---|"]
            lines += [f"| {s} | {c['valid']} | {c['buggy']} |" for s, c in counts.items()]
            lines.append("")
            lines += score_table(nodes)
        if key == "cost" and summary.get("cost_by_role"):
            lines += ["| role | calls | prompt tokens | completion tokens | LLM s | failed |",
                      "|---|---|---|---|---|---|"]
            for role, c in summary["cost_by_role"].items():
                lines.append(f"| {_md(role)} | {c.get('calls', 0)} | {c.get('prompt_tokens', 0)} | "
                             f"{c.get('completion_tokens', 0)} | {float(c.get('llm_seconds', 0)):.1f} | "
                             f"{c.get('failed', 0)} |")
            lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- writing


def run_figures(tree: dict[str, Any]) -> dict[str, Figure]:
    """Every figure of the run report, by name (no "strategy" for a plain run)."""
    nodes = tree["nodes"]
    figures = {
        "metric": metric_figure(nodes, bool(tree.get("lower_is_better", False))),
        "outcomes": outcomes_figure(nodes),
        "cost": cost_figure(nodes),
    }
    strategy = strategy_figure(nodes)
    if strategy is not None:
        figures["strategy"] = strategy
    return figures


def write_report(run_dir: Path) -> dict[str, Path]:
    """Write tree.html and report/ (report.md + PNGs) of a run; the paths written, by name.

    Keys: "tree_html", "report_md" and one per figure ("metric", "outcomes", "cost", and
    "strategy" for strategy runs). ReportError when the directory holds no readable tree.
    """
    run_dir = Path(run_dir)
    tree, summary = load_run(run_dir)
    out = run_dir / "report"
    written: dict[str, Path] = {}
    names: dict[str, str] = {}
    for name, fig in run_figures(tree).items():
        path = out / f"{name}.png"
        write_bytes_atomically(path, figure_png(fig))
        written[name] = path
        names[name] = path.name
    write_atomically(out / "report.md", report_markdown(tree, summary, names))
    written["report_md"] = out / "report.md"
    write_atomically(run_dir / "tree.html", render_tree_html(tree, summary))
    written["tree_html"] = run_dir / "tree.html"
    return written


def write_report_safely(run_dir: Path, say: Callable[[str], Any] = print) -> dict[str, Path] | None:
    """`write_report` for the end of a run: a failure is one warning line, never an exception."""
    try:
        return write_report(run_dir)
    except Exception as exc:  # a report must never fail the run it describes
        first = (str(exc).splitlines() or [""])[0]
        say(f"warning: could not write the run report: {type(exc).__name__}: {first}")
        return None


def main(argv: list[str] | None = None) -> int:
    """Entry point; a missing run directory or tree is one line on stderr and exit code 2."""
    parser = OneLineParser(prog="python -m graphs.report",
                           description="Write tree.html and report/report.md for a finished run.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holding tree.json)")
    args = parser.parse_args(argv)
    try:
        written = write_report(Path(args.run_dir).expanduser())
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {written['tree_html']} and {written['report_md']} "
          f"({len(written) - 2} figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
