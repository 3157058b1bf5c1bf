"""A validation split's predictions written into the submission become the test rows'
(nodes.test_rows, nodes.execute.test_rows_fix): each script is run for real, before and after, on
tables written for the test; and the cases left to the repair call."""

from __future__ import annotations

import pandas as pd
import pytest

from nodes.execute import Execution, harness_fixes, run_with_repairs
from nodes.execute import test_rows_fix as rows_fix
from nodes.operators import Candidate
from nodes.outline import outline_from_prompt
from nodes.test_rows import repredict
from tests.conftest import run_solution, scripted_model

HEAD = '''import os
import pandas as pd
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import train_test_split

train = pd.read_csv("./input/train.csv")
test = pd.read_csv("./input/test.csv")
features = [c for c in test.columns if c != "id"]
X, y = train[features], train["target"]
X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)
'''
TAIL = '''model = LinearRegression().fit(X_train, y_train)
val_predictions = model.predict(X_val)
print(f"METRIC: {{((val_predictions - y_val) ** 2).mean() ** 0.5:.4f}}")
submission = pd.read_csv("./input/sample_submission.csv")
submission["target"] = {value}
os.makedirs("./submission", exist_ok=True)
submission.to_csv("./submission/submission.csv", index=False)
'''
WITH_TEST = HEAD + "X_test = test[features]\n" + TAIL

# the data facts' outline, as the stable prefix gives it
FACTS = '''Every script starts and ends like this:
```python
train = pd.read_csv('./input/train.csv')
test = pd.read_csv('./input/test.csv')
features = [c for c in test.columns if c not in ['id']]
X, y = train[features], train['target']
X_test = test[features]
```'''


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "input").mkdir()
    rows = [(i, i % 7, (i * 3) % 5) for i in range(60)]
    pd.DataFrame({"id": [r[0] for r in rows[:40]], "a": [r[1] for r in rows[:40]], "b": [r[2] for r in rows[:40]],
                  "target": [2.0 * r[1] - r[2] for r in rows[:40]]}).to_csv(tmp_path / "input/train.csv", index=False)
    pd.DataFrame({"id": [r[0] for r in rows[40:]], "a": [r[1] for r in rows[40:]],
                  "b": [r[2] for r in rows[40:]]}).to_csv(tmp_path / "input/test.csv", index=False)
    pd.DataFrame({"id": [r[0] for r in rows[40:]], "target": 0.0}).to_csv(
        tmp_path / "input/sample_submission.csv", index=False)
    return tmp_path


def _execute(code: str, folder) -> Execution:
    return run_solution(code, folder)


@pytest.mark.parametrize("value", ["val_predictions", "val_predictions[:20]", "model.predict(X_val)"])
def test_the_validation_predictions_in_the_submission_become_the_test_rows(folder, value):
    code = WITH_TEST.format(value=value)
    ex = _execute(code, folder)
    assert "Length of values (10) does not match length of index (20)" in ex.failure
    fix = rows_fix(Candidate(code=code), ex)
    assert fix is not None
    cand, record = fix
    assert record["stage"] == "test_rows" and record["line"] == 16
    assert record["added"] == [f"line 16: {value} -> model.predict(X_test)"]
    assert 'submission["target"] = model.predict(X_test)' in cand.code.splitlines()
    assert _execute(cand.code, folder).exit_code == 0
    written = pd.read_csv(folder / "submission/submission.csv")
    assert len(written) == 20 and written["target"].tolist() == pytest.approx(
        list(2.0 * (written["id"] % 7) - (written["id"] * 3) % 5), abs=1e-6)  # the test rows follow the same exact line


def test_the_outline_line_makes_the_test_features_the_script_never_made(folder):
    code = HEAD + TAIL.format(value="val_predictions")
    ex = _execute(code, folder)
    assert rows_fix(Candidate(code=code), ex) is None  # no outline: nothing to read the test rows from
    fix = rows_fix(Candidate(code=code), ex, outline_from_prompt(FACTS))
    assert fix is not None
    cand, record = fix
    assert record["added"] == ["line 15: val_predictions -> model.predict(X_test)", "X_test = test[features]"]
    assert _execute(cand.code, folder).exit_code == 0


def test_a_step_runs_the_script_again_and_the_record_says_it_got_past_the_error(folder):
    ran: list[str] = []

    def run(c: Candidate, attempt: int) -> Execution:
        ran.append(c.code)
        return _execute(c.code, folder)

    code = WITH_TEST.format(value="val_predictions")
    cand, ex, records = run_with_repairs(Candidate(plan="p", code=code), run, scripted_model([]), FACTS,
                                         system_prompt=True, max_repairs=2)
    assert [r["stage"] for r in records] == ["test_rows"] and records[0]["fixed"] is True
    assert len(ran) == 2 and ex.exit_code == 0 and ex.metric is not None
    assert any(getattr(f, "__name__", "") == "<lambda>" for f in harness_fixes(outline=outline_from_prompt(FACTS)))


@pytest.mark.parametrize(("code", "line"), [
    # the test split is a piece of the train table
    (HEAD.replace("X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)",
                  "X_train, X_test, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)\n"
                  "X_val = X_test") + TAIL.format(value="val_predictions"), 17),
    # the table is not the one written to the submission
    (WITH_TEST.format(value="val_predictions").replace('submission.to_csv("./submission/submission.csv"',
                                                       'submission.to_csv("./preds.csv"'), 16),
    # two predict calls: which one is meant is not clear
    (WITH_TEST.format(value="(model.predict(X_val) + model.predict(X_train[:15])) / 2"), 16),
    # the predictions come from features that name no split
    (WITH_TEST.format(value="model.predict(X)"), 16),
])
def test_what_is_left_to_the_repair_call(code, line):
    failure = "ValueError: Length of values (10) does not match length of index (20)"
    assert repredict(code, failure, line) is None
    assert repredict(WITH_TEST.format(value="val_predictions"), "KeyError: 'target'", 16) is None
