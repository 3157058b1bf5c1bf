"""After a run: an interactive `tree.html` and `report/report.md` with figures, from `tree.json`.

    python -m views.report RUN_DIR

(`python -m graphs.report RUN_DIR`, its old name, still works.)

`tree.html` is one self-contained page (no network): the search tree, nodes filled by status
(buggy / valid / best) and shaped and outlined by stage; clicking a node shows its plan, code,
output, review, metric, hidden test score, cost and, for strategy runs, its candidates or rounds.
`report/report.md` has a headline table from `summary.json` and PNG figures beside it. The figure
builders return matplotlib Figures, so a notebook can show them. Everything is derived from the
run's files; nothing here touches the run's state.

derive.py: the numbers (no plotting, no HTML); figures.py: the matplotlib figures; html.py:
tree.html and the text of report.md; here: writing them all, and the command line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodes.files import write_atomically, write_bytes_atomically
from views.cli import EXIT_USAGE, OneLineParser
from views.report.derive import (
    STAGES,
    STATUSES,
    ReportError,
    best_node_id,
    load_run,
    node_status,
    outcome_counts,
    score_table,
    strategy_trials,
    tree_layout,
)
from views.report.figures import (
    STAGE_COLOURS,
    STATUS_COLOURS,
    cost_figure,
    figure_png,
    metric_figure,
    outcomes_figure,
    run_figures,
    strategy_figure,
)
from views.report.html import highlight_python, render_tree_html, report_markdown

__all__ = [
    "STAGES", "STATUSES", "STAGE_COLOURS", "STATUS_COLOURS", "ReportError", "load_run", "best_node_id",
    "node_status", "outcome_counts", "strategy_trials", "tree_layout", "score_table", "metric_figure",
    "outcomes_figure", "cost_figure", "strategy_figure", "figure_png", "run_figures", "highlight_python",
    "render_tree_html", "report_markdown", "write_report", "write_report_safely", "main",
]


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
    parser = OneLineParser(prog="python -m views.report",
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
