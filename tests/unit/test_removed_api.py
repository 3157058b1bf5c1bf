"""Calls of an API the installed versions removed, rewritten by the harness as the same
computation after the run fails on them (nodes.removed_api, nodes.execute.removed_api_fix): each
script is run for real, before and after."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nodes.execute import Execution, harness_fixes, removed_api_fix, run_with_repairs
from nodes.operators import Candidate
from nodes.removed_api import rewrite_removed
from nodes.review import last_error_line
from tests.conftest import scripted_model

RMSE = '''
import numpy as np
from sklearn.metrics import mean_squared_error
y, p = np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0])
rmse = mean_squared_error(y, p, squared=False)
mse = mean_squared_error(y_true=y, y_pred=p, squared=True)
print(f"METRIC: {rmse:.6f} {mse:.6f}")
'''

SPARSE = '''
import pandas as pd
from sklearn.preprocessing import OneHotEncoder
enc = OneHotEncoder(handle_unknown="ignore", sparse=False)
print("METRIC:", enc.fit_transform(pd.DataFrame({"c": ["a", "b", "a"]})).sum())
'''

APPLYMAP = '''
import pandas as pd
df = pd.DataFrame({"a": ["x ", " y"], "b": [" z", "w "]})
clean = df.applymap(lambda s: s.strip())
print("METRIC:", len("".join(clean["a"]) + "".join(clean["b"])))
'''


def _run(code: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def _crashed(code: str) -> Execution:
    rc, out = _run(code)
    assert rc != 0, out
    return Execution(exit_code=rc, output=out, seconds=0.5,
                     failure=f"the script exited with code {rc}: {last_error_line(out)}")


@pytest.mark.parametrize(("code", "expected"), [
    (RMSE, "METRIC: 0.645497 0.416667"),
    (SPARSE, "METRIC: 3.0"),
    (APPLYMAP, "METRIC: 4"),
])
def test_the_rewritten_script_computes_what_the_old_api_did(code: str, expected: str) -> None:
    ex = _crashed(code)
    fix = removed_api_fix(Candidate(code=code), ex)
    assert fix is not None, ex.failure
    cand, record = fix
    assert record["stage"] == "removed_api" and record["added"]
    rc, out = _run(cand.code)
    assert rc == 0 and expected in out, out


def test_the_rmse_call_is_wrapped_in_a_square_root_and_numpy_imported() -> None:
    code, what, numpy = rewrite_removed(RMSE, "TypeError: got an unexpected keyword argument 'squared'")
    assert "rmse = numpy.sqrt(mean_squared_error(y, p))" in code
    assert "mse = mean_squared_error(y_true=y, y_pred=p)" in code
    assert numpy and what == ["mean_squared_error(..., squared=False) -> numpy.sqrt(mean_squared_error(...))"]
    fixed, _ = removed_api_fix(Candidate(code=RMSE), _crashed(RMSE))
    assert "\nimport numpy\n" in fixed.code


def test_only_the_api_the_error_names_is_rewritten() -> None:
    both = SPARSE + "print(mean_squared_error([1], [1], squared=False))\n"
    code, what, _ = rewrite_removed(both, "unexpected keyword argument 'sparse'")
    assert "sparse_output=False" in code and "squared=False" in code and len(what) == 1
    assert rewrite_removed(RMSE, "KeyError: 'squared'") is None
    assert rewrite_removed("x = 1\n", "unexpected keyword argument 'squared'") is None  # no such call
    assert removed_api_fix(Candidate(code=RMSE), Execution(exit_code=0, output="METRIC: 1", metric=1.0)) is None


def test_the_step_reruns_the_rewritten_script_without_a_repair_call(tmp_path: Path) -> None:
    def run(c: Candidate, attempt: int) -> Execution:
        rc, out = _run(c.code)
        if rc:
            return Execution(exit_code=rc, output=out, seconds=0.5,
                             failure=f"the script exited with code {rc}: {last_error_line(out)}")
        return Execution(exit_code=0, output=out, metric=0.6, seconds=0.5)

    cand, ex, records = run_with_repairs(Candidate(plan="p", code=RMSE), run, scripted_model([]), "facts",
                                         system_prompt=True, max_repairs=2)
    assert [r["stage"] for r in records] == ["removed_api"] and records[0]["fixed"] is True
    assert ex.exit_code == 0 and "numpy.sqrt(" in cand.code
    assert removed_api_fix in harness_fixes(imports=False)  # always on


def test_the_report_counts_the_rewrites() -> None:
    from views.report.derive import repair_text

    text = repair_text([{"extra": {"repairs": [{"stage": "removed_api", "fixed": True}]}}])
    assert "calls of a removed API rewritten by the harness 1 times (1 then got past that error)" in text


HIST = '''
import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
X, y = np.arange(40.0).reshape(20, 2), np.arange(20.0)
model = HistGradientBoostingRegressor(n_estimators=30, max_depth=3, subsample=0.8, random_state=0).fit(X, y)
print("METRIC:", model.n_iter_)
'''


def test_xgboost_argument_names_given_to_scikit_learns_gradient_boosting_are_renamed():
    ex = _crashed(HIST)
    assert "HistGradientBoostingRegressor.__init__() got an unexpected keyword argument 'n_estimators'" in ex.failure
    fix = removed_api_fix(Candidate(code=HIST), ex)
    assert fix is not None
    cand, record = fix
    assert "HistGradientBoostingRegressor(max_iter=30, max_depth=3, random_state=0).fit(X, y)" in cand.code
    assert record["added"][0].startswith("HistGradientBoosting*(n_estimators=...) -> (max_iter=...)")
    assert _run(cand.code) == (0, "METRIC: 30\n")
