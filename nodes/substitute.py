"""A gradient-boosting package that is not installed, replaced by scikit-learn's own.

Small models reach for XGBoost, LightGBM or CatBoost to improve a tabular script, and keep them
when the import fails: the data facts' Environment line names them as not installed, the repair
call is told so, and the answer brings the import back (or a `!pip install` line). Their
scikit-learn-style estimators have a close installed equivalent, `HistGradientBoostingRegressor`
and `HistGradientBoostingClassifier` (histogram gradient boosting, the same family). After the
static check reports one of those packages as not installed where scripts run, the harness
(`nodes.execute.substitute_fix`) rewrites:

- the import of the estimator classes (`from xgboost import XGBRegressor`) as an import of the
  scikit-learn class (`from sklearn.ensemble import HistGradientBoostingRegressor`), and each
  construction of them, `import xgboost as xgb` with `xgb.XGBRegressor(...)` alike;
- the constructor's arguments that have a counterpart under their scikit-learn names
  (`n_estimators`/`iterations` -> `max_iter`, `depth` -> `max_depth`, `num_leaves` ->
  `max_leaf_nodes`, `min_child_samples` -> `min_samples_leaf`, `reg_lambda`/`l2_leaf_reg` ->
  `l2_regularization`, `seed`/`random_seed` -> `random_state`; `learning_rate`, `max_depth`,
  `random_state` stay), dropping the rest (`objective`, `n_jobs`, `eval_metric`, ...);
- the `fit` calls on a name such a construction was assigned to, keeping `sample_weight` only
  (`eval_set`, `early_stopping_rounds` and `verbose` have no counterpart there).

Only when every use of the package is one of its estimator classes: a script that calls the
package's own training API (`xgb.train`, `lgb.Dataset`) is left to the repair call. The record
names each rewritten call and the arguments dropped.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from nodes.source_span import span

# the packages and their estimator classes, by the kind of the scikit-learn class that replaces them
_CLASSES = {
    "xgboost": {"XGBRegressor": "Regressor", "XGBClassifier": "Classifier", "XGBRFRegressor": "Regressor",
                "XGBRFClassifier": "Classifier"},
    "lightgbm": {"LGBMRegressor": "Regressor", "LGBMClassifier": "Classifier"},
    "catboost": {"CatBoostRegressor": "Regressor", "CatBoostClassifier": "Classifier"},
}
_RENAMED = {"n_estimators": "max_iter", "iterations": "max_iter", "num_boost_round": "max_iter",
            "depth": "max_depth", "num_leaves": "max_leaf_nodes", "min_child_samples": "min_samples_leaf",
            "min_data_in_leaf": "min_samples_leaf", "reg_lambda": "l2_regularization",
            "lambda_l2": "l2_regularization", "l2_leaf_reg": "l2_regularization", "seed": "random_state",
            "random_seed": "random_state", "learning_rate": "learning_rate", "eta": "learning_rate",
            "max_depth": "max_depth", "random_state": "random_state"}
_FIT_KEPT = ("sample_weight",)
SUBSTITUTED_COMMENT = "# replaced by the harness with scikit-learn's gradient boosting:"
_MISSING = re.compile(r"ModuleNotFoundError: No module named '(\w+)' \(not installed where scripts run\)")


@dataclass(frozen=True)
class Substitution:
    line: int  # where the rewritten call or import is
    was: str  # what the script had (`XGBRegressor(n_estimators=200, objective=...)`, `model.fit(...)`)
    now: str  # what replaced it
    dropped: tuple[str, ...]  # the arguments left out


def _sklearn_name(kind: str) -> str:
    return f"HistGradientBoosting{kind}"


def _package_of(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The missing package `node` (a Name or a dotted Attribute) starts with, through `aliases`."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return aliases.get(node.id) if isinstance(node, ast.Name) else None


def substitute(code: str, problems: list[str]) -> tuple[str, list[Substitution]] | None:
    """`code` with the estimators of the gradient-boosting packages `problems` say are not
    installed replaced by scikit-learn's (see the module): (the new script, what was rewritten),
    or None when there is nothing to rewrite or a use of the package is not one of its estimators."""
    missing = {m.group(1) for m in map(_MISSING.search, problems) if m} & set(_CLASSES)
    if not missing:
        return None
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    modules: dict[str, str] = {}  # a name bound to a missing package's module -> the package
    classes: dict[str, str] = {}  # a name bound to one of its estimator classes -> the kind
    imports: list[ast.stmt] = []
    packages: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mine = [a for a in node.names if a.name.split(".")[0] in missing]
            if mine and len(mine) != len(node.names):
                return None  # `import os, xgboost`: not rewritten
            for a in mine:
                modules[a.asname or a.name.split(".")[0]] = a.name.split(".")[0]
            imports += [node] if mine else []
            packages |= {a.name.split(".")[0] for a in mine}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in missing:
            package = (node.module or "").split(".")[0]
            for a in node.names:
                kind = _CLASSES[package].get(a.name)
                if kind is None:
                    return None  # `from xgboost import DMatrix`, `from lightgbm import *`
                classes[a.asname or a.name] = kind
            imports.append(node)
            packages.add(package)
    if not imports:
        return None
    edits: dict[tuple[int, int], str] = {}  # (start, end) in the script -> what replaces it
    made: dict[int, str] = {}  # id of a rewritten construction -> its new text
    done: dict[tuple[int, int], Substitution] = {}  # by the same (start, end)
    handled: set[int] = set()  # ids of the Name nodes a rewrite covers
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        kind = classes.get(func.id) if isinstance(func, ast.Name) else None
        package = _package_of(func, modules) if isinstance(func, ast.Attribute) else None
        if package:
            kind = _CLASSES[package].get(func.attr)  # type: ignore[union-attr]
            if kind is None:
                return None  # `xgb.train(...)`, `lgb.Dataset(...)`: the package's own API
        if kind is None:
            continue
        handled |= {id(n) for n in ast.walk(func)}
        kept: dict[str, str] = {}
        dropped: list[str] = []
        for k in node.keywords:
            new = _RENAMED.get(k.arg or "")
            value = ast.get_source_segment(code, k.value)
            if new is None or value is None or new in kept:
                dropped.append(k.arg or "**")
            else:
                kept[new] = value
        # a positional argument means another thing in each library
        dropped += [f"positional {ast.get_source_segment(code, a)}" for a in node.args]
        text = f"{_sklearn_name(kind)}({', '.join(f'{n}={v}' for n, v in kept.items())})"
        where = span(code, node)
        edits[where] = made[id(node)] = text
        done[where] = Substitution(node.lineno, code[where[0]:where[1]], text, tuple(dropped))
    if not done:
        return None
    estimators = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and id(node.value) in made
                  for t in node.targets if isinstance(t, ast.Name)}
    for node in ast.walk(tree):  # `model.fit(X, y, eval_set=...)`, `XGBRegressor(...).fit(...)`
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "fit"):
            continue
        receiver = node.func.value
        if not (id(receiver) in made or isinstance(receiver, ast.Name) and receiver.id in estimators):
            continue
        dropped = [k.arg or "**" for k in node.keywords if k.arg not in _FIT_KEPT]
        dropped += [f"positional {ast.get_source_segment(code, a)}" for a in node.args[2:]]
        if not dropped:
            continue
        parts = [ast.get_source_segment(code, a) or "" for a in node.args[:2]]
        parts += [f"{k.arg}={ast.get_source_segment(code, k.value)}" for k in node.keywords
                  if k.arg in _FIT_KEPT]
        owner = made.get(id(receiver)) or ast.get_source_segment(code, receiver) or ""
        text = f"{owner}.fit({', '.join(parts)})"
        if id(receiver) in made:  # the construction is rewritten inside this call
            first = done.pop(span(code, receiver))
            edits.pop(span(code, receiver))
            dropped = [*first.dropped, *dropped]
        where = span(code, node)
        edits[where] = text
        done[where] = Substitution(node.lineno, code[where[0]:where[1]], text, tuple(dropped))
    for node in ast.walk(tree):  # any other use of the package or its classes: not rewritten
        if isinstance(node, ast.Name) and id(node) not in handled and node.id in {*modules, *classes}:
            return None
    names = ", ".join(sorted({t.split("(")[0] for t in made.values()}))
    gone = ", ".join(sorted(packages))
    line = f"from sklearn.ensemble import {names}  {SUBSTITUTED_COMMENT} {gone} is not installed"
    for node in sorted(imports, key=lambda n: n.lineno):
        where = span(code, node)
        was = code[where[0]:where[1]]
        done[where] = Substitution(node.lineno, was, line, ())
        edits[where] = line
        line = f"pass  {SUBSTITUTED_COMMENT} {was}"  # one import line is enough
    for (start, end), text in sorted(edits.items(), reverse=True):
        code = code[:start] + text + code[end:]
    return code, sorted(done.values(), key=lambda s: s.line)
