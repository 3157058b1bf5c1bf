"""The node store's contract (claims, upserts, meta, branches) on both backends: SQLite in the
run directory and Postgres (a throwaway cluster, tests/pg.py); and the policy index."""

import pytest

from graphs.persistence import PostgresNodeStore
from nodes.tree import Node, NodeStore, node_id_for


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request, tmp_path):
    """Opens the test's store (again: the same rows) on the parametrized backend."""
    if request.param == "sqlite":
        return lambda: NodeStore(tmp_path / "nodes.sqlite")
    url = request.getfixturevalue("postgres_url")
    return lambda: PostgresNodeStore(url, run_id=tmp_path.name)  # a run of its own per test


def test_store_upsert_is_idempotent_and_index_replaces(open_store):
    store = open_store()
    n0 = Node(id=node_id_for(0), step=0, stage="draft", code="a", is_buggy=True, bug_reason="boom")
    store.put(n0)
    store.put(n0.model_copy(update={"code": "b"}))
    assert store.count() == 1
    assert store.get(n0.id).code == "b"
    child = Node(id=node_id_for(1), step=1, stage="debug", parent_id=n0.id, debug_depth=1,
                 metric=0.5, is_buggy=False, review="fine")
    store.put(child)
    tree = store.load_tree(lower_is_better=False)
    tree.add(child)  # replaying a step must not duplicate the child link
    assert tree.children[n0.id] == {child.id}
    assert tree.buggy_leaves() == []
    assert tree.best().id == child.id
    assert [n.id for n in tree.ancestors(child.id)] == [child.id, n0.id]
    assert tree.get(n0.id).note == "boom"
    store.close()


def test_store_survives_reopen_and_keeps_meta(open_store):
    store = open_store()
    store.set_meta("system_text", "abc")
    store.put(Node(id="00000-0", step=0, stage="draft"))
    store.close()
    again = open_store()
    assert again.get_meta("system_text") == "abc"
    assert [n.id for n in again.all()] == ["00000-0"]
    assert again.get_meta("missing", 5) == 5


def test_recent_is_bounded_and_ordered():
    from nodes.tree import Tree

    t = Tree(lower_is_better=True)
    for s in range(10):
        t.add(Node(id=node_id_for(s), step=s, stage="draft", metric=float(s), is_buggy=False))
    assert [n.step for n in t.recent(3)] == [7, 8, 9]
    assert t.best().step == 0


def test_claims_give_a_task_its_name_back_and_every_other_task_a_fresh_one(open_store):
    store = open_store()
    assert store.claim("node", "00003", "task-a") == "00003-0"
    assert store.claim("node", "00003", "task-a") == "00003-0"  # a crash replay of the same task
    assert store.claim("node", "00003", "task-b") == "00003-1"  # a fork's task
    assert store.claim("node", "00004", "task-a") == "00004-0"  # its own step, its own names
    assert store.claim("workspace", "00003", "task-b") == "00003-0"  # kinds are apart
    store.close()
    again = open_store()  # claims survive the process
    assert again.claim("node", "00003", "task-b") == "00003-1"
    assert again.claim("node", "00003", "task-c") == "00003-2"
    again.close()


def test_branch_follows_prev_links_and_ignores_the_other_branch(open_store):
    store = open_store()
    store.put(Node(id="00000-0", step=0, stage="draft"))
    store.put(Node(id="00001-0", step=1, stage="draft", prev_id="00000-0"))
    store.put(Node(id="00002-0", step=2, stage="draft", prev_id="00001-0"))
    store.put(Node(id="00001-1", step=1, stage="debug", parent_id="00000-0", prev_id="00000-0"))
    store.put(Node(id="00002-1", step=2, stage="draft", prev_id="00001-1"))
    assert [n.id for n in store.branch("00002-0")] == ["00000-0", "00001-0", "00002-0"]
    assert [n.id for n in store.branch("00002-1")] == ["00000-0", "00001-1", "00002-1"]
    assert store.branch(None) == []
    # a run written before branches were state: its nodes below the checkpoint's step
    assert [n.id for n in store.branch(None, legacy_steps=2)] == ["00000-0", "00001-0", "00001-1"]
    tree = store.load_tree(False, store.branch("00002-1"))
    assert sorted(tree.nodes) == ["00000-0", "00001-1", "00002-1"]
    store.close()
