"""Per-run settings (persisted with the run so a resume uses the same ones), the runtime context
of all four graphs built from them, and the live services."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, ConfigDict, Field, field_validator

from grading.hidden import HiddenGrader
from graphs.persistence import redact_url
from nodes.budget import Budget
from nodes.operators import PolicySettings, draft_budget
from nodes.structured import StructuredOutputSupport
from nodes.tree import BaseNodeStore, Tree
from sandbox.limits import Limits, MiB
from tasks.competition import Competition


class RunSettings(BaseModel):
    """Everything that defines a run; written to `run.json` at start. One set of defaults for
    every way a run starts (CLI, Studio, notebooks, sweeps): `RunContext` is this plus where the
    run lives and its live services."""

    run_id: str = ""  # "" in a graph's context: the thread id names the run
    task_dir: str = ""
    strategy: str = "aide"
    steps: int = 20
    # compute budget of the run (nodes.budget): prompt + completion tokens, and LLM + script
    # execution seconds; the search expands no further once the next step would pass it
    budget_tokens: int | None = Field(default=None, gt=0)
    budget_seconds: float | None = Field(default=None, gt=0)
    base_url: str | None = None
    model: str | None = None
    local_model: str = "1.5b"
    # a vLLM server started for the run (serving.vllm; restarted on resume) instead of the embedded one
    vllm_model: str | None = None
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    python: str | None = None  # the interpreter solution scripts run with (None: this one)
    seed: int = 0
    exec_timeout: float = 600.0
    num_drafts: int | None = None  # None: nodes.operators.draft_budget(steps)
    debug_prob: float = 0.5
    max_debug_depth: int = 3
    max_tokens: int = 4096  # the coder's answer cap
    # thinking tokens on top of every answer cap; None: 8192 for a model that thinks (by name or
    # found in an answer), 0 for others (serving.llm.TokenBudget)
    reasoning_budget: int | None = None
    context_length: int | None = None  # the server's context; None: as /v1/models reports it
    temperature: float | None = None
    top_p: float | None = None
    system_prompt: bool | None = None  # None: by model family (R1 distills: no system prompt)
    llm_timeout: float = 900.0
    llm_retries: int = 2
    sandbox: str = "auto"
    mem_limit_mb: int | None = None  # per script run; None: half the RAM
    max_procs: int = 512
    max_file_mb: int = 1024
    cpu_limit_s: float | None = None  # per process; None: exec timeout x CPUs
    gpus: bool = False
    llm_review: bool = True
    skip_failed_review: bool = True  # no LLM review of a run the facts call failed
    repairs: int = 2  # quick repair calls per step for a static failure or an early crash (0: none)
    repair_window_s: float = 10.0  # a crash within this many seconds of the start counts as early
    known_errors: bool = True  # debug and repair prompts name the usual remedy of a known error
    auto_imports: bool = True  # the harness adds the import line of an undefined name it can import
    outline_names: bool = True  # the harness adds the data facts' outline line of an undefined name
    # an estimator that crashed on the strings of the task's one text column gets a text vectorizer before it
    vectorize_strings: bool = True
    improve_again: bool = True  # an improve answer that leaves the program unchanged is asked once more
    revert_repairs: bool = True  # a repair whose run got less far than the script before it is set aside
    # a repair answer that is a fragment of the script before it (and a debug or improve answer that
    # is a fragment of its parent's script) is put in the place it covers there and run
    splice_fragments: bool = True
    memory_size: int = 8  # lines of prompt memory at most
    branch_memory: bool = True  # memory of the parent's lineage + best nodes (else: last nodes of the run)
    data_facts: bool = True  # facts checked from the data files in the stable prefix
    # a share of the training rows held by the harness and scored with the task's grader after
    # every execution; selection uses that score (tasks.holdout). Off: the scripts' METRIC lines.
    holdout: bool = True
    holdout_fraction: float = 0.1
    metric_name: str | None = None
    lower_is_better: bool | None = None
    # inference-time-scaling strategies (ignored by aide)
    samples: int = 4
    rounds: int = 3
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1)
    sampling: Literal["auto", "n", "concurrent"] = "auto"
    judge: bool = True
    planner_base_url: str | None = None
    planner_model: str | None = None
    planner_temperature: float | None = None
    # where checkpoints and nodes persist: "" for SQLite files in the run directory, else a
    # postgresql:// URL, always without its password (graphs.persistence)
    checkpointer: str = ""

    @field_validator("checkpointer")
    @classmethod
    def _without_password(cls, url: str) -> str:
        return redact_url(url)

    def limits(self) -> Limits:
        """What each script run may use (see sandbox.limits)."""
        return Limits(
            memory_bytes=None if self.mem_limit_mb is None else self.mem_limit_mb * MiB,
            processes=self.max_procs, cpu_seconds=self.cpu_limit_s, file_bytes=self.max_file_mb * MiB,
            gpus=self.gpus, python=self.python)

    def budget(self) -> Budget:
        """The run's compute budget (unbounded where not set)."""
        return Budget(tokens=self.budget_tokens, seconds=self.budget_seconds)

    def policy(self) -> PolicySettings:
        """The search-policy parameters."""
        return PolicySettings(
            num_drafts=draft_budget(self.steps, self.num_drafts),
            debug_prob=self.debug_prob,
            max_debug_depth=self.max_debug_depth,
        )


@dataclass
class RunServices:
    """Live objects one run's graph nodes use (never checkpointed)."""

    settings: RunSettings
    run_dir: Path
    competition: Competition
    llm: BaseChatModel
    system_text: str
    use_system_prompt: bool
    store: BaseNodeStore
    tree: Tree  # the tree of the branch named by `tree_key` (graphs.search.branch_tree keeps it)
    lower_is_better: bool
    structured: StructuredOutputSupport = field(default_factory=StructuredOutputSupport)
    hidden_grader: HiddenGrader | None = None
    held: Any = None  # tasks.holdout.HeldSplit: the harness's validation split; None: self-report
    selection: dict = field(default_factory=lambda: {"by": "self_report", "reason": "not set up"})
    expander: Any = None  # the compiled strategy graph; None for plain AIDE
    strategy_context: RunContext | None = None  # the strategy graphs' context, with their services
    tree_key: tuple = (None, 0)  # (the branch's head node id, legacy step count) `tree` is of


class RunContext(RunSettings):
    """The LangGraph runtime context (`context_schema`) of all four graphs: a run's settings,
    the directory its runs go under, and the live services built from them.

    The CLI and the tree search (for its strategy graph) attach `services`. Studio and notebooks
    send plain values (a dict LangGraph turns into this model); the graph then builds its
    services on first use with the CLI's own builder (`graphs.services.services_for`) and keeps
    the run under `run_dir/<thread id>/`. `base_url` defaults to $ITS_MLE_BASE_URL there.
    """

    # a key that is not a setting (a typo, a setting of another version) is an error, not dropped
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    run_dir: str = "runs"
    services: Any = Field(default=None, exclude=True)  # RunServices or StrategyServices

    def run_settings(self, run_id: str) -> RunSettings:
        """The settings alone (what run.json holds), named `run_id` when they name no run."""
        values = self.model_dump(exclude={"run_dir", "services"})
        return RunSettings(**{**values, "run_id": self.run_id or run_id})


SearchContext = RunContext  # the tree search's context: the same model
