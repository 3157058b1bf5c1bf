"""Calls of an API the installed versions removed (or never had), rewritten as the same computation.

Small models learned scikit-learn and pandas from before their last majors: they write
`mean_squared_error(y, p, squared=False)`, `OneHotEncoder(sparse=False)` and `df.applymap(f)`, and
a repair call shown the error and its remedy writes them again. Each has an exact equivalent in
the installed versions, so after a run fails with that error the harness rewrites those calls and
runs the script again (`nodes.execute.removed_api_fix`):

- `mean_squared_error(a, b, squared=False)` -> `numpy.sqrt(mean_squared_error(a, b))` (and
  `mean_squared_log_error` alike); `squared=True` is dropped, as it was the default;
- `OneHotEncoder(sparse=...)` -> `OneHotEncoder(sparse_output=...)`;
- `<table>.applymap(f)` -> `<table>.map(f)` (pandas 2.1 renamed it; 3 removed the old name);
- `HistGradientBoostingRegressor(n_estimators=...)` -> `(max_iter=...)`: the names of XGBoost's
  and LightGBM's arguments, which a model told to use scikit-learn's gradient boosting gives it,
  under scikit-learn's (`nodes.substitute.hist_call`), those with none left out.

Only the calls the error names are rewritten, and only when the error is one of these.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass

from nodes.pyast import parse
from nodes.source_span import char_offset, span
from nodes.substitute import hist_call

_SQUARED = re.compile(r"unexpected keyword argument 'squared'")
_SPARSE = re.compile(r"unexpected keyword argument 'sparse'")
_APPLYMAP = re.compile(r"has no attribute 'applymap'")
_HIST_ARGS = re.compile(r"HistGradientBoosting(?:Regressor|Classifier)\.__init__\(\) "
                        r"got an unexpected keyword argument")
_SQUARED_METRICS = ("mean_squared_error", "mean_squared_log_error")


@dataclass(frozen=True)
class Edit:
    start: int  # offsets into the script
    end: int
    text: str  # what replaces code[start:end]


def _called(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _squared(code: str, tree: ast.AST) -> list[Edit]:
    edits = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _called(node) in _SQUARED_METRICS):
            continue
        kw = next((k for k in node.keywords if k.arg == "squared"), None)
        if kw is None or not isinstance(kw.value, ast.Constant) or not isinstance(kw.value.value, bool):
            continue
        call = ast.Call(func=node.func, args=node.args, keywords=[k for k in node.keywords if k is not kw])
        text = ast.unparse(call)
        start, end = span(code, node)
        edits.append(Edit(start, end, text if kw.value.value else f"numpy.sqrt({text})"))
    return edits


def _sparse(code: str, tree: ast.AST) -> list[Edit]:
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _called(node) == "OneHotEncoder":
            for k in node.keywords:
                if k.arg == "sparse":
                    start = char_offset(code, k.lineno, k.col_offset)
                    edits.append(Edit(start, start + len("sparse"), "sparse_output"))
    return edits


def _applymap(code: str, tree: ast.AST) -> list[Edit]:
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "applymap":
            _, end = span(code, node)
            edits.append(Edit(end - len("applymap"), end, "map"))
    return edits


def _hist_args(code: str, tree: ast.AST) -> list[Edit]:
    edits = []
    for node in ast.walk(tree):
        name = _called(node) if isinstance(node, ast.Call) else ""
        if name in ("HistGradientBoostingRegressor", "HistGradientBoostingClassifier"):
            func = ast.get_source_segment(code, node.func) or name  # type: ignore[attr-defined]
            text, dropped = hist_call(code, node, func)  # type: ignore[arg-type]
            if dropped or text != ast.get_source_segment(code, node):
                start, end = span(code, node)
                edits.append(Edit(start, end, text))
    return edits


_REWRITES: tuple[tuple[re.Pattern[str], Callable[[str, ast.AST], list[Edit]], str], ...] = (
    (_SQUARED, _squared, "mean_squared_error(..., squared=False) -> numpy.sqrt(mean_squared_error(...))"),
    (_SPARSE, _sparse, "OneHotEncoder(sparse=...) -> OneHotEncoder(sparse_output=...)"),
    (_APPLYMAP, _applymap, ".applymap(f) -> .map(f)"),
    (_HIST_ARGS, _hist_args, "HistGradientBoosting*(n_estimators=...) -> (max_iter=...), the arguments "
                             "it does not take left out"),
)


def removed_api_error(*texts: str | None) -> bool:
    """Whether one of `texts` is an error of an API this module rewrites."""
    return any(t and pattern.search(t) for pattern, _, _ in _REWRITES for t in texts)


def rewrite_removed(code: str, *texts: str | None) -> tuple[str, list[str], bool] | None:
    """`code` with the calls an error of `texts` names rewritten (see the module): (the new
    script, what was rewritten, whether it now uses `numpy.`), or None when no text is such an
    error or the script has no such call."""
    try:
        tree = parse(code)
    except SyntaxError:
        return None
    edits: list[Edit] = []
    done: list[str] = []
    for pattern, find, what in _REWRITES:
        if any(t and pattern.search(t) for t in texts):
            found = find(code, tree)
            if found:
                edits += found
                done.append(what)
    if not edits:
        return None
    # innermost last: an edit inside another (a call nested in a call's arguments) is dropped
    edits.sort(key=lambda e: (e.start, -e.end))
    kept: list[Edit] = []
    for e in edits:
        if kept and e.start < kept[-1].end:
            continue
        kept.append(e)
    for e in reversed(kept):
        code = code[:e.start] + e.text + code[e.end:]
    return code, done, any(e.text.startswith("numpy.sqrt(") for e in kept)
