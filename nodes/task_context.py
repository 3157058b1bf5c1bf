"""What every prompt of a run starts with: task, data preview, data facts, packages, limits.

Built once per run and stored, so the stable prompt prefix stays byte-identical across calls
(and across a resume) and the server can reuse its prefix cache. The prefix is the same for
every role (coder, reviewer, reflector, judge, planner): it says what a script must do, but not
what to reply with; each role's own request ends with its reply format (a plan and one code
block, or a JSON object).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

import prompts
from nodes.metric_recipe import metric_recipe
from nodes.task_facts import data_facts as compute_data_facts
from serving.process import usable_cores

# Packages worth telling the model about, if installed where scripts run.
_INTERESTING_PACKAGES = [
    "numpy", "pandas", "scikit-learn", "scipy", "lightgbm", "xgboost", "catboost", "torch",
    "torchvision", "torchaudio", "transformers", "timm", "statsmodels", "pillow",
    "opencv-python", "librosa", "soundfile", "nltk", "sentencepiece", "tokenizers", "optuna",
    "polars", "pyarrow", "matplotlib", "seaborn", "jax", "tensorflow", "keras", "spacy", "gensim",
]
# the name a script imports, where it is not the distribution's
_IMPORT_NAMES = {"scikit-learn": "sklearn", "pillow": "PIL", "opencv-python": "cv2"}

_MAX_FILES_LISTED = 40
_MAX_COLUMNS_SHOWN = 40


@dataclass(frozen=True)
class TaskContext:
    """The run-stable facts the prompts are built from."""

    description: str
    data_preview: str
    packages: str
    python_version: str
    time_limit: str
    hardware: str
    metric_hint: str
    sample_submission: str | None
    data_facts: str = ""  # empty when turned off (--no-data-facts)
    # how to compute the metric where scripts run (nodes.metric_recipe); "" when unknown or off
    metric_recipe: str = ""
    # the well-known ML packages scripts cannot import (`missing_packages`), by import name
    missing: str = ""

    def system_prompt(self) -> str:
        """The stable prefix shared by every prompt of the run."""
        return prompts.render("system", **asdict(self))

    def to_dict(self) -> dict:
        """JSON-ready form, stored with the run."""
        return asdict(self)


# Run by the interpreter scripts run with: its Python version and the versions of the packages
# named on the command line that it has (importlib.metadata reads its own sys.path).
_INTERPRETER_PROBE = """import importlib.metadata as m, json, platform, sys
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = m.version(name)
    except m.PackageNotFoundError:
        pass
print(json.dumps({"python": platform.python_version(), "packages": found}))
"""


class InterpreterError(RuntimeError):
    """The interpreter scripts run with could not be asked what it has (one line)."""


@lru_cache(maxsize=8)
def _interpreter_facts(python: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    try:
        # an environment like the sandbox's (no PYTHONPATH, no user site): what scripts will see
        env = {"PATH": f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "PYTHONNOUSERSITE": "1"}
        proc = subprocess.run([python, "-c", _INTERPRETER_PROBE, *_INTERESTING_PACKAGES], capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL, env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        raise InterpreterError(f"cannot run the script interpreter {python}: {exc}") from exc
    try:
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        return str(data["python"]), tuple((str(k), str(v)) for k, v in data["packages"].items())
    except (IndexError, ValueError, KeyError, TypeError, AttributeError) as exc:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InterpreterError(f"the script interpreter {python} did not list its packages "
                               f"(exit {proc.returncode}): {tail}") from exc


def _is_this_interpreter(python: str | None) -> bool:
    # abspath, not realpath: a venv's python is a symlink to the base interpreter, whose packages differ
    return python is None or os.path.abspath(python) == os.path.abspath(sys.executable)


def installed_packages(python: str | None = None) -> str:
    """Versions of the well-known ML packages installed where scripts run: in this interpreter,
    or in `python` (asked in a subprocess, cached; InterpreterError when it cannot answer)."""
    if _is_this_interpreter(python):
        found = []
        for name in _INTERESTING_PACKAGES:
            try:
                found.append(f"{name} {importlib.metadata.version(name)}")
            except importlib.metadata.PackageNotFoundError:
                continue
        return ", ".join(found)
    _version, packages = _interpreter_facts(os.path.abspath(python))  # type: ignore[arg-type]
    return ", ".join(f"{name} {version}" for name, version in packages)


def missing_packages(python: str | None = None) -> str:
    """The well-known ML packages (`_INTERESTING_PACKAGES`) not installed where scripts run, by
    the name a script imports (`cv2`, not `opencv-python`), in that list's order: a small model
    imports nltk or torch for a text or audio task whatever the installed list says, and every
    such import is a failed run and a repair call."""
    have = {part.split(" ", 1)[0] for part in installed_packages(python).split(", ") if part}
    return ", ".join(_IMPORT_NAMES.get(n, n) for n in _INTERESTING_PACKAGES if n not in have)


def python_version(python: str | None = None) -> str:
    """The Python version scripts run with (this interpreter's, or `python`'s)."""
    if _is_this_interpreter(python):
        return platform.python_version()
    return _interpreter_facts(os.path.abspath(python))[0]  # type: ignore[arg-type]


def _human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"


def _count_lines(path: Path, limit_bytes: int = 200 * 2**20) -> int | None:
    if path.stat().st_size > limit_bytes:
        return None
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(2**20), b""))


def _read_table(path: Path) -> pd.DataFrame | Exception:
    sep = "\t" if path.suffix == ".tsv" else ","
    try:
        return pd.read_csv(path, sep=sep, nrows=2000, low_memory=False)
    except Exception as exc:  # noqa: BLE001 - a preview must never fail the run
        return exc


def _rows(path: Path) -> str:
    lines_total = _count_lines(path)
    return f"{lines_total - 1} rows" if lines_total else "many rows"


def _describe_table(path: Path, df: pd.DataFrame | Exception) -> str:
    if isinstance(df, Exception):
        return f"  (could not parse as a table: {type(df).__name__})"
    total = _count_lines(path)
    out = [f"  {total - 1 if total else 'many'} rows x {df.shape[1]} columns"]
    # the preview reads the first rows only: its counts say so where the table has more (a
    # column of 5000 distinct words is not "2000 distinct")
    part = f" in the first {len(df)} rows" if total is None or total - 1 > len(df) else ""
    for col in list(df.columns)[:_MAX_COLUMNS_SHOWN]:
        s = df[col]
        missing = int(s.isna().sum())
        # plain Python values: numpy 2 would show `np.int64(40)` for 40
        values = s.dropna().unique()[:4]
        examples = ", ".join(repr(v.item() if hasattr(v, "item") else v)[:40] for v in values)
        extra = f", {missing} missing in first {len(df)}" if missing else ""
        if pd.api.types.is_numeric_dtype(s) and s.nunique() > 10:
            desc = f"{s.dtype}, range {s.min():.4g}..{s.max():.4g}{part}{extra}"
        else:
            desc = f"{s.dtype}, {s.nunique()} distinct{part}{extra}; e.g. {examples}"
        out.append(f"  - {col}: {desc}")
    if df.shape[1] > _MAX_COLUMNS_SHOWN:
        out.append(f"  ... and {df.shape[1] - _MAX_COLUMNS_SHOWN} more columns")
    return "\n".join(out)


def _same_as(df: pd.DataFrame, others: dict[str, pd.DataFrame]) -> tuple[str, list[str]] | None:
    """A table described in full whose columns include all of `df`'s (more of them, same dtypes
    for the shared ones): (its name, the columns `df` lacks); None when there is none. Saves
    the prefix a second listing of the same columns (a test table beside its train table)."""
    cols = [str(c) for c in df.columns]
    if len(cols) < 3:
        return None
    for name, other in others.items():
        other_cols = [str(c) for c in other.columns]
        if len(other_cols) <= len(cols) or not set(cols) <= set(other_cols):
            continue
        if all(df[c].dtype == other[c].dtype for c in cols):
            return name, [c for c in other_cols if c not in set(cols)]
    return None


_FOLDER_LISTED = 5  # a folder with more files than this is summarised (count, kinds, examples)


def data_preview(public_dir: Path) -> str:
    """A compact listing of the data: the top-level files with sizes, tables with their columns'
    dtypes and examples (a table whose columns another one has, with the same dtypes, by
    reference), and each folder of many files as a count with its kinds and a few examples."""
    public_dir = Path(public_dir)
    files = sorted((p for p in public_dir.rglob("*") if p.is_file() and p.name != "description.md"),
                   key=lambda p: p.relative_to(public_dir).as_posix())
    by_dir: dict[str, list[Path]] = {}
    for path in files:
        by_dir.setdefault(path.relative_to(public_dir).parent.as_posix(), []).append(path)
    listed = [p for d, ps in sorted(by_dir.items()) if d == "." or len(ps) <= _FOLDER_LISTED
              for p in ps][:_MAX_FILES_LISTED]
    tables = {path: _read_table(path) for path in listed if path.suffix in {".csv", ".tsv"}}
    readable = {path.relative_to(public_dir).as_posix(): df for path, df in tables.items()
                if not isinstance(df, Exception)}
    lines: list[str] = []
    for path in listed:
        rel = path.relative_to(public_dir)
        lines.append(f"- {rel.as_posix()} ({_human_size(path.stat().st_size)})")
        if path not in tables:
            continue
        df = tables[path]
        others = {k: v for k, v in readable.items() if k != rel.as_posix()}
        ref = None if isinstance(df, Exception) else _same_as(df, others)
        if ref is not None:
            name, lacks = ref
            lines.append(f"  {_rows(path)} x {df.shape[1]} columns: the columns of {name} (same dtypes) "
                         f"without {', '.join(lacks[:10])}{' ...' if len(lacks) > 10 else ''}")
        else:
            lines.append(_describe_table(path, df))
    shown = set(listed)
    for folder, paths in sorted(by_dir.items()):
        rest = [p for p in paths if p not in shown]
        if not rest:
            continue
        kinds = Counter(p.suffix.lower() or "(no extension)" for p in rest)
        top = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        kind_text = ", ".join(f"{n} {k}" for k, n in top)
        examples = ", ".join(f"{p.relative_to(public_dir).as_posix()} ({_human_size(p.stat().st_size)})"
                             for p in rest[:3])
        where = "./" if folder == "." else f"{folder}/"
        more = "more " if len(rest) < len(paths) else ""
        lines.append(f"- {where}: {len(rest)} {more}files ({kind_text}), e.g. {examples}")
    return "\n".join(lines) if lines else "(no data files)"


def visible_gpus(dev: Path = Path("/dev")) -> int:
    """Number of NVIDIA devices (`/dev/nvidiaN`) on this machine."""
    return sum(1 for p in dev.glob("nvidia*") if p.name[len("nvidia"):].isdigit())


def hardware_summary(gpus: bool = False, *, dev: Path = Path("/dev")) -> str:
    """What a script may use: a GPU only when the run binds one into the sandbox (`--gpus`)."""
    cores = usable_cores()
    if not gpus:
        return f"CPU only: {cores} CPU cores, no GPU (do not use CUDA)"
    count = visible_gpus(dev)
    if count == 0:
        return (f"CPU only: {cores} CPU cores; GPUs were requested but no NVIDIA device is visible "
                "(do not use CUDA)")
    return f"{cores} CPU cores and {count} NVIDIA GPU(s), usable with CUDA"


def build_task_context(
    description: str,
    public_dir: Path,
    *,
    time_limit_s: float,
    metric_name: str | None,
    lower_is_better: bool | None,
    sample_submission: Path | None,
    gpus: bool = False,
    data_facts: bool = True,
    python: str | None = None,
) -> TaskContext:
    """Gather the stable facts once at the start of a run.

    `gpus`: whether scripts get the GPUs (RunSettings.gpus); `data_facts`: whether to state the
    facts checked from the files (see nodes.task_facts); `python`: the interpreter scripts run
    with (RunSettings.python; None: this one), whose Python version and packages are stated."""
    if metric_name and lower_is_better is not None:
        hint = f"{metric_name}, {'lower' if lower_is_better else 'higher'} is better"
    elif metric_name:
        hint = metric_name
    else:
        hint = "as defined in the task description"
    sample = None
    if sample_submission is not None:
        try:
            sample = str(Path(sample_submission).resolve().relative_to(Path(public_dir).resolve()))
        except ValueError:
            sample = None
    minutes = time_limit_s / 60
    limit = f"{time_limit_s:.0f} seconds" if time_limit_s < 120 else f"{minutes:.0f} minutes"
    packages = installed_packages(python)
    return TaskContext(
        description=description.strip(),
        data_preview=data_preview(public_dir),
        packages=packages,
        python_version=python_version(python),
        time_limit=limit,
        hardware=hardware_summary(gpus),
        metric_hint=hint,
        sample_submission=sample,
        data_facts=_facts_or_why_not(public_dir, sample_submission, packages) if data_facts else "",
        metric_recipe=metric_recipe(metric_name, python) if data_facts else "",
        missing=missing_packages(python),
    )


def _facts_or_why_not(public_dir: Path, sample_submission: Path | None, packages: str) -> str:
    """The data facts, for scripts that have `packages` ("name version, ..."); data the checks
    cannot handle must not stop the run, and the prompt says that the facts are missing (and
    why) rather than leaving them out silently."""
    installed = frozenset(item.rsplit(" ", 1)[0] for item in packages.split(", ") if item)
    try:
        return compute_data_facts(public_dir, sample_submission, installed)
    except Exception as exc:  # noqa: BLE001 - any data, any failure: reported in the prompt
        return f"- (the data facts could not be computed: {type(exc).__name__}: {str(exc)[:200]})"
