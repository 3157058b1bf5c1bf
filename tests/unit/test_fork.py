"""Time travel on the tree search with LangGraph's own API, as a notebook or Studio uses it:
forking from a past checkpoint with `update_state`, and replaying from one. Both branches keep
their nodes, workspaces and submissions; each sees only its own past."""

import hashlib
import json
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from graphs.search import build_search_graph
from nodes.tree import NodeStore
from tests.doubles.stub import StubServer

STEPS = 5
FORK_STEP = 2


@pytest.fixture
def stub():
    with StubServer() as server:
        yield server


def _files(root: Path) -> dict[str, str]:
    """sha256 of every file under the run's workspaces and submissions."""
    out = {}
    for sub in ("workspaces", "submissions"):
        for path in sorted((root / sub).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _prompts(bodies: list[dict]) -> str:
    return "\n".join(m.get("content") or "" for b in bodies for m in b.get("messages", []))


def _run_to_end(graph, config, context, graph_input=None):
    graph.invoke(graph_input, config, context=context)
    return graph.get_state(config)


@pytest.fixture
def searched(tmp_path, toy_task, stub):
    """A 5-step search on a plain context (the notebook's way), paused after every step."""
    graph = build_search_graph().compile(checkpointer=InMemorySaver(), interrupt_after=["record"])
    config = {"configurable": {"thread_id": "fork-test"}}
    context = {"task_dir": str(toy_task), "base_url": stub.base_url, "steps": STEPS, "seed": 0,
               "run_dir": str(tmp_path / "runs"), "sandbox": "plain", "exec_timeout": 30, "repairs": 0}
    graph.invoke({"step": 0}, config, context=context)
    while graph.get_state(config).next:
        graph.invoke(None, config, context=context)
    return graph, config, context, tmp_path / "runs" / "fork-test"


def _store(run_path: Path) -> NodeStore:
    return NodeStore(run_path / "nodes.sqlite")


def test_a_fork_is_a_branch_of_its_own(searched, stub, monkeypatch):
    graph, config, context, run_path = searched
    head = graph.get_state(config)
    store = _store(run_path)
    original = store.branch(head.values["head"])
    assert [n.id for n in original] == [f"{s:05d}-0" for s in range(STEPS)]
    rows = {n.id: n.model_dump_json() for n in original}
    files = _files(run_path)

    history = list(graph.get_state_history(config))
    fork_from = next(s for s in history if s.next == ("generate",) and s.values["step"] == FORK_STEP)
    assert fork_from.values["head"] == f"{FORK_STEP - 1:05d}-0"
    chosen = fork_from.values["action"]
    action = ({"stage": "draft", "parent_id": None} if chosen["stage"] != "draft"
              else {"stage": "debug", "parent_id": original[0].id})
    assert action != chosen
    seen: list[list[str]] = []  # the node ids of every tree the fork's policy is shown
    import graphs.search as search

    real_choose = search.choose_action
    monkeypatch.setattr(search, "choose_action",
                        lambda tree, *a, **k: seen.append(sorted(tree.nodes)) or real_choose(tree, *a, **k))
    before = stub.requests
    fork_config = graph.update_state(fork_from.config, {"action": action}, as_node="choose")
    graph.invoke(None, fork_config, context=context)
    while graph.get_state(config).next:
        graph.invoke(None, config, context=context)
    fork_head = graph.get_state(config)
    fork_prompts = _prompts(list(stub.bodies)[-(stub.requests - before):])

    fork = store.branch(fork_head.values["head"])
    assert [n.step for n in fork] == list(range(STEPS))
    assert [n.id for n in fork[:FORK_STEP]] == [n.id for n in original[:FORK_STEP]]  # the shared past
    assert [n.id for n in fork[FORK_STEP:]] == [f"{s:05d}-1" for s in range(FORK_STEP, STEPS)]
    assert fork[FORK_STEP].stage == action["stage"] and fork[FORK_STEP].parent_id == action["parent_id"]
    # the fork's policy saw its own branch only, step by step, and its prompts name none of the
    # original branch's later attempts (a scripted plan is a function of its prompt: a plan the
    # fork did not write itself is the original's alone)
    assert seen == [[n.id for n in fork[:k]] for k in range(FORK_STEP + 1, STEPS)]
    own = {n.plan for n in fork}
    assert not [n.plan for n in original[FORK_STEP:] if n.plan in fork_prompts and n.plan not in own]
    # the original branch: every row and every file as it was
    assert {n.id: n.model_dump_json() for n in store.branch(head.values["head"])} == rows
    after = _files(run_path)
    assert {k: after.get(k) for k in files} == files
    assert set(after) > set(files)  # the fork wrote files of its own, beside them
    for n in fork[FORK_STEP:]:
        assert n.workspace and not any(k.startswith(n.workspace + "/") for k in files)
        if n.has_submission:
            assert f"submissions/{n.id}.csv" in after and f"submissions/{n.id}.csv" not in files
    # the original head is still there and still names its branch
    assert graph.get_state(head.config).values == head.values
    store.close()


def test_replaying_from_a_checkpoint_reruns_only_what_follows_it(searched):
    graph, config, context, run_path = searched
    head = graph.get_state(config)
    store = _store(run_path)
    count = store.count()
    workspaces = {p.name for p in (run_path / "workspaces").iterdir()}
    history = list(graph.get_state_history(config))
    after_step = next(s for s in history if s.next == ("choose",) and s.values["step"] == 3)
    graph.invoke(None, after_step.config, context=context)  # replay: a new branch from step 3
    while graph.get_state(config).next:
        graph.invoke(None, config, context=context)
    replay = store.branch(graph.get_state(config).values["head"])
    assert [n.id for n in replay] == ["00000-0", "00001-0", "00002-0", "00003-1", "00004-1"]
    assert store.count() == count + 2  # steps 0-2 were not run again
    new = {p.name for p in (run_path / "workspaces").iterdir()} - workspaces
    assert new == {"00003-1", "00004-1"}
    assert store.branch(head.values["head"])[-1].id == "00004-0"
    store.close()


def test_a_resumed_cli_run_of_a_forked_thread_exports_its_branch(searched):
    """The run's tree.json is the branch the thread's head names, not every node in the store."""
    from views.export import export_run

    graph, config, context, run_path = searched
    history = list(graph.get_state_history(config))
    fork_from = next(s for s in history if s.next == ("choose",) and s.values["step"] == 4)
    graph.invoke(None, fork_from.config, context=context)
    while graph.get_state(config).next:
        graph.invoke(None, config, context=context)
    head = graph.get_state(config).values["head"]
    store = _store(run_path)
    nodes = store.branch(head)
    export_run(run_path, nodes, store.load_tree(False, nodes), run_id="fork-test", wall_seconds=1.0,
               settings={})
    tree = json.loads((run_path / "tree.json").read_text())
    assert [n["id"] for n in tree["nodes"]] == ["00000-0", "00001-0", "00002-0", "00003-0", "00004-1"]
    assert store.count() == STEPS + 1
    store.close()
