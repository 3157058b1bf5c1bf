"""Prepare bundled competitions: `python -m tasks.prepare [NAME ...]` (default: all).

Each task folder holds `prepare.py` with `prepare(task_dir: Path) -> None`, which writes
`prepared/public/` and `prepared/private/` deterministically from data shipped inside installed
packages (no network), and `checksums.json`, the sha256 of every prepared file, which the
prepared files must match.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from nodes.files import write_atomically

TASKS_DIR = Path(__file__).parent


class PrepareError(Exception):
    """A task could not be prepared or its files do not match their checksums."""


def shuffle_with_ids(frame: pd.DataFrame, seed: int, id_range: tuple[int, int]) -> pd.DataFrame:
    """Rows in a seeded random order, with a first column `id` of distinct seeded random ids."""
    rng = np.random.default_rng(seed)
    frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
    frame.insert(0, "id", rng.choice(np.arange(*id_range), size=len(frame), replace=False))
    return frame


def write_competition_files(
    task_dir: Path, train: pd.DataFrame, test: pd.DataFrame, target: str, sample_value: object
) -> None:
    """Write MLE-bench's prepared/ layout for a one-target table task.

    public/: train.csv, test.csv (target dropped), sample_submission.csv (id + `sample_value`),
    description.md (copied from the task dir); private/: answers.csv (id + target).
    """
    public = task_dir / "prepared" / "public"
    private = task_dir / "prepared" / "private"
    for d in (public, private):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    train.to_csv(public / "train.csv", index=False)
    test.drop(columns=[target]).to_csv(public / "test.csv", index=False)
    sample = pd.DataFrame({"id": test["id"], target: sample_value})
    sample.to_csv(public / "sample_submission.csv", index=False)
    test[["id", target]].to_csv(private / "answers.csv", index=False)
    shutil.copyfile(task_dir / "description.md", public / "description.md")


def ranked_board(rows: list[dict], *, lower_is_better: bool) -> pd.DataFrame:
    """Reference scores as a leaderboard (`team`, `score`): best first, ties by team name."""
    board = pd.DataFrame(rows).sort_values(["score", "team"], ascending=[lower_is_better, True])
    return board.reset_index(drop=True)


def save_board(board: pd.DataFrame, task_dir: Path) -> None:
    """Write `leaderboard.csv` and print the board (each leaderboard.py's command line)."""
    write_atomically(task_dir / "leaderboard.csv", board.to_csv(index=False))
    print(board.to_string())


def bundled_tasks() -> list[str]:
    """Names of the bundled tasks."""
    return sorted(p.parent.name for p in TASKS_DIR.glob("*/prepare.py"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepared_checksums(task_dir: Path) -> dict[str, str]:
    """sha256 of every file under prepared/, keyed by relative path."""
    root = task_dir / "prepared"
    return {
        str(p.relative_to(task_dir)): _sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def prepare_task(name: str, *, force: bool = False) -> Path:
    """Prepare one bundled task (skipped when its files already match) and verify it."""
    task_dir = TASKS_DIR / name
    script = task_dir / "prepare.py"
    if not script.is_file():
        raise PrepareError(f"unknown bundled task '{name}' (known: {', '.join(bundled_tasks())})")
    expected_path = task_dir / "checksums.json"
    expected = json.loads(expected_path.read_text()) if expected_path.is_file() else None
    if not force and expected and (task_dir / "prepared").is_dir():
        if prepared_checksums(task_dir) == expected:
            return task_dir
    spec = importlib.util.spec_from_file_location(f"_prepare_{name.replace('-', '_')}", script)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    module.prepare(task_dir)
    actual = prepared_checksums(task_dir)
    if expected is None:
        write_atomically(expected_path, json.dumps(actual, indent=1) + "\n")
    elif actual != expected:
        bad = sorted(k for k in set(actual) | set(expected) if actual.get(k) != expected.get(k))
        raise PrepareError(f"task {name}: prepared files differ from checksums.json: {', '.join(bad)}")
    return task_dir


def main(argv: list[str] | None = None) -> int:
    """Prepare the named tasks (all by default)."""
    names = (argv if argv is not None else sys.argv[1:]) or bundled_tasks()
    try:
        for name in names:
            print(f"prepared {prepare_task(name)}")
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
