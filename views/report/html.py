"""The run report's pages: the self-contained interactive `tree.html` (Jinja2, pygments) and
the text of `report/report.md`."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from views.report.derive import (
    _finite,
    _fmt,
    _headline,
    _is_good,
    _md,
    _ordered,
    _seconds,
    best_node_id,
    node_status,
    outcome_counts,
    score_table,
    tree_layout,
)
from views.report.figures import STAGE_COLOURS, STATUS_COLOURS

_TEMPLATES = Path(__file__).parent / "templates"


# ----------------------------------------------------------------------------- tree.html


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
        elif not node.get("is_buggy", True):  # valid in a held run without a METRIC line
            label += "  no METRIC"
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
