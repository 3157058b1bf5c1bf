"""A function or class used above the top-level definition that makes it is moved up by the
harness (nodes.execute.hoist_fix): the static check's problem, the script it leaves, and the
cases it leaves alone."""

from __future__ import annotations

from nodes.execute import check_script, harness_fixes, hoist_fix, run_with_repairs
from nodes.operators import Candidate
from tests.conftest import scripted_model

# what the 1.5B wrote for a character error rate: the helper after the score that calls it
LATE = '''import pandas as pd
y_val = ["K AE T", "D AO G"]
val_predictions = ["K AH T", "D AO G"]
validation_score = sum(edit_distance(p, t) for p, t in zip(val_predictions, y_val)) / 12
print(f"METRIC: {validation_score}")

def edit_distance(a: str, b: str, cost=1) -> int:
    return sum(x != z for x, z in zip(a, b)) * cost
'''


def _hoisted(code: str):
    ex = check_script(code, None, None)
    assert ex is not None
    return ex, hoist_fix(Candidate(code=code), ex)


def test_a_helper_defined_below_its_use_is_moved_above_it() -> None:
    ex, fix = _hoisted(LATE)
    assert ex.static_problems[0].startswith("line 4: undefined name 'edit_distance' (assigned only later, line 7")
    assert fix is not None
    cand, record = fix
    assert record["stage"] == "hoisted" and record["line"] == 4
    assert record["added"] == ["edit_distance moved above line 4"]
    lines = cand.code.splitlines()
    assert lines[3] == "# moved up by the harness: used above the line that defined it: edit_distance"
    assert lines[4] == "def edit_distance(a: str, b: str, cost=1) -> int:"
    assert lines[7].startswith("validation_score = sum(edit_distance(")
    assert check_script(cand.code, None, None) is None  # it passes the static check now


def test_the_step_runs_the_moved_script_without_a_repair_call(tmp_path) -> None:
    from nodes.execute import Execution

    ran: list[str] = []

    def run(c: Candidate, attempt: int) -> Execution:
        ran.append(c.code)
        checked = check_script(c.code, None, None)
        return checked or Execution(exit_code=0, output="METRIC: 0.25", metric=0.25, seconds=0.1)

    cand, ex, records = run_with_repairs(Candidate(plan="p", code=LATE), run, scripted_model([]), "facts",
                                         system_prompt=True, max_repairs=2)
    assert [r["stage"] for r in records] == ["hoisted"] and records[0]["fixed"] is True
    assert len(ran) == 2 and ex.metric == 0.25 and "# moved up by the harness" in cand.code
    assert hoist_fix in harness_fixes(imports=False)  # always on


def test_definitions_that_read_the_scripts_names_or_come_twice_stay_where_they_are() -> None:
    decorated = LATE.replace("def edit_distance", "@functools.cache\ndef edit_distance").replace(
        "import pandas as pd", "import functools\nimport pandas as pd")
    default = LATE.replace("cost=1", "cost=weight") + "weight = 2\n"
    twice = LATE + "\ndef edit_distance(a, b):\n    return 0\n"
    for code in (decorated, default, twice):
        ex, fix = _hoisted(code)
        assert ex.static_problems and fix is None, code
    # a name used before an assignment that is not a def is the repair's to fix
    ex, fix = _hoisted("print(total)\ntotal = 3\n")
    assert "assigned only later" in ex.static_problems[0] and fix is None
