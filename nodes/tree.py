"""The search tree: one `Node` per solution attempt, kept in a table of its own (`NodeStore`:
SQLite in the run directory; `graphs.persistence.PostgresNodeStore`: a shared database).

Node payloads (code, output, reasoning) live outside the LangGraph checkpoint so each step
writes a constant number of bytes however large the tree grows. The store is append-only and
holds every branch of a thread: a fork from a past checkpoint (Studio, `update_state`) adds nodes
beside the original branch's, never over them. Each node links to the node its branch recorded
before it (`prev_id`), so the graph state names a whole branch by its newest node (`head`) in a
few bytes, and `NodeStore.branch` reads it back. Ids and workspace names are claimed
(`NodeStore.claim`) by the LangGraph task that writes them: a task replayed after a crash gets its
name back, a fork's task (a new task id) gets the next free one (`00003-0`, then `00003-1`).
`Tree` is the in-memory index the search policy reads: small summaries, updated per node.
It also keeps the prompt memory of a branch (`Tree.branch_memory`): the attempts on a node's
lineage and the best few nodes of the run, built by walking parents, never by scanning the tree.
"""

from __future__ import annotations

import abc
import bisect
import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from nodes.budget import Cost
from nodes.usage import Usage

Stage = Literal["draft", "improve", "debug"]


def node_id_for(step: int, branch: int = 0) -> str:
    """The id of the `branch`-th node claimed at `step` (`00003-0`: the first, as in a run that
    was never forked)."""
    return f"{step:05d}-{branch}"


class Node(Usage):
    """One solution attempt: what was asked, what was written, what happened."""

    id: str
    step: int
    branch: int = 0
    parent_id: str | None = None
    prev_id: str | None = None  # the node its branch recorded before it (None: the first)
    stage: Stage
    strategy: str = "aide"
    plan: str = ""
    code: str = ""
    output: str = ""
    exit_code: int | None = None
    timed_out: bool = False
    exec_seconds: float = 0.0
    metric: float | None = None
    is_buggy: bool = True
    bug_reason: str | None = None
    review: str = ""
    review_says_bug: bool | None = None
    has_submission: bool = False
    debug_depth: int = 0
    reasoning: str = ""
    llm_error: str | None = None
    workspace: str = ""  # where the node's script last ran, relative to the run directory
    # the harness's validation split (tasks.holdout): the held rows' score with the task's
    # grader, never shown to the agent; selection uses it when the run holds a split
    by_holdout: bool = False
    holdout_score: float | None = None
    holdout_note: str | None = None  # why a well-formed submission got no holdout score
    self_report_flag: str | None = None  # the METRIC line is far better than the holdout score
    # graded against the private answers after execution; never shown to the agent
    test_score: float | None = None
    test_valid: bool | None = None
    test_reason: str | None = None
    created_at: float = 0.0
    extra: dict = Field(default_factory=dict)

    @property
    def score(self) -> float | None:
        """What selection compares: the holdout score in a run that holds a split, else the
        script's own metric (None for a buggy node)."""
        if self.is_buggy:
            return None
        return self.holdout_score if self.by_holdout else self.metric

    @property
    def cost(self) -> Cost:
        """The compute of this step: its prompt + completion tokens, and its LLM seconds plus the
        seconds of every script it ran (a node written before those were counted: its kept run's)."""
        return Cost(self.tokens, self.llm_seconds + max(self.script_seconds, self.exec_seconds))


@dataclass
class NodeSummary:
    """What the policy needs of a node; a few dozen bytes each."""

    id: str
    step: int
    parent_id: str | None
    stage: str
    metric: float | None  # the script's own (its METRIC line): what prompts show
    is_buggy: bool
    debug_depth: int
    note: str  # why it failed, or the review of a working node: one line for prompt memory
    plan: str = ""  # the plan's first words: one line for prompt memory
    score: float | None = None  # what selection ranks by (Node.score)
    cost: Cost = Cost()  # Node.cost: what a budget counts


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


MEMORY_ENTRIES = 8  # lines of branch memory at most
MEMORY_CHARS = 1500  # characters of branch memory at most
MEMORY_BEST = 3  # of which the run's best nodes (off the branch) take at most this many
_TOP_KEPT = 8  # best nodes kept in the index (incrementally, for the memory)
_PLAN_CHARS = 160
_OUTCOME_CHARS = 160


class Tree:
    """In-memory index of the tree for the search policy and prompt memory."""

    def __init__(self, lower_is_better: bool) -> None:
        self.lower_is_better = lower_is_better
        self.nodes: dict[str, NodeSummary] = {}
        self.children: dict[str, set[str]] = {}
        self._roots: list[tuple[int, str]] = []  # (step, id) of the drafts, in step order
        self._top: list[NodeSummary] = []  # the best good nodes, best first
        self._spent = Cost()  # the sum of the nodes' costs, kept per node added
        self._largest = Cost()  # the largest cost of one node, tokens and seconds each

    def _rank(self, n: NodeSummary) -> tuple[float, int]:
        return (n.score if self.lower_is_better else -n.score, n.step)  # type: ignore[operator]

    def _is_ranked(self, n: NodeSummary) -> bool:
        return not n.is_buggy and n.score is not None and math.isfinite(n.score)

    def add(self, node: Node) -> None:
        """Insert or replace a node (replay after a crash replaces)."""
        old = self.nodes.get(node.id)
        if old is not None and old.parent_id is not None:
            self.children.get(old.parent_id, set()).discard(node.id)
        if old is not None and old.parent_id is None:
            self._roots.remove((old.step, old.id))
        rescan = old is not None and any(t.id == node.id for t in self._top)
        cost = node.cost
        self.nodes[node.id] = summary = NodeSummary(
            id=node.id,
            step=node.step,
            parent_id=node.parent_id,
            stage=node.stage,
            metric=node.metric,
            is_buggy=node.is_buggy,
            debug_depth=node.debug_depth,
            score=node.score,
            note=_one_line((node.bug_reason if node.is_buggy else node.review) or "", 240),
            plan=_one_line(node.plan, _PLAN_CHARS),
            cost=cost,
        )
        if old is None:
            self._spent += cost
            self._largest = self._largest.largest(cost)
        else:  # a replayed node replaces its first version (rare: only on crash replay)
            self._spent = Cost.total(n.cost for n in self.nodes.values())
            self._largest = Cost.largest_of(n.cost for n in self.nodes.values())
        self.children.setdefault(node.id, set())
        if node.parent_id is not None:
            self.children.setdefault(node.parent_id, set()).add(node.id)
        else:
            bisect.insort(self._roots, (node.step, node.id))
        if rescan:  # a replayed node left the top list: rebuild it (rare: only on crash replay)
            ranked = [n for n in self.nodes.values() if self._is_ranked(n)]
            self._top = sorted(ranked, key=self._rank)[:_TOP_KEPT]
        elif self._is_ranked(summary):
            self._top.append(summary)
            self._top.sort(key=self._rank)
            del self._top[_TOP_KEPT:]

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def spent(self) -> Cost:
        """What the nodes of this tree (a branch) cost together: the use a budget counts."""
        return self._spent

    @property
    def largest_step(self) -> Cost:
        """The largest cost of one node so far, tokens and seconds each (nodes.budget)."""
        return self._largest

    def get(self, node_id: str) -> NodeSummary:
        """The summary of one node."""
        return self.nodes[node_id]

    @property
    def draft_count(self) -> int:
        """Number of root nodes (drafts)."""
        return len(self._roots)

    def good_nodes(self) -> list[NodeSummary]:
        """Nodes that ran cleanly and have a score (their metric, or in a run that holds a
        split, the held rows' score)."""
        return [n for n in self.nodes.values() if not n.is_buggy and n.score is not None]

    def buggy_leaves(self) -> list[NodeSummary]:
        """Buggy nodes nobody has tried to fix yet, in step order."""
        leaves = [n for n in self.nodes.values() if n.is_buggy and not self.children.get(n.id)]
        return sorted(leaves, key=lambda n: n.step)

    def better(self, a: float, b: float) -> bool:
        """Whether metric `a` beats metric `b` in this task's direction."""
        return a < b if self.lower_is_better else a > b

    def best(self) -> NodeSummary | None:
        """The good node with the best score (earliest wins ties)."""
        best: NodeSummary | None = None
        for node in sorted(self.good_nodes(), key=lambda n: n.step):
            if best is None or self.better(node.score, best.score):  # type: ignore[arg-type]
                best = node
        return best

    def recent(self, k: int) -> list[NodeSummary]:
        """The last `k` nodes by step: bounded prompt memory."""
        return sorted(self.nodes.values(), key=lambda n: n.step)[-k:]

    def top(self, k: int) -> list[NodeSummary]:
        """The `k` best good nodes of the run, best first (earliest wins ties); k <= 8."""
        return self._top[:k]

    def approach_of(self, n: NodeSummary) -> NodeSummary:
        """The draft or improve a debug node fixes: its nearest ancestor that is not a debug."""
        current = n
        for _ in range(64):
            parent = self.nodes.get(current.parent_id) if current.parent_id else None
            if current.stage != "debug" or parent is None:
                break
            current = parent
        return current

    def memory_line(self, n: NodeSummary, *, by_approach: bool = False) -> str:
        """One line about an attempt: what it tried and what came of it. `by_approach`: a debug
        node is told by the approach it fixed (its draft's or improve's plan), not by its own
        plan, which is about the error (a best-of-run line whose plan is "Handle NotFittedError"
        gets copied as if it were a modelling idea)."""
        parent = self.nodes.get(n.parent_id) if n.parent_id else None
        head = f"step {n.step} {n.stage}" + (f" of step {parent.step}" if parent else "")
        plan = n.plan or "(no plan given)"
        if by_approach and n.stage == "debug":
            source = self.approach_of(n)
            if source is not n:
                plan = (f"the approach of step {source.step} ({source.stage}), made to run: "
                        f"{source.plan or '(no plan given)'}")
        if n.is_buggy:
            outcome = "failed: " + _one_line(n.note or "unknown error", _OUTCOME_CHARS)
        elif n.metric is None:  # valid in a run that holds a split (nodes.execute.held_without_metric)
            outcome = "ran and wrote its submission, but printed no METRIC line"
        else:
            outcome = f"metric {n.metric:.6g}"
            if parent is not None and not parent.is_buggy and parent.metric is not None:
                if n.metric == parent.metric:
                    outcome += " (same as its parent)"
                else:
                    word = "better" if self.better(n.metric, parent.metric) else "worse"
                    outcome += f" ({word} than its parent's {parent.metric:.6g})"
        return f"{head}: {plan} -> {outcome}"

    def branch_memory(
        self, node_id: str | None, *, max_entries: int = MEMORY_ENTRIES, max_chars: int = MEMORY_CHARS,
        best: int = MEMORY_BEST,
    ) -> list[str]:
        """What was tried on `node_id`'s lineage (it and its ancestors, oldest first) and what it
        scored, then the run's best nodes off that lineage; for a new draft (`node_id` None) the
        earlier drafts instead of a lineage. At most `max_entries` lines and `max_chars`
        characters: the lineage entries farthest from the node go first, then the weakest best
        entries; the node and its parent stay. Costs O(depth), never a scan of the tree."""
        if max_entries <= 0:
            return []
        best_slots = min(best, max_entries - 1) if max_entries > 1 else 0
        if node_id is None:
            own = [self.nodes[i] for _s, i in self._roots[-(max_entries - best_slots):]][::-1]
        else:
            own = list(self.ancestors(node_id, limit=max_entries - best_slots))  # nearest first
        on_branch = {n.id for n in own}
        tops = [n for n in self.top(best_slots + len(on_branch)) if n.id not in on_branch][:best_slots]
        own_lines = [self.memory_line(n) for n in own]
        top_lines = [f"best of the run so far: {self.memory_line(n, by_approach=True)}" for n in tops]
        while own_lines or top_lines:
            if sum(len(line) + 1 for line in own_lines + top_lines) <= max_chars:
                break
            (own_lines if len(own_lines) > 2 or not top_lines else top_lines).pop()
        return own_lines[::-1] + top_lines

    def ancestors(self, node_id: str, limit: int = 10) -> Iterator[NodeSummary]:
        """The node and its ancestors, nearest first, at most `limit`."""
        current: str | None = node_id
        count = 0
        while current is not None and count < limit:
            node = self.nodes[current]
            yield node
            current = node.parent_id
            count += 1


class BaseNodeStore(abc.ABC):
    """What every node store shares, whatever holds its rows: reading a branch back and
    building the policy index. A backend (`NodeStore`: SQLite in the run directory;
    `graphs.persistence.PostgresNodeStore`: a database that outlives the machine) keeps the
    rows: nodes, run-level values (meta) and the claims of names."""

    @abc.abstractmethod
    def claim(self, kind: str, base: str, owner: str) -> str:
        """The name `base-k` of `kind` that `owner` claimed before, else the first free one."""

    @abc.abstractmethod
    def release(self, kind: str, owners: Iterable[str]) -> None:
        """Forget the names of `kind` that `owners` claimed: a step run again under new task ids
        (a resume on another machine) then claims the same names, not the next free ones."""

    @abc.abstractmethod
    def put(self, node: Node) -> None:
        """Write (or overwrite) one node atomically."""

    @abc.abstractmethod
    def get(self, node_id: str) -> Node:
        """The full payload of one node (KeyError when there is none)."""

    @abc.abstractmethod
    def all(self) -> list[Node]:
        """Every node in step order."""

    @abc.abstractmethod
    def count(self) -> int:
        """Number of stored nodes."""

    @abc.abstractmethod
    def set_meta(self, key: str, value: object) -> None:
        """Store a small run-level value (JSON)."""

    @abc.abstractmethod
    def get_meta(self, key: str, default: object = None) -> object:
        """Read a run-level value stored with `set_meta`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def _before(self, steps: int) -> list[Node]:
        """The nodes below step `steps`, in step order (a backend may ask its database)."""
        return [n for n in self.all() if n.step < steps]

    def branch(self, head: str | None, *, legacy_steps: int = 0) -> list[Node]:
        """The nodes of the branch whose newest node is `head`, in step order (walking `prev_id`
        links: O(branch length)). `head` None: the empty branch, or for a run written before
        branches were state (its nodes have no links) the nodes below `legacy_steps`."""
        if head is None:
            return self._before(legacy_steps) if legacy_steps > 0 else []
        out: list[Node] = []
        current: str | None = head
        while current is not None:
            node = self.get(current)
            out.append(node)
            current = node.prev_id
        return out[::-1]

    def load_tree(self, lower_is_better: bool, nodes: list[Node] | None = None) -> Tree:
        """Build the policy index from `nodes` (a branch), or from every stored node."""
        tree = Tree(lower_is_better)
        for node in self.all() if nodes is None else nodes:
            tree.add(node)
        return tree


class NodeStore(BaseNodeStore):
    """SQLite table of full node payloads, one row per node id (upsert), in the run directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS nodes ("
            " id TEXT PRIMARY KEY, step INTEGER NOT NULL, data TEXT NOT NULL)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS claims (kind TEXT NOT NULL, name TEXT NOT NULL,"
            " owner TEXT NOT NULL, PRIMARY KEY (kind, name))"
        )
        self._conn.execute("CREATE INDEX IF NOT EXISTS claims_owner ON claims (kind, owner)")

    def claim(self, kind: str, base: str, owner: str) -> str:
        """A name `base-k` of `kind` ("node", "workspace") for `owner` (a LangGraph task id):
        the one it claimed before (a task replayed after a crash), else the first free `k`.
        Nothing else ever gets that name, so no branch writes over another's."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT name FROM claims WHERE kind = ? AND owner = ? AND name LIKE ?",
                    (kind, owner, f"{base}-%")).fetchone()
                if row is None:
                    taken = {r[0] for r in self._conn.execute(
                        "SELECT name FROM claims WHERE kind = ? AND name LIKE ?", (kind, f"{base}-%"))}
                    k = 0
                    while f"{base}-{k}" in taken:
                        k += 1
                    row = (f"{base}-{k}",)
                    self._conn.execute("INSERT INTO claims (kind, name, owner) VALUES (?, ?, ?)",
                                       (kind, row[0], owner))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return str(row[0])

    def release(self, kind: str, owners: Iterable[str]) -> None:
        with self._lock:
            self._conn.executemany("DELETE FROM claims WHERE kind = ? AND owner = ?",
                                   [(kind, owner) for owner in owners])

    def put(self, node: Node) -> None:
        """Write (or overwrite) one node atomically."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO nodes (id, step, data) VALUES (?, ?, ?)",
                (node.id, node.step, node.model_dump_json()),
            )

    def get(self, node_id: str) -> Node:
        """The full payload of one node."""
        with self._lock:
            row = self._conn.execute("SELECT data FROM nodes WHERE id = ?", (node_id,)).fetchone()
        if row is None:
            raise KeyError(node_id)
        return Node.model_validate_json(row[0])

    def all(self) -> list[Node]:
        """Every node in step order (for loading an index and writing reports)."""
        with self._lock:
            rows = self._conn.execute("SELECT data FROM nodes ORDER BY step, id").fetchall()
        return [Node.model_validate_json(r[0]) for r in rows]

    def _before(self, steps: int) -> list[Node]:
        with self._lock:
            rows = self._conn.execute("SELECT data FROM nodes WHERE step < ? ORDER BY step, id",
                                      (steps,)).fetchall()
        return [Node.model_validate_json(r[0]) for r in rows]

    def count(self) -> int:
        """Number of stored nodes."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM nodes").fetchone()[0])

    def set_meta(self, key: str, value: object) -> None:
        """Store a small run-level value (JSON)."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value))
            )

    def get_meta(self, key: str, default: object = None) -> object:
        """Read a run-level value stored with `set_meta`."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
