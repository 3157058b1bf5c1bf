"""The graphs driven the way Studio and notebooks drive them: a plain-valued runtime context
(a dict LangGraph coerces into the context schema), no live services attached."""

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graphs.search import build_search_graph
from graphs.self_consistency import build_self_consistency_graph
from nodes.tree import NodeStore
from tests.doubles.stub import StubServer


@pytest.fixture
def stub():
    with StubServer() as server:
        yield server


def test_tree_search_from_a_plain_context(tmp_path, toy_task, stub):
    graph = build_search_graph().compile(checkpointer=InMemorySaver())
    context = {"task_dir": str(toy_task), "base_url": stub.base_url, "strategy": "self_reflection",
               "steps": 2, "run_dir": str(tmp_path / "runs"), "sandbox": "plain", "exec_timeout": 30,
               "rounds": 2}
    final = graph.invoke({"step": 0}, {"configurable": {"thread_id": "thread-1"}}, context=context)
    assert final["step"] == 2
    store = NodeStore(tmp_path / "runs" / "thread-1" / "nodes.sqlite")
    nodes = store.all()
    assert [n.id for n in nodes] == ["00000-0", "00001-0"]
    assert all(n.extra["strategy"]["strategy"] == "self_reflection" for n in nodes)
    assert (tmp_path / "runs" / "thread-1" / "workspaces" / "00000-0" / "r0").is_dir()


def test_strategy_graph_alone_on_a_task(tmp_path, toy_task, stub):
    graph = build_self_consistency_graph().compile(checkpointer=InMemorySaver())
    context = {"task_dir": str(toy_task), "base_url": stub.base_url, "samples": 3,
               "run_dir": str(tmp_path / "studio"), "sandbox": "plain", "exec_timeout": 30}
    out = graph.invoke({}, {"configurable": {"thread_id": "alone"}}, context=context)
    result = out["result"]
    assert result["candidate"]["code"] and result["details"]["strategy"] == "self_consistency"
    assert len(result["details"]["attempts"]) == 3
    # the run is kept as the tree search keeps one: under run_dir/<thread>/, its samples'
    # workspaces under the expansion's label (alone: the thread), a repair's rerun of sample i
    # beside the first as si-N
    run = tmp_path / "studio" / "alone"
    names = sorted(p.name for p in (run / "workspaces" / "alone").iterdir())
    assert sorted({n.split("-")[0] for n in names}) == ["s0", "s1", "s2"]
    assert all(n in ("s0", "s1", "s2") or n.split("-")[1].isdigit() for n in names)
    assert (run / "holdout" / "plan.json").is_file()  # the harness's split, as in a CLI run
    # a second run on the same thread starts a fresh fan-out instead of adding to the first
    again = graph.invoke({}, {"configurable": {"thread_id": "alone"}}, context=context)
    assert len(again["result"]["details"]["attempts"]) == 3


def test_plain_context_without_an_endpoint_is_a_clear_error(tmp_path, toy_task, monkeypatch):
    monkeypatch.delenv("ITS_MLE_BASE_URL", raising=False)
    graph = build_self_consistency_graph().compile()
    with pytest.raises(ValueError, match="base_url"):
        graph.invoke({}, context={"task_dir": str(toy_task)})


def test_an_unknown_context_key_is_a_clear_error(tmp_path, toy_task, stub):
    """A misspelt setting must not be dropped silently: the context is the run's settings."""
    graph = build_search_graph().compile(checkpointer=InMemorySaver())
    with pytest.raises(ValueError, match="stepz"):
        graph.invoke({"step": 0}, {"configurable": {"thread_id": "t"}},
                     context={"task_dir": str(toy_task), "base_url": stub.base_url, "stepz": 2})
