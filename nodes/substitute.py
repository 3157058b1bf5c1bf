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
  (`eval_set`, `early_stopping_rounds` and `verbose` have no counterpart there);
- the parameter grids a `GridSearchCV`/`RandomizedSearchCV` searches over such an estimator: the
  keys renamed as the arguments are (`model__n_estimators` -> `model__max_iter`), those with no
  counterpart left out.

Only when every use of the package is one of its estimator classes: a script that calls the
package's own training API (`xgb.train`, `lgb.Dataset`) is left to the repair call. The record
names each rewritten call and the arguments dropped.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from nodes.pyast import parse
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
_SEARCHES = ("GridSearchCV", "RandomizedSearchCV")
# the parameters both of scikit-learn's HistGradientBoosting estimators take (1.4 and later)
_HIST_PARAMS = frozenset({"loss", "learning_rate", "max_iter", "max_leaf_nodes", "max_depth",
                          "min_samples_leaf", "l2_regularization", "max_features", "max_bins",
                          "categorical_features", "monotonic_cst", "interaction_cst", "warm_start",
                          "early_stopping", "scoring", "validation_fraction", "n_iter_no_change", "tol",
                          "random_state"})
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


def _search_grids(tree: ast.Module, made: dict[int, str], estimators: set[str]) -> list[ast.Dict]:
    """The dict literals of parameters that a `GridSearchCV`/`RandomizedSearchCV` searches over an
    estimator the harness rewrote (given in the call, or the dict or list of dicts assigned to the
    name given there)."""
    found: list[ast.Dict] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _called(node).endswith(_SEARCHES)):
            continue
        given = {k.arg: k.value for k in node.keywords}
        estimator = node.args[0] if node.args else given.get("estimator")
        grid = node.args[1] if len(node.args) > 1 else given.get("param_grid",
                                                                  given.get("param_distributions"))
        if estimator is None or grid is None or not (
                id(estimator) in made or isinstance(estimator, ast.Name) and estimator.id in estimators):
            continue
        values: list[ast.expr] = [grid]
        if isinstance(grid, ast.Name):
            values = [a.value for a in ast.walk(tree) if isinstance(a, ast.Assign)
                      and any(isinstance(t, ast.Name) and t.id == grid.id for t in a.targets)]
        for v in values:
            found += [v] if isinstance(v, ast.Dict) else [e for e in getattr(v, "elts", [])
                                                          if isinstance(e, ast.Dict)]
    return found


def _renamed_grid(code: str, grid: ast.Dict) -> tuple[str, list[str]]:
    """A parameter grid's text with its keys under scikit-learn's names (a pipeline step's prefix,
    `model__`, kept), and the keys it had to leave out."""
    kept: list[str] = []
    dropped: list[str] = []
    for key, value in zip(grid.keys, grid.values, strict=True):
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            return ast.get_source_segment(code, grid) or "", []
        prefix, _, name = key.value.rpartition("__")
        new = _RENAMED.get(name, name if name in _HIST_PARAMS else None)
        if new is None:
            dropped.append(key.value)
        else:
            kept.append(f"{(prefix + '__' if prefix else '') + new!r}: {ast.get_source_segment(code, value)}")
    return "{" + ", ".join(kept) + "}", dropped


def hist_call(code: str, node: ast.Call, name: str) -> tuple[str, list[str]]:
    """`name(...)` with the keywords of the call `node` under the names scikit-learn's
    HistGradientBoosting estimators take (`n_estimators` -> `max_iter`, ...; theirs kept), and
    the arguments left out (positional ones too: each library means another thing by them)."""
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for k in node.keywords:
        new = k.arg if k.arg in _HIST_PARAMS else _RENAMED.get(k.arg or "")
        value = ast.get_source_segment(code, k.value)
        if new is None or value is None or new in kept:
            dropped.append(k.arg or "**")
        else:
            kept[new] = value
    dropped += [f"positional {ast.get_source_segment(code, a)}" for a in node.args]
    return f"{name}({', '.join(f'{n}={v}' for n, v in kept.items())})", dropped


def _called(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def substitute(code: str, problems: list[str]) -> tuple[str, list[Substitution]] | None:
    """`code` with the estimators of the gradient-boosting packages `problems` say are not
    installed replaced by scikit-learn's (see the module): (the new script, what was rewritten),
    or None when there is nothing to rewrite or a use of the package is not one of its estimators."""
    missing = {m.group(1) for m in map(_MISSING.search, problems) if m} & set(_CLASSES)
    if not missing:
        return None
    try:
        tree = parse(code)
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
        text, dropped = hist_call(code, node, _sklearn_name(kind))
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
    for grid in _search_grids(tree, made, estimators):  # `GridSearchCV(model, {"n_estimators": [...]})`
        where = span(code, grid)
        if where in edits:
            continue
        text, dropped = _renamed_grid(code, grid)
        if text != code[where[0]:where[1]]:
            edits[where] = text
            done[where] = Substitution(grid.lineno, code[where[0]:where[1]], text, tuple(dropped))
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
