"""What every prompt of a run starts with: task, data preview, packages, limits.

Built once per run and stored, so the stable prompt prefix stays byte-identical across calls
(and across a resume) and the server can reuse its prefix cache.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

import prompts

# Packages worth telling the model about, if installed where scripts run.
_INTERESTING_PACKAGES = [
    "numpy", "pandas", "scikit-learn", "scipy", "lightgbm", "xgboost", "catboost", "torch",
    "torchvision", "torchaudio", "transformers", "timm", "statsmodels", "pillow",
    "opencv-python", "librosa", "soundfile", "nltk", "sentencepiece", "tokenizers", "optuna",
    "polars", "pyarrow", "matplotlib", "seaborn", "jax", "tensorflow", "keras",
]

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

    def system_prompt(self) -> str:
        """The stable prefix shared by every prompt of the run."""
        return prompts.render("system", **asdict(self))

    def to_dict(self) -> dict:
        """JSON-ready form, stored with the run."""
        return asdict(self)


def installed_packages() -> str:
    """Versions of the well-known ML packages installed here."""
    found = []
    for name in _INTERESTING_PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


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


def _describe_table(path: Path) -> str:
    sep = "\t" if path.suffix == ".tsv" else ","
    try:
        df = pd.read_csv(path, sep=sep, nrows=2000, low_memory=False)
    except Exception as exc:  # noqa: BLE001 - a preview must never fail the run
        return f"  (could not parse as a table: {type(exc).__name__})"
    lines_total = _count_lines(path)
    rows = f"{lines_total - 1} rows" if lines_total else "many rows"
    out = [f"  {rows} x {df.shape[1]} columns"]
    for col in list(df.columns)[:_MAX_COLUMNS_SHOWN]:
        s = df[col]
        missing = int(s.isna().sum())
        examples = ", ".join(repr(v)[:40] for v in s.dropna().unique()[:4])
        extra = f", {missing} missing in first {len(df)}" if missing else ""
        if pd.api.types.is_numeric_dtype(s) and s.nunique() > 10:
            desc = f"{s.dtype}, range {s.min():.4g}..{s.max():.4g}{extra}"
        else:
            desc = f"{s.dtype}, {s.nunique()} distinct{extra}; e.g. {examples}"
        out.append(f"  - {col}: {desc}")
    if df.shape[1] > _MAX_COLUMNS_SHOWN:
        out.append(f"  ... and {df.shape[1] - _MAX_COLUMNS_SHOWN} more columns")
    return "\n".join(out)


def data_preview(public_dir: Path) -> str:
    """A compact listing of the data: files, sizes, and for tables columns with dtypes/examples."""
    public_dir = Path(public_dir)
    files = sorted(p for p in public_dir.rglob("*") if p.is_file() and p.name != "description.md")
    lines: list[str] = []
    by_dir: dict[Path, int] = {}
    shown = 0
    for path in files:
        rel = path.relative_to(public_dir)
        if shown >= _MAX_FILES_LISTED:
            by_dir[rel.parent] = by_dir.get(rel.parent, 0) + 1
            continue
        shown += 1
        lines.append(f"- {rel} ({_human_size(path.stat().st_size)})")
        if path.suffix in {".csv", ".tsv"}:
            lines.append(_describe_table(path))
    for folder, count in sorted(by_dir.items()):
        lines.append(f"- ... {count} more files in {folder}/")
    return "\n".join(lines) if lines else "(no data files)"


def hardware_summary() -> str:
    """CPU count (and GPU presence when visible)."""
    gpu = " and NVIDIA GPU(s)" if Path("/dev/nvidia0").exists() else ", no GPU"
    return f"{os.cpu_count()} CPU cores{gpu}"


def build_task_context(
    description: str,
    public_dir: Path,
    *,
    time_limit_s: float,
    metric_name: str | None,
    lower_is_better: bool | None,
    sample_submission: Path | None,
) -> TaskContext:
    """Gather the stable facts once at the start of a run."""
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
    return TaskContext(
        description=description.strip(),
        data_preview=data_preview(public_dir),
        packages=installed_packages(),
        python_version=platform.python_version(),
        time_limit=limit,
        hardware=hardware_summary(),
        metric_hint=hint,
        sample_submission=sample,
    )
