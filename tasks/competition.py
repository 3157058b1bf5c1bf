"""Competitions in MLE-bench layout (or a plain folder with a description and data).

MLE-bench layout: `config.yaml` (id, name, grader, dataset.answers, dataset.sample_submission),
`description.md`, `prepared/public/` (what the agent sees) and `prepared/private/` (answers).
A plain folder holds `description.md` and data files; it cannot be graded.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel

# Metric direction by grader name, for configs that do not state it.
_LOWER_IS_BETTER = {
    "rmse", "mse", "mae", "rmsle", "log_loss", "logloss", "cross_entropy", "cer", "wer",
    "mape", "smape", "error_rate", "medae",
}
_HIGHER_IS_BETTER = {
    "accuracy", "roc_auc", "auc", "f1", "f1_macro", "f1_micro", "f1_weighted", "r2",
    "precision", "recall", "map", "map@k", "ndcg", "exact_match", "bleu", "kappa",
    "quadratic_weighted_kappa", "balanced_accuracy", "mcc", "dice", "iou", "spearman", "pearson",
}


class CompetitionError(Exception):
    """The task directory cannot be used; the message is one line for the user."""


class Competition(BaseModel):
    """Everything the agent and the graders need to know about one task."""

    id: str
    name: str
    root: Path
    description: str
    public_dir: Path
    sample_submission: Path | None = None
    answers: Path | None = None
    grader: str | None = None
    lower_is_better: bool | None = None
    leaderboard: Path | None = None  # leaderboard.csv (column `score`, best first) for medals

    @property
    def gradable(self) -> bool:
        """Whether hidden answers exist to grade submissions against."""
        return self.answers is not None


def metric_direction(grader: str | None) -> bool | None:
    """Lower-is-better for a known grader name; None when unknown."""
    if not grader:
        return None
    key = grader.strip().lower().replace("-", "_").replace(" ", "_")
    if key in _LOWER_IS_BETTER:
        return True
    if key in _HIGHER_IS_BETTER:
        return False
    return None


def _resolve(root: Path, rel: str | None, field: str) -> Path | None:
    """Find a config path: relative to the task, to its parent (MLE-bench), or by file name."""
    if not rel:
        return None
    candidates = [root / rel, root.parent / rel]
    parts = Path(rel).parts
    if "prepared" in parts:  # "<id>/prepared/public/x.csv" style
        candidates.append(root.joinpath(*parts[parts.index("prepared"):]))
    for cand in candidates:
        if cand.exists():
            return cand.resolve()
    raise CompetitionError(f"{root}/config.yaml: {field} file '{rel}' does not exist")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CompetitionError(f"cannot read {path}: {exc.__class__.__name__}") from exc


def load_competition(task_dir: str | Path) -> Competition:
    """Load a task directory; CompetitionError (one line) when it is unusable."""
    root = Path(task_dir).expanduser()
    if not root.exists():
        raise CompetitionError(f"task directory {root} does not exist")
    if not root.is_dir():
        raise CompetitionError(f"task path {root} is not a directory")
    root = root.resolve()
    config_path = root / "config.yaml"
    if config_path.exists():
        return _load_mlebench(root, config_path)
    if (root / "prepared" / "public").is_dir():
        return _load_prepared_only(root)
    return _load_plain(root)


def _find_description(root: Path, public: Path, configured: str | None) -> Path:
    for cand in (root / "description.md", public / "description.md"):
        if cand.is_file():
            return cand
    if configured:
        name = Path(configured).name
        for cand in (root / configured, root.parent / configured, root / name):
            if cand.is_file():
                return cand
    raise CompetitionError(f"task {root} has no description.md")


def _check_public(root: Path, public: Path) -> None:
    if not public.is_dir():
        raise CompetitionError(f"task {root} has no prepared/public directory (run its prepare step)")
    data = [p for p in public.iterdir() if p.name != "description.md"]
    if not data:
        raise CompetitionError(f"task {root}: {public} holds no data files")


def _load_mlebench(root: Path, config_path: Path) -> Competition:
    try:
        config = yaml.safe_load(_read_text(config_path)) or {}
    except yaml.YAMLError as exc:
        line = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise CompetitionError(f"{config_path} is not valid YAML: {line}") from exc
    if not isinstance(config, dict):
        raise CompetitionError(f"{config_path} must be a mapping")
    comp_id = config.get("id")
    if not comp_id or not isinstance(comp_id, str):
        raise CompetitionError(f"{config_path} has no 'id'")
    public = root / "prepared" / "public"
    _check_public(root, public)
    dataset = config.get("dataset") or {}
    if not isinstance(dataset, dict):
        raise CompetitionError(f"{config_path}: 'dataset' must be a mapping")
    grader_cfg = config.get("grader") or {}
    if isinstance(grader_cfg, str):
        grader_cfg = {"name": grader_cfg}
    grader = grader_cfg.get("name") if isinstance(grader_cfg, dict) else None
    lower = grader_cfg.get("lower_is_better") if isinstance(grader_cfg, dict) else None
    if lower is None:
        lower = metric_direction(grader)
    return Competition(
        id=comp_id,
        name=str(config.get("name") or comp_id),
        root=root,
        description=_read_text(_find_description(root, public, config.get("description"))),
        public_dir=public,
        sample_submission=_resolve(root, dataset.get("sample_submission"), "sample_submission")
        or _optional(public / "sample_submission.csv"),
        answers=_resolve(root, dataset.get("answers"), "answers"),
        grader=grader,
        lower_is_better=lower,
        leaderboard=_optional(root / "leaderboard.csv"),
    )


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None


def _load_prepared_only(root: Path) -> Competition:
    public = root / "prepared" / "public"
    _check_public(root, public)
    return Competition(
        id=root.name,
        name=root.name,
        root=root,
        description=_read_text(_find_description(root, public, None)),
        public_dir=public,
        sample_submission=_optional(public / "sample_submission.csv"),
    )


def _load_plain(root: Path) -> Competition:
    desc = root / "description.md"
    if not desc.is_file():
        raise CompetitionError(
            f"task {root} has neither config.yaml (MLE-bench layout) nor description.md"
        )
    _check_public(root, root)
    return Competition(
        id=root.name,
        name=root.name,
        root=root,
        description=_read_text(desc),
        public_dir=root,
        sample_submission=_optional(root / "sample_submission.csv"),
    )
