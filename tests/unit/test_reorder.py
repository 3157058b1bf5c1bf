"""Plain assignments used above the line that makes them are moved up by the harness
(nodes.reorder, nodes.execute.reorder_fix): the static check's problems, the script it leaves
(run for real), and the cases it leaves alone."""

from __future__ import annotations

import ast

import pytest

from nodes.execute import Execution, check_script, harness_fixes, reorder_fix, run_with_repairs
from nodes.operators import Candidate
from nodes.reorder import REORDER_COMMENT, changed_in_place, move_up, reads
from nodes.static_check import static_problems
from tests.conftest import run_solution, scripted_model

# a repair answer put its fit above the split and the reads it needs
SCRAMBLED = '''import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split

# fit on the train rows
model = Ridge(alpha=1.0).fit(X_train, y_train)
score = model.score(X_val, y_val)

# the split
train = pd.read_csv("train.csv")
features = [c for c in train.columns if c != "target"]
X, y = train[features], train["target"]
X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)
print(f"METRIC: {score:.6f}")
'''

IN_ORDER = '''import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split
train = pd.read_csv("train.csv")
features = [c for c in train.columns if c != "target"]
X, y = train[features], train["target"]
X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, random_state=0)
model = Ridge(alpha=1.0).fit(X_train, y_train)
score = model.score(X_val, y_val)
print(f"METRIC: {score:.6f}")
'''


def _run(code: str, folder) -> str:
    (folder / "train.csv").write_text("a,b,target\n" + "".join(f"{i},{(i * 7) % 5},{2 * i + (i % 3)}\n"
                                                                 for i in range(40)))
    ex = run_solution(code, folder)
    assert ex.exit_code == 0, ex.output
    return ex.output


def test_the_split_and_what_it_reads_move_above_the_fit_and_the_script_runs_as_written_in_order(tmp_path):
    problems = static_problems(SCRAMBLED)
    assert any("undefined name 'X_train' (assigned only later, line 13" in p for p in problems)
    done = move_up(SCRAMBLED, problems)
    assert done is not None
    code, moved = done
    assert [(m.names, m.above, m.lines) for m in moved] == [(("X_train", "y_train"), 6, (10, 11, 12, 13))]
    assert moved[0].text == 'train = pd.read_csv("train.csv")'
    lines = code.splitlines()
    assert lines[3:6] == ["", f"{REORDER_COMMENT} X_train, y_train", IN_ORDER.splitlines()[3]]
    assert lines[6:9] == IN_ORDER.splitlines()[4:7]
    assert lines[9:11] == ["# fit on the train rows", "model = Ridge(alpha=1.0).fit(X_train, y_train)"]
    assert static_problems(code) == []
    assert _run(code, tmp_path) == _run(IN_ORDER, tmp_path)


def test_the_step_runs_the_moved_script_without_a_repair_call():
    ran: list[str] = []

    def run(c: Candidate, attempt: int) -> Execution:
        ran.append(c.code)
        return check_script(c.code, None, None) or Execution(exit_code=0, output="METRIC: 0.5", metric=0.5,
                                                            seconds=0.1)

    cand, ex, records = run_with_repairs(Candidate(plan="p", code=SCRAMBLED), run, scripted_model([]), "facts",
                                         system_prompt=True, max_repairs=2, auto_imports=False)
    assert [r["stage"] for r in records] == ["reordered"] and records[0]["fixed"] is True
    assert records[0]["line"] == 6 and records[0]["added"] == [
        'lines 10, 11, 12, 13 moved above line 6: train = pd.read_csv("train.csv")']
    assert records[0]["tokens"] == 0 and len(ran) == 2 and ex.metric == 0.5
    assert reorder_fix in harness_fixes(imports=False)  # always on


def _left_alone(code: str) -> None:
    problems = static_problems(code)
    assert any("assigned only later" in p for p in problems), problems
    assert move_up(code, problems) is None


@pytest.mark.parametrize("between", [
    'train["a"] = 0',  # changes in place the table the moved lines read
    "for train in [train]:\n    pass",  # assigns a name the moved lines read, and cannot move
    "print(X)",  # reads X, which the prefix assigns and the block would assign again
])
def test_a_statement_between_that_the_move_would_change_keeps_the_order(between):
    code = ('import pandas as pd\nX = 0\ntrain = pd.DataFrame({"a": [1, 2]})\nprint(X_train)\n'
            f"{between}\nX = train\nX_train = X\n")
    _left_alone(code)


def test_a_block_that_fits_what_a_statement_between_reads_keeps_the_order():
    code = ("from sklearn.preprocessing import StandardScaler\nX = [[1.0], [2.0]]\nscaler = StandardScaler()\n"
            "print(X_scaled)\nprint(scaler)\nX_scaled = scaler.fit_transform(X)\n")
    _left_alone(code)


def test_a_line_between_that_the_moved_lines_read_moves_with_them():
    code = 'import pandas as pd\ntrain = pd.DataFrame({"a": [1, 2]})\nprint(X_train)\ntrain = train.head(1)\nX_train = train\n'
    done = move_up(code, static_problems(code))
    assert done is not None and done[1][0].lines == (4, 5)
    assert done[0].splitlines()[3:6] == ["train = train.head(1)", "X_train = train", "print(X_train)"]


def test_lines_that_cannot_move_or_need_the_using_line_stay_where_they_are():
    _left_alone("X = [1]\nprint(X_val)\nif X:\n    X_val = X\n")  # assigned inside an if
    _left_alone("n = X_val[0]\nX_val = [n]\n")  # the use assigns what the assignment reads
    _left_alone("print(X_val)\nX_val = undefined_here\n")  # reads a name nothing binds
    assert move_up("X_val = X_val.toarray()\n", static_problems("X_val = X_val.toarray()\n")) is None


def test_what_a_statement_reads_and_changes_in_place():
    stmt = ast.parse("f = [c for c in cols if c != target]; g = lambda z: z + w; h = sorted(q, key=k)").body
    assert reads(stmt[0]) == {"cols", "target"}
    assert reads(stmt[1]) == set()  # a lambda reads w when called
    assert reads(stmt[2]) == {"q", "k"}
    changes = [changed_in_place(s) for s in ast.parse(
        "df['a'] = 1\nm.fit(X, y)\ndf.drop(columns=['a'], inplace=True)\nnp.random.shuffle(rows)\n"
        "out = df.drop(columns=['a'])\nn += 1\n").body]
    assert changes == [{"df"}, {"m"}, {"df"}, {"np", "rows"}, set(), {"n"}]


def test_the_record_counts_the_move_fixed_once_the_names_are_no_longer_used_above_their_lines():
    from nodes.execute import close_record

    code = SCRAMBLED.replace("from sklearn.linear_model import Ridge\n", "")  # Ridge left undefined
    ex = check_script(code, None, None)
    cand, record = reorder_fix(Candidate(code=code), ex)
    after = check_script(cand.code, None, None)
    assert after is not None and any("undefined name 'Ridge'" in p for p in after.static_problems)
    assert record["names"] == ["X_train", "y_train"] and close_record(record, after)["fixed"] is True
    assert close_record(record, ex)["fixed"] is False
