"""A drop of the target from the test table, which never had it, let pass by the harness
(nodes.absent_drop, nodes.execute.absent_drop_fix): each script is run for real on tables written
for the test, before and after; and the drops it leaves to the repair call."""

from __future__ import annotations

import pandas as pd
import pytest

from nodes.absent_drop import absent_labels
from nodes.execute import Execution, absent_drop_fix, harness_fixes, run_with_repairs
from nodes.operators import Candidate
from tests.conftest import run_solution, scripted_model

SCRIPT = '''import os
import pandas as pd
from sklearn.linear_model import LinearRegression
train = pd.read_csv("./input/train.csv")
test = pd.read_csv("./input/test.csv")
X_test = {drop}
X, y = train[X_test.columns], train["target"]
model = LinearRegression().fit(X, y)
print(f"METRIC: {{model.score(X, y):.4f}}")
submission = pd.DataFrame({{"id": test["id"], "target": model.predict(X_test)}})
os.makedirs("./submission", exist_ok=True)
submission.to_csv("./submission/submission.csv", index=False)
'''


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "input").mkdir()
    ids = range(30)
    pd.DataFrame({"id": ids, "a": [i % 7 for i in ids], "b": [(i * 3) % 5 for i in ids],
                  "target": [2.0 * (i % 7) - (i * 3) % 5 for i in ids]}).iloc[:20].to_csv(
        tmp_path / "input/train.csv", index=False)
    pd.DataFrame({"id": ids, "a": [i % 7 for i in ids], "b": [(i * 3) % 5 for i in ids]}).iloc[20:].to_csv(
        tmp_path / "input/test.csv", index=False)
    pd.DataFrame({"id": list(ids)[20:], "target": 0.0}).to_csv(tmp_path / "input/sample_submission.csv", index=False)
    return tmp_path


def _execute(code: str, folder) -> Execution:
    return run_solution(code, folder)


@pytest.mark.parametrize(("drop", "now"), [
    ('test.drop("target", axis=1)', 'test.drop("target", axis=1, errors="ignore")'),
    ('test.drop(columns=["id", "target"])', 'test.drop(columns=["id", "target"], errors="ignore")'),
])
def test_the_drop_of_the_target_from_the_test_table_is_let_pass_and_the_script_runs(folder, drop, now):
    code = SCRIPT.format(drop=drop)
    ex = _execute(code, folder)
    assert absent_labels(ex.failure) == ["target"]
    fix = absent_drop_fix(Candidate(code=code), ex, folder / "input")
    assert fix is not None
    cand, record = fix
    assert record["stage"] == "absent_drop" and record["line"] == 6 and record["labels"] == ["target"]
    assert f"X_test = {now}" in cand.code.splitlines()
    assert _execute(cand.code, folder).exit_code == 0
    written = pd.read_csv(folder / "submission/submission.csv")
    assert written["target"].tolist() == pytest.approx([2.0 * (i % 7) - (i * 3) % 5 for i in range(20, 30)])


def test_a_drop_of_a_column_that_is_not_the_target_is_left_to_the_repair_call(folder):
    code = SCRIPT.format(drop='test.drop(columns=["id", "bb"])')  # a misspelled feature: ignoring it keeps b
    ex = _execute(code, folder)
    assert absent_labels(ex.failure) == ["bb"]
    assert absent_drop_fix(Candidate(code=code), ex, folder / "input") is None
    target = SCRIPT.format(drop='test.drop("target", axis=1)')
    assert absent_drop_fix(Candidate(code=target), _execute(target, folder), None) is None  # no tables to ask
    assert absent_labels("KeyError: 'target'") == []


def test_a_step_runs_the_script_again_and_the_record_says_it_got_past_the_error(folder):
    code = SCRIPT.format(drop='test.drop("target", axis=1)')
    ran: list[str] = []

    def run(c: Candidate, attempt: int) -> Execution:
        ran.append(c.code)
        return _execute(c.code, folder)

    cand, ex, records = run_with_repairs(Candidate(plan="p", code=code), run, scripted_model([]), "facts",
                                         system_prompt=True, max_repairs=2, data=folder / "input")
    assert [r["stage"] for r in records] == ["absent_drop"] and records[0]["fixed"] is True
    assert len(ran) == 2 and ex.exit_code == 0
    assert len(harness_fixes(data=folder)) == len(harness_fixes()) + 1  # on where the tables are known
