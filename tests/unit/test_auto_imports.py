"""Imports the harness adds: an undefined name with an unambiguous import line gets that line,
recorded on the node, before any repair call (nodes.execute.import_fix). The graph tests script
exactly what the model says and assert what the code did with it."""

from __future__ import annotations

import pytest

from nodes.execute import (
    IMPORTS_COMMENT,
    MOVED_COMMENT,
    add_imports,
    execute_script,
    move_fix,
    run_with_repairs,
)
from nodes.import_hints import auto_import_for, auto_imports
from nodes.operators import Candidate
from tasks.competition import load_competition
from tests.conftest import GOOD_SCRIPT, ai, fenced, scripted_model
from tests.unit.test_repair import VERDICT_OK, run_steps, services

# the toy task's good script with its imports forgotten, behind a docstring and a __future__ import
NO_IMPORTS = ('"""Threshold on x1."""\nfrom __future__ import annotations\n'
              + GOOD_SCRIPT.replace("import pandas as pd\n", "").replace(
                  'pd.read_csv("input/train.csv")', 'pd.read_csv(os.path.join("input", "train.csv"))'))
# a forgotten import and a name no import defines
MIXED = GOOD_SCRIPT.replace("import pandas as pd\n", "").replace('print("METRIC: 0.9")', "print('METRIC:', X_val)")


@pytest.mark.parametrize(("name", "line"), [
    ("train_test_split", "from sklearn.model_selection import train_test_split"),
    ("LogisticRegression", "from sklearn.linear_model import LogisticRegression"),
    ("np", "import numpy as np"),
    ("os", "import os"),
    ("t", None),  # scipy.stats.t, or a loop variable the script forgot: only the prompt's hint
    ("norm", None),
    ("X_val", None),
    ("model", None),
])
def test_which_undefined_names_the_harness_imports(name, line):
    assert auto_import_for(name) == line


def test_auto_imports_reads_the_static_problems():
    problems = ["line 2: undefined name 'train_test_split'", "line 3: undefined name 'X_val'",
                "line 4: undefined name 'os'", "line 9: undefined name 'os'"]
    assert auto_imports(problems) == {"train_test_split": "from sklearn.model_selection import train_test_split",
                                      "os": "import os"}


def test_add_imports_goes_after_the_docstring_and_future_imports():
    code = '"""Doc."""\nfrom __future__ import annotations\nx = os.sep'
    assert add_imports(code, ["import os"]) == (
        f'"""Doc."""\nfrom __future__ import annotations\n{IMPORTS_COMMENT}\nimport os\nx = os.sep\n')
    assert add_imports("x = np.zeros(2)\n", ["import numpy as np"]) == (
        f"{IMPORTS_COMMENT}\nimport numpy as np\nx = np.zeros(2)\n")


def test_forgotten_imports_are_added_without_a_repair_call(tmp_path, toy_task):
    llm = scripted_model([ai(fenced(NO_IMPORTS), 300, 80), ai(VERDICT_OK, 50, 5)])
    svc = services(tmp_path, toy_task, llm, steps=1)
    events = run_steps(svc)
    (node,) = svc.store.all()
    assert not node.is_buggy and node.metric == 0.9 and node.has_submission
    assert node.code == add_imports(NO_IMPORTS, ["import pandas as pd", "import os"])
    assert node.code.splitlines()[2:5] == [IMPORTS_COMMENT, "import pandas as pd", "import os"]
    (rep,) = node.extra["repairs"]
    assert rep == {"stage": "imports", "error": "undefined: pd, os", "line": None, "fixed": True,
                   "added": ["import pandas as pd", "import os"], "tokens": 0, "seconds": 0.0,
                   "then": "valid, metric 0.9"}
    assert [c.role for c in node.calls] == ["coder", "reviewer"]
    assert not [e for e in events if e["kind"] == "repairing"]


def test_with_auto_imports_off_the_repair_call_does_it(tmp_path, toy_task):
    llm = scripted_model([ai(fenced(NO_IMPORTS)), ai(fenced(GOOD_SCRIPT)), ai(VERDICT_OK)])
    svc = services(tmp_path, toy_task, llm, steps=1, auto_imports=False)
    run_steps(svc)
    (node,) = svc.store.all()
    assert not node.is_buggy and node.code == GOOD_SCRIPT
    assert [r["stage"] for r in node.extra["repairs"]] == ["static"]
    assert [c.role for c in node.calls] == ["coder", "repairer", "reviewer"]
    # the prompt still names the import lines
    assert "import pandas as pd" in llm.seen[1][-1].content


def test_what_imports_cannot_fix_goes_to_the_repair_call(tmp_path, toy_task):
    """The imports go in first; the repair call sees the script with them and the rest of the
    problems, and does not count the harness's addition against its K."""
    llm = scripted_model([ai(fenced(MIXED)), ai(fenced(GOOD_SCRIPT)), ai(VERDICT_OK)])
    svc = services(tmp_path, toy_task, llm, steps=1, repairs=1)
    run_steps(svc)
    (node,) = svc.store.all()
    assert not node.is_buggy and node.code == GOOD_SCRIPT
    first, second = node.extra["repairs"]
    # `fixed` as for a static repair: the script then passed the static check (not yet here)
    assert (first["stage"], first["fixed"], first["added"]) == ("imports", False, ["import pandas as pd"])
    assert "undefined name 'X_val'" in first["then"] and "'pd'" not in first["then"]
    assert (second["stage"], second["fixed"]) == ("static", True)
    request = llm.seen[1][-1].content
    assert "undefined name 'X_val'" in request and "undefined name 'pd'" not in request
    assert add_imports(MIXED, ["import pandas as pd"]).rstrip() in request


def test_a_repair_that_drops_the_imports_gets_them_back(tmp_path, toy_task):
    comp = load_competition(toy_task)
    ran = []

    def run(cand, attempt):
        ran.append(attempt)
        return execute_script(cand.code, tmp_path / f"a{attempt}", public_dir=comp.public_dir,
                              sample_submission=comp.sample_submission, timeout_s=30, backend="plain")

    crashing = GOOD_SCRIPT.replace("input/train.csv", "input/valid.csv")
    dropped = GOOD_SCRIPT.replace("import pandas as pd\n", "")
    llm = scripted_model([ai(fenced(dropped), 90, 30)])
    cand, ex, repairs = run_with_repairs(Candidate(code=crashing), run, llm, "SYSTEM", system_prompt=True,
                                         max_repairs=1)
    assert ran == [0, 1, 2] and ex.valid and ex.metric == 0.9
    assert cand.code == add_imports(dropped, ["import pandas as pd"])
    assert [(r["stage"], r["fixed"]) for r in repairs] == [("early_crash", False), ("imports", True)]
    assert "undefined name 'pd'" in repairs[0]["then"]
    # off: the repaired script stays as the model wrote it (with revert off too: it fails the
    # static check, which is less far than the crash before it)
    llm = scripted_model([ai(fenced(dropped), 90, 30)])
    cand, ex, repairs = run_with_repairs(Candidate(code=crashing), run, llm, "SYSTEM", system_prompt=True,
                                         max_repairs=1, auto_imports=False, revert=False)
    assert cand.code == dropped and not ex.valid and [r["stage"] for r in repairs] == ["early_crash"]


def test_the_report_counts_repair_calls_and_added_imports():
    from views.report.derive import repair_text

    nodes = [{"extra": {"repairs": [{"stage": "imports", "fixed": True}, {"stage": "static", "fixed": False}]}},
             {"extra": {"repairs": [{"stage": "early_crash", "fixed": True}]}}, {"extra": {}}, {}]
    assert repair_text(nodes) == ("2 repair calls, 1 got past the failure; "
                                  "imports added by the harness 1 times (1 then passed the static check)")
    assert repair_text([{}]) == ""
    assert repair_text([{"extra": {"repairs": [{"stage": "moved", "fixed": True}]}}]) == (
        "imports moved to the module that has the name by the harness 1 times (1 then passed the static check)")


# a name imported from a module that lacks it (the 1.5B wrote the first line in a fortune-topics
# debug step), with a second name on the line that is where it belongs, under an alias
MISPLACED = GOOD_SCRIPT.replace(
    "import pandas as pd\n",
    "import pandas as pd\nfrom sklearn.model_selection import RandomForestClassifier as RF, train_test_split\n"
    "try:\n    from sklearn.metrics import LogisticRegression\nexcept ValueError:\n    pass\n")


def test_a_misplaced_name_is_imported_from_the_module_that_has_it(tmp_path, toy_task):
    llm = scripted_model([ai(fenced(MISPLACED), 300, 80), ai(VERDICT_OK, 50, 5)])
    svc = services(tmp_path, toy_task, llm, steps=1)
    run_steps(svc)
    (node,) = svc.store.all()
    assert not node.is_buggy and node.metric == 0.9
    lines = node.code.splitlines()
    assert lines[1:4] == [f"{MOVED_COMMENT} RandomForestClassifier is not in sklearn.model_selection",
                          "from sklearn.model_selection import train_test_split",
                          "from sklearn.ensemble import RandomForestClassifier as RF"]
    # in its block, at its indentation
    assert lines[5:7] == [f"    {MOVED_COMMENT} LogisticRegression is not in sklearn.metrics",
                          "    from sklearn.linear_model import LogisticRegression"]
    (rep,) = node.extra["repairs"]
    assert (rep["stage"], rep["fixed"], rep["line"]) == ("moved", True, 2)
    assert rep["added"] == ["from sklearn.ensemble import RandomForestClassifier as RF",
                            "from sklearn.linear_model import LogisticRegression"]
    assert [c.role for c in node.calls] == ["coder", "reviewer"]  # no repair call


def test_a_name_no_common_module_has_is_left_to_the_repair_call():
    from nodes.execute import check_script

    code = "from sklearn.metrics import cer\nprint(cer)\n"
    ex = check_script(code, None, None)
    assert ex.skipped and "cannot import name 'cer'" in ex.static_problems[0]
    assert move_fix(Candidate(code=code), ex) is None
    # and with auto imports off the harness moves nothing
    from nodes.execute import harness_fixes
    assert move_fix not in harness_fixes(imports=False)
