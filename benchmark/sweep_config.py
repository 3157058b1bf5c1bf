"""The sweep file: one YAML document naming a grid, the settings of each strategy and model, and
where and how its cells run. `python -m benchmark.sweep --config sweep.yaml`; the file as resolved
(flags given beside it applied) is saved with the results as ``<out>/sweep.yaml``.

    out: sweeps/r1-grid
    tasks: [tasks/tumor-diagnosis, /data/mle-bench/spaceship-titanic]
    seeds: 3
    steps: 20
    executor: ray                 # local (default) or ray
    workers: 8                    # cells at once
    ray_address: auto             # omit: a local Ray is started and stopped
    checkpointer: postgresql://its@db/its     # omit: SQLite in each run directory
    budget: {tokens: 400000, seconds: 7200}   # every cell gets the same compute
    settings: {exec-timeout: 600, mem-limit-mb: 8192}   # any graphs.run flag, for every cell
    strategies:
      - aide
      - {name: self_consistency, label: sc8, settings: {samples: 8}}
    models:
      - local:1.5b
      - spec: vllm:deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
        settings: {max-tokens: 8192, temperature: 0.6, reasoning-budget: 16384}
        concurrency: 8            # cells at once on this model's server
        tensor_parallel_size: 1
      - {spec: "r1-14b@http://gpu2:8000/v1", concurrency: 4}

A settings key is a `graphs.run` flag without its dashes (``exec-timeout`` or ``exec_timeout``);
a switch takes true/false (``llm-review: false`` is ``--no-llm-review``). Settings apply in the
order file, model, strategy: the strategy's win. The grid's own flags (task, strategy, model,
seed, run id and directory) cannot be set there.
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from graphs.persistence import redact_url
from graphs.run import build_parser as run_parser

# set per cell by the grid itself
_GRID_FLAGS = {"--task", "--strategy", "--seed", "--run-id", "--run-dir", "--resume", "--model",
               "--base-url", "--local-model", "--vllm-model", "--steps", "--checkpointer",
               "--budget-tokens", "--budget-seconds"}


class ConfigError(Exception):
    """A sweep file or setting the user can fix; one line."""


Settings = dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StrategyEntry(_Strict):
    name: str
    label: str | None = None  # names the strategy's rows (the same strategy twice: sc4, sc8)
    settings: Settings = Field(default_factory=dict)


class ModelEntry(_Strict):
    spec: str  # local:KEY, NAME@BASE_URL or vllm:HF_MODEL
    settings: Settings = Field(default_factory=dict)
    concurrency: int | None = Field(default=None, ge=1)
    tensor_parallel_size: int | None = Field(default=None, ge=1)
    max_model_len: int | None = Field(default=None, ge=1)


class Budget(_Strict):
    tokens: int | None = Field(default=None, ge=1)
    seconds: float | None = Field(default=None, gt=0)


class SweepFile(_Strict):
    """What a sweep file holds (and what ``<out>/sweep.yaml`` records)."""

    tasks: list[str]
    strategies: list[StrategyEntry]
    models: list[ModelEntry]
    seeds: int = Field(ge=1)
    steps: int = Field(ge=1)
    out: str = "sweeps/latest"
    executor: str = "local"
    workers: int | None = Field(default=None, ge=1)  # None: 1 locally, the cluster's CPUs on Ray
    ray_address: str | None = None
    checkpointer: str = ""
    budget: Budget = Field(default_factory=Budget)
    settings: Settings = Field(default_factory=dict)
    endpoint_concurrency: int | None = Field(default=None, ge=1)  # default cap of a model server
    cell_cpus: float = Field(default=1.0, gt=0)
    passthrough: list[str] = Field(default_factory=list)  # graphs.run arguments for every cell

    @field_validator("strategies", mode="before")
    @classmethod
    def _strategy_names(cls, value: Any) -> Any:
        return [{"name": v} if isinstance(v, str) else v for v in value or []]

    @field_validator("models", mode="before")
    @classmethod
    def _model_specs(cls, value: Any) -> Any:
        return [{"spec": v} if isinstance(v, str) else v for v in value or []]

    def dump_yaml(self) -> str:
        """The file as saved with the results: a database URL without its password (a rerun
        takes it from $ITS_MLE_CHECKPOINTER or --checkpointer)."""
        values = self.model_dump(mode="json")
        values["checkpointer"] = redact_url(self.checkpointer)
        return yaml.safe_dump(values, sort_keys=False)


def load_sweep_file(path: str | Path) -> SweepFile:
    """Read and check a sweep file; ConfigError (one line) when it is unusable."""
    p = Path(path).expanduser()
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the sweep file {p}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping (tasks, strategies, models, seeds, steps, ...)")
    try:
        return SweepFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top)"
        raise ConfigError(f"{p}: {where}: {err['msg']}") from exc


def _options() -> dict[str, tuple[argparse.Action, bool]]:
    """graphs.run's options by flag name and by the setting they set: (action, negated), where
    `negated` means the name says the opposite of the flag (``holdout`` for ``--no-holdout``)."""
    out: dict[str, tuple[argparse.Action, bool]] = {}
    for action in run_parser()._actions:
        if not action.option_strings or action.dest == "help":
            continue
        opt = action.option_strings[0]
        out.setdefault(opt, (action, False))
        dest_form = "--" + action.dest.replace("_", "-")
        if isinstance(action, argparse._StoreFalseAction):
            out.setdefault(dest_form, (action, True))
        elif isinstance(action, argparse._StoreTrueAction) and opt.startswith("--no-"):
            out.setdefault("--" + opt[len("--no-"):], (action, True))
        else:
            out.setdefault(dest_form, (action, False))
    return out


def settings_argv(settings: Settings, where: str) -> list[str]:
    """`graphs.run` arguments for a settings mapping; ConfigError for an unknown or grid key."""
    options = _options()
    argv: list[str] = []
    for key, value in settings.items():
        flag = "--" + str(key).strip().lstrip("-").replace("_", "-")
        if flag not in options:
            close = difflib.get_close_matches(flag, [o for o in options if o not in _GRID_FLAGS], n=1)
            hint = f" (did you mean '{close[0][2:]}'?)" if close else ""
            raise ConfigError(f"{where}: '{key}' is not a graphs.run setting{hint}")
        action, negated = options[flag]
        if action.option_strings[0] in _GRID_FLAGS:
            raise ConfigError(f"{where}: '{key}' is set by the grid itself, not in settings")
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: '{key}' is a switch: give true or false")
            if value != negated:
                argv.append(action.option_strings[0])
            continue
        if value is None:
            continue
        if action.choices is not None and isinstance(value, bool):
            value = "on" if value else "off"
        argv += [action.option_strings[0], str(value)]
    return argv


def check_run_argv(argv: list[str], where: str) -> None:
    """Let graphs.run's own parser judge the values (a bad number, a wrong choice)."""
    parser = run_parser()

    def fail(message: str) -> None:
        raise ConfigError(f"{where}: {message}")

    parser.error = fail  # type: ignore[method-assign]
    parser.parse_args(["--task", "x", *argv])
