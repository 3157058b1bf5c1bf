"""How a script computes the competition's metric with the packages where scripts run.

The stable prefix names the metric; small models then guess a function for it that does not
exist (`from sklearn.metrics import cer`, `edit_distance`) or compute another one. The table
(prompts/metric_recipes.yaml, general knowledge of the metrics, never of a task) gives the
import and the call, or, where no package has the metric, how to write it. An import is stated
only if the interpreter scripts run with has it (`nodes.static_check.ImportChecker`), so the
prompt never names a function the installed version lacks.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

import prompts
from grading.graders import grader_key, resolve_grader
from nodes.pyast import parse
from nodes.static_check import import_checker_for

_TABLE = Path(prompts.__file__).parent / "metric_recipes.yaml"
NO_FUNCTION = "scikit-learn, scipy and numpy have no function for this metric"
# small models score their test predictions against the validation labels (lengths differ)
ON_VALIDATION = ("`y_val` being the labels of the rows held out for validation and `val_predictions` the "
                 "model's predictions for those rows (model.predict(X_val)), never the test predictions")


@lru_cache(maxsize=2)
def recipes(path: Path = _TABLE) -> dict[str, dict[str, str]]:
    """The table: name -> {import, call[, note, else_import, else_call]} or {own[, code]};
    malformed: ValueError."""
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of metric names to recipes")
    for name, entry in raw.items():
        ok = isinstance(entry, dict) and (("own" in entry) != ("import" in entry and "call" in entry))
        if not ok or ("else_import" in entry) != ("else_call" in entry):
            raise ValueError(f"{path}: the recipe of {name!r} needs either import and call, or own")
    return {str(k): {kk: str(vv) for kk, vv in v.items()} for k, v in raw.items()}


def recipe_for(metric_name: str | None, path: Path = _TABLE) -> dict[str, str] | None:
    """The table's entry for a metric or grader name (as given, folded, or the grader of ours an
    MLE-bench name maps to), or None."""
    if not metric_name:
        return None
    table = recipes(path)
    for key in (metric_name, grader_key(metric_name), resolve_grader(metric_name)[0]):
        if key and key in table:
            return table[key]
    return None


def _importable(line: str, python: str | None) -> bool:
    report = import_checker_for(python).check(parse(line))
    return not report.problems and report.note is None


def metric_recipe(metric_name: str | None, python: str | None = None, path: Path = _TABLE) -> str:
    """One sentence for the prompt: how to compute the metric with what is installed where scripts
    run (`python`), or how to write it; "" for a metric the table does not know, or whose
    imports the interpreter lacks."""
    entry = recipe_for(metric_name, path)
    if entry is None:
        return ""
    if "own" in entry and entry.get("code"):  # the lines themselves: small models get the loop wrong
        return (f"{NO_FUNCTION}; these lines compute it on `y_val` and `val_predictions`, {ON_VALIDATION}:\n"
                + prompts.fenced(entry["code"].rstrip(), "python"))
    if "own" in entry:
        return (f"{NO_FUNCTION}: write it yourself, {entry['own']}; `validation_score` is it on `y_val` "
                f"and `val_predictions`, {ON_VALIDATION}.")
    note = f"; {entry['note']}" if entry.get("note") else ""
    for imp, call in ((entry["import"], entry["call"]), (entry.get("else_import"), entry.get("else_call"))):
        if imp and call and _importable(imp, python):
            names = f", {ON_VALIDATION}" if "val_predictions" in call else ""
            return f"Compute it with `{imp}`, then `validation_score = {call}`{note}{names}."
    return ""
