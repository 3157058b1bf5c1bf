"""The tree-search graph with a scripted model, on a real sandbox and both checkpointers."""

import sqlite3

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver

from graphs.search import build_search_graph
from graphs.settings import RunServices, RunSettings, SearchContext
from nodes.tree import NodeStore
from tasks.competition import load_competition
from tests.conftest import GOOD_SCRIPT, ai, fenced, scripted_model
from views.export import export_run

CRASH = "import pandas as pd\nraise RuntimeError('bad column')\n"
VERDICT_OK = '{"is_bug": false, "summary": "works"}'
VERDICT_BAD = '{"is_bug": true, "summary": "crashed"}'


@pytest.fixture(params=["memory", "sqlite"])
def checkpointer(request, tmp_path):
    if request.param == "memory":
        yield InMemorySaver()
    else:
        conn = sqlite3.connect(str(tmp_path / "cp.sqlite"), check_same_thread=False)
        yield SqliteSaver(conn)
        conn.close()


def make_services(tmp_path, task, llm, **overrides):
    overrides.setdefault("repairs", 0)  # repairs inside a step: tests/unit/test_repair.py
    comp = load_competition(task)
    settings = RunSettings(run_id="t", task_dir=str(task), exec_timeout=30, sandbox="plain",
                           lower_is_better=False, **overrides)
    store = NodeStore(tmp_path / "nodes.sqlite")
    return RunServices(settings=settings, run_dir=tmp_path / "run", competition=comp, llm=llm,
                       system_text="SYSTEM", use_system_prompt=True, store=store,
                       tree=store.load_tree(False), lower_is_better=False)


def run_graph(services, checkpointer):
    graph = build_search_graph().compile(checkpointer=checkpointer)
    config = {"configurable": {"thread_id": "t"}, "recursion_limit": 200}
    events = list(graph.stream({"step": 0}, config, context=SearchContext(services=services),
                               stream_mode="custom"))
    return graph, config, events


def test_draft_crash_debug_then_improve(tmp_path, toy_task, checkpointer):
    llm = scripted_model([
        ai(fenced(CRASH), 200, 40),                                            # step 0: draft, crashes (no review)
        ai(fenced(GOOD_SCRIPT), 210, 60), ai(VERDICT_OK, 160, 12),             # step 1: debug fixes it
        ai(fenced(GOOD_SCRIPT.replace("0.9", "0.95")), 220, 70), ai(VERDICT_OK),  # step 2: improve
    ])
    svc = make_services(tmp_path, toy_task, llm, steps=3, num_drafts=1, debug_prob=1.0)
    graph, config, events = run_graph(svc, checkpointer)
    nodes = svc.store.all()
    assert [(n.stage, n.parent_id) for n in nodes] == [
        ("draft", None), ("debug", "00000-0"), ("improve", "00001-0")]
    assert nodes[0].is_buggy and "RuntimeError: bad column" in nodes[0].bug_reason
    # the facts already called the draft failed: no LLM review, its failure is the review
    assert nodes[0].review == nodes[0].bug_reason and nodes[0].review_says_bug is None
    assert nodes[1].debug_depth == 1 and not nodes[1].is_buggy and nodes[1].metric == 0.9
    assert nodes[2].metric == 0.95 and nodes[2].has_submission
    assert (nodes[0].prompt_tokens, nodes[0].completion_tokens, nodes[0].llm_calls) == (200, 40, 1)
    # tokens of the generate and the review call both land on a node that ran cleanly
    assert (nodes[1].prompt_tokens, nodes[1].completion_tokens, nodes[1].llm_calls) == (370, 72, 2)
    # the debug prompt showed the crash; the improve prompt showed the parent's code and its review
    debug_prompt = llm.seen[1][-1].content
    assert "RuntimeError: bad column" in debug_prompt and "raise RuntimeError" in debug_prompt
    assert "0.9" in llm.seen[3][-1].content and "works" in llm.seen[3][-1].content
    # the run's stable prefix is the system message of every call
    assert all(msgs[0].content == "SYSTEM" for msgs in llm.seen)
    # state holds the step in flight, not the tree
    state = graph.get_state(config).values
    assert state["step"] == 3 and state["best_id"] == "00002-0" and state["candidate"] is None
    assert [e["kind"] for e in events if e["kind"] == "recorded"] == ["recorded"] * 3
    # exports
    summary = export_run(svc.run_dir, nodes, svc.tree, run_id="t", wall_seconds=1.0,
                         settings=svc.settings.model_dump())
    assert summary["best_metric"] == 0.95 and summary["valid_submission"] is True
    assert summary["nodes_by_stage"] == {"draft": 1, "debug": 1, "improve": 1}
    assert (svc.run_dir / "best_solution.py").read_text() == nodes[2].code
    assert (svc.run_dir / "submission.csv").read_text().startswith("id,label")


def test_failed_runs_are_reviewed_when_asked(tmp_path, toy_task, checkpointer):
    llm = scripted_model([ai(fenced(CRASH), 200, 40), ai(VERDICT_BAD, 150, 10)])
    svc = make_services(tmp_path, toy_task, llm, steps=1, num_drafts=1, skip_failed_review=False)
    run_graph(svc, checkpointer)
    (node,) = svc.store.all()
    assert node.is_buggy and node.review == "crashed" and node.review_says_bug is True
    assert (node.prompt_tokens, node.completion_tokens, node.llm_calls) == (350, 50, 2)


def test_static_check_skips_execution_and_llm_review(tmp_path, toy_task, checkpointer):
    llm = scripted_model([ai(fenced("print(undefined_name)\n")), ai("no code at all, sorry")])
    svc = make_services(tmp_path, toy_task, llm, steps=2, num_drafts=2)
    run_graph(svc, checkpointer)
    n0, n1 = svc.store.all()
    assert n0.is_buggy and "undefined name 'undefined_name'" in n0.bug_reason
    assert n0.exec_seconds == 0 and not (svc.run_dir / "workspaces" / n0.id).exists()
    assert n1.bug_reason == "no Python code block in the answer"
    assert len(llm.seen) == 2  # no review calls were spent on scripts that never ran


def test_llm_error_is_recorded_and_run_goes_on(tmp_path, toy_task, checkpointer):
    base = type(scripted_model([]))

    class FlakyOnce(base):
        calls: int = 0

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            self.calls += 1
            if self.calls == 1:
                raise TimeoutError("read timed out")
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    llm = FlakyOnce(messages=iter([ai(fenced(GOOD_SCRIPT)), ai(VERDICT_OK)]))
    svc = make_services(tmp_path, toy_task, llm, steps=2, num_drafts=2)
    run_graph(svc, checkpointer)
    n0, n1 = svc.store.all()
    assert n0.is_buggy and "read timed out" in n0.llm_error and "LLM call failed" in n0.bug_reason
    assert not n1.is_buggy and n1.metric == 0.9


def test_submission_with_wrong_rows_is_buggy(tmp_path, toy_task, checkpointer):
    short = GOOD_SCRIPT.replace("pd.DataFrame({", "pd.DataFrame({").replace(
        'to_csv("submission/submission.csv"', 'head(3).to_csv("submission/submission.csv"')
    llm = scripted_model([ai(fenced(short)), ai(VERDICT_OK)])
    svc = make_services(tmp_path, toy_task, llm, steps=1)
    run_graph(svc, checkpointer)
    (n0,) = svc.store.all()
    assert n0.is_buggy and "3 rows" in n0.bug_reason and n0.metric == 0.9
    assert not (svc.run_dir / "submissions" / f"{n0.id}.csv").exists()


def test_hidden_grading_is_recorded_but_never_shown(tmp_path, toy_task, checkpointer):
    from grading.hidden import HiddenGrade

    seen_paths = []

    def grader(path):
        seen_paths.append(path)
        if len(seen_paths) == 2:
            raise RuntimeError("answers unreadable")
        return HiddenGrade(score=0.123456, valid=True)

    improved = GOOD_SCRIPT.replace("0.9", "0.95")
    llm = scripted_model([ai(fenced(GOOD_SCRIPT)), ai(VERDICT_OK), ai(fenced(improved)), ai(VERDICT_OK),
                          ai(fenced(CRASH)), ai(VERDICT_BAD)])
    svc = make_services(tmp_path, toy_task, llm, steps=3, num_drafts=1, debug_prob=0.0)
    svc.hidden_grader = grader
    run_graph(svc, checkpointer)
    n0, n1, n2 = svc.store.all()
    assert (n0.test_score, n0.test_valid) == (0.123456, True)
    assert n1.test_score is None and n1.test_valid is False and "answers unreadable" in n1.test_reason
    assert n2.test_score is None and n2.test_valid is None  # crashed: nothing to grade
    assert [p.name for p in seen_paths] == ["00000-0.csv", "00001-0.csv"]
    prompts = "\n".join(m.content for msgs in llm.seen for m in msgs)
    assert "0.123456" not in prompts and "answers unreadable" not in prompts
    summary = export_run(svc.run_dir, svc.store.all(), svc.tree, run_id="t", wall_seconds=1.0,
                         settings=svc.settings.model_dump())
    assert summary["best_node_id"] == "00001-0" and summary["best_node_test_valid"] is False
    assert summary["graded_nodes"] == 1


def test_private_answers_unreachable_from_scripts(tmp_path, toy_task):
    from sandbox import bwrap_available

    if not bwrap_available():
        pytest.skip("bubblewrap not installed")
    answers = load_competition(toy_task).answers
    peek = (f"import os\nprint('LEAKED' if os.path.exists({str(answers)!r}) else 'hidden')\n"
            "print('METRIC: 0.5')\n")
    llm = scripted_model([ai(fenced(peek)), ai(VERDICT_OK)])
    svc = make_services(tmp_path, toy_task, llm, steps=1)
    svc.settings = svc.settings.model_copy(update={"sandbox": "bwrap"})
    run_graph(svc, InMemorySaver())
    (n0,) = svc.store.all()
    assert "hidden" in n0.output and "LEAKED" not in n0.output
