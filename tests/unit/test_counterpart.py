"""A split's line the script forgot, written by the harness from the line it wrote for another
split (nodes.counterpart, nodes.execute.counterpart_fix): the static check's problem, the script
it leaves, the run, and the cases it leaves alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nodes.counterpart import COUNTERPART_COMMENT
from nodes.execute import Execution, check_script, counterpart_fix, harness_fixes, run_with_repairs
from nodes.operators import Candidate
from tests.conftest import scripted_model

# what the 1.5B wrote on a regression task: the train and test rows scaled, the validation rows not
SCALED = '''import numpy as np
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
rng = np.random.default_rng(0)
X, y = rng.normal(size=(40, 3)), rng.normal(size=40)
X_test = rng.normal(size=(8, 3))
X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)
scaler = StandardScaler()
X_train_scaled = scaler.fit_transform(X_train)
X_test_scaled = scaler.transform(X_test)
model = Ridge().fit(X_train_scaled, y_train)
val_predictions = model.predict(X_val_scaled)
print(f"METRIC: {np.sqrt(np.mean((val_predictions - y_val) ** 2))}")
print(len(model.predict(X_test_scaled)))
'''


def _fixed(code: str):
    ex = check_script(code, None, None)
    assert ex is not None and ex.static_problems
    return ex, counterpart_fix(Candidate(code=code), ex)


def test_the_validation_rows_get_the_test_rows_transform_above_their_first_use() -> None:
    ex, fix = _fixed(SCALED)
    assert "undefined name 'X_val_scaled' (like 'X_test_scaled', which line 11 makes" in ex.static_problems[0]
    assert fix is not None
    cand, record = fix
    assert record["stage"] == "counterpart" and record["line"] == 13
    assert record["added"] == ["X_val_scaled = scaler.transform(X_val)"]
    lines = cand.code.splitlines()
    assert lines[12:15] == [f"{COUNTERPART_COMMENT} X_test_scaled", "X_val_scaled = scaler.transform(X_val)",
                            "val_predictions = model.predict(X_val_scaled)"]
    assert check_script(cand.code, None, None) is None
    proc = subprocess.run([sys.executable, "-c", cand.code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "METRIC: " in proc.stdout, proc.stderr


def test_from_the_train_rows_line_the_fit_becomes_a_transform() -> None:
    code = SCALED.replace("X_test_scaled = scaler.transform(X_test)\n", "").replace(
        "print(len(model.predict(X_test_scaled)))\n", "")
    ex, fix = _fixed(code)
    assert "(like 'X_train_scaled'" in ex.static_problems[0]
    assert fix is not None and fix[1]["added"] == ["X_val_scaled = scaler.transform(X_val)"]


@pytest.mark.parametrize(("old", "new"), [
    # its counterpart reads a table the script never made for that split (`val`)
    ("X_test_scaled = scaler.transform(X_test)", "X_test_scaled = scaler.transform(test_table)"),
    # a fit is not written again for other rows
    ("X_test_scaled = scaler.transform(X_test)", "X_test_scaled = Ridge().fit(X_test, y).predict(X_test)"),
    # the counterpart's right side names no split: a copy of it would be the same values
    ("X_test_scaled = scaler.transform(X_test)", "X_test_scaled = scaler.transform(X)"),
])
def test_lines_it_cannot_write_safely_are_left_to_the_repair(old: str, new: str) -> None:
    code = SCALED.replace(old, new).replace("X_train_scaled = scaler.fit_transform(X_train)\n",
                                            "X_train_scaled = X_train\n")
    if "test_table" in new:
        code = code.replace("X_test = rng", "test_table = X_test = rng")
    ex, fix = _fixed(code)
    assert "undefined name 'X_val_scaled'" in ex.static_problems[0]
    assert fix is None


def test_a_name_the_script_assigns_later_is_not_written_again() -> None:
    code = SCALED + "X_val_scaled = scaler.transform(X_val)\n"
    ex, fix = _fixed(code)
    assert "assigned only later" in ex.static_problems[0] and fix is None


def test_the_step_runs_the_completed_script_without_a_repair_call() -> None:
    ran: list[str] = []

    def run(c: Candidate, attempt: int) -> Execution:
        ran.append(c.code)
        return check_script(c.code, None, None) or Execution(exit_code=0, output="METRIC: 1.0", metric=1.0,
                                                             seconds=0.1)

    cand, ex, records = run_with_repairs(Candidate(plan="p", code=SCALED), run, scripted_model([]), "facts",
                                         system_prompt=True, max_repairs=2)
    assert [r["stage"] for r in records] == ["counterpart"] and records[0]["fixed"] is True
    assert len(ran) == 2 and ex.metric == 1.0 and COUNTERPART_COMMENT in cand.code
    assert counterpart_fix in harness_fixes(imports=False)  # always on


def test_the_report_counts_the_lines_the_harness_wrote() -> None:
    from views.report.derive import repair_text

    records = [{"stage": "counterpart", "fixed": True}, {"stage": "counterpart", "fixed": False}]
    text = repair_text([{"extra": {"repairs": records}}])
    assert "a split's line written from another split's by the harness 2 times (1 then passed the static check)" in text
