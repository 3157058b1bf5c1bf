"""Repairs that get less far are set aside: a repaired script whose run got less far than the
script before it does not replace it (nodes.execute.kept_before), in the tree search's own
supersteps and for callers inside one node (the strategy graphs). The fakes script exactly what
the model said; the scripts really run on the toy task."""

from __future__ import annotations

import pytest

from graphs.run import build_parser, resolve_settings
from nodes.execute import Execution, execute_script, kept_before, progress, run_with_repairs
from nodes.operators import Candidate
from nodes.static_check import missing_ending, static_problems
from tasks.competition import load_competition
from tests.conftest import GOOD_SCRIPT, ai, fenced, scripted_model
from tests.unit.test_repair import (
    MISSING_FILE,
    NO_OUTPUTS,
    UNDEFINED,
    VERDICT_OK,
    run_steps,
    services,
    written_report,
)

# what a small model often answers a repair with: the lines around the error, the rest left out
FRAGMENT = 'valid = pd.read_csv("./input/train.csv")\nprint(valid.shape)\n'
CRASHES = GOOD_SCRIPT.replace('pred = ', 'raise KeyError("label")\npred = ')

RUNS = {
    "no script": Execution(skipped="no Python code block in the answer", failure="no code"),
    "static": Execution(skipped="static check: x", static_problems=["line 1: undefined name 'x'"],
                        failure="static check: x"),
    "crash": Execution(exit_code=1, seconds=0.5, failure="the script exited with code 1"),
    "timeout": Execution(timed_out=True, seconds=30.0, failure="killed at the time limit"),
    "killed": Execution(exit_code=-9, killed_reason="memory", failure="killed: memory"),
    "no outputs": Execution(exit_code=0, seconds=1.0, failure="no METRIC line"),
    "valid": Execution(exit_code=0, seconds=1.0, metric=0.9),
}


@pytest.mark.parametrize(("name", "rank"), [("no script", 0), ("static", 1), ("crash", 2), ("timeout", 2),
                                            ("killed", 2), ("no outputs", 3), ("valid", 4)])
def test_progress_ranks_how_far_a_run_got(name, rank):
    assert progress(RUNS[name]) == rank


def test_only_a_run_that_got_less_far_is_set_aside():
    assert kept_before(RUNS["crash"], RUNS["static"])
    assert kept_before(RUNS["no outputs"], RUNS["crash"])
    assert not kept_before(RUNS["crash"], RUNS["timeout"])  # a tie keeps the repaired script
    assert not kept_before(RUNS["static"], RUNS["static"])
    assert not kept_before(RUNS["static"], RUNS["crash"])


@pytest.fixture
def runner(tmp_path, toy_task):
    comp = load_competition(toy_task)
    ran: list[int] = []

    def run(cand, attempt):
        ran.append(attempt)
        return execute_script(cand.code, tmp_path / f"a{attempt}", public_dir=comp.public_dir,
                              sample_submission=comp.sample_submission, timeout_s=30, backend="plain")

    run.ran = ran
    return run


def test_a_fragment_does_not_replace_the_script_that_crashed(runner):
    """crash -> fragment (fails the static check: set aside) -> from the crashing script again ->
    a whole script that runs: kept."""
    llm = scripted_model([ai(fenced(FRAGMENT.replace("pd.", "pandas.")), 90, 30), ai(fenced(GOOD_SCRIPT), 80, 40)])
    cand, ex, repairs = run_with_repairs(Candidate(code=MISSING_FILE), runner, llm, "SYSTEM",
                                         system_prompt=True, max_repairs=2, auto_imports=False)
    assert runner.ran == [0, 1, 2] and ex.valid and cand.code == GOOD_SCRIPT
    first, second = repairs
    assert (first["stage"], first["fixed"], first["kept"]) == ("early_crash", False, "before")
    assert "undefined name 'pandas'" in first["then"]
    assert (second["stage"], second["fixed"]) == ("early_crash", True) and "kept" not in second
    # the second repair call was asked about the crashing script, not the fragment
    second_request = llm.seen[1][-1].content
    assert MISSING_FILE.rstrip() in second_request and "FileNotFoundError" in second_request
    # both calls' cost stays on the candidate
    assert [c.role for c in cand.usage.calls] == ["repairer", "repairer"] and cand.usage.prompt_tokens == 170


def test_with_revert_off_the_fragment_replaces_it(runner):
    llm = scripted_model([ai(fenced(FRAGMENT.replace("pd.", "pandas.")))])
    cand, ex, repairs = run_with_repairs(Candidate(code=MISSING_FILE), runner, llm, "SYSTEM",
                                         system_prompt=True, max_repairs=1, auto_imports=False, revert=False)
    assert cand.code.startswith("valid = pandas.") and ex.skipped and "kept" not in repairs[0]


def test_the_last_repair_set_aside_leaves_the_run_before_it_and_its_files(runner):
    llm = scripted_model([ai(fenced(CRASHES))])
    cand, ex, repairs = run_with_repairs(Candidate(code=NO_OUTPUTS), runner, llm, "SYSTEM",
                                         system_prompt=True, max_repairs=1)
    assert cand.code == NO_OUTPUTS and ex.exit_code == 0 and "METRIC" in ex.failure
    assert runner.ran == [0, 1] and ex.workspace.endswith("a0")
    (rep,) = repairs
    assert rep["stage"] == "outputs" and rep["kept"] == "before" and "KeyError" in rep["then"]


def test_the_imports_of_a_set_aside_repair_are_set_aside_with_it(runner):
    """The harness's imports make the fragment parse; it still gets less far than the crash."""
    llm = scripted_model([ai(fenced("x = np.zeros(2)\nprint(x, y)\n"))])
    cand, ex, repairs = run_with_repairs(Candidate(code=MISSING_FILE), runner, llm, "SYSTEM",
                                         system_prompt=True, max_repairs=1)
    assert cand.code == MISSING_FILE and "FileNotFoundError" in ex.failure
    assert [(r["stage"], r.get("kept")) for r in repairs] == [("early_crash", "before"), ("imports", "before")]
    # the script set aside, as it last ran (with the harness's imports), is on the repair's record
    assert repairs[0]["script"].endswith("import numpy as np\nx = np.zeros(2)\nprint(x, y)\n")
    assert "script" not in repairs[1]


def test_the_search_step_goes_on_from_the_script_before_a_set_aside_repair(tmp_path, toy_task):
    llm = scripted_model([ai(fenced(MISSING_FILE)), ai(fenced("print(model)\n")), ai(fenced(GOOD_SCRIPT)),
                          ai(VERDICT_OK)])
    svc = services(tmp_path, toy_task, llm, steps=1, repairs=2)
    run_steps(svc)
    (node,) = svc.store.all()
    assert not node.is_buggy and node.code == GOOD_SCRIPT and node.has_submission
    first, second = node.extra["repairs"]
    assert first["kept"] == "before" and "undefined name 'model'" in first["then"]
    assert second["fixed"] is True and "kept" not in second
    assert MISSING_FILE.rstrip() in llm.seen[2][-1].content  # the second repair saw the crash again
    assert [c.role for c in node.calls] == ["coder", "repairer", "repairer", "reviewer"]
    # tree.html and the report say so
    written = written_report(svc)
    html = written["tree_html"].read_text()
    assert "(set aside: the step went on with the script before it)" in html
    assert first["script"] == "print(model)\n" and "<summary>the script set aside</summary>" in html
    assert "1 repaired scripts set aside" in written["report_md"].read_text()


def test_a_repair_that_gets_as_far_is_kept(tmp_path, toy_task):
    """static -> another static failure: a tie, the repaired script stays (its error may be the
    next one down)."""
    llm = scripted_model([ai(fenced(UNDEFINED)), ai(fenced("print(model)\n"))])
    svc = services(tmp_path, toy_task, llm, steps=1, repairs=1, llm_review=False)
    run_steps(svc)
    (node,) = svc.store.all()
    assert node.code == "print(model)\n" and "kept" not in node.extra["repairs"][0]


def test_the_flag_and_the_ablation_variant(tmp_path, toy_task):
    from benchmark.yield_ablation import VARIANTS, node_records

    args = build_parser().parse_args(["--task", str(toy_task), "--run-dir", str(tmp_path), "--no-revert-repairs"])
    assert resolve_settings(args)[0].revert_repairs is False
    args = build_parser().parse_args(["--task", str(toy_task), "--run-dir", str(tmp_path)])
    assert resolve_settings(args)[0].revert_repairs is True
    assert VARIANTS["no-revert-repairs"] == ["--no-revert-repairs"]
    assert VARIANTS["no-splice-fragments"] == ["--no-splice-fragments"]
    args = build_parser().parse_args(["--task", str(toy_task), "--run-dir", str(tmp_path), "--no-splice-fragments"])
    settings = resolve_settings(args)[0]
    assert (settings.splice_fragments, settings.revert_repairs) == (False, True)
    node = {"step": 0, "is_buggy": True, "extra": {"repairs": [{"stage": "static", "kept": "before"},
                                                                 {"stage": "imports", "kept": "before"},
                                                                 {"stage": "static"}]}}
    assert node_records([node])[0]["repairs_set_aside"] == 1


# ------------------------------------------------------------------------- a fragment put in its place

LINES = "a = load()\nb = transform(a, k=5)\nc = fit(b)\nd = score(c)\nprint(d)\ne = 1\nf = 2\ng = 3\nh = 4\ni = 5\n"


def test_a_fragment_goes_in_the_place_it_covers():
    from nodes.execute import splice_fragment

    # a changed edge line replaces the line it resembles
    code, replaced = splice_fragment(LINES, "b = transform(a, k=1)\nc = fit(b)\nd = score(c)\n")
    assert replaced == (2, 4) and code == LINES.replace("k=5", "k=1")
    # an edge line like none next to it is inserted; blank lines are passed over
    code, replaced = splice_fragment(LINES, "import os\n\nc = fit(b)\nd = score(c)\nprint(d, os.sep)\n")
    assert replaced == (3, 5)
    assert code.splitlines()[:8] == ["a = load()", "b = transform(a, k=5)", "import os", "", "c = fit(b)",
                                     "d = score(c)", "print(d, os.sep)", "e = 1"]
    # not a fragment: as long as the script, or fewer than two of its lines
    assert splice_fragment(LINES, LINES.replace("k=5", "k=1")) is None
    assert splice_fragment(LINES, "c = fit(b)\nz = 0\n") is None  # nothing assigns z
    assert splice_fragment(LINES, "") is None
    # one changed assignment (no line repeated to anchor it): it replaces the one binding its names
    code, replaced = splice_fragment(LINES, "# stratify the split\nb = transform(a,\n              k=1)\n")
    assert replaced == (2, 2) and code == LINES.replace("b = transform(a, k=5)", "b = transform(a,\n              k=1)")
    split = ("import pandas as pd\ntrain = pd.read_csv('t.csv')\nX, y = train[['w']], train['p']\n"
             "X_tr, X_va, y_tr, y_va = split(X, y)\nm = fit(X_tr, y_tr)\nprint(score(m, X_va, y_va))\n"
             "a = 1\nb = 2\n")
    code, replaced = splice_fragment(split, "X_tr, X_va, y_tr, y_va = split(X, y, stratify=y)\n")
    assert replaced == (4, 4) and code == split.replace("split(X, y)", "split(X, y, stratify=y)")
    assert splice_fragment(split, "print(m)\n") is None  # not an assignment
    assert splice_fragment(split, "X_tr, X_va = split(X)\n") is None  # names no line binds together


# crashes early (np.float is gone from numpy), 11 lines; the fragment fixes the crash in 3
LONG = """import numpy as np
import pandas as pd

train = pd.read_csv("input/train.csv")
test = pd.read_csv("input/test.csv")
# threshold on x1
limit = 3
scale = np.float(1.0)
pred = (test.x1 > limit * scale).astype(int)
pd.DataFrame({"id": test.id, "label": pred}).to_csv("submission/submission.csv", index=False)
print("METRIC: 0.9")
"""
FIX_FRAGMENT = "limit = 3\nscale = float(1.0)\npred = (test.x1 > limit * scale).astype(int)\n"


def test_a_repair_answered_with_a_fragment_is_put_in_its_place(runner):
    llm = scripted_model([ai(fenced(FIX_FRAGMENT), 90, 30)])
    cand, ex, repairs = run_with_repairs(Candidate(code=LONG), runner, llm, "SYSTEM", system_prompt=True,
                                         max_repairs=1)
    assert runner.ran == [0, 1, 2] and ex.valid and cand.code == LONG.replace("np.float(1.0)", "float(1.0)")
    (rep,) = repairs
    assert (rep["stage"], rep["fixed"], rep["then"]) == ("early_crash", True, "valid, metric 0.9")
    assert "kept" not in rep
    assert rep["fragment"]["lines"] == 3 and rep["fragment"]["replaced"] == [7, 9]
    assert "undefined name 'test'" in rep["fragment"]["then"]  # the fragment alone
    # off: the fragment is set aside, the step keeps the crash
    llm = scripted_model([ai(fenced(FIX_FRAGMENT), 90, 30)])
    cand, ex, repairs = run_with_repairs(Candidate(code=LONG), runner, llm, "SYSTEM", system_prompt=True,
                                         max_repairs=1, splice=False)
    assert cand.code == LONG and "AttributeError" in ex.failure and repairs[0]["kept"] == "before"
    assert "fragment" not in repairs[0]


def test_a_spliced_fragment_that_still_gets_less_far_is_set_aside(runner):
    worse = "limit = 3\nscale = float(1.0) + missing\npred = (test.x1 > limit * scale).astype(int)\n"
    llm = scripted_model([ai(fenced(worse))])
    cand, ex, repairs = run_with_repairs(Candidate(code=LONG), runner, llm, "SYSTEM", system_prompt=True,
                                         max_repairs=1)
    assert cand.code == LONG and "AttributeError" in ex.failure
    (rep,) = repairs
    assert rep["kept"] == "before" and rep["fragment"]["replaced"] == [7, 9]
    assert "undefined name 'missing'" in rep["then"] and "+ missing" in rep["script"]
    assert rep["script"].startswith("import numpy as np\n")  # the spliced script, as it ran


def test_the_search_step_splices_a_fragment(tmp_path, toy_task):
    llm = scripted_model([ai(fenced(LONG)), ai(fenced(FIX_FRAGMENT)), ai(VERDICT_OK)])
    svc = services(tmp_path, toy_task, llm, steps=1, repairs=1)
    run_steps(svc)
    (node,) = svc.store.all()
    assert not node.is_buggy and node.has_submission and node.code == LONG.replace("np.float(1.0)", "float(1.0)")
    (rep,) = node.extra["repairs"]
    assert rep["fixed"] is True and rep["fragment"]["replaced"] == [7, 9] and "kept" not in rep
    written = written_report(svc)
    assert "the answer was a fragment of 3 lines, put in place of lines 7-9" in written["tree_html"].read_text()
    assert "1 answers were fragments of the script, put in their place" in written["report_md"].read_text()
    # off: set aside
    llm = scripted_model([ai(fenced(LONG)), ai(fenced(FIX_FRAGMENT))])
    (tmp_path / "off").mkdir()
    svc = services(tmp_path / "off", toy_task, llm, steps=1, repairs=1, llm_review=False, splice_fragments=False)
    run_steps(svc)
    (node,) = svc.store.all()
    assert node.is_buggy and node.code == LONG and node.extra["repairs"][0]["kept"] == "before"


def test_a_debug_answer_that_is_a_fragment_of_its_parent_is_put_in_its_place(tmp_path, toy_task):
    """Step 0's draft crashes (no repairs); step 1 debugs it and the model answers with the three
    lines it changed: alone they fail the static check, in the parent's script they run valid."""
    llm = scripted_model([ai(fenced(LONG)), ai(fenced(FIX_FRAGMENT))])
    svc = services(tmp_path, toy_task, llm, steps=2, repairs=0, llm_review=False, num_drafts=1, debug_prob=1.0)
    run_steps(svc)
    draft, fixed = sorted(svc.store.all(), key=lambda n: n.step)
    assert draft.is_buggy and fixed.stage == "debug" and fixed.parent_id == draft.id
    assert not fixed.is_buggy and fixed.has_submission
    assert fixed.code == LONG.replace("np.float(1.0)", "float(1.0)")
    (rec,) = fixed.extra["repairs"]
    assert rec["stage"] == "parent" and rec["fixed"] is True and rec["then"] == "valid, metric 0.9"
    assert rec["fragment"]["lines"] == 3 and rec["fragment"]["replaced"] == [7, 9]
    assert "undefined name 'test'" in rec["fragment"]["then"] and "kept" not in rec
    assert [c.role for c in fixed.calls] == ["coder"]  # no repair call
    from benchmark.yield_ablation import node_records

    assert node_records([fixed.model_dump()])[0]["parent_splices"] == 1
    written = written_report(svc)
    assert "fragment put in the parent&#39;s script by the harness" in written["tree_html"].read_text()
    assert ("1 debug or improve answers were fragments of the parent's script, put in their place by the "
            "harness (1 kept)") in written["report_md"].read_text()
    # off: the fragment runs as it is
    (tmp_path / "off").mkdir()
    llm = scripted_model([ai(fenced(LONG)), ai(fenced(FIX_FRAGMENT))])
    svc = services(tmp_path / "off", toy_task, llm, steps=2, repairs=0, llm_review=False, num_drafts=1,
                   debug_prob=1.0, splice_fragments=False)
    run_steps(svc)
    fixed = max(svc.store.all(), key=lambda n: n.step)
    assert fixed.is_buggy and fixed.code == FIX_FRAGMENT and not fixed.extra.get("repairs")


def test_a_debug_fragment_is_spliced_only_when_it_fails_the_static_check_alone(tmp_path, toy_task):
    """A fragment that runs on its own (it crashes) is run as it is; one that still fails the
    static check in its parent's script is kept there (a tie: the next repair sees the whole
    script), its record saying it did not get past the static check."""
    crashes_alone = "import numpy as np\nimport pandas as pd\nscale = np.float(1.0)\nprint(scale)\n"
    llm = scripted_model([ai(fenced(LONG)), ai(fenced(crashes_alone))])
    svc = services(tmp_path, toy_task, llm, steps=2, repairs=0, llm_review=False, num_drafts=1, debug_prob=1.0)
    run_steps(svc)
    fixed = max(svc.store.all(), key=lambda n: n.step)
    assert fixed.code == crashes_alone and not fixed.extra.get("repairs") and "AttributeError" in fixed.bug_reason
    (tmp_path / "tie").mkdir()
    still = FIX_FRAGMENT.replace("float(1.0)", "float(missing)")
    llm = scripted_model([ai(fenced(LONG)), ai(fenced(still))])
    svc = services(tmp_path / "tie", toy_task, llm, steps=2, repairs=0, llm_review=False, num_drafts=1,
                   debug_prob=1.0)
    run_steps(svc)
    fixed = max(svc.store.all(), key=lambda n: n.step)
    assert fixed.code == LONG.replace("np.float(1.0)", "float(missing)")
    (rec,) = fixed.extra["repairs"]
    assert rec["stage"] == "parent" and rec["fixed"] is False and "undefined name 'missing'" in rec["then"]
    assert "kept" not in rec and "undefined name 'test'" in rec["fragment"]["then"]


def test_an_improve_answer_without_the_ending_is_put_in_its_parent(tmp_path, toy_task):
    """Step 1 improves a valid draft and the model answers with only the lines it changed: they
    pass the static check alone but name neither the metric line nor the submission, so the
    harness puts them in the parent's script, which runs valid with the change."""
    valid = LONG.replace("np.float(1.0)", "float(1.0)")
    changed = 'import pandas as pd\ntest = pd.read_csv("input/test.csv")\n# threshold on x1\nlimit = 2\n' \
              "scale = 1.0\npred = (test.x1 > limit * scale).astype(int)\n"
    assert static_problems(changed) == [] and missing_ending(changed) is not None
    llm = scripted_model([ai(fenced(valid)), ai(fenced(changed))])
    svc = services(tmp_path, toy_task, llm, steps=2, repairs=0, llm_review=False, num_drafts=1)
    run_steps(svc)
    draft, improved = sorted(svc.store.all(), key=lambda n: n.step)
    assert not draft.is_buggy and improved.stage == "improve" and improved.parent_id == draft.id
    assert not improved.is_buggy and improved.has_submission
    assert improved.code == "import numpy as np\n" + changed + valid.split("astype(int)\n", 1)[1]
    (rec,) = improved.extra["repairs"]
    assert rec["stage"] == "parent" and rec["fixed"] is True and rec["fragment"]["replaced"] == [2, 9]
    assert rec["fragment"]["then"] == ("it never prints the 'METRIC:' line and never writes "
                                       "./submission/submission.csv")
    # an answer that names the metric line is a script of its own: it runs as it is
    assert missing_ending('print("METRIC:", 0.5)\n') is None
    assert missing_ending("out = './submission/submission.csv'\n") is None
