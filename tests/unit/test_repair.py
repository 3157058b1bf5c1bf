"""Repairs inside a step (static failures, early crashes, missing outputs) and the known-error table.

The graph tests script exactly what the model says and assert what the code did with it; the
known-error tests run small scripts that really raise each error and match their tracebacks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graphs.run import build_parser, resolve_settings
from graphs.search import build_search_graph
from graphs.settings import RunServices, RunSettings, SearchContext
from nodes.execute import Execution, check_script, excerpt, execute_script, repair_need
from nodes.import_hints import known_errors, known_remedy, match_known_error
from nodes.operators import Candidate, debug_prompt
from nodes.review import establish_facts, last_error_line
from nodes.static_check import ImportChecker, static_report
from nodes.tree import Node, NodeStore
from tasks.competition import load_competition
from tests.conftest import GOOD_SCRIPT, ai, fenced, scripted_model

VERDICT_OK = '{"is_bug": false, "summary": "works"}'
UNDEFINED = GOOD_SCRIPT.replace('print("METRIC: 0.9")', "print('METRIC:', X_val)")
MISSING_MODULE = "import nltk_not_here\n" + GOOD_SCRIPT
MISSING_NAME = "from sklearn.metrics import cer\n" + GOOD_SCRIPT
NO_OUTPUTS = GOOD_SCRIPT.replace('pd.DataFrame({"id": test.id, "label": pred}).to_csv("submission/submission.csv", index=False)\n', "").replace(
    'print("METRIC: 0.9")', 'print("Accuracy: 0.9")')
MISSING_FILE = 'import pandas as pd\n\nvalid = pd.read_csv("./input/valid.csv")\nprint(valid.shape)\n'


def services(tmp_path, task, llm, **overrides) -> RunServices:
    comp = load_competition(task)
    settings = RunSettings(run_id="t", task_dir=str(task), exec_timeout=30, sandbox="plain",
                           lower_is_better=False, **{"num_drafts": 5, **overrides})
    store = NodeStore(tmp_path / "nodes.sqlite")
    return RunServices(settings=settings, run_dir=tmp_path / "run", competition=comp, llm=llm,
                       system_text="SYSTEM", use_system_prompt=True, store=store,
                       tree=store.load_tree(False), lower_is_better=False)


def written_report(svc: RunServices) -> dict:
    """The run's tree.json/summary and then its report (tree.html, report.md), as the CLI writes them."""
    from views.export import export_run
    from views.report import write_report

    export_run(svc.run_dir, svc.store.all(), svc.tree, run_id="t", wall_seconds=1.0,
               settings=svc.settings.model_dump())
    return write_report(svc.run_dir)


def run_steps(svc: RunServices) -> list[dict]:
    graph = build_search_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}, "recursion_limit": 100}
    return list(graph.stream({"step": 0}, config, context=SearchContext(services=svc), stream_mode="custom"))


@pytest.mark.parametrize(("draft", "problem"), [
    (UNDEFINED, "line 6: undefined name 'X_val'"),
    (MISSING_MODULE, "line 1: ModuleNotFoundError: No module named 'nltk_not_here'"),
    (MISSING_NAME, "line 1: ImportError: cannot import name 'cer' from 'sklearn.metrics'"),
])
def test_static_failure_is_repaired_inside_the_step(tmp_path, toy_task, draft, problem):
    llm = scripted_model([ai(fenced(draft), 300, 80), ai(fenced(GOOD_SCRIPT), 120, 60), ai(VERDICT_OK, 50, 5)])
    svc = services(tmp_path, toy_task, llm, steps=1)
    events = run_steps(svc)
    (node,) = svc.store.all()
    assert not node.is_buggy and node.metric == 0.9 and node.has_submission
    assert node.code == GOOD_SCRIPT
    (rep,) = node.extra["repairs"]
    assert rep["stage"] == "static" and rep["fixed"] is True and problem in rep["error"]
    assert rep["then"] == "valid, metric 0.9" and rep["tokens"] == 180
    assert [c.role for c in node.calls] == ["coder", "repairer", "reviewer"]
    assert (node.prompt_tokens, node.completion_tokens, node.llm_calls) == (470, 145, 3)
    # the repair call: the run's stable prefix first, then the error, the numbered lines, the script
    system, request = llm.seen[1]
    assert system.content == "SYSTEM" and "# Your job: repair a script" in request.content
    assert problem in request.content and draft.rstrip() in request.content
    line = int(problem.split()[1].rstrip(":"))
    assert f"> {line} | {draft.splitlines()[line - 1]}" in request.content
    assert "Known remedy: " in request.content
    assert [e["stage"] for e in events if e["kind"] == "repairing"] == ["static"]
    # the static check ran no script for the draft: the one workspace run is the repaired script's
    assert "METRIC: 0.9" in (svc.run_dir / node.workspace / "output.log").read_text()


def test_early_crash_is_repaired_and_rerun(tmp_path, toy_task):
    llm = scripted_model([ai(fenced(MISSING_FILE)), ai(fenced(GOOD_SCRIPT)), ai(VERDICT_OK)])
    svc = services(tmp_path, toy_task, llm, steps=1)
    run_steps(svc)
    (node,) = svc.store.all()
    assert not node.is_buggy and node.code == GOOD_SCRIPT
    (rep,) = node.extra["repairs"]
    assert rep["stage"] == "early_crash" and rep["line"] == 3 and rep["fixed"] is True
    assert "FileNotFoundError" in rep["error"]
    request = llm.seen[1][-1].content
    assert "Traceback (most recent call last)" in request and 'File "solution.py", line 3' in request
    assert '> 3 | valid = pd.read_csv("./input/valid.csv")' in request
    assert "Known remedy: './input/valid.csv' does not exist: read only the files the data facts list" in request


def test_a_run_without_its_outputs_is_repaired_in_the_step(tmp_path, toy_task):
    """A script that runs to the end but prints no METRIC line and writes no submission gets a
    repair call naming both, and the repaired script is rerun and valid."""
    assert "to_csv" not in NO_OUTPUTS and "METRIC" not in NO_OUTPUTS
    llm = scripted_model([ai(fenced(NO_OUTPUTS)), ai(fenced(GOOD_SCRIPT)), ai(VERDICT_OK)])
    svc = services(tmp_path, toy_task, llm, steps=1)
    events = run_steps(svc)
    (node,) = svc.store.all()
    assert not node.is_buggy and node.code == GOOD_SCRIPT and node.has_submission
    (rep,) = node.extra["repairs"]
    assert rep["stage"] == "outputs" and rep["fixed"] is True and rep["then"] == "valid, metric 0.9"
    assert rep["error"] == ("the script printed no 'METRIC: <float>' line, and "
                            "no submission/submission.csv was written")
    request = llm.seen[1][-1].content
    assert "ran to the end without an error" in request and "## What is missing" in request
    assert "Accuracy: 0.9" in request  # the end of its output
    assert "Known remedy: compute the metric on the held-out validation data" in request
    assert [e["stage"] for e in events if e["kind"] == "repairing"] == ["outputs"]
    assert [c.role for c in node.calls] == ["coder", "repairer", "reviewer"]


def test_a_timed_out_or_crashed_late_run_gets_no_outputs_repair():
    late = Execution(exit_code=1, seconds=60.0, output="Traceback (most recent call last):\nKeyError: 'x'",
                     failure="the script exited with code 1: KeyError: 'x'")
    timed_out = Execution(exit_code=None, timed_out=True, seconds=30.0, failure="killed at the time limit")
    for ex in (late, timed_out):
        assert repair_need(Candidate(code="print(1)\n"), ex) is None
    ok = Execution(exit_code=0, seconds=90.0, output="METRIC: 0.5", metric=0.5,
                   failure="submission has 3 rows, the sample submission has 4")
    need = repair_need(Candidate(code="print(1)\n"), ok)  # a long run too: adding lines is cheap
    assert need is not None and need.stage == "outputs" and need.line is None


@pytest.mark.parametrize("revert", [True, False])
def test_repairs_exhausted_node_is_buggy_with_every_attempt(tmp_path, toy_task, revert):
    still_static = "print(model)\n"
    llm = scripted_model([ai(fenced(UNDEFINED)), ai(fenced(MISSING_FILE)), ai(fenced(still_static))])
    svc = services(tmp_path, toy_task, llm, steps=1, repairs=2, llm_review=False, revert_repairs=revert)
    run_steps(svc)
    (node,) = svc.store.all()
    first, second = node.extra["repairs"]
    # the first repair got past the static check (then crashed early); the second did not
    assert (first["stage"], first["fixed"]) == ("static", True) and "FileNotFoundError" in first["then"]
    assert (second["stage"], second["fixed"]) == ("early_crash", False)
    assert "undefined name 'model'" in second["then"]
    assert "kept" not in first
    if revert:  # the second repair got less far than the crash before it: set aside
        assert node.is_buggy and node.code == MISSING_FILE and "FileNotFoundError" in node.bug_reason
        assert second["kept"] == "before"
    else:
        assert node.is_buggy and node.code == still_static and "kept" not in second
        assert node.bug_reason == "static check: line 1: undefined name 'model'"
    assert [c.role for c in node.calls] == ["coder", "repairer", "repairer"] and len(llm.seen) == 3
    # tree.html lists the attempts in the node's details
    html = written_report(svc)["tree_html"].read_text()
    assert "Repairs inside the step" in html and html.count("<td>early_crash</td>") == 1
    assert "<td>static</td>" in html and "FileNotFoundError" in html
    # each record names the known remedies its request carried (by table entry), and tree.html shows them
    assert first["remedies"] == ["undefined-name"] and second["remedies"] == ["missing-table"]
    assert "known remedies in the request: undefined-name" in html


def test_zero_repairs_means_no_repair_calls(tmp_path, toy_task):
    llm = scripted_model([ai(fenced(UNDEFINED)), ai(fenced(MISSING_FILE))])
    svc = services(tmp_path, toy_task, llm, steps=2, repairs=0, llm_review=False)
    run_steps(svc)
    n0, n1 = svc.store.all()
    assert n0.is_buggy and "undefined name 'X_val'" in n0.bug_reason
    assert n1.is_buggy and "FileNotFoundError" in n1.bug_reason
    assert "repairs" not in n0.extra and "repairs" not in n1.extra
    assert len(llm.seen) == 2 and all(c.role == "coder" for n in (n0, n1) for c in n.calls)


def test_repair_answer_without_a_script_keeps_the_original(tmp_path, toy_task):
    llm = scripted_model([ai(fenced(UNDEFINED)), ai("I cannot help with that.")])
    svc = services(tmp_path, toy_task, llm, steps=1, llm_review=False)
    run_steps(svc)
    (node,) = svc.store.all()
    assert node.is_buggy and node.code == UNDEFINED and "undefined name 'X_val'" in node.bug_reason
    (rep,) = node.extra["repairs"]
    assert rep["fixed"] is False and rep["then"].startswith("repair call gave no script")
    assert [c.role for c in node.calls] == ["coder", "repairer"] and len(llm.seen) == 2


def test_late_crash_is_left_to_the_debug_step(tmp_path, toy_task):
    late = "import time\ntime.sleep(0.6)\nraise RuntimeError('late')\n"
    llm = scripted_model([ai(fenced(late))])
    svc = services(tmp_path, toy_task, llm, steps=1, llm_review=False, repair_window_s=0.3)
    run_steps(svc)
    (node,) = svc.store.all()
    assert node.is_buggy and "RuntimeError: late" in node.bug_reason and "repairs" not in node.extra
    assert len(llm.seen) == 1


def test_a_run_the_system_refuses_is_a_sandbox_failure_on_the_node_and_the_run_goes_on(tmp_path, toy_task,
                                                                                      monkeypatch):
    import nodes.execute as execute_mod

    real, calls = execute_mod.run_script, []

    def refusing_once(*args, **kwargs):  # fork out of processes, as on a crowded machine
        calls.append(args[0])
        if len(calls) == 1:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real(*args, **kwargs)

    monkeypatch.setattr(execute_mod, "run_script", refusing_once)
    llm = scripted_model([ai(fenced(GOOD_SCRIPT)), ai(fenced(GOOD_SCRIPT))])
    svc = services(tmp_path, toy_task, llm, steps=2, llm_review=False)
    run_steps(svc)
    n0, n1 = svc.store.all()
    assert n0.is_buggy and n0.bug_reason.startswith("sandbox failure: the script could not be run "
                                                   "(BlockingIOError: [Errno 11] Resource temporarily")
    assert "repairs" not in n0.extra and [c.role for c in n0.calls] == ["coder"]  # not the script's fault
    assert not n1.is_buggy and n1.metric == 0.9 and len(calls) == 2


def test_import_check_is_cached_and_skips_guarded_imports():
    checker = ImportChecker(sys.executable)
    code = ("import os, nltk_not_here\nfrom sklearn.metrics import accuracy_score, cer\n"
            "try:\n    import xgboost_not_here\nexcept ImportError:\n    pass\n")
    problems, note = static_report(code, checker)
    assert note is None and problems == [
        "line 1: ModuleNotFoundError: No module named 'nltk_not_here' (not installed where scripts run)",
        "line 2: ImportError: cannot import name 'cer' from 'sklearn.metrics'"]
    assert checker.probes == 1
    assert static_report(code, checker) == (problems, None) and checker.probes == 1  # cached
    # a name already seen in the module's dir() needs no probe
    assert static_report("from sklearn.metrics import f1_score\n", checker) == ([], None)
    assert checker.probes == 1


def test_an_undefined_split_name_is_reported_with_the_line_that_makes_its_counterpart():
    code = ("import pandas as pd\nfrom sklearn.feature_extraction.text import TfidfVectorizer\n"
            "train = pd.read_csv('./input/train.csv')\n"
            "X_train, y_train = train[['text']], train['label']\n"
            "X_val, y_val = X_train.iloc[:10], y_train.iloc[:10]\n"
            "vec = TfidfVectorizer()\nX_train_tfidf = vec.fit_transform(X_train.text)\n"
            "X_val_tfidf = vec.transform(X_val.text)\n"
            "print(X_test_tfidf, X_test, test, Y_TEST, submission, X_tst)\n")
    problems, _ = static_report(code, None)
    assert problems == [
        # a derived test matrix: made like the validation one (transform, not fit_transform)
        "line 9: undefined name 'X_test_tfidf' (like 'X_val_tfidf', which line 8 makes: "
        "`X_val_tfidf = vec.transform(X_val.text)`)",
        # the raw test matrix: like the train one, not the split cut from it
        "line 9: undefined name 'X_test' (like 'X_train', which line 4 makes: "
        "`X_train, y_train = train[['text']], train['label']`)",
        "line 9: undefined name 'test' (like 'train', which line 3 makes: `train = pd.read_csv('./input/train.csv')`)",
        "line 9: undefined name 'Y_TEST'",  # no 'Y_VAL' or 'Y_TRAIN' in the script
        "line 9: undefined name 'submission'", "line 9: undefined name 'X_tst'"]
    # the known remedy still reads the name
    assert known_remedy(problems[0]).startswith("`X_test_tfidf` is used but never assigned")


def test_an_undefined_name_assigned_only_in_a_comment_is_reported_with_that_line():
    code = ("from sklearn.metrics import accuracy_score\n"
            "# Train a model (assuming a pre-trained model named 'model')\n"
            "# model = load_model('path_to_model.h5')  # Load the model\n"
            "#X_val, y_val = None, None\n"
            "# clf == 3\n"
            "print(accuracy_score([1], model.predict([[1]])), X_val, clf)\n")
    problems, _ = static_report(code, None)
    assert problems == [
        "line 6: undefined name 'model' (assigned only in a comment, line 3: "
        "`# model = load_model('path_to_model.h5')  # Load the model`: a commented-out line does not run)",
        "line 6: undefined name 'X_val' (assigned only in a comment, line 4: `#X_val, y_val = None, None`: "
        "a commented-out line does not run)",
        "line 6: undefined name 'clf'"]  # a comparison in a comment is not an assignment
    assert known_remedy(problems[0]).startswith("`model` is used but never assigned")


def test_a_name_used_before_the_line_that_assigns_it_is_reported_with_that_line():
    code = ("import pandas as pd\nfrom sklearn.model_selection import train_test_split\n"
            "train = pd.read_csv('./input/train.csv')\ntest = pd.read_csv('./input/test.csv')\n"
            "X, y, X_test = train[['w']], train['p'], test[['w']]\n"
            "X_train = X_train[X_train['w'] != 'shut']\n"
            "X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2)\n"
            "print(helper(X_val))\n"
            "def helper(x):\n    return x\n"
            "a, b, y_tr, y_va = train_test_split(X, y_tr)\n")
    problems, _ = static_report(code, None)
    # not the counterpart hint (X_test): the split assigns it, two lines below the use
    assert problems == [
        "line 6: undefined name 'X_train' (assigned only later, line 7: "
        "`X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2)`: use it after that line)",
        "line 8: undefined name 'helper' (assigned only later, line 9: `def helper(x):`: use it after that line)",
        # used on the right of the split that assigns it: not "like 'y_va'"
        "line 11: undefined name 'y_tr' (the line that uses it is the one that assigns it: it must exist "
        "before that line)"]


def test_a_name_the_module_lacks_is_reported_with_its_close_names():
    from nodes.static_check import close_names

    checker = ImportChecker(sys.executable)
    code = "from sklearn.metrics import f1_macro, accuracy\nfrom collections import OrderDict, zzzzqqq\n"
    problems, _ = static_report(code, checker)
    assert len(problems) == 4
    # the closest name first (others may follow, as the installed version has them)
    for problem, (line, name, mod, closest) in zip(problems, [
            (1, "f1_macro", "sklearn.metrics", "f1_score"), (1, "accuracy", "sklearn.metrics", "accuracy_score"),
            (2, "OrderDict", "collections", "OrderedDict")], strict=False):
        assert problem.startswith(f"line {line}: ImportError: cannot import name '{name}' from '{mod}' "
                                  f"(names it has that are close: '{closest}'")
    assert problems[3] == "line 2: ImportError: cannot import name 'zzzzqqq' from 'collections'"
    # short names match too much by chance; private names are never offered
    assert close_names("cer", frozenset({"cluster", "cer_score"})) == []
    assert close_names("f1_macro", frozenset({"_f1_macro", "f1_score"})) == ["f1_score"]
    # a shared ending says nothing: XGBoost's class is not a misspelt scikit-learn ensemble
    ensemble = frozenset({"BaggingClassifier", "AdaBoostClassifier", "VotingClassifier", "ExtraTreeClassifier"})
    assert close_names("XGBClassifier", ensemble) == []
    assert close_names("OrderDict", frozenset({"OrderedDict", "UserDict"})) == ["OrderedDict"]
    assert close_names("accuracy", frozenset({"accuracy_score"})) == ["accuracy_score"]


def test_import_probe_failure_is_a_note_not_a_verdict(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho not json\n")
    fake.chmod(0o755)
    problems, note = static_report("import nltk_not_here\n", ImportChecker(str(fake)))
    assert problems == [] and note is not None and "import check skipped" in note
    ex = check_script("import nltk_not_here\n", None, str(fake))
    assert ex is not None and not ex.skipped and "import check skipped" in ex.notes[0]


def test_static_import_failure_never_runs_the_script(tmp_path, toy_task):
    comp = load_competition(toy_task)
    ex = execute_script(MISSING_MODULE, tmp_path / "ws", public_dir=comp.public_dir,
                        sample_submission=comp.sample_submission, timeout_s=30, backend="plain")
    assert ex.skipped and ex.static_problems and not (tmp_path / "ws").exists()
    need = repair_need_for(MISSING_MODULE, ex)
    assert need.stage == "static" and need.line == 1


def repair_need_for(code: str, ex: Execution):
    from nodes.operators import Candidate

    return repair_need(Candidate(code=code), ex)


def test_excerpt_numbers_and_marks_the_line():
    code = "\n".join(f"x{i} = {i}" for i in range(1, 21)) + "\n"
    text = excerpt(code, 12, radius=2)
    assert text.splitlines() == ["  10 | x10 = 10", "  11 | x11 = 11", "> 12 | x12 = 12",
                                 "  13 | x13 = 13", "  14 | x14 = 14"]
    assert excerpt(code, None) == "" and excerpt(code, 99) == ""
    # the other problem lines marked too, each window half as wide, a gap shown as ...
    text = excerpt(code, 3, radius=2, also=(4, 9, 99))
    assert text.splitlines() == ["   2 | x2 = 2", ">  3 | x3 = 3", ">  4 | x4 = 4", "   5 | x5 = 5", "    ...",
                                 "   8 | x8 = 8", ">  9 | x9 = 9", "  10 | x10 = 10"]


def test_a_static_failure_with_several_problems_asks_for_all_of_them():
    from nodes.execute import repair_prompt

    code = UNDEFINED.replace("(test.x1 > 3)", "(test.x1 > limit)")
    need = repair_need(Candidate(code=code), check_script(code, None))
    assert need.stage == "static" and (need.line, need.also) == (4, (6,))
    prompt = repair_prompt(code, need)
    assert "Fix all 2 problems listed" in prompt and "from its first line to its last" in prompt
    assert "## Lines around lines 4, 6 (numbered; `>` marks them)" in prompt
    assert "> 4 | pred = (test.x1 > limit)" in prompt and "> 6 | print('METRIC:', X_val)" in prompt
    # at most MARKED_LINES lines are marked, the first problem's among them
    many = "\n".join(f"print(u{i})" for i in range(1, 9)) + "\n"
    need = repair_need(Candidate(code=many), check_script(many, None))
    assert (need.line, need.also) == (1, (2, 3, 4))
    # one problem: as before
    single = repair_prompt(UNDEFINED, repair_need(Candidate(code=UNDEFINED), check_script(UNDEFINED, None)))
    assert "Fix this error (and any like it)" in single and "## Lines around line 6 (numbered; `>` marks it)" in single


def test_a_static_failure_with_problems_of_several_kinds_gets_each_kinds_remedy():
    from nodes.execute import repair_prompt
    from nodes.import_hints import known_remedies

    code = ("import pandas as pd\ntrain = pd.read_csv('./input/train.csv')\n"
            "model = train.x1.mean()\nprint('METRIC:', ((X_val - y_test) ** 2).mean())\n"
            "pd.DataFrame({'id': test.id, 'y': model}).to_csv('./submission/submission.csv')\n"
            "print(X_other)\n")
    need = repair_need(Candidate(code=code), check_script(code, None))
    assert need.stage == "static" and need.error.splitlines() == [
        "line 4: undefined name 'X_val'", "line 4: undefined name 'y_test'", "line 5: undefined name 'test' "
        "(like 'train', which line 2 makes: `train = pd.read_csv('./input/train.csv')`)", "line 6: undefined name 'X_other'"]
    remedies = known_remedies(need.error)
    # one for each kind, in the problems' order; the second undefined variable adds none
    assert [r.split(" ", 1)[0] for r in remedies] == ["`X_val`", "`y_test`", "`test`"]
    assert remedies[1].startswith("`y_test` is never assigned. If it stands for the test rows' labels")
    assert remedies[2].startswith("`test` (a table) is used but never read")
    assert known_remedies(need.error, limit=2) == remedies[:2]
    prompt = repair_prompt(code, need)
    assert "Known remedies, one for each kind of problem listed:\n" in prompt
    assert all(f"- {r}\n" in prompt for r in remedies) and "Known remedy:" not in prompt
    assert "Known remedies" not in repair_prompt(code, need, known=False)
    # the debug step of a node that failed so gets them too (from its failure line)
    node = Node(id="00000-0", step=0, stage="draft", code=code, output="", is_buggy=True,
                bug_reason=check_script(code, None).failure)
    assert node.bug_reason.startswith("static check: line 4: undefined name 'X_val'; ")
    text = debug_prompt(node, [])
    assert "Known remedies, one for each kind of problem listed:\n" in text and all(r in text for r in remedies)
    assert "Known remedies" not in debug_prompt(node, [], known_errors=False)
    # problems of one kind: the one remedy, as before
    one = code.replace("y_test", "X_val").replace("test.id", "train.id")
    need = repair_need(Candidate(code=one), check_script(one, None))
    prompt = repair_prompt(one, need)
    assert prompt.count("Known remedy: `X_val` is used but never assigned") == 1 and "Known remedies" not in prompt


def test_repair_flags(tmp_path, toy_task, capsys):
    args = build_parser().parse_args(["--task", str(toy_task), "--run-dir", str(tmp_path),
                                      "--repairs", "0", "--repair-window", "3", "--no-known-errors",
                                      "--no-auto-imports"])
    settings, _, _ = resolve_settings(args)
    assert (settings.repairs, settings.repair_window_s, settings.known_errors, settings.auto_imports) == (
        0, 3.0, False, False)
    settings, _, _ = resolve_settings(build_parser().parse_args(["--task", str(toy_task),
                                                                "--run-dir", str(tmp_path)]))
    assert (settings.repairs, settings.repair_window_s, settings.known_errors, settings.auto_imports) == (
        2, 10.0, True, True)
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--task", str(toy_task), "--repairs", "-1"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "--repairs" in err


# ------------------------------------------------------------------------- known errors

# (table entry expected, script that raises it) -- run for real, one file each
ERROR_SCRIPTS = {
    "string-value-to-numeric": """
        import pandas as pd
        from sklearn.linear_model import LogisticRegression
        X = pd.DataFrame({"color": ["red", "blue", "red", "green"]})
        LogisticRegression().fit(X, [0, 1, 0, 1])
    """,
    "arithmetic-on-text": """
        import pandas as pd
        y_val = pd.Series(["K AE T", "D AO G"])
        val_predictions = pd.Series(["K AH T", "D AA G"])
        print((y_val - val_predictions).abs().mean())
    """,
    "arithmetic-on-text/abs": """
        labels = ["spam", "ham"]
        print(sum(abs(label) for label in labels))
    """,
    "matrix-not-table": """
        from sklearn.feature_extraction.text import TfidfVectorizer
        X = TfidfVectorizer().fit_transform(["tide rocks", "stars sea", "quiet sea"])
        X_val = X.iloc[:1]
    """,
    "matrix-not-table/array": """
        import pandas as pd
        from sklearn.preprocessing import StandardScaler
        X = StandardScaler().fit_transform(pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 5.0]}))
        print(X.columns)
    """,
    "sparse-into-column": """
        import pandas as pd
        from sklearn.preprocessing import OneHotEncoder
        train = pd.DataFrame({"sex": ["f", "m", "f"], "age": [30.0, 41.0, 52.0]})
        train["sex"] = OneHotEncoder(handle_unknown="ignore").fit_transform(train[["sex"]])
    """,
    "text-not-strings": """
        import pandas as pd
        from sklearn.feature_extraction.text import TfidfVectorizer
        train = pd.DataFrame({"text": ["tide rocks", "quiet sea", "stars sea"]})
        TfidfVectorizer().fit_transform(train[["text"]].values)
    """,
    "text-not-strings/vectorized-twice": """
        from sklearn.feature_extraction.text import TfidfVectorizer
        X = TfidfVectorizer().fit_transform(["tide rocks", "quiet sea", "stars sea"])
        TfidfVectorizer(analyzer="char").fit_transform(X)
    """,
    "missing-text": """
        import pandas as pd
        train = pd.DataFrame({"text": ["Tide rocks", None, "Quiet sea"]})
        train["text"] = train["text"].apply(lambda s: s.lower())
    """,
    "memory-limit": """
        import numpy as np
        counts = np.zeros((10**6, 10**6))  # one row and one column per row of a big table
    """,
    "row-labels": """
        import pandas as pd
        X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0]}).iloc[2:]
        print(X.loc[[0, 1]])
    """,
    "row-labels/some": """
        import pandas as pd
        y = pd.Series([1.0, 2.0, 3.0], index=[10, 11, 12])
        print(y[[10, 0]])
    """,
    "row-labels/scalar": """
        import pandas as pd
        y = pd.Series([1.0, 2.0, 3.0], index=[10, 11, 12])
        print(y[0])
    """,
    "cast-text-to-number": """
        import pandas as pd
        train = pd.DataFrame({"diagnosis": ["malignant", "benign", "benign"], "x": [1.0, 2.0, 3.0]})
        train["diagnosis"] = train["diagnosis"].astype(float)
    """,
    "text-value-to-numeric": """
        import pandas as pd
        from sklearn.linear_model import LogisticRegression
        X = pd.DataFrame({"text": ["the tide came in over the rocks", "stars fall into the quiet sea"]})
        LogisticRegression().fit(X, [0, 1])
    """,
    "fitted-column-missing": """
        import pandas as pd
        from sklearn.compose import ColumnTransformer
        from sklearn.preprocessing import OneHotEncoder
        train = pd.DataFrame({"city": ["a", "b", "a"], "category": ["x", "y", "x"]})
        ct = ColumnTransformer([("oh", OneHotEncoder(), ["city", "category"])]).fit(train)
        ct.transform(train[["city"]])
    """,
    "needs-2d": """
        import pandas as pd
        from sklearn.preprocessing import OneHotEncoder
        OneHotEncoder(handle_unknown="ignore").fit_transform(pd.Series(["shut", "open", "shut"], name="word"))
    """,
    "needs-2d/array": """
        from sklearn.linear_model import LinearRegression
        LinearRegression().fit([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    """,
    "string-metric-module": """
        import Levenshtein
        print(Levenshtein.distance("kitten", "sitting"))
    """,
    "unpack-count": """
        from sklearn.model_selection import train_test_split
        X_train, X_val, y_val = train_test_split(list(range(10)), list(range(10)), test_size=0.2)
    """,
    "string-to-numeric": """
        import pandas as pd
        pd.Series(["15", "red"]).astype(int)
    """,
    "invalid-parameter": """
        from sklearn.preprocessing import OrdinalEncoder
        OrdinalEncoder(handle_unknown="ignore").fit([["a"], ["b"]])
    """,
    "string-to-numeric/cast": """
        import numpy as np
        np.add(np.array([1]), 1.5, out=np.array([1]), casting="safe")
    """,
    "unseen-categories": """
        from sklearn.preprocessing import OneHotEncoder
        OneHotEncoder().fit([["a"], ["b"]]).transform([["c"]])
    """,
    "unseen-categories/labels": """
        from sklearn.preprocessing import LabelEncoder
        LabelEncoder().fit(["a", "b"]).transform(["c"])
    """,
    "feature-count": """
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        LogisticRegression().fit(np.zeros((4, 2)), [0, 1, 0, 1]).predict(np.zeros((2, 3)))
    """,
    "sample-count": """
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        LogisticRegression().fit(np.zeros((4, 2)), [0, 1, 0])
    """,
    "target-2d": """
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        LogisticRegression().fit(np.zeros((4, 2)), np.zeros((4, 2)))
    """,
    "nan-input": """
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        LogisticRegression().fit([[np.nan], [1.0]], [0, 1])
    """,
    "missing-column": """
        import pandas as pd
        test = pd.DataFrame({"id": [1, 2], "x1": [3, 4]})
        X = test.drop(columns=["label"])
    """,
    "missing-named-column": """
        import pandas as pd
        pd.DataFrame({"id": [1]})["label"]
    """,
    "missing-column/index": """
        import pandas as pd
        pd.DataFrame({"id": [1]})[["id", "label"]]
    """,
    "own-check-of-test-column": """
        import pandas as pd
        test = pd.DataFrame({"id": [1, 2]})
        if 'label' not in test.columns:
            raise ValueError("The 'label' column is missing in the test dataset.")
    """,
    "missing-table": """
        import pandas as pd
        pd.read_csv("./input/valid.csv")
    """,
    "missing-table/raised": """
        import os
        if not os.path.isfile('./input/validation.csv'):
            raise FileNotFoundError("Validation file './input/validation.csv' does not exist.")
    """,
    "file-without-extension": """
        from PIL import Image
        Image.open("./input/train/90260")
    """,
    "missing-file": """
        open("./models/weights.bin").read()
    """,
    "module-not-installed": """
        import nltk_not_here
    """,
    "cannot-import-name": """
        from sklearn.metrics import cer
    """,
    "removed-applymap": """
        import pandas as pd
        pd.DataFrame({"a": [1]}).applymap(str)
    """,
    "empty-vocabulary/a-dataframe": """
        import pandas as pd
        from sklearn.feature_extraction.text import TfidfVectorizer
        train = pd.DataFrame({"text": ["good movie", "bad film", "great plot"]})
        TfidfVectorizer(min_df=2).fit_transform(train[["text"]])
    """,
    "empty-vocabulary/stop-words": """
        from sklearn.feature_extraction.text import CountVectorizer
        CountVectorizer(stop_words="english").fit_transform(["the and of", "it is"])
    """,
    "undefined-table": """
        print(test.shape)
    """,
    "too-few-per-class": """
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import cross_val_score
        cross_val_score(LogisticRegression(), np.arange(20).reshape(-1, 1), np.arange(20) % 7, cv=5)
    """,
    "too-few-per-class/stratify": """
        import numpy as np
        from sklearn.model_selection import train_test_split
        train_test_split(np.arange(20), np.arange(20), stratify=np.arange(20))
    """,
    "undefined-features": """
        import pandas as pd
        from sklearn.model_selection import train_test_split
        train = pd.DataFrame({"x1": [1, 2, 3, 4], "label": [0, 1, 0, 1]})
        X_tr, X_va, y_tr, y_va = train_test_split(X, y, test_size=0.5)
    """,
    "removed-append": """
        import pandas as pd
        pd.DataFrame({"a": [1]}).append({"a": 2}, ignore_index=True)
    """,
    "renamed-sparse": """
        from sklearn.preprocessing import OneHotEncoder
        OneHotEncoder(sparse=False).fit([["a"], ["b"]])
    """,
    "dataframe-mask": """
        import pandas as pd
        X = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [3.0, 1.0, 2.0]})
        corr = X.corr()
        print(corr.index[abs(corr) > 0.5])
    """,
    "no-features": """
        import pandas as pd
        from sklearn.linear_model import LinearRegression
        train = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "y": [1.0, 2.0, 3.0, 4.0]})
        test = pd.DataFrame({"a": [5.0, 6.0]})
        features = [c for c in test.columns if test[c].count() >= train[c].count()]
        LinearRegression().fit(train[features], train["y"])
    """,
    "no-features/array": """
        import numpy as np
        from sklearn.linear_model import LinearRegression
        LinearRegression().fit(np.empty((3, 0)), [1.0, 2.0, 3.0])
    """,
    "no-rows": """
        import pandas as pd
        from sklearn.linear_model import LinearRegression
        train = pd.DataFrame({"a": [1.0, None, 3.0], "b": [None, 2.0, None], "y": [1.0, 2.0, 3.0]}).dropna()
        LinearRegression().fit(train[["a", "b"]], train["y"])
    """,
    "unexpected-keyword": """
        from sklearn.metrics import mean_squared_error
        mean_squared_error([1.0, 2.0], [1.0, 2.5], squared=False)
    """,
    "no-attribute": """
        import numpy as np
        x = np.float(3)
    """,
    "outline-names": """
        import pandas as pd
        # ... hold out validation data, train, validate, predict X_test ...
        print(f"METRIC: {validation_score}")
    """,
    "test-labels": """
        pred = [0, 1]
        print(sum(p == t for p, t in zip(pred, y_test)) / len(pred))
    """,
    "undefined-name": """
        print(X_val.shape)
    """,
    "name-error": """
        def f():
            x += 1
        f()
    """,
    "no-metric": """
        print("training done, accuracy 0.8")
    """,
}

_DRIVER = r"""
import json, os, runpy, sys, traceback
out = {}
for name, path in json.load(sys.stdin).items():
    os.chdir(os.path.dirname(path))
    try:
        runpy.run_path(path, run_name="__main__")
        out[name] = [0, ""]
    except BaseException:
        out[name] = [1, traceback.format_exc()]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def real_errors(tmp_path_factory):
    """{case: (exit code, output)} of each error script, run for real (one interpreter, each
    script its own file and directory, so tracebacks name solution.py and its line)."""
    root = tmp_path_factory.mktemp("errors")
    paths = {}
    for i, (name, code) in enumerate(ERROR_SCRIPTS.items()):
        d = root / f"case{i}"
        d.mkdir()
        (d / "solution.py").write_text(textwrap.dedent(code).lstrip())
        paths[name] = str(d / "solution.py")
    proc = subprocess.run([sys.executable, "-c", _DRIVER], input=json.dumps(paths), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {k: tuple(v) for k, v in json.loads(proc.stdout.splitlines()[-1]).items()}


def _failed_node(exit_code: int, output: str) -> Node:
    facts = establish_facts(exit_code=exit_code, timed_out=False, killed_reason=None, output=output,
                            submission_problem=None, last_error=last_error_line(output), timeout_s=60)
    return Node(id="00000-0", step=0, stage="draft", code="print('x')\n", output=output, exit_code=exit_code,
                is_buggy=True, bug_reason=facts.failure)


@pytest.mark.parametrize("case", list(ERROR_SCRIPTS))
def test_known_error_matches_a_real_traceback_and_reaches_the_debug_prompt(real_errors, case):
    exit_code, output = real_errors[case]
    expected = case.split("/")[0]
    assert (exit_code == 0) == (expected == "no-metric"), output
    node = _failed_node(exit_code, output)
    entry = match_known_error(node.bug_reason, output)
    assert entry is not None and entry.name == expected, (node.bug_reason, entry)
    prompt = debug_prompt(node, [])
    remedy = known_remedy(node.bug_reason, output)
    assert f"Known remedy: {remedy}" in prompt
    if case == "string-value-to-numeric":  # the remedy quotes the value the error names
        assert remedy.startswith("the text 'red' reached a numeric estimator. If 'red' is a class of the target")
    if case == "text-value-to-numeric":  # free text, not a category to one-hot encode
        assert remedy.startswith("a text of several words ('the tide came in over the rocks') reached")
        assert "make the model a pipeline that vectorizes it first" in remedy
        assert match_known_error("could not convert string to float: 'P EH T'").name == "string-value-to-numeric"
    if case == "missing-named-column":
        assert remedy.startswith("there is no column 'label' in that table. If 'label' is the target")
    if case == "undefined-name":
        assert remedy.startswith("`X_val` is used but never assigned: add the line that creates it")
        # the examples are the usual lines for each kind of name, never the name assigned a model
        assert "X_test = test[features]" in remedy and "`X_val = " not in remedy
    if case == "undefined-table":  # a table the script never read: read it from ./input/
        assert remedy.startswith("`test` (a table) is used but never read")
        assert match_known_error("undefined name 'test_predictions'").name == "outline-names"
        assert match_known_error("undefined name 'test_features'").name == "undefined-name"
    if case == "undefined-features":  # the outline's lines that name them, not a generic "create it"
        assert remedy.startswith("`X` is used but never assigned. The usual first lines")
        assert "X, y = train[features], train['<target column>']" in remedy
        assert match_known_error("undefined name 'X_val'").name == "undefined-name"
        assert match_known_error("undefined name 'features'").name == "undefined-features"
    if case == "test-labels":  # not the generic "add the line that creates it": there is none
        assert remedy.startswith("`y_test` is never assigned. If it stands for the test rows' labels")
    if case == "outline-names":  # not the generic remedy, whose example would assign a model to it
        assert remedy.startswith("`validation_score` is a name the outline's last lines use")
    if case == "unexpected-keyword":
        assert remedy.startswith("the installed version of that function has no 'squared' argument")
    if case.startswith("missing-table"):  # the path the error names, and that no such file is listed
        assert remedy.startswith(f"'./input/{'valid' if case == 'missing-table' else 'validation'}.csv' does not "
                                 "exist: read only the files the data facts list")
    if case == "own-check-of-test-column":
        assert remedy.startswith("the script raises this itself, checking the test table for 'label'.")
    if case == "file-without-extension":
        assert remedy.startswith("there is no file './input/train/90260': the files in the folders")
    if case == "cast-text-to-number":  # the failure line alone would say the target is among the features
        assert remedy.startswith("the script itself casts a column of text ('malignant')")
    if case == "no-features":  # the column filter compared counts between tables of different sizes
        assert remedy.startswith("the feature table has no columns")
    if case == "renamed-sparse":  # before the generic entry, whose example is mean_squared_error
        assert remedy.startswith("OneHotEncoder's 'sparse' argument is now called 'sparse_output'")
    if case == "invalid-parameter":
        assert remedy.startswith("the 'handle_unknown' parameter got a value this version does not accept")
    if case == "text-not-strings/vectorized-twice":
        assert remedy.startswith("a text vectorizer got rows that are each a csr_matrix, not a string")
    if case == "memory-limit":  # the sandbox's own kill (a cgroup's OOM) reads the same
        killed = establish_facts(exit_code=-9, timed_out=False, killed_reason="memory limit (11.8 GiB)",
                                 output="", submission_problem=None, last_error=None, timeout_s=60)
        assert match_known_error(killed.failure).name == "memory-limit"
        assert remedy.startswith("the script needed more memory than scripts may use here")
    assert "Known remedy" not in debug_prompt(node, [], known_errors=False)


def test_every_table_entry_is_exercised_or_named():
    exercised = {case.split("/")[0] for case in ERROR_SCRIPTS}
    untested = {"submission-shape",  # not a crash: matched on the harness's own wording below
                # nltk may be installed here: matched on the static check's wording
                # (test_nltk_gets_its_replacements_not_an_edit_distance)
                "nltk-not-installed"}
    assert {e.name for e in known_errors()} == exercised | untested
    assert match_known_error("submission has 3 rows, the sample submission has 10").name == "submission-shape"
    assert match_known_error("everything is fine") is None


def test_run_with_repairs_for_callers_inside_one_node(tmp_path, toy_task):
    from nodes.execute import run_with_repairs
    from nodes.operators import Candidate

    comp = load_competition(toy_task)
    ran = []

    def run(cand, attempt):
        ran.append(attempt)
        return execute_script(cand.code, tmp_path / f"a{attempt}", public_dir=comp.public_dir,
                              sample_submission=comp.sample_submission, timeout_s=30, backend="plain")

    llm = scripted_model([ai(fenced(MISSING_FILE), 90, 30)])
    seen = []
    cand, ex, repairs = run_with_repairs(Candidate(code=UNDEFINED), run, llm, "SYSTEM", system_prompt=True,
                                         max_repairs=1, on_repair=lambda i, need: seen.append((i, need.stage)))
    assert ran == [0, 1] and seen == [(1, "static")]
    assert cand.code == MISSING_FILE and "FileNotFoundError" in ex.failure
    assert [c.role for c in cand.usage.calls] == ["repairer"] and cand.usage.prompt_tokens == 90
    assert repairs == [{"stage": "static", "error": ex_static_reason(UNDEFINED), "line": 6, "fixed": True,
                        "tokens": 120, "seconds": repairs[0]["seconds"], "remedies": ["undefined-name"],
                        "then": ex.failure}]


def ex_static_reason(code: str) -> str:
    ex = check_script(code, None)
    assert ex is not None
    return ex.failure


def test_progress_shows_a_repair_line():
    import io

    from views.progress import RunProgress

    out = io.StringIO()
    with RunProgress(total=2, done=0, stream=out) as progress:
        progress.handle({"kind": "repairing", "step": 0, "attempt": 1, "total": 2, "stage": "static",
                         "error": "static check: line 6: undefined name 'X_val'"})
    assert "repair 1/2 (static): static check: line 6: undefined name 'X_val'" in out.getvalue()


def test_an_undefined_library_name_gets_its_import_line_in_repair_and_debug_prompts():
    from nodes.execute import RepairNeed, repair_prompt
    from nodes.import_hints import import_for, missing_imports

    code = ("import pandas as pd\ntrain = pd.read_csv('input/train.csv')\n"
            "X_tr, X_va, y_tr, y_va = train_test_split(train[['x1']], train.label)\n"
            "model = LogisticRegression().fit(X_tr, y_tr)\nprint(np.mean(model.predict(X_va) == y_va))\n")
    problems, _ = static_report(code, None)
    assert problems == ["line 3: undefined name 'train_test_split'", "line 4: undefined name 'LogisticRegression'",
                        "line 5: undefined name 'np'"]
    need = RepairNeed("static", "\n".join(problems), "static check", 3)
    text = repair_prompt(code, need)
    assert ("Missing imports (add them at the top of the script):\n```python\n"
            "from sklearn.model_selection import train_test_split\n"
            "from sklearn.linear_model import LogisticRegression\nimport numpy as np\n```") in text
    assert "Missing imports" not in repair_prompt(code, need, known=False)
    # names that are the script's own variables get no import line
    assert missing_imports("undefined name 'X_val'; undefined name 'model'; undefined name 'y_pred'") == []
    assert import_for("check_array") == "from sklearn.utils import check_array"  # not a re-export
    node = _failed_node(1, "Traceback (most recent call last):\nNameError: name 'accuracy_score' is not defined")
    assert "from sklearn.metrics import accuracy_score" in debug_prompt(node, [])


def test_nltk_gets_its_replacements_not_an_edit_distance():
    """A script that imports nltk for stop words or lemmas is told what scikit-learn offers for
    them; the static check's own message is what the repair prompt sees."""
    problem = "line 2: ModuleNotFoundError: No module named 'nltk' (not installed where scripts run)"
    entry = match_known_error(problem)
    assert entry is not None and entry.name == "nltk-not-installed"
    assert "TfidfVectorizer(stop_words='english')" in known_remedy(problem)
    other = match_known_error("ModuleNotFoundError: No module named 'Levenshtein'")
    assert other is not None and other.name == "string-metric-module"
