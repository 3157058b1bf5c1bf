"""Per-run settings (persisted with the run so a resume uses the same ones) and services."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

from nodes.policy import PolicySettings
from nodes.review import StructuredOutputSupport
from nodes.tree import NodeStore, Tree
from tasks.competition import Competition


class RunSettings(BaseModel):
    """Everything that defines a run; written to `run.json` at start."""

    run_id: str
    task_dir: str
    strategy: str = "aide"
    steps: int = 20
    base_url: str | None = None
    model: str | None = None
    local_model: str = "1.5b"
    seed: int = 0
    exec_timeout: float = 600.0
    num_drafts: int = 5
    debug_prob: float = 0.5
    max_debug_depth: int = 3
    max_tokens: int = 4096
    temperature: float | None = None
    llm_timeout: float = 900.0
    llm_retries: int = 2
    sandbox: str = "auto"
    llm_review: bool = True
    memory_size: int = 6
    metric_name: str | None = None
    lower_is_better: bool | None = None

    def policy(self) -> PolicySettings:
        """The search-policy parameters."""
        return PolicySettings(
            num_drafts=self.num_drafts,
            debug_prob=self.debug_prob,
            max_debug_depth=self.max_debug_depth,
        )


@dataclass(frozen=True)
class HiddenGrade:
    """A submission's score on the private answers (kept out of every prompt)."""

    score: float | None
    valid: bool
    reason: str | None = None


HiddenGrader = Callable[[Path], HiddenGrade]


@dataclass
class RunServices:
    """Live objects one run's graph nodes use (never checkpointed)."""

    settings: RunSettings
    run_dir: Path
    competition: Competition
    llm: BaseChatModel
    system_text: str
    use_system_prompt: bool
    store: NodeStore
    tree: Tree
    lower_is_better: bool
    structured: StructuredOutputSupport = field(default_factory=StructuredOutputSupport)
    hidden_grader: HiddenGrader | None = None


@dataclass
class SearchContext:
    """LangGraph runtime context of the tree-search graph."""

    services: RunServices
