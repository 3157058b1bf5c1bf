"""Row counts of shape errors named from the data facts' rows line: real scripts that mix up the
tables of a toy task raise the errors, and the note says which table or split each count is."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from nodes.execute import Execution, check_script, repair_need, repair_prompt
from nodes.import_hints import match_known_error
from nodes.operators import Candidate, debug_prompt
from nodes.review import establish_facts, last_error_line
from nodes.row_counts import ROWS_PREFIX, count_note, error_counts, table_rows, what_count
from nodes.task_facts import data_facts
from nodes.tree import Node
from tests.conftest import make_toy_task

# the toy task: 120 train rows (id, x1, x2, label), 40 test rows (id, x1, x2), a 40-row sample
HEAD = """
    import os
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    train = pd.read_csv("train.csv")
    test = pd.read_csv("test.csv")
    submission = pd.read_csv("sample_submission.csv")
    X, y = train[["x1", "x2"]], train["label"]
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2, random_state=0)
    model = LogisticRegression().fit(X_train, y_train)
"""
MIXUPS = {
    # the validation split's predictions written into the test table's submission
    "val-into-submission": 'submission["label"] = model.predict(X_val)\n',
    # the split's features scored against the whole train target
    "split-against-whole": 'print("METRIC:", (model.predict(X_val) == y).mean())\n',
    # a table (two columns) where one column was meant, against the train target
    "table-for-column": ("from sklearn.feature_extraction.text import TfidfVectorizer\n"
                         'LogisticRegression().fit(TfidfVectorizer().fit_transform(train[["x1", "x2"]]), y)\n'),
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_task(tmp_path_factory.mktemp("rows") / "toy", with_config=False, n_train=120, n_test=40)


@pytest.fixture(scope="module")
def crashes(toy):
    """{case: (exit code, output)} of each mix-up, run for real in the task's folder."""
    out = {}
    for name, tail in MIXUPS.items():
        code = textwrap.dedent(HEAD).lstrip() + tail
        proc = subprocess.run([sys.executable, "-c", code], cwd=toy, capture_output=True, text=True, timeout=120)
        out[name] = (proc.returncode, proc.stdout + proc.stderr)
    return out


def _failed(exit_code: int, output: str) -> Node:
    facts = establish_facts(exit_code=exit_code, timed_out=False, killed_reason=None, output=output,
                            submission_problem=None, last_error=last_error_line(output), timeout_s=60)
    return Node(id="00000-0", step=0, stage="draft", code="print('x')\n", output=output, exit_code=exit_code,
                is_buggy=True, bug_reason=facts.failure)


def test_the_data_facts_state_each_tables_rows_and_read_back(toy):
    facts = data_facts(toy, toy / "sample_submission.csv")
    line = next(x for x in facts.splitlines() if x.startswith(ROWS_PREFIX))
    assert line == (ROWS_PREFIX + "`sample_submission.csv` 40 rows x 2 columns, `test.csv` 40 rows x 3 columns, "
                    "`train.csv` 120 rows x 4 columns.")
    assert table_rows("# Data facts\n" + facts + "\n# Task\n...") == {
        "sample_submission.csv": (40, 2), "test.csv": (40, 3), "train.csv": (120, 4)}
    assert table_rows("no facts here") == {}


@pytest.mark.parametrize(("case", "counts", "named"), [
    ("val-into-submission", [24, 40], ["24 = as many as the validation part of a 20 % split of `train.csv` (120 rows)",
                                       "40 = the rows of `sample_submission.csv` and of `test.csv`"]),
    ("split-against-whole", [120, 24], ["24 = as many as the validation part of a 20 % split of `train.csv`",
                                        "120 = the rows of `train.csv`"]),
    ("table-for-column", [2, 120], ["2 = the number of columns of `sample_submission.csv`: a table was used "
                                    "where one column was meant", "120 = the rows of `train.csv`"]),
])
def test_a_real_shape_error_gets_what_each_count_is(toy, crashes, case, counts, named):
    exit_code, output = crashes[case]
    assert exit_code != 0, output
    node = _failed(exit_code, output)
    assert error_counts(node.bug_reason, output) == counts, node.bug_reason
    assert match_known_error(node.bug_reason, output).name == "sample-count"
    facts = data_facts(toy, toy / "sample_submission.csv")
    note = count_note(table_rows(facts), node.bug_reason, output)
    assert note is not None and note.startswith("Row counts in this error: ")
    for part in named:
        assert part in note, note
    # in the debug prompt with the facts, after the known remedy; not without the facts or the table
    prompt = debug_prompt(node, [], facts=facts)
    assert note in prompt and prompt.index("Known remedy") < prompt.index(note)
    assert "Row counts" not in debug_prompt(node, [])
    assert "Row counts" not in debug_prompt(node, [], facts=facts, known_errors=False)


def test_a_crash_repair_request_names_the_counts_a_static_one_not(toy, crashes):
    facts = data_facts(toy, toy / "sample_submission.csv")
    exit_code, output = crashes["val-into-submission"]
    code = textwrap.dedent(HEAD).lstrip() + MIXUPS["val-into-submission"]
    need = repair_need(Candidate(code=code), Execution(exit_code=exit_code, output=output, seconds=1.0,
                                                       timed_out=False))
    assert need is not None and need.stage != "static"
    prompt = repair_prompt(code, need, facts=facts)
    assert "24 = as many as the validation part of a 20 % split of `train.csv`" in prompt
    assert "Row counts" not in repair_prompt(code, need, facts=facts, known=False)
    undefined = "print(X_val)\n"
    static = repair_need(Candidate(code=undefined), check_script(undefined, None))
    assert "Row counts" not in repair_prompt(undefined, static, facts=facts)


def test_counts_that_match_nothing_are_said_to_and_other_matches():
    tables = {"train.csv": (1000, 5), "test.csv": (300, 4)}
    assert what_count(999, tables) == "1 fewer than the 1000 rows of `train.csv` (rows dropped or filtered)"
    assert what_count(520, tables) is None
    assert what_count(800, tables) == "as many as the training part of a 20 % split of `train.csv` (1000 rows)"
    assert what_count(1300, tables) == "the rows of `train.csv` and `test.csv` together"
    note = count_note(tables, "ValueError: Found input variables with inconsistent numbers of samples: [520, 300]")
    assert "520 = no table's rows, nor a split of one; 300 = the rows of `test.csv`" in note
    assert count_note({}, "inconsistent numbers of samples: [1, 2]") is None
    assert count_note(tables, "KeyError: 'label'") is None


def test_rows_of_free_text_with_newlines_in_quotes_are_counted_as_rows(tmp_path):
    import pandas as pd

    from nodes.task_facts import _row_count
    df = pd.DataFrame({"id": [1, 2, 3], "text": ["one line", "two\nlines", "three\nlines\nhere"]})
    df.to_csv(tmp_path / "train.csv", index=False)
    assert _row_count(tmp_path / "train.csv") == 3
    (tmp_path / "plain.csv").write_text("a,b\n1,2\n3,4")  # no newline at the end
    assert _row_count(tmp_path / "plain.csv") == 2
