"""After a sweep: `report.md` with the results table and figures, from the files the sweep wrote.

    python -m benchmark.sweep_report OUT_DIR

Reads ``per_run.csv`` and ``results.csv`` (see `benchmark.results`) and writes, in OUT_DIR,
``report.md``, ``rates.png`` (valid / above median / any medal per model+strategy: mean ± SEM
over runs, pass@K marked) and ``cost_score.png`` (tokens per run against the best node's hidden
test score, one panel per task since scores of different tasks are not comparable). The figure
builders return matplotlib Figures, so a notebook can show them.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from benchmark.results import OUTCOMES, markdown_table
from nodes.files import write_atomically, write_bytes_atomically
from views.cli import EXIT_USAGE, OneLineParser
from views.report import figure_png

_TITLES = {"valid_submission": "valid submission", "above_median": "above median", "any_medal": "any medal"}
_PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d",
            "#ff9da6", "#bab0ac"]
_DPI = 100


class SweepReportError(Exception):
    """An output directory without sweep results; shown as one line, exit code 2."""


def load_sweep(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per_run, results): ``per_run.csv`` and ``results.csv`` of a sweep's output directory."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise SweepReportError(f"sweep directory {out_dir} does not exist")
    frames = []
    for name in ("per_run.csv", "results.csv"):
        path = out_dir / name
        if not path.is_file():
            raise SweepReportError(f"no {name} in {out_dir} (run benchmark.sweep first)")
        try:
            frames.append(pd.read_csv(path))
        except (ValueError, pd.errors.ParserError) as exc:
            raise SweepReportError(f"{path} is not a readable CSV: {str(exc).splitlines()[0]}") from exc
    return frames[0], frames[1]


def group_label(model: Any, strategy: Any) -> str:
    """How a model+strategy group is named in figures."""
    return f"{model} / {strategy}"


def _colours(labels: list[str]) -> dict[str, str]:
    return {label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(labels)}


def _nan(value: Any) -> bool:
    try:
        return value is None or math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def rates_figure(agg: pd.DataFrame) -> Figure:
    """Valid / above-median / any-medal rates per model+strategy: mean ± SEM bars, pass@K diamonds.

    A group with no run that has the outcome (e.g. no task with a leaderboard) has no bar: "n/a".
    """
    labels = [group_label(m, s) for m, s in zip(agg["model"], agg["strategy"])]
    colours = _colours(labels)
    k = int(agg["k"].iloc[0]) if len(agg) and "k" in agg else 1
    fig = Figure(figsize=(max(9.0, 1.1 * len(labels) * len(OUTCOMES)), 4.4), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, len(OUTCOMES), sharey=True)
    xs = list(range(len(labels)))
    for ax, outcome in zip(axes, OUTCOMES):
        for x, label, row in zip(xs, labels, agg.to_dict("records")):
            mean, sem = row.get(f"{outcome}_mean"), row.get(f"{outcome}_sem")
            if _nan(mean):
                ax.text(x, 2, "n/a", ha="center", va="bottom", color="grey", fontsize="small")
                continue
            ax.bar(x, mean, yerr=0 if _nan(sem) else sem, capsize=4, color=colours[label],
                   error_kw={"elinewidth": 1.2})
            # the value at the foot of the bar, so a 0% bar is told apart from an absent (n/a) one
            ax.text(x, 2, f"{mean:.0f}%", ha="center", va="bottom", fontsize="small", zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
                          "alpha": 0.8})
            pass_k = row.get(f"{outcome}_pass_at_k")
            if not _nan(pass_k):
                ax.scatter([x], [pass_k], marker="D", s=28, facecolor="white", edgecolor="black", zorder=3)
        ax.set_title(_TITLES[outcome])
        ax.set_xticks(xs, labels, rotation=30, ha="right", fontsize="small")
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("% of runs (mean ± SEM)")
    axes[-1].scatter([], [], marker="D", s=28, facecolor="white", edgecolor="black", label=f"pass@{k}")
    axes[-1].legend(fontsize="small", loc="upper right")
    fig.suptitle("Outcome rates per model + strategy")
    return fig


def cost_score_figure(per_run: pd.DataFrame) -> Figure:
    """Tokens per run against the best node's hidden test score, one marker per run.

    One panel per task; colour is the model+strategy group. A run without a test score (invalid or
    no submission) is an x at the bottom of its panel; failed runs (no tokens recorded) are left
    out and counted in the panel's title.
    """
    tasks = list(dict.fromkeys(per_run["task"])) or ["(no runs)"]
    labels = list(dict.fromkeys(group_label(m, s) for m, s in zip(per_run["model"], per_run["strategy"])))
    colours = _colours(labels)
    cols = min(len(tasks), 3)
    rows = math.ceil(len(tasks) / cols)
    fig = Figure(figsize=(4.6 * cols + 2.2, 3.8 * rows), dpi=_DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    for ax, task in zip(axes, tasks):
        runs = per_run[per_run["task"] == task]
        tokens = pd.to_numeric(runs["tokens"], errors="coerce")
        scores = pd.to_numeric(runs["best_node_test_score"], errors="coerce")
        groups = [group_label(m, s) for m, s in zip(runs["model"], runs["strategy"])]
        for label in labels:
            mine = [g == label for g in groups]
            scored = [m and not _nan(t) and not _nan(s) for m, t, s in zip(mine, tokens, scores)]
            unscored = [m and not _nan(t) and _nan(s) for m, t, s in zip(mine, tokens, scores)]
            if any(scored):
                ax.scatter(tokens[scored], scores[scored], s=40, color=colours[label], alpha=0.85,
                           edgecolors="black", linewidths=0.4, zorder=3)
            if any(unscored):
                ax.scatter(tokens[unscored], [0.03] * sum(unscored), marker="x", s=40, color=colours[label],
                           transform=ax.get_xaxis_transform(), zorder=3)
        known = tokens.dropna()
        if len(known):  # the x markers use an axes transform, so autoscaling does not see them
            low, high = float(known.min()), float(known.max())
            pad = (high - low) * 0.06 or max(abs(high) * 0.06, 1.0)
            ax.set_xlim(low - pad, high + pad)
        failed = int(tokens.isna().sum())
        ax.set_title(f"{task}" + (f" ({failed} failed run{'s' * (failed != 1)} not shown)" if failed else ""),
                     fontsize="medium")
        ax.set_xlabel("tokens per run (prompt + completion)")
        ax.set_ylabel("best node's hidden test score")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], linestyle="", marker="o", markersize=7, color=colours[label],
                      markeredgecolor="black", markeredgewidth=0.4, label=label) for label in labels]
    handles.append(Line2D([], [], linestyle="", marker="x", markersize=7, color="grey",
                          label="no test score"))
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    fig.suptitle("Compute against score (one marker per run)")
    return fig


def _md(value: Any) -> str:
    if _nan(value) and not isinstance(value, str):
        return "–"
    return str(value).replace("|", "\\|").replace("\n", " ")


def sweep_markdown(out_dir: Path, per_run: pd.DataFrame, agg: pd.DataFrame, figures: dict[str, str]) -> str:
    """report.md: the results table, the figures, and one line per run with its tree.html."""
    k = int(agg["k"].iloc[0]) if len(agg) else 1
    lines = [f"# Sweep report: {_md(Path(out_dir).name)}", "",
             f"{len(per_run)} runs, {int((per_run['status'] == 'ok').sum())} finished. "
             "Definitions: `benchmark/results.py`; the same table is in results.md / results.csv.", "",
             markdown_table(agg, k), "## Outcome rates", "",
             f"![Outcome rates]({figures['rates']})", "",
             "Bars: mean over runs ± SEM; diamonds: pass@" + str(k) + "; n/a: no run with that outcome "
             "defined (no leaderboard).", "",
             "## Compute against score", "", f"![Compute against score]({figures['cost_score']})", "",
             "## Runs", "", "| run | task | strategy | model | seed | status | test score | tokens |",
             "|---|---|---|---|---|---|---|---|"]
    for row in per_run.to_dict("records"):
        run_id = str(row["run_id"])
        page = Path(out_dir) / "runs" / run_id / "tree.html"
        name = f"[{_md(run_id)}](runs/{run_id}/tree.html)" if page.is_file() else _md(run_id)
        score = row.get("best_node_test_score")
        tokens = row.get("tokens")
        lines.append(f"| {name} | {_md(row['task'])} | {_md(row['strategy'])} | {_md(row['model'])} | "
                     f"{_md(row['seed'])} | {_md(row['status'])} | "
                     f"{'–' if _nan(score) else f'{float(score):.4f}'} | "
                     f"{'–' if _nan(tokens) else int(float(tokens))} |")
    return "\n".join(lines) + "\n"


def write_sweep_report(out_dir: Path) -> Path:
    """Write report.md, rates.png and cost_score.png in a sweep's output directory; report.md's path."""
    out_dir = Path(out_dir)
    per_run, agg = load_sweep(out_dir)
    figures = {"rates": rates_figure(agg), "cost_score": cost_score_figure(per_run)}
    names = {}
    for name, fig in figures.items():
        write_bytes_atomically(out_dir / f"{name}.png", figure_png(fig))
        names[name] = f"{name}.png"
    path = out_dir / "report.md"
    write_atomically(path, sweep_markdown(out_dir, per_run, agg, names))
    return path


def write_sweep_report_safely(out_dir: Path, say: Callable[[str], Any] | None = None) -> Path | None:
    """`write_sweep_report` for the end of a sweep: a failure is one warning line on stderr."""
    try:
        return write_sweep_report(out_dir)
    except Exception as exc:  # the sweep's results are written already; a figure must not fail it
        first = (str(exc).splitlines() or [""])[0]
        message = f"warning: could not write the sweep report: {type(exc).__name__}: {first}"
        (say or (lambda m: print(m, file=sys.stderr, flush=True)))(message)
        return None


def main(argv: list[str] | None = None) -> int:
    """Entry point; a directory without sweep results is one line on stderr and exit code 2."""
    parser = OneLineParser(prog="python -m benchmark.sweep_report",
                           description="Write report.md and figures for a sweep's output directory.")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the sweep's --out directory")
    args: argparse.Namespace = parser.parse_args(argv)
    try:
        path = write_sweep_report(Path(args.out_dir).expanduser())
    except SweepReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
