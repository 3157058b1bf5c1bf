"""The metric recipe: how the stable prefix says to compute the competition's metric with what is
installed where scripts run, checked against that interpreter."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from nodes.metric_recipe import metric_recipe, recipes
from nodes.task_context import build_task_context


def test_known_names_get_the_import_and_call_and_unknown_ones_nothing():
    assert metric_recipe("f1_macro") == ("Compute it with `from sklearn.metrics import f1_score`, then "
                                         "`validation_score = f1_score(y_val, val_predictions, average='macro')`, "
                                         "`y_val` being the labels of the rows held out for validation and "
                                         "`val_predictions` the model's predictions for those rows "
                                         "(model.predict(X_val)), never the test predictions.")
    # MLE-bench's names reach our grader's entry; a name written another way is folded first
    assert metric_recipe("macro_f1_score") == metric_recipe("Macro-F1 score") == metric_recipe("f1_macro")
    assert metric_recipe("QWK").startswith("Compute it with `from sklearn.metrics import cohen_kappa_score`")
    assert metric_recipe("weighted_auroc") == metric_recipe("something new") == metric_recipe(None) == ""
    cer = metric_recipe("cer")
    assert cer.startswith("scikit-learn, scipy and numpy have no function for this metric; these lines compute it")
    assert metric_recipe("levenshtein_distance").startswith(
        "scikit-learn, scipy and numpy have no function for this metric: write it yourself, the Levenshtein")


def test_the_lines_of_a_metric_compute_what_its_grader_does():
    """An entry's `code` run on validation labels with a shuffled index (what a split leaves) and
    predictions as an array: the grader's number."""
    import numpy as np
    import pandas as pd

    from grading.graders import _cer

    for name, entry in recipes().items():
        if not entry.get("code"):
            continue
        assert name == "cer", "a new entry with code needs its grader here"
        truth = pd.Series(["K AE T", "D AO G", "F IY N IH K S ", "TH AO T"], index=[7, 2, 9, 0])
        guess = np.array(["K AH T", "D AO G", "F IY N IH K", ""])
        scope = {"y_val": truth, "val_predictions": guess}
        exec(metric_recipe(name).split("```python\n", 1)[1].split("```", 1)[0], scope)  # noqa: S102
        stripped = np.array([t.strip() for t in truth])  # the string graders strip what they read
        assert scope["validation_score"] == pytest.approx(_cer(stripped, guess, {}))


def test_every_import_in_the_table_exists_in_this_interpreter():
    """The table names real functions (the scripts' interpreter in tests is this one)."""
    for name, entry in recipes().items():
        if "own" not in entry:
            assert metric_recipe(name), name
            assert entry["import"] in metric_recipe(name), name  # the first choice, not the fallback


def test_a_missing_function_falls_back_and_a_missing_package_says_nothing(tmp_path):
    table = tmp_path / "recipes.yaml"
    table.write_text(yaml.safe_dump({"rmse": {
        "import": "from sklearn.metrics import a_function_no_version_has", "call": "a_function_no_version_has(y, p)",
        "else_import": "from sklearn.metrics import mean_squared_error", "else_call": "mean_squared_error(y, p) ** 0.5"}}))
    assert metric_recipe("rmse", path=table) == ("Compute it with `from sklearn.metrics import mean_squared_error`, "
                                                 "then `validation_score = mean_squared_error(y, p) ** 0.5`.")
    bare = shutil.which("python3", path="/usr/bin:/bin")
    if bare is None or subprocess.run([bare, "-c", "import sklearn"], capture_output=True).returncode == 0:
        pytest.skip("no interpreter without scikit-learn here")
    assert metric_recipe("rmse", python=bare) == ""  # never a function the scripts cannot import
    assert metric_recipe("cer", python=bare).startswith("scikit-learn, scipy and numpy have no function")


def test_a_malformed_table_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"x": {"import": "import math"}}))  # no call
    with pytest.raises(ValueError, match="'x' needs either import and call, or own"):
        recipes(bad)


def test_the_system_prompt_states_it_beside_the_metric(toy_task):
    from tasks.competition import load_competition

    comp = load_competition(toy_task)

    def prompt(metric: str, **kw) -> str:
        return build_task_context(comp.description, comp.public_dir, time_limit_s=60, metric_name=metric,
                                  lower_is_better=True, sample_submission=comp.sample_submission,
                                  python=sys.executable, **kw).system_prompt()

    line = next(x for x in prompt("rmse").splitlines() if x.startswith("2. "))
    assert line == ("2. Compute the competition's evaluation metric (rmse, lower is better) on the validation data "
                    "and print it on its own line exactly as `METRIC: <float>`. Compute it with "
                    "`from sklearn.metrics import root_mean_squared_error`, then "
                    "`validation_score = root_mean_squared_error(y_val, val_predictions)`, `y_val` being the "
                    "labels of the rows held out for validation and `val_predictions` the model's predictions "
                    "for those rows (model.predict(X_val)), never the test predictions.")
    assert "Compute it with" not in prompt("a metric nobody knows")
    assert "Compute it with" not in prompt("rmse", data_facts=False)  # --no-data-facts: as before
