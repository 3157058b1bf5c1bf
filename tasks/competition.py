"""Competitions in MLE-bench layout (or a plain folder with a description and data).

MLE-bench layout: `config.yaml` (id, name, grader, dataset.answers, dataset.sample_submission),
`description.md`, `prepared/public/` (what the agent sees) and `prepared/private/` (answers).
A plain folder holds `description.md` and data files; it cannot be graded.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel

from grading.graders import resolve_grader

# Where `mlebench prepare` writes competitions' data (its default), unless told otherwise.
DEFAULT_MLEBENCH_DATA = Path("~/.cache/mle-bench/data")
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"

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
    grade_py: Path | None = None  # the task's own grade.py (`grade(submission_df, answers_df)`)
    grade_fn: str | None = None  # MLE-bench's "module.path:function" of the task's grader
    direction_source: str | None = None  # where lower_is_better came from: config, grader, leaderboard
    notes: list[str] = []  # one-line remarks for the user (an LFS pointer instead of a leaderboard, ...)

    @property
    def gradable(self) -> bool:
        """Whether hidden answers exist to grade submissions against."""
        return self.answers is not None


def metric_direction(grader: str | None) -> bool | None:
    """Lower-is-better for a known grader name (ours or MLE-bench's); None when unknown."""
    return resolve_grader(grader)[1]


def leaderboard_direction(path: Path | None) -> bool | None:
    """Lower-is-better read off a leaderboard's order (best first), as MLE-bench does: the top
    score below the bottom one means lower is better. None when it cannot tell."""
    if path is None:
        return None
    try:
        import pandas as pd

        scores = pd.to_numeric(pd.read_csv(path)["score"], errors="coerce").dropna()
    except Exception:  # noqa: BLE001 - an unreadable leaderboard tells nothing
        return None
    if len(scores) < 2 or scores.iloc[0] == scores.iloc[-1]:
        return None
    return bool(scores.iloc[0] < scores.iloc[-1])


def _leaderboard(root: Path, notes: list[str]) -> Path | None:
    """leaderboard.csv beside the config (where MLE-bench keeps it), unless it is a Git LFS
    pointer (a checkout without `git lfs pull`)."""
    path = root / "leaderboard.csv"
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        head = fh.read(len(LFS_POINTER_PREFIX))
    if head == LFS_POINTER_PREFIX:
        notes.append(f"{path} is a Git LFS pointer (run `git lfs pull`): no medals without it")
        return None
    return path


def mlebench_data_dir() -> Path:
    """MLE-bench's data dir: $MLEBENCH_DATA_DIR, else its default ~/.cache/mle-bench/data."""
    env = os.environ.get("MLEBENCH_DATA_DIR")
    return Path(env).expanduser() if env else DEFAULT_MLEBENCH_DATA.expanduser()


def _resolve(root: Path, rel: str | None, field: str, data_root: Path | None = None) -> Path | None:
    """Find a config path: relative to the task, to its parent, to MLE-bench's data dir (where
    `mlebench prepare` puts `<id>/prepared/...`), or under the task's own `prepared/`."""
    if not rel:
        return None
    candidates = [root / rel, root.parent / rel]
    if data_root is not None:
        candidates.append(data_root / rel)
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
    # the data beside the config, or (an mle-bench checkout) in MLE-bench's data dir
    data_root = mlebench_data_dir()
    public = root / "prepared" / "public"
    if not public.is_dir() and (data_root / comp_id / "prepared" / "public").is_dir():
        public = data_root / comp_id / "prepared" / "public"
    _check_public(root, public)
    dataset = config.get("dataset") or {}
    if not isinstance(dataset, dict):
        raise CompetitionError(f"{config_path}: 'dataset' must be a mapping")
    grader_cfg = config.get("grader") or {}
    if isinstance(grader_cfg, str):
        grader_cfg = {"name": grader_cfg}
    grader = grader_cfg.get("name") if isinstance(grader_cfg, dict) else None
    grade_fn = grader_cfg.get("grade_fn") if isinstance(grader_cfg, dict) else None
    notes: list[str] = []
    leaderboard = _leaderboard(root, notes)
    lower, source = _direction(config, grader_cfg, grader, leaderboard)
    return Competition(
        id=comp_id,
        name=str(config.get("name") or comp_id),
        root=root,
        description=_read_text(_find_description(root, public, config.get("description"))),
        public_dir=public,
        sample_submission=_resolve(root, dataset.get("sample_submission"), "sample_submission", data_root)
        or _optional(public / "sample_submission.csv"),
        answers=_resolve(root, dataset.get("answers"), "answers", data_root),
        grader=str(grader) if grader else None,
        lower_is_better=lower,
        leaderboard=leaderboard,
        grade_py=_optional(root / "grade.py"),
        grade_fn=str(grade_fn) if grade_fn else None,
        direction_source=source,
        notes=notes,
    )


def _direction(config: dict, grader_cfg: object, grader: object, leaderboard: Path | None
               ) -> tuple[bool | None, str | None]:
    """Lower-is-better: from the config, else the grader's name, else the leaderboard's order."""
    for stated in (grader_cfg.get("lower_is_better") if isinstance(grader_cfg, dict) else None,
                   config.get("lower_is_better")):
        if isinstance(stated, bool):
            return stated, "config"
    by_name = metric_direction(str(grader)) if grader else None
    if by_name is not None:
        return by_name, "grader"
    by_board = leaderboard_direction(leaderboard)
    if by_board is not None:
        return by_board, "leaderboard"
    return None, None


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
