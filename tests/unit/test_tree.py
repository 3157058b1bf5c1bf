from nodes.tree import Node, NodeStore, node_id_for


def test_store_upsert_is_idempotent_and_index_replaces(tmp_path):
    store = NodeStore(tmp_path / "nodes.sqlite")
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


def test_store_survives_reopen_and_keeps_meta(tmp_path):
    store = NodeStore(tmp_path / "n.sqlite")
    store.set_meta("system_text", "abc")
    store.put(Node(id="00000-0", step=0, stage="draft"))
    store.close()
    again = NodeStore(tmp_path / "n.sqlite")
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


def test_discard_from_step_trims_uncommitted_nodes(tmp_path):
    store = NodeStore(tmp_path / "n.sqlite")
    for s in range(5):
        store.put(Node(id=node_id_for(s), step=s, stage="draft"))
    assert store.discard_from_step(3) == 2
    assert [n.step for n in store.all()] == [0, 1, 2]
    assert store.discard_from_step(3) == 0
