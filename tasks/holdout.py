"""A validation split held by the harness: rows of the public training data whose labels the
agent never sees, scored with the task's grader after every execution.

`plan_holdout` picks a seeded share of the train table's rows (stratified when the target holds
classes) and gives each a fresh id drawn like the test ids; `build_view` writes the directory the
agent sees instead of the public one: the train table without those rows, the test table and the
sample submission with them added at seeded positions among the real test rows (features only),
their files (images, audio) next to the test files under the new ids, every other file as it is.
A script therefore predicts them without knowing which rows they are. `split_submission` takes a
submission written for the view apart: the held rows (scored by `holdout_score` against the
labels kept in the run directory, outside the sandbox's view) and the real test rows in the
sample's own order (what the node keeps and hidden grading scores).

Layouts it cannot split get an `Unsplittable` with a one-line reason, and the run falls back to
the script's own metric. Handled: a train table and a test table sharing the sample submission's
id column, the sample's prediction columns being train columns (labels or numbers per row), and
for data in folders, one file per id named `<id><ext>` in a train folder and a test folder.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import string
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel

from grading.graders import GradeResult, canonical_ids, grade_submission

DEFAULT_FRACTION = 0.1
MIN_ROWS = 10  # fewer held rows than this would make a score of noise
MAX_ROWS = 5000
MIN_TRAIN_LEFT = 20  # the agent keeps at least this many training rows
_CLASS_LIMIT = 50  # a target with at most this many values is stratified on


class Unsplittable(BaseModel):
    """Why a task's layout allows no held split (the run says so and uses the self-report)."""

    reason: str


class HoldoutPlan(BaseModel):
    """The split of one run: stored in the run directory (never in the agent's view)."""

    seed: int
    train_table: str  # paths under the public dir
    test_table: str
    sample_table: str
    id_column: str
    target_columns: list[str]  # the sample's prediction columns, all train columns
    held_train_ids: list[str]  # the held rows' ids in the train table
    fresh_ids: list[str]  # their ids in the view, in the same order
    positions: list[int]  # where each held row sits in the view's test table (row index)
    folder: tuple[str, str, str] | None = None  # (train folder, test folder, extension) for file data
    stratified: bool = False  # drawn per class of a categorical target
    train_rows: int = 0  # rows of the public train table

    @property
    def rows(self) -> int:
        return len(self.fresh_ids)


# ---------------------------------------------------------------- planning


def read_table(path: Path) -> pd.DataFrame:
    """A CSV as text, exactly as written (no NA guessing, no float rounding)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)



def _find_table(public: Path, word: str, exclude: set[str]) -> Path | None:
    tables = sorted(p for p in public.iterdir() if p.is_file() and p.suffix.lower() == ".csv"
                    and word in p.stem.lower() and p.name not in exclude)
    return tables[0] if len(tables) == 1 else None


def _fresh_ids(existing: pd.Series, count: int, rng: random.Random) -> list[str]:
    """`count` new ids that look like the existing ones: integers from the same range (widened
    when it is full), otherwise strings with the same character kinds position by position."""
    taken = set(existing)
    as_int = pd.to_numeric(existing, errors="coerce")
    if as_int.notna().all() and (existing == as_int.astype("int64").astype(str)).all():
        lo, hi = int(as_int.min()), int(as_int.max())
        while (hi - lo + 1) - len(taken) < 4 * count:
            hi += max(count * 4, hi - lo + 1)
        out: list[str] = []
        while len(out) < count:
            candidate = str(rng.randint(lo, hi))
            if candidate not in taken:
                taken.add(candidate)
                out.append(candidate)
        return out
    by_length: dict[int, list[str]] = {}
    for value in existing:
        by_length.setdefault(len(value), []).append(value)
    # per length, the positions where every id has the same character (prefixes, separators)
    fixed = {n: [len({v[k] for v in vals}) == 1 for k in range(n)] for n, vals in by_length.items()}
    models = list(existing)
    out = []
    while len(out) < count:
        model = rng.choice(models)
        chars = []
        for k, ch in enumerate(model):
            if fixed[len(model)][k] or not ch.isalnum():
                chars.append(ch)
            elif ch.isdigit():
                chars.append(rng.choice(string.digits))
            elif ch in "abcdef" and any(c.isdigit() for c in model):  # hex-like ids stay hex
                chars.append(rng.choice("abcdef"))
            else:
                chars.append(rng.choice(string.ascii_lowercase if ch.islower() else string.ascii_uppercase))
        candidate = "".join(chars)
        if candidate not in taken:
            taken.add(candidate)
            out.append(candidate)
    return out


def _folder_layout(public: Path, train_ids: pd.Series, test_ids: pd.Series) -> tuple[str, str, str] | None:
    """(train folder, test folder, extension) when every id is one file `<id><ext>` there."""
    folders = [p for p in public.iterdir() if p.is_dir()]
    train_dirs = [p for p in folders if "train" in p.name.lower()]
    test_dirs = [p for p in folders if "test" in p.name.lower()]
    if len(train_dirs) != 1 or len(test_dirs) != 1:
        return None
    sample = next(iter(train_dirs[0].iterdir()), None)
    if sample is None:
        return None
    ext = "".join(sample.suffixes)
    names_train = {p.name for p in train_dirs[0].iterdir()}
    names_test = {p.name for p in test_dirs[0].iterdir()}
    if (all(f"{i}{ext}" in names_train for i in train_ids)
            and all(f"{i}{ext}" in names_test for i in test_ids)):
        return train_dirs[0].name, test_dirs[0].name, ext
    return None


def plan_holdout(
    public_dir: Path,
    sample_submission: Path | None,
    *,
    seed: int,
    fraction: float = DEFAULT_FRACTION,
) -> HoldoutPlan | Unsplittable:
    """The held split for a task's public files, or why there can be none."""
    public = Path(public_dir)
    if sample_submission is None or not Path(sample_submission).is_file():
        return Unsplittable(reason="no sample submission to add the held rows to")
    sample_path = Path(sample_submission)
    try:
        sample_rel = sample_path.resolve().relative_to(public.resolve()).as_posix()
    except ValueError:
        return Unsplittable(reason="the sample submission is not among the public files")
    if "/" in sample_rel:
        return Unsplittable(reason="the sample submission is in a subfolder")
    test_path = _find_table(public, "test", {sample_path.name})
    train_path = _find_table(public, "train", {sample_path.name})
    if test_path is None or train_path is None:
        return Unsplittable(reason="no single train table and test table at the top of the public files")
    sample, test, train = read_table(sample_path), read_table(test_path), read_table(train_path)
    id_col = str(sample.columns[0])
    if sample.shape[1] < 2 or id_col not in test.columns or id_col not in train.columns:
        return Unsplittable(reason=f"the sample's first column `{id_col}` is not an id shared by "
                                   "train and test")
    targets = [str(c) for c in sample.columns[1:]]
    missing = [c for c in targets if c not in train.columns]
    if missing:
        return Unsplittable(reason=f"the sample's column(s) {missing[:3]} are not train columns "
                                   "(per-class probabilities or derived targets)")
    if not train[id_col].is_unique or set(sample[id_col]) != set(test[id_col]):
        return Unsplittable(reason="the ids are not unique, or the sample's ids are not the test's")
    want = int(round(len(train) * fraction))
    count = min(MAX_ROWS, max(MIN_ROWS, want))
    if len(train) - count < MIN_TRAIN_LEFT:
        return Unsplittable(reason=f"too few training rows ({len(train)}) to hold {count} back")
    folder = None
    if any(p.is_dir() for p in public.iterdir()):
        folder = _folder_layout(public, train[id_col], test[id_col])
        if folder is None:
            return Unsplittable(reason="the data folders do not hold one `<id><ext>` file per row")
    rng = random.Random(f"holdout:{seed}")
    held = _stratified(train, targets, count, rng)
    fresh = _fresh_ids(pd.concat([train[id_col], test[id_col]]), count, rng)
    total = len(test) + count
    positions = sorted(rng.sample(range(total), count))
    order = list(range(count))
    rng.shuffle(order)  # which held row goes to which position
    return HoldoutPlan(
        seed=seed, train_table=train_path.name, test_table=test_path.name, sample_table=sample_path.name,
        id_column=id_col, target_columns=targets,
        held_train_ids=[str(train[id_col].iloc[held[i]]) for i in order], fresh_ids=fresh,
        positions=positions, folder=folder, train_rows=len(train),
        stratified=len(targets) == 1 and train[targets[0]].nunique() <= _CLASS_LIMIT)


def _stratified(train: pd.DataFrame, targets: list[str], count: int, rng: random.Random) -> list[int]:
    """Row positions of the held rows: in proportion to each class of a single categorical
    target (each class keeps at least one training row), else uniformly."""
    rows = list(range(len(train)))
    if len(targets) == 1 and train[targets[0]].nunique() <= _CLASS_LIMIT:
        by_class: dict[str, list[int]] = {}
        for i, value in enumerate(train[targets[0]]):
            by_class.setdefault(value, []).append(i)
        chosen: list[int] = []
        shares = sorted(by_class.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        for value, members in shares:
            take = min(len(members) - 1, int(round(count * len(members) / len(train))))
            chosen += rng.sample(members, max(0, take))
        taken = set(chosen)
        left = [i for i in rows if i not in taken]
        while len(chosen) < count:  # rounding: top up uniformly
            pick = rng.choice(left)
            left.remove(pick)
            chosen.append(pick)
        return sorted(chosen[:count])
    return sorted(rng.sample(rows, count))


# ---------------------------------------------------------------- the agent's view


def _place(src: Path, dest: Path) -> None:
    """A file of the view: a hard link where the file system allows it, else a copy (a symbolic
    link would point outside the sandbox's view)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _with_held_rows(real: pd.DataFrame, held: pd.DataFrame, positions: list[int]) -> pd.DataFrame:
    # rows 0..len(real)-1 are the real ones, then the held ones; `order` interleaves them
    at = set(positions)
    real_rows, held_rows = iter(range(len(real))), iter(range(len(real), len(real) + len(held)))
    order = [next(held_rows) if i in at else next(real_rows) for i in range(len(real) + len(held))]
    return pd.concat([real, held], ignore_index=True).iloc[order].reset_index(drop=True)


def build_view(public_dir: Path, plan: HoldoutPlan, view_dir: Path) -> Path:
    """Write the agent's view of the public files (idempotent for the same plan)."""
    public, view = Path(public_dir), Path(view_dir)
    tmp = view.with_name(view.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    rewritten = {plan.train_table, plan.test_table, plan.sample_table}
    for path in sorted(public.rglob("*")):
        rel = path.relative_to(public).as_posix()
        if path.is_file() and rel not in rewritten:
            _place(path, tmp / rel)
    tables = (plan.train_table, plan.test_table, plan.sample_table)
    train, test, sample = (read_table(public / t) for t in tables)
    idc = plan.id_column
    by_id = train.set_index(idc, drop=False)
    held = by_id.loc[plan.held_train_ids].reset_index(drop=True)
    train.loc[~train[idc].isin(set(plan.held_train_ids))].to_csv(tmp / plan.train_table, index=False)
    held_test = held[[c for c in test.columns]].copy()
    held_test[idc] = plan.fresh_ids
    _with_held_rows(test, held_test, plan.positions).to_csv(tmp / plan.test_table, index=False)
    defaults = sample.iloc[[0] * plan.rows].reset_index(drop=True)
    defaults[idc] = plan.fresh_ids
    _with_held_rows(sample, defaults, plan.positions).to_csv(tmp / plan.sample_table, index=False)
    if plan.folder is not None:
        train_dir, test_dir, ext = plan.folder
        for old, new in zip(plan.held_train_ids, plan.fresh_ids, strict=True):
            (tmp / train_dir / f"{old}{ext}").unlink()
            _place(public / train_dir / f"{old}{ext}", tmp / test_dir / f"{new}{ext}")
    if view.exists():
        shutil.rmtree(view)
    tmp.rename(view)
    return view


def held_answers(public_dir: Path, plan: HoldoutPlan) -> pd.DataFrame:
    """The held rows' labels under their fresh ids (the grader's answers)."""
    train = read_table(Path(public_dir) / plan.train_table).set_index(plan.id_column, drop=False)
    answers = train.loc[plan.held_train_ids, [plan.id_column, *plan.target_columns]].reset_index(drop=True)
    answers[plan.id_column] = plan.fresh_ids
    return answers


# ---------------------------------------------------------------- after an execution


def split_submission(submission: pd.DataFrame, plan: HoldoutPlan,
                     real_sample: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the held rows' predictions, the real test rows in the real sample's order, under the
    sample's own id text); ids are compared as the graders compare them (`123.0` is `123`),
    a repeated id counts once, and a real id the submission lacks is left out."""
    idc = plan.id_column
    keys = pd.Index(canonical_ids(submission[idc]))
    is_held = keys.isin(set(canonical_ids(pd.Series(plan.fresh_ids))))
    held = submission.loc[is_held].reset_index(drop=True)
    real = submission.loc[~is_held].set_axis(keys[~is_held], axis=0)
    real = real.loc[~real.index.duplicated()]
    order = pd.Index(canonical_ids(real_sample[idc]))
    present = order.isin(real.index)
    real = real.reindex(order[present]).reset_index(drop=True)
    real[idc] = real_sample[idc].to_numpy()[present]
    return held, real


def holdout_score(held: pd.DataFrame, answers: pd.DataFrame, plan: HoldoutPlan, grader: str) -> GradeResult:
    """The held rows' score with the task's grader (invalid when rows are missing)."""
    return grade_submission(grader, held.astype(str), answers.astype(str), id_column=plan.id_column,
                            target_columns=plan.target_columns)



# ---------------------------------------------------------------- one run's split

HOLDOUT_DIR = "holdout"  # under the run directory: plan, answers, the view (outside the sandbox)
KEPT_SUBMISSION = "submission.kept.csv"  # in a workspace: the real test rows of a submission
GAP_SHARE = 0.25  # a self-report better than the harness score by this share of the larger is flagged


class HeldScore(BaseModel):
    """What the harness made of one submission written for the view."""

    kept: str | None = None  # host path of the real test rows (what the node keeps)
    score: float | None = None  # the held rows' score with the task's grader
    note: str | None = None  # why there is no score


@dataclass
class HeldSplit:
    """A run's held validation split, live: scores submissions written for the view."""

    plan: HoldoutPlan
    root: Path  # run_dir/holdout
    real_sample: pd.DataFrame
    grade: Callable[[Path], Any]  # held predictions file -> object with score, valid, reason
    grader_name: str
    lower_is_better: bool

    @property
    def view(self) -> Path:
        return self.root / "view"

    def describe(self) -> str:
        """The run's one line about selection."""
        how = "stratified" if self.plan.stratified else "uniform"
        return (f"validation held by the harness: {self.plan.rows} of {self.plan.train_rows} training rows "
                f"({how}, seed {self.plan.seed}) are predicted among the test rows and scored with "
                f"{self.grader_name}; selection uses that score")

    def score(self, submission: Path, keep: Path) -> HeldScore:
        """Split a well-formed submission: keep its real test rows at `keep`, score the held ones."""
        try:
            sub = read_table(submission)
        except (OSError, ValueError) as exc:
            return HeldScore(note=f"submission unreadable: {type(exc).__name__}")
        if self.plan.id_column not in sub.columns:
            return HeldScore(note=f"submission has no `{self.plan.id_column}` column")
        held, real = split_submission(sub, self.plan, self.real_sample)
        keep.parent.mkdir(parents=True, exist_ok=True)
        real.to_csv(keep, index=False)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix="held-", suffix=".csv")
        os.close(fd)
        try:
            held.to_csv(tmp, index=False)
            try:
                result = self.grade(Path(tmp))
            except Exception as exc:  # noqa: BLE001 - a grader failure is recorded, the run goes on
                return HeldScore(kept=str(keep), note=f"grader failed: {type(exc).__name__}: {exc}"[:300])
        finally:
            Path(tmp).unlink(missing_ok=True)
        if not result.valid or result.score is None:
            return HeldScore(kept=str(keep), note=(result.reason or "not gradable")[:300])
        return HeldScore(kept=str(keep), score=float(result.score))

    def flag(self, metric: float | None, score: float | None) -> str | None:
        """A fact for the prompts when the script's own number is far better than the harness's
        (which is never shown): likely leakage or another metric."""
        if metric is None or score is None or not (math.isfinite(metric) and math.isfinite(score)):
            return None
        better_by = (score - metric) if self.lower_is_better else (metric - score)
        if better_by <= GAP_SHARE * max(abs(metric), abs(score), 1e-12):
            return None
        return (f"the script's own validation number ({metric:.6g}) is far better than what its "
                "predictions score on training rows the harness held out of input/ (their labels "
                "are not there): its validation likely leaks the target (rows it trained on, the "
                f"target or an id among the features) or computes another metric than {self.grader_name}")


def prepare_split(
    public_dir: Path, sample_submission: Path | None, root: Path, *, seed: int, fraction: float,
    may_create: bool,
) -> HoldoutPlan | Unsplittable:
    """The run's split, stored under `root` (run_dir/holdout) so a resume reuses it, with its
    view and answers (re)built when missing; `may_create` False (the run began without one)
    records that there is none."""
    root.mkdir(parents=True, exist_ok=True)
    plan_file, none_file = root / "plan.json", root / "unsplittable.json"
    if plan_file.is_file():
        plan: HoldoutPlan | Unsplittable = HoldoutPlan.model_validate_json(plan_file.read_text())
    elif none_file.is_file():
        return Unsplittable.model_validate_json(none_file.read_text())
    elif not may_create:
        plan = Unsplittable(reason="the run began without a held split")
    else:
        plan = plan_holdout(public_dir, sample_submission, seed=seed, fraction=fraction)
    if isinstance(plan, Unsplittable):
        _write(none_file, plan.model_dump_json(indent=1))
        return plan
    if not (root / "view").is_dir():
        build_view(public_dir, plan, root / "view")
    if not (root / "answers.csv").is_file():
        _write(root / "answers.csv", held_answers(public_dir, plan).to_csv(index=False))
    if not plan_file.is_file():
        _write(plan_file, plan.model_dump_json(indent=1))
    return plan


def give_up(root: Path, reason: str) -> Unsplittable:
    """Record that the run selects by the self-report after all (e.g. the grader cannot score
    the held rows); the view is removed."""
    (root / "plan.json").unlink(missing_ok=True)
    shutil.rmtree(root / "view", ignore_errors=True)
    (root / "answers.csv").unlink(missing_ok=True)
    none = Unsplittable(reason=reason)
    _write(root / "unsplittable.json", none.model_dump_json(indent=1))
    return none


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
