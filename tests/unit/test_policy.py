import random

from nodes.operators import Action, PolicySettings, choose_action, step_rng
from nodes.tree import Node, Tree


def node(step, stage="draft", parent=None, metric=None, buggy=True, depth=0):
    return Node(id=f"n{step}", step=step, stage=stage, parent_id=parent, metric=metric,
                is_buggy=buggy, debug_depth=depth)


def tree_of(*nodes, lower=False):
    t = Tree(lower_is_better=lower)
    for n in nodes:
        t.add(n)
    return t


class AlwaysBelow(random.Random):
    def random(self):
        return 0.0


class AlwaysAbove(random.Random):
    def random(self):
        return 0.99


def test_drafts_until_num_drafts():
    t = tree_of(node(0, metric=0.5, buggy=False), node(1))
    assert choose_action(t, PolicySettings(num_drafts=3), AlwaysBelow()) == Action("draft")


def test_debugs_buggy_leaf_when_coin_says_so():
    t = tree_of(node(0), node(1, metric=0.5, buggy=False))
    assert choose_action(t, PolicySettings(num_drafts=2), AlwaysBelow()) == Action("debug", "n0")


def test_debug_respects_depth_limit_and_leaf_status():
    t = tree_of(
        node(0),                                        # has a child: not a leaf
        node(1, "debug", parent="n0", depth=4),         # too deep
        node(2, metric=0.7, buggy=False),
    )
    a = choose_action(t, PolicySettings(num_drafts=2, max_debug_depth=3), AlwaysBelow())
    assert a == Action("improve", "n2")


def test_improves_best_node_by_direction():
    nodes = [node(0, metric=0.2, buggy=False), node(1, metric=0.9, buggy=False), node(2)]
    higher = choose_action(tree_of(*nodes), PolicySettings(num_drafts=3), AlwaysAbove())
    lower = choose_action(tree_of(*nodes, lower=True), PolicySettings(num_drafts=3), AlwaysAbove())
    assert higher == Action("improve", "n1")
    assert lower == Action("improve", "n0")


def test_drafts_when_nothing_works_and_no_debug():
    t = tree_of(node(0), node(1))
    assert choose_action(t, PolicySettings(num_drafts=2), AlwaysAbove()) == Action("draft")


def test_buggy_node_with_metric_is_not_improved():
    t = tree_of(node(0, metric=0.99, buggy=True), node(1, metric=0.5, buggy=False))
    assert choose_action(t, PolicySettings(num_drafts=2), AlwaysAbove()) == Action("improve", "n1")


def test_step_rng_is_reproducible_per_step():
    assert step_rng(3, 7).random() == step_rng(3, 7).random()
    assert step_rng(3, 7).random() != step_rng(3, 8).random()


def test_debug_probability_matches_setting():
    t = tree_of(node(0), node(1, metric=0.5, buggy=False))
    settings = PolicySettings(num_drafts=2, debug_prob=0.3)
    picks = [choose_action(t, settings, step_rng(0, s)).stage for s in range(2000)]
    share = picks.count("debug") / len(picks)
    assert 0.25 < share < 0.35


def test_draft_budget_fits_the_step_budget():
    from nodes.operators import draft_budget

    assert [draft_budget(s) for s in (1, 3, 4, 8, 10, 19, 20, 300)] == [1, 1, 1, 2, 2, 4, 5, 5]
    assert draft_budget(4, num_drafts=5) == 5  # an explicit --num-drafts wins


def test_run_settings_use_the_draft_budget():
    from graphs.settings import RunSettings

    assert RunSettings(run_id="r", task_dir="t", steps=4).policy().num_drafts == 1
    assert RunSettings(run_id="r", task_dir="t", steps=40).policy().num_drafts == 5
    assert RunSettings(run_id="r", task_dir="t", steps=4, num_drafts=3).policy().num_drafts == 3
