"""AIDE's search policy as a pure function: (tree, settings, rng) -> Action."""

from __future__ import annotations

import random
from dataclasses import dataclass

from nodes.tree import Tree

AIDE_DRAFTS = 5
STEPS_PER_DRAFT = 4


def draft_budget(steps: int, num_drafts: int | None = None) -> int:
    """Initial drafts for a run of `steps` nodes: `num_drafts` when given; otherwise one draft per
    4 steps, at least 1 and at most AIDE's 5 (4 steps: 1 draft and 3 debug/improve steps;
    10 steps: 2; 20 steps and more: 5). A short run drafting 5 times could never debug or improve."""
    if num_drafts is not None:
        return num_drafts
    return max(1, min(AIDE_DRAFTS, steps // STEPS_PER_DRAFT))


@dataclass(frozen=True)
class PolicySettings:
    """AIDE's defaults: 5 initial drafts, debug with probability 0.5 up to depth 3."""

    num_drafts: int = 5
    debug_prob: float = 0.5
    max_debug_depth: int = 3


@dataclass(frozen=True)
class Action:
    """What the next step does: a stage and the node it starts from (None for a draft)."""

    stage: str
    parent_id: str | None = None


def choose_action(tree: Tree, settings: PolicySettings, rng: random.Random) -> Action:
    """Pick the next step like AIDE.

    Fewer drafts than `num_drafts` -> draft. With probability `debug_prob`, debug a random
    buggy leaf whose debug depth is within the limit. No working node -> draft. Otherwise
    improve the best node.
    """
    if tree.draft_count < settings.num_drafts:
        return Action("draft")
    if rng.random() < settings.debug_prob:
        debuggable = [
            n for n in tree.buggy_leaves() if n.debug_depth <= settings.max_debug_depth
        ]
        if debuggable:
            return Action("debug", rng.choice(debuggable).id)
    best = tree.best()
    if best is None:
        return Action("draft")
    return Action("improve", best.id)


def step_rng(seed: int, step: int) -> random.Random:
    """A generator fixed by (seed, step), so a replayed step makes the same choice."""
    return random.Random(f"{seed}:{step}")
