"""A pipeline's text vectorizer taken out when the script fits it on text it already vectorized.

A small model vectorizes the text (`X_train_tfidf = tfidf.fit_transform(X_train)`) and then fits a
pipeline that vectorizes again (`make_pipeline(TfidfVectorizer(), LogisticRegression())`, often
copied from a script the harness vectorized, `nodes.execute.vectorize_fix`), so the pipeline's
vectorizer gets a matrix: `AttributeError: 'csr_matrix' object has no attribute 'lower'`. After
that crash on a `.fit(...)` line, the harness (`nodes.execute.double_vectorize_fix`) takes the text
vectorizers, and the `FunctionTransformer(numpy.ravel)` that fed them, out of that pipeline: every
call then gives it the matrices the script made, as it meant to.

Only when the fitted name was assigned a `make_pipeline(...)` holding a text vectorizer, and the
matrix fitted comes from a text vectorizer the script fitted (`name.fit_transform(...)`,
`name.transform(...)`, perhaps with `.toarray()`). Anything else is left to the repair call.
"""

from __future__ import annotations

import ast
import re

from nodes.pyast import parse
from nodes.source_span import span

# a matrix, a row of one, or a number of one (after `numpy.ravel`), where a text was due
_NOT_TEXT = re.compile(r"AttributeError: '(?:csr_matrix|csr_array|coo_matrix|ndarray|numpy\.ndarray"
                       r"|numpy\.float64)' object has no attribute 'lower'")
_VECTORIZERS = ("TfidfVectorizer", "CountVectorizer", "HashingVectorizer")


def not_text(failure: str | None) -> bool:
    """Whether `failure` is a text vectorizer's error on being given a matrix."""
    return bool(_NOT_TEXT.search(failure or ""))


def _called(node: ast.AST | None) -> str:
    if not isinstance(node, ast.Call):
        return ""
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _last_value(tree: ast.AST, name: str, before: int) -> ast.expr | None:
    made = [n for n in ast.walk(tree) if isinstance(n, ast.Assign) and n.lineno < before
            and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)]
    return max(made, key=lambda n: n.lineno).value if made else None


def _receiver(node: ast.expr | None) -> ast.expr | None:
    """`x` of a method call `x.m(...)`."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.value
    return None


def _vectorized(tree: ast.AST, arg: ast.expr, before: int) -> bool:
    """Whether `arg` (a name, perhaps `.toarray()`-ed) holds what a text vectorizer made."""
    if _called(arg) in ("toarray", "todense"):
        arg = _receiver(arg) or arg
    if not isinstance(arg, ast.Name):
        return False
    value = _last_value(tree, arg.id, before)
    owner = _receiver(value)
    if _called(value) not in ("fit_transform", "transform") or owner is None or value is None:
        return False
    if _called(owner) in _VECTORIZERS:
        return True
    made = _last_value(tree, owner.id, value.lineno + 1) if isinstance(owner, ast.Name) else None
    return _called(made) in _VECTORIZERS


def _feeds_text(step: ast.expr) -> bool:
    """A text vectorizer, or the `FunctionTransformer(numpy.ravel)` that hands it one column."""
    if _called(step) in _VECTORIZERS:
        return True
    if isinstance(step, ast.Call) and _called(step) == "FunctionTransformer" and step.args:
        func = step.args[0]
        return (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")) == "ravel"
    return False


def unvectorize(code: str, failure: str, line: int) -> tuple[str, str, str] | None:
    """`code` with the text vectorizers taken out of the pipeline fitted on `line`, which failed
    with `failure` (see the module): (the new script, the pipeline as it was, as it is), or None."""
    if not not_text(failure):
        return None
    try:
        tree = parse(code)
    except SyntaxError:
        return None
    for fit in ast.walk(tree):
        fitted = _receiver(fit) if isinstance(fit, ast.Call) else None
        if not (isinstance(fit, ast.Call) and _called(fit) == "fit" and isinstance(fitted, ast.Name)
                and fit.args and fit.lineno <= line <= (fit.end_lineno or fit.lineno)):
            continue
        pipeline = _last_value(tree, fitted.id, fit.lineno)
        if not isinstance(pipeline, ast.Call) or _called(pipeline) != "make_pipeline":
            continue
        if not _vectorized(tree, fit.args[0], fit.lineno):
            continue
        kept = [s for s in pipeline.args if not _feeds_text(s)]
        if len(kept) == len(pipeline.args) or not kept:
            continue
        start, end = span(code, pipeline)
        func = ast.get_source_segment(code, pipeline.func) or "make_pipeline"
        others = [ast.get_source_segment(code, s) or "" for s in kept]
        others += [f"{k.arg}={ast.get_source_segment(code, k.value)}" for k in pipeline.keywords]
        now = f"{func}({', '.join(others)})"
        return code[:start] + now + code[end:], code[start:end], now
    return None
