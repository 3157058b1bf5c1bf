"""Shared fixtures: a tiny competition in MLE-bench layout and scripted chat models."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, PrivateAttr

ROOT = Path(__file__).resolve().parent.parent


def make_toy_task(root: Path, *, with_config: bool = True, n_train: int = 40, n_test: int = 10) -> Path:
    """A small binary classification competition (MLE-bench layout unless with_config=False)."""
    public = root / "prepared" / "public" if with_config else root
    private = root / "prepared" / "private"
    public.mkdir(parents=True, exist_ok=True)
    rows = [{"id": i, "x1": i % 7, "x2": (i * 3) % 5, "label": int(i % 7 > 3)} for i in range(n_train + n_test)]
    df = pd.DataFrame(rows)
    df.iloc[:n_train].to_csv(public / "train.csv", index=False)
    df.iloc[n_train:].drop(columns=["label"]).to_csv(public / "test.csv", index=False)
    pd.DataFrame({"id": df.id.iloc[n_train:], "label": 0}).to_csv(public / "sample_submission.csv", index=False)
    (root / "description.md").write_text("# Toy task\nPredict `label` from x1 and x2. Metric: accuracy (higher is better).\n")
    if with_config:
        private.mkdir(parents=True, exist_ok=True)
        df.iloc[n_train:][["id", "label"]].to_csv(private / "answers.csv", index=False)
        (root / "config.yaml").write_text(
            "id: toy\nname: Toy\ndataset:\n  answers: prepared/private/answers.csv\n"
            "  sample_submission: prepared/public/sample_submission.csv\n"
            "grader:\n  name: accuracy\n"
        )
    return root


@pytest.fixture
def toy_task(tmp_path: Path) -> Path:
    return make_toy_task(tmp_path / "toy")


def ai(content: str, prompt_tokens: int = 100, completion_tokens: int = 50, **kwargs) -> AIMessage:
    """A scripted answer carrying usage, as a server would report it."""
    return AIMessage(
        content=content,
        usage_metadata={
            "input_tokens": prompt_tokens,
            "output_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        **kwargs,
    )


class RecordingFakeModel(GenericFakeChatModel):
    """GenericFakeChatModel that also records every prompt and bound kwargs it was sent."""

    seen: list = []
    seen_kwargs: list = []

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        self.seen.append(messages)
        self.seen_kwargs.append(kwargs)
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def scripted_model(answers: Iterable[AIMessage | str]) -> RecordingFakeModel:
    """A fake chat model that says exactly `answers`, in order."""
    model = RecordingFakeModel(messages=iter(list(answers)))
    model.seen = []
    model.seen_kwargs = []
    return model


GOOD_SCRIPT = """import pandas as pd
train = pd.read_csv("input/train.csv")
test = pd.read_csv("input/test.csv")
pred = (test.x1 > 3).astype(int)
pd.DataFrame({"id": test.id, "label": pred}).to_csv("submission/submission.csv", index=False)
print("METRIC: 0.9")
"""


def fenced(code: str, plan: str = "Plan: simple threshold.") -> str:
    return f"{plan}\n\n```python\n{code}```\n"


class RuleFakeModel(BaseChatModel):
    """A fake chat model whose answers are a function of the prompt and the call's kwargs.

    `rule(text, kwargs)` returns the answer (or a list of answers for a request with `n`);
    `text` is the whole prompt. Every call is recorded as (text, kwargs), thread-safely, so
    tests can assert what the code asked and with which seeds / `n`. Used where calls run
    concurrently and the order of a scripted list would be a race.
    """

    rule: Any
    calls: list = Field(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "rule-fake"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        text = "\n".join(str(m.content) for m in messages)
        with self._lock:
            self.calls.append((text, dict(kwargs)))
        answer = self.rule(text, kwargs)
        answers = answer if isinstance(answer, list) else [answer]
        gens = [ChatGeneration(message=a if isinstance(a, AIMessage) else ai(a)) for a in answers]
        return ChatResult(generations=gens)

    def texts(self, marker: str) -> list[str]:
        """Prompts of the recorded calls that contain `marker`."""
        return [t for t, _ in self.calls if marker in t]


def script_with_metric(metric: float | None, *, crash: bool = False, preds: str = "(test.x1 > 3)") -> str:
    """A runnable toy-task script: a metric line (or none), or a crash."""
    if crash:
        return f"raise RuntimeError('boom {metric}')\n"
    line = f'print("METRIC: {metric}")\n' if metric is not None else 'print("no metric")\n'
    return (
        "import pandas as pd\n"
        'test = pd.read_csv("input/test.csv")\n'
        f'pd.DataFrame({{"id": test.id, "label": {preds}.astype(int)}}).to_csv("submission/submission.csv", index=False)\n'
        + line
    )


@pytest.fixture(scope="session")
def postgres_url():
    """The URL of a throwaway PostgreSQL cluster (tests/pg.py) shared by the session's tests;
    each test keeps apart by its own run ids."""
    from tests.pg import Cluster

    cluster = Cluster().start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


def run_solution(code: str, folder: Path):
    """`code` run for real as `folder/solution.py` (cwd `folder`, this interpreter): its
    `nodes.execute.Execution` as a crash (the failure line as the harness words it) or a run to
    the end (the METRIC line's value, if any)."""
    import re
    import subprocess
    import sys

    from nodes.execute import Execution
    from nodes.review import last_error_line

    (folder / "solution.py").write_text(code)
    proc = subprocess.run([sys.executable, "solution.py"], cwd=folder, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    if proc.returncode:
        return Execution(exit_code=proc.returncode, output=out, seconds=0.5,
                         failure=f"the script exited with code {proc.returncode}: {last_error_line(out)}")
    metric = re.search(r"METRIC: ?([-\d.eE+]+)", out)
    return Execution(exit_code=0, output=out, seconds=0.5, metric=float(metric.group(1)) if metric else None)
