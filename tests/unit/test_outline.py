"""The data facts' outline lines the harness adds for a name a script uses and never assigns."""

from __future__ import annotations

from benchmark.yield_ablation import VARIANTS, node_records
from graphs.run import build_parser, resolve_settings
from nodes.execute import check_script, outline_fix, run_with_repairs
from nodes.operators import Candidate
from nodes.outline import OUTLINE_COMMENT, add_outline_lines, outline_from_prompt
from nodes.static_check import static_problems
from nodes.task_facts import data_facts
from tasks.competition import load_competition
from tests.conftest import ai, fenced, scripted_model
from tests.unit.test_repair import VERDICT_OK, run_steps, services, written_report


def outline_of(task):
    comp = load_competition(task)
    return outline_from_prompt("# The data\n" + data_facts(comp.public_dir, comp.sample_submission))


def test_the_outline_is_read_from_the_prompt_that_showed_it(toy_task):
    lines = outline_of(toy_task)
    assert [o.text for o in lines] == [
        "import os", "import pandas as pd", "train = pd.read_csv('./input/train.csv')",
        "test = pd.read_csv('./input/test.csv')", "features = [c for c in test.columns if c not in ['id']]",
        "X, y = train[features], train['label']", "X_test = test[features]",
        "from sklearn.model_selection import train_test_split",
        "X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2, random_state=0)",
        "val_predictions = model.predict(X_val)", "test_predictions = model.predict(X_test)",
        "submission = pd.read_csv('./input/sample_submission.csv')"]
    features = lines[4]
    assert features.assigns == {"features"} and features.reads == {"test"}  # not the comprehension's `c`
    assert lines[5].assigns == {"X", "y"} and lines[5].reads == {"train", "features"}
    assert outline_from_prompt("SYSTEM") == () and outline_from_prompt("") == ()


# reads both tables and lists its features, then forgets X_test and the submission template
FORGETS = """import os
import pandas as pd
from sklearn.linear_model import LogisticRegression

train = pd.read_csv('./input/train.csv')
test = pd.read_csv('./input/test.csv')
features = ['x1', 'x2']
model = LogisticRegression().fit(train[features], train['label'])
print("METRIC: 0.9")

# predict the test rows
submission['label'] = model.predict(X_test)
os.makedirs("./submission", exist_ok=True)
submission.to_csv("./submission/submission.csv", index=False)
"""


def undefined(code):
    return [(p.split("'")[1], int(p.split(":")[0][5:])) for p in static_problems(code) if "undefined name" in p]


def test_the_lines_go_before_the_first_use_and_bring_what_they_need(toy_task):
    outline = outline_of(toy_task)
    code, added = add_outline_lines(FORGETS, undefined(FORGETS), outline)
    assert added == ["X_test = test[features]", "submission = pd.read_csv('./input/sample_submission.csv')"]
    assert static_problems(code) == []
    assert ("# predict the test rows\n" + OUTLINE_COMMENT + "\nX_test = test[features]\n"
            "submission = pd.read_csv('./input/sample_submission.csv')\nsubmission['label'] = ") in code
    # a script that never read the test table: its read comes first (and pandas, never imported)
    bare = "from sklearn.dummy import DummyClassifier\nfeatures = ['x1']\nprint(X_test.shape)\n"
    code, added = add_outline_lines(bare, undefined(bare), outline)
    assert added == ["import pandas as pd", "test = pd.read_csv('./input/test.csv')", "X_test = test[features]"]
    assert static_problems(code) == [] and code.endswith("features = ['x1']\n" + OUTLINE_COMMENT + "\n"
                                                         "import pandas as pd\ntest = pd.read_csv('./input/test.csv')\n"
                                                         "X_test = test[features]\nprint(X_test.shape)\n")
    # inside a function: before the function
    inside = "import pandas as pd\ndef predict(model):\n    return model.predict(test)\n"
    code, added = add_outline_lines(inside, undefined(inside), outline)
    assert added == ["test = pd.read_csv('./input/test.csv')"] and code.index("test = ") < code.index("def predict")


def test_nothing_is_added_that_could_change_what_the_script_does(toy_task):
    outline = outline_of(toy_task)
    # `X, y = ...` would rebind the script's own X
    own_x = "import pandas as pd\ntrain = pd.read_csv('./input/train.csv')\nX = train[['x1']]\nprint(X, y)\n"
    assert add_outline_lines(own_x, undefined(own_x), outline) is None
    # `X_test` is assigned later in the script (used before): moving things is the repair's job
    later = "import pandas as pd\nprint(X_test)\ntest = pd.read_csv('./input/test.csv')\nX_test = test\n"
    assert add_outline_lines(later, undefined(later), outline) is None
    # `features`, which X_test needs, is the script's own but assigned below the use
    below = ("import pandas as pd\ntest = pd.read_csv('./input/test.csv')\nprint(X_test)\n"
             "features = ['x1']\n")
    assert add_outline_lines(below, undefined(below), outline) is None
    # a name the outline does not define, and no outline at all
    other = "print(X_valid)\n"
    assert add_outline_lines(other, undefined(other), outline) is None
    # the outline's validation split: added for a script that uses X_val unassigned, with all it needs
    code, added = add_outline_lines("print(X_val.shape)\n", [("X_val", 1)], outline)
    assert added[-2:] == ["from sklearn.model_selection import train_test_split",
                          "X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2, random_state=0)"]
    assert static_problems(code) == []
    assert add_outline_lines(FORGETS, undefined(FORGETS), ()) is None


def test_the_record_and_a_run_with_repairs(toy_task, tmp_path):
    outline = outline_of(toy_task)
    ex = check_script(FORGETS, None)
    cand, record = outline_fix(Candidate(code=FORGETS), ex, outline)
    assert record["stage"] == "outline" and record["error"] == "undefined: X_test, submission"
    assert record["added"][0] == "X_test = test[features]" and record["fixed"] is None
    assert check_script(cand.code, None) is None  # it passes the static check now
    # through run_with_repairs, with the outline of the prompt it is given (no repair call)
    from nodes.execute import execute_script

    comp = load_competition(toy_task)

    def run(c, attempt):
        return execute_script(c.code, tmp_path / f"ws{attempt}", public_dir=comp.public_dir,
                              sample_submission=comp.sample_submission, timeout_s=30, backend="plain")

    system = "# The data\n" + data_facts(comp.public_dir, comp.sample_submission)
    llm = scripted_model([])
    cand, ex, repairs = run_with_repairs(Candidate(code=FORGETS), run, llm, system, system_prompt=True)
    assert ex.valid, ex.failure
    assert [(r["stage"], r["fixed"]) for r in repairs] == [("outline", True)] and llm.seen == []
    # off: the repair call gets the static failure
    llm = scripted_model([ai(fenced(cand.code))])
    _, ex, repairs = run_with_repairs(Candidate(code=FORGETS), run, llm, system, system_prompt=True, outline=False)
    assert ex.valid and [r["stage"] for r in repairs] == ["static"]


def test_the_search_step_adds_the_outline_lines_and_says_so(tmp_path, toy_task):
    comp = load_competition(toy_task)
    llm = scripted_model([ai(fenced(FORGETS)), ai(VERDICT_OK)])
    svc = services(tmp_path, toy_task, llm, steps=1)
    svc.system_text = "# The data\n" + data_facts(comp.public_dir, comp.sample_submission)
    run_steps(svc)
    (node,) = svc.store.all()
    assert not node.is_buggy and node.has_submission and OUTLINE_COMMENT in node.code
    (rec,) = node.extra["repairs"]
    assert rec["stage"] == "outline" and rec["fixed"] is True and rec["then"] == "valid, metric 0.9"
    assert [c.role for c in node.calls] == ["coder", "reviewer"]
    assert node_records([node.model_dump()])[0]["outline_added"] == 1
    written = written_report(svc)
    assert "lines of the data facts&#39; outline added by the harness" in written["tree_html"].read_text()
    assert ("outline lines added by the harness 1 times (1 then passed the static check)"
            in written["report_md"].read_text())


def test_the_flag_and_the_ablation_variant(tmp_path, toy_task):
    args = build_parser().parse_args(["--task", str(toy_task), "--run-dir", str(tmp_path), "--no-outline-names"])
    settings, _, _ = resolve_settings(args)
    assert settings.outline_names is False
    settings, _, _ = resolve_settings(build_parser().parse_args(["--task", str(toy_task), "--run-dir",
                                                                str(tmp_path)]))
    assert settings.outline_names is True
    assert VARIANTS["no-outline-names"] == ["--no-outline-names"]
