"""An improve answer that leaves its parent's program as it was (only comments, blank lines or
imports differ) is asked for once more (nodes.operators.improve_changed), recorded on the node;
the graph tests script exactly what the model says and assert what the code did with it."""

from __future__ import annotations

from langgraph.checkpoint.memory import InMemorySaver

from nodes.operators import AGAIN_ROLE, UNCHANGED_NOTE, improve_changed, same_program
from tests.conftest import GOOD_SCRIPT, ai, fenced, scripted_model
from tests.unit.test_search_graph import VERDICT_OK, make_services, run_graph

# what the 1.5B gave back for "improve" on spoken-digits: the parent with a comment reworded and
# an import repeated
REWORDED = ('"""Threshold."""\nimport pandas as pd\nimport pandas as pd  # again\n'
            + GOOD_SCRIPT.replace("import pandas as pd\n", "").replace("pred = ", "# the rule\npred = "))
IMPROVED = GOOD_SCRIPT.replace("0.9", "0.95")


def test_same_program_sets_aside_comments_blank_lines_imports_and_docstrings():
    assert same_program(GOOD_SCRIPT, REWORDED)
    assert not same_program(GOOD_SCRIPT, IMPROVED)
    assert not same_program(GOOD_SCRIPT, GOOD_SCRIPT.replace("> 3", ">= 3"))
    # a block that holds only an import keeps a body, and differs from one that holds code
    assert same_program("if x:\n    import os\n", "if x:\n    import sys\n")
    assert not same_program("if x:\n    import os\n", "if x:\n    y = 1\n")
    assert not same_program(GOOD_SCRIPT, "def broken(:\n")  # what does not parse is never the same


def test_an_unchanged_improve_is_asked_once_more():
    llm = scripted_model([ai(fenced(REWORDED), 300, 80), ai(fenced(IMPROVED), 320, 90)])
    cand, record = improve_changed(llm, "S", "IMPROVE THIS", GOOD_SCRIPT)
    assert cand.code == IMPROVED
    assert [c.role for c in cand.usage.calls] == ["coder", AGAIN_ROLE]
    assert cand.usage.prompt_tokens == 620 and cand.usage.completion_tokens == 170
    second = llm.seen[1][-1].content
    assert second.startswith("IMPROVE THIS") and UNCHANGED_NOTE in second
    assert record["stage"] == "unchanged" and record["fixed"] is True and record["tokens"] == 410
    # a real change on the first answer: one call, no record
    llm = scripted_model([ai(fenced(IMPROVED))])
    cand, record = improve_changed(llm, "S", "IMPROVE THIS", GOOD_SCRIPT)
    assert cand.code == IMPROVED and record is None and len(llm.seen) == 1


def test_when_the_second_answer_changes_nothing_either_the_first_stands():
    llm = scripted_model([ai(fenced(REWORDED)), ai(fenced(GOOD_SCRIPT))])
    cand, record = improve_changed(llm, "S", "IMPROVE THIS", GOOD_SCRIPT)
    assert cand.code == REWORDED and len(cand.usage.calls) == 2
    assert record["fixed"] is False and "changed nothing either" in record["then"]


def test_the_search_asks_again_and_records_it_on_the_node(tmp_path, toy_task):
    llm = scripted_model([ai(fenced(GOOD_SCRIPT)), ai(VERDICT_OK),  # step 0: draft
                          ai(fenced(REWORDED)), ai(fenced(IMPROVED)), ai(VERDICT_OK)])  # step 1: improve
    svc = make_services(tmp_path, toy_task, llm, steps=2, num_drafts=1, debug_prob=0.0, repairs=2)
    run_graph(svc, InMemorySaver())
    n0, n1 = svc.store.all()
    assert n1.stage == "improve" and n1.parent_id == n0.id
    assert n1.code == IMPROVED and n1.metric == 0.95
    assert [c.role for c in n1.calls] == ["coder", AGAIN_ROLE, "reviewer"]
    (rep,) = n1.extra["repairs"]
    assert (rep["stage"], rep["fixed"]) == ("unchanged", True)
    from views.report.derive import repair_text
    assert repair_text([n.model_dump() for n in (n0, n1)]) == (
        "1 improve answers changed nothing and were asked again (1 then changed the program)")


def test_with_improve_again_off_the_unchanged_answer_runs(tmp_path, toy_task):
    llm = scripted_model([ai(fenced(GOOD_SCRIPT)), ai(VERDICT_OK), ai(fenced(REWORDED)), ai(VERDICT_OK)])
    svc = make_services(tmp_path, toy_task, llm, steps=2, num_drafts=1, debug_prob=0.0, improve_again=False)
    run_graph(svc, InMemorySaver())
    _n0, n1 = svc.store.all()
    assert n1.code == REWORDED and [c.role for c in n1.calls] == ["coder", "reviewer"]
    assert not (n1.extra or {}).get("repairs")


def test_a_fragment_that_rebuilds_its_parent_is_asked_again_too(tmp_path, toy_task):
    # two lines of the parent, without the metric line or the submission: the harness puts them in
    # the parent's script, which is then the parent's program exactly
    fragment = 'test = pd.read_csv("input/test.csv")\npred = (test.x1 > 3).astype(int)\n'
    llm = scripted_model([ai(fenced(GOOD_SCRIPT)), ai(VERDICT_OK),  # step 0: draft
                          ai(fenced(fragment)), ai(fenced(IMPROVED)), ai(VERDICT_OK)])  # step 1: improve
    svc = make_services(tmp_path, toy_task, llm, steps=2, num_drafts=1, debug_prob=0.0, repairs=2)
    run_graph(svc, InMemorySaver())
    _n0, n1 = svc.store.all()
    assert n1.code == IMPROVED and [c.role for c in n1.calls] == ["coder", AGAIN_ROLE, "reviewer"]
    assert [r["stage"] for r in n1.extra["repairs"]] == ["unchanged"]
    # the answer as given is not the parent's program: only the script it runs as is
    assert not same_program(GOOD_SCRIPT, fragment)
