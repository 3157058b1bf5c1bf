"""The run report's figures: matplotlib Figures (a notebook can show them) and their PNG bytes."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

from matplotlib.figure import Figure

from views.report.derive import (
    STAGES,
    STATUSES,
    _better,
    _is_good,
    _ordered,
    _score,
    _spread,
    _steps,
    _tokens_by_role,
    outcome_counts,
    strategy_trials,
)

STATUS_COLOURS = {"buggy": "#e45756", "valid": "#54a24b", "best": "#f2b701"}
STAGE_COLOURS = {"draft": "#4c78a8", "improve": "#9d5fb8", "debug": "#e8871e"}
_DPI = 100


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
    buggy = [n for n in nodes if n.get("is_buggy", True)]  # a held run's valid node may lack a METRIC line
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


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (Agg)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


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
