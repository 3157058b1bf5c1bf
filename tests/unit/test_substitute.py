"""The estimators of a gradient-boosting package that is not installed become scikit-learn's
(nodes.substitute, nodes.execute.substitute_fix): the static check's problem, the script it
leaves (run for real), and the uses it leaves to the repair call. XGBoost, LightGBM and CatBoost
are not installed in this environment, as where scripts run."""

from __future__ import annotations

import importlib.util

import pytest

from nodes.execute import Execution, check_script, harness_fixes, run_with_repairs, substitute_fix
from nodes.operators import Candidate
from nodes.substitute import SUBSTITUTED_COMMENT, substitute
from tests.conftest import run_solution, scripted_model

pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(m) for m in ("xgboost", "lightgbm", "catboost")),
                                reason="a gradient-boosting package is installed here")

BOOSTED = '''import numpy as np
import pandas as pd
from xgboost import XGBRegressor
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split

train = pd.read_csv("train.csv")
X, y = train[["a", "b"]], train["target"]
X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)
model = XGBRegressor(n_estimators=50, learning_rate=0.1, max_depth=3, objective="reg:squarederror",
                     n_jobs=-1, random_state=0)
model.fit(X_train, y_train, eval_set=[(X_val, y_val)], early_stopping_rounds=5, verbose=False)
print(f"METRIC: {np.sqrt(mean_squared_error(y_val, model.predict(X_val))):.4f}")
'''


def _problems(code: str) -> list[str]:
    ex = check_script(code, None, None)
    assert ex is not None and ex.static_problems, "the static check passed"
    return list(ex.static_problems)


def _run(code: str, folder) -> str:
    rows = "".join(f"{i},{(i * 7) % 5},{2 * i + (i % 3)},{'ab'[i % 2]}\n" for i in range(60))
    (folder / "train.csv").write_text("a,b,target,label\n" + rows)
    ex = run_solution(code, folder)
    assert ex.exit_code == 0, ex.output
    return ex.output


def test_an_xgboost_regressor_becomes_scikit_learns_and_the_script_runs(tmp_path):
    problems = _problems(BOOSTED)
    assert any("No module named 'xgboost' (not installed where scripts run)" in p for p in problems)
    done = substitute(BOOSTED, problems)
    assert done is not None
    code, rewritten = done
    assert [(s.line, s.now, s.dropped) for s in rewritten] == [
        (3, f"from sklearn.ensemble import HistGradientBoostingRegressor  {SUBSTITUTED_COMMENT} xgboost is "
            "not installed", ()),
        (10, "HistGradientBoostingRegressor(max_iter=50, learning_rate=0.1, max_depth=3, random_state=0)",
         ("objective", "n_jobs")),
        (12, "model.fit(X_train, y_train)", ("eval_set", "early_stopping_rounds", "verbose")),
    ]
    assert check_script(code, None, None) is None
    assert _run(code, tmp_path).startswith("METRIC: ")


def test_a_lightgbm_classifier_made_and_fitted_in_one_call(tmp_path):
    code = ('import pandas as pd\nimport lightgbm as lgb\ntrain = pd.read_csv("train.csv")\n'
            'model = lgb.LGBMClassifier(num_leaves=15, n_estimators=20, verbose=-1).fit(\n'
            '    train[["a", "b"]], train["label"], eval_set=[(train[["a", "b"]], train["label"])])\n'
            'print("METRIC:", (model.predict(train[["a", "b"]]) == train["label"]).mean())\n')
    done = substitute(code, _problems(code))
    assert done is not None
    new, rewritten = done
    assert rewritten[1].now == ('HistGradientBoostingClassifier(max_leaf_nodes=15, max_iter=20).fit('
                                'train[["a", "b"]], train["label"])')
    assert rewritten[1].dropped == ("verbose", "eval_set")
    assert new.splitlines()[1].startswith("from sklearn.ensemble import HistGradientBoostingClassifier")
    assert _run(new, tmp_path).startswith("METRIC:")


@pytest.mark.parametrize("code", [
    "import xgboost as xgb\nbooster = xgb.train({'max_depth': 3}, xgb.DMatrix([[1.0]], label=[1.0]))\n",
    "from xgboost import DMatrix, XGBRegressor\nm = XGBRegressor()\n",
    "from xgboost import XGBRegressor\nm = XGBRegressor()\nprint(isinstance(m, XGBRegressor))\n",
    "import os, xgboost\nm = xgboost.XGBRegressor()\n",
    "import numpy\nm = numpy.zeros(3)\n",  # nothing missing
])
def test_other_uses_of_the_package_are_left_to_the_repair_call(code):
    ex = check_script(code, None, None)
    assert substitute(code, list(ex.static_problems) if ex else []) is None


def test_the_step_runs_the_rewritten_script_without_a_repair_call():
    ran: list[str] = []

    def run(c: Candidate, attempt: int) -> Execution:
        ran.append(c.code)
        return check_script(c.code, None, None) or Execution(exit_code=0, output="METRIC: 1", metric=1.0,
                                                            seconds=0.1)

    cand, ex, records = run_with_repairs(Candidate(plan="p", code=BOOSTED), run, scripted_model([]), "facts",
                                         system_prompt=True, max_repairs=2)
    assert [r["stage"] for r in records] == ["substituted"] and records[0]["fixed"] is True
    assert records[0]["error"] == "not installed: from xgboost import XGBRegressor" and records[0]["line"] == 3
    assert any("(dropped: eval_set, early_stopping_rounds, verbose)" in a for a in records[0]["added"])
    assert len(ran) == 2 and ex.metric == 1.0 and "xgboost import" not in cand.code
    assert substitute_fix in harness_fixes(imports=False)  # always on


SEARCHED = '''import pandas as pd
from xgboost import XGBRegressor
from sklearn.model_selection import GridSearchCV
train = pd.read_csv("train.csv")
X, y = train[["a", "b"]], train["target"]
model = XGBRegressor(objective="reg:squarederror")
grid = {"n_estimators": [20, 40], "max_depth": [2, 3], "subsample": [0.8, 1.0]}
search = GridSearchCV(model, grid, cv=3).fit(X, y)
print(f"METRIC: {search.best_score_:.4f}")
'''


def test_the_grid_a_search_tries_on_the_estimator_takes_scikit_learns_names(tmp_path):
    done = substitute(SEARCHED, _problems(SEARCHED))
    assert done is not None
    code, rewritten = done
    assert "grid = {'max_iter': [20, 40], 'max_depth': [2, 3]}" in code.splitlines()
    assert [s.dropped for s in rewritten if s.line == 7] == [("subsample",)]
    assert _run(code, tmp_path).startswith("METRIC: ")
    inline = SEARCHED.replace("GridSearchCV(model, grid, cv=3)",
                              'GridSearchCV(estimator=model, param_grid={"model__n_estimators": [5], "gamma": [0]})')
    new, _ = substitute(inline, _problems(inline))
    assert "param_grid={'model__max_iter': [5]}" in new


def test_the_record_counts_the_substitution_fixed_once_the_package_is_gone_though_other_problems_stay():
    from nodes.execute import close_record

    code = BOOSTED.replace("from sklearn.model_selection import train_test_split\n", "")  # left undefined
    ex = check_script(code, None, None)
    cand, record = substitute_fix(Candidate(code=code), ex)
    after = check_script(cand.code, None, None)
    assert after is not None and any("undefined name 'train_test_split'" in p for p in after.static_problems)
    assert record["packages"] == ["xgboost"] and close_record(record, after)["fixed"] is True
    assert close_record(record, ex)["fixed"] is False  # still names xgboost


def test_the_package_an_import_fix_brings_in_for_an_undefined_alias_is_substituted_next():
    code = BOOSTED.replace("from xgboost import XGBRegressor\n", "").replace("model = XGBRegressor(",
                                                                            "model = xgb.XGBRegressor(")

    def run(c: Candidate, attempt: int) -> Execution:
        return check_script(c.code, None, None) or Execution(exit_code=0, output="METRIC: 1", metric=1.0,
                                                            seconds=0.1)

    cand, ex, records = run_with_repairs(Candidate(plan="p", code=code), run, scripted_model([]), "facts",
                                         system_prompt=True, max_repairs=0)
    assert [r["stage"] for r in records] == ["imports", "substituted"]
    assert records[0]["added"] == ["import xgboost as xgb"] and records[1]["fixed"] is True
    assert ex.metric == 1.0 and "HistGradientBoostingRegressor(max_iter=50" in cand.code
