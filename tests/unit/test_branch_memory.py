"""Branch memory: the parent's lineage and the run's best nodes, bounded, built in O(depth);
the improve prompt shows the parent's code before the memory that changes every step."""

import os
from types import SimpleNamespace

import pytest

from graphs.search import stage_request
from graphs.settings import RunSettings
from nodes.operators import improve_prompt
from nodes.tree import MEMORY_CHARS, MEMORY_ENTRIES, Node, Tree, node_id_for


def node(step, stage, parent=None, metric=None, plan="", bug=None, review="", code=""):
    return Node(id=node_id_for(step), step=step, stage=stage, parent_id=node_id_for(parent) if parent is not None else None,
                metric=metric, is_buggy=metric is None, bug_reason=bug, plan=plan, review=review,
                code=code or f"print({step})\n")


def sample_tree() -> Tree:
    t = Tree(lower_is_better=False)
    t.add(node(0, "draft", metric=0.5, plan="Logistic regression on x1, x2."))
    t.add(node(1, "draft", metric=0.9, plan="Gradient boosting with one-hot city."))  # the run's best
    t.add(node(2, "improve", parent=0, metric=0.6, plan="Add a squared feature."))
    t.add(node(3, "improve", parent=2, plan="Switch to an SVM.", bug="ValueError: could not convert string to float"))
    t.add(node(4, "debug", parent=3, metric=0.55, plan="Encode strings before the SVM."))
    t.add(node(5, "improve", parent=1, metric=0.85, plan="Deeper trees."))  # second best, other branch
    t.add(node(6, "draft", plan="UNRELATED draft.", bug="NameError: name 'X_val' is not defined"))
    t.add(node(7, "improve", parent=6, plan="UNRELATED crash.", bug="KeyError: 'z'"))
    return t


def test_memory_lists_the_lineage_oldest_first_then_the_best_off_branch():
    mem = sample_tree().branch_memory(node_id_for(4))
    assert mem[:4] == [
        "step 0 draft: Logistic regression on x1, x2. -> metric 0.5",
        "step 2 improve of step 0: Add a squared feature. -> metric 0.6 (better than its parent's 0.5)",
        "step 3 improve of step 2: Switch to an SVM. -> failed: ValueError: could not convert string to float",
        "step 4 debug of step 3: Encode strings before the SVM. -> metric 0.55",
    ]
    assert mem[4:] == [
        "best of the run so far: step 1 draft: Gradient boosting with one-hot city. -> metric 0.9",
        "best of the run so far: step 5 improve of step 1: Deeper trees. -> metric 0.85 "
        "(worse than its parent's 0.9)",
    ]
    assert not any("UNRELATED" in line for line in mem)  # other branches only through "best"


def test_draft_memory_is_the_earlier_drafts_and_the_best():
    mem = sample_tree().branch_memory(None)
    drafts = [line for line in mem if not line.startswith("best")]
    assert drafts == [
        "step 0 draft: Logistic regression on x1, x2. -> metric 0.5",
        "step 1 draft: Gradient boosting with one-hot city. -> metric 0.9",
        "step 6 draft: UNRELATED draft. -> failed: NameError: name 'X_val' is not defined",
    ]
    # the best draft is already listed; the best off that list follow
    assert mem[3:] == [
        "best of the run so far: step 5 improve of step 1: Deeper trees. -> metric 0.85 (worse than its parent's 0.9)",
        "best of the run so far: step 2 improve of step 0: Add a squared feature. -> metric 0.6 "
        "(better than its parent's 0.5)",
        "best of the run so far: step 4 debug of step 3: the approach of step 3 (improve), made to run: "
        "Switch to an SVM. -> metric 0.55",
    ]
    # on its own lineage a debug node keeps its own plan (what the fix was)
    assert "step 4 debug of step 3: Encode strings before the SVM. -> metric 0.55" in sample_tree().branch_memory(
        node_id_for(4))


def test_a_chain_of_debugs_is_told_by_the_approach_it_fixed():
    t = sample_tree()
    t.add(node(8, "debug", parent=7, plan="Handle the KeyError.", bug="ValueError: bad"))
    t.add(node(9, "debug", parent=8, metric=0.95, plan="Check NotFittedError."))
    assert t.approach_of(t.nodes[node_id_for(9)]).step == 7
    assert t.approach_of(t.nodes[node_id_for(2)]).step == 2  # not a debug: itself
    best = [line for line in t.branch_memory(node_id_for(5)) if line.startswith("best")]
    assert best[0] == ("best of the run so far: step 9 debug of step 8: the approach of step 7 (improve), "
                       "made to run: UNRELATED crash. -> metric 0.95")
    assert not any("NotFittedError" in line for line in best)


def test_memory_is_bounded_in_entries_and_characters_keeping_the_nearest():
    t = Tree(lower_is_better=True)
    t.add(node(0, "draft", metric=100.0, plan="start " + "x" * 400))
    for s in range(1, 60):
        t.add(node(s, "improve", parent=s - 1, metric=100.0 - s, plan=f"change {s} " + "y" * 400))
    mem = t.branch_memory(node_id_for(59))
    assert len(mem) <= MEMORY_ENTRIES and sum(len(line) + 1 for line in mem) <= MEMORY_CHARS
    own = [line for line in mem if not line.startswith("best")]
    assert own[-1].startswith("step 59 improve of step 58: change 59")  # the node itself, last
    assert own[-2].startswith("step 58 improve")
    assert not any("step 0 " in line for line in mem)  # the farthest are dropped first
    assert all(len(line) < 400 for line in mem)  # plans are cut to one short line
    assert len(t.branch_memory(node_id_for(59), max_entries=3)) == 3
    assert t.branch_memory(node_id_for(59), max_entries=0) == []


class NoScan(dict):
    """A node index that refuses to be scanned: memory must walk parents only."""

    def values(self):
        raise AssertionError("scanned every node")

    def items(self):
        raise AssertionError("scanned every node")

    def __iter__(self):
        raise AssertionError("scanned every node")


def test_memory_walks_parents_and_never_scans_the_tree():
    t = sample_tree()
    for s in range(8, 3000):
        t.add(node(s, "improve", parent=6, metric=0.05, plan="filler"))
    t.nodes = NoScan(t.nodes)
    mem = t.branch_memory(node_id_for(4))
    assert mem[3].startswith("step 4 debug") and len(mem) == 7
    assert mem[4:6] == [line for line in sample_tree().branch_memory(node_id_for(4))[4:6]]
    assert t.draft_count == 3  # kept incrementally as well
    assert [n.id for n in t.top(2)] == [node_id_for(1), node_id_for(5)]


def test_replayed_node_leaves_the_best_list():
    t = sample_tree()
    t.add(node(1, "draft", plan="Replayed: crashed this time.", bug="MemoryError"))
    assert t.top(1)[0].id == node_id_for(5) and t.best().id == node_id_for(5)
    assert t.draft_count == 3
    assert "step 1 draft: Replayed: crashed this time. -> failed: MemoryError" in t.branch_memory(None)


def test_improve_prompt_has_the_parent_code_before_the_memory():
    t = sample_tree()
    parent = node(4, "debug", parent=3, metric=0.55, plan="Encode strings.", code="PARENT_CODE = 1\n",
                  review="Works; 0.55.")
    first = improve_prompt(parent, t.branch_memory(parent.id), lower_is_better=False)
    t.add(node(8, "draft", metric=0.95, plan="A new best elsewhere."))
    second = improve_prompt(parent, t.branch_memory(parent.id), lower_is_better=False)
    assert first.index("PARENT_CODE = 1") < first.index("Works; 0.55.") < first.index("step 0 draft")
    assert first != second
    common = len(os.path.commonprefix([first, second]))
    assert common > first.index("## What was tried on this branch")  # the prefix cache covers code + review


@pytest.mark.parametrize("branch", [True, False])
def test_stage_request_uses_branch_memory_unless_turned_off(tmp_path, branch):
    t = sample_tree()
    parent = node(4, "debug", parent=3, metric=0.55, plan="Encode strings.")
    settings = RunSettings(run_id="r", task_dir=str(tmp_path), branch_memory=branch)
    svc = SimpleNamespace(settings=settings, store=SimpleNamespace(get=lambda _id: parent),
                          lower_is_better=False)
    text = stage_request(svc, {"stage": "improve", "parent_id": parent.id}, t)
    if branch:
        assert "step 3 improve of step 2: Switch to an SVM. -> failed" in text
        assert "UNRELATED" not in text
    else:  # the last nodes of the whole run, whatever their branch
        assert "improve (step 7): failed. KeyError: 'z'" in text
    draft_text = stage_request(svc, {"stage": "draft", "parent_id": None}, t)
    assert ("best of the run so far" in draft_text) is branch
