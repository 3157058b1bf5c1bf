"""Data facts small models get wrong, computed once from a task's public files.

Any task, no per-task tuning: which files exist (and only those), the submission's columns and
id column, the targets (train columns the test lacks) with their classes or range, which
features are strings and which numbers, id-like columns, whether the submission wants labels or
per-class probabilities, and how table rows map to files in folders (images, audio, text).

The text is part of the run's stable prompt prefix, so it is deterministic: sorted listings,
ties broken by value, no timestamps or absolute paths.
"""

from __future__ import annotations

import csv
import difflib
import importlib.util
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd

from nodes.file_features import FileKind, measure_files
from nodes.row_counts import rows_fact

_TABLE_SUFFIXES = {".csv", ".tsv"}
_HEAD_ROWS = 5000  # rows read to classify columns
_TARGET_ROWS = 1_000_000  # rows read of a target column to count its classes
_MAP_VALUES = 200  # values of a column checked against file names
_MAX_NAMES = 20  # column names listed per kind
_MAX_CLASSES = 6
_MAX_TOP_ENTRIES = 30
_CLASS_LIMIT = 20  # an integer target with at most this many values is read as classes


@dataclass
class _Table:
    rel: str  # path under the public dir, with forward slashes
    path: Path
    head: pd.DataFrame
    rows: int | None
    # columns read whole (`_full_column`), kept with the table: a cached layout reads each once
    full: dict[str, tuple[pd.Series, bool]] = field(default_factory=dict, repr=False)


def _read_head(path: Path) -> pd.DataFrame | None:
    sep = "\t" if path.suffix == ".tsv" else ","
    try:
        return pd.read_csv(path, sep=sep, nrows=_HEAD_ROWS, low_memory=False)
    except Exception:  # noqa: BLE001 - an unreadable table is reported, never fatal
        return None


def _row_count(path: Path) -> int | None:
    """Data rows (the header not counted); quoted fields may hold newlines (free text), so a file
    with quotes is counted by the csv module, any other by its line ends."""
    if path.stat().st_size > 200 * 2**20:
        return None
    lines, quoted, last = 0, False, b"\n"
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            lines += chunk.count(b"\n")
            quoted = quoted or b'"' in chunk
            last = chunk[-1:]
    if quoted:
        sep = "\t" if path.suffix == ".tsv" else ","
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            return max(sum(1 for _ in csv.reader(fh, delimiter=sep)) - 1, 0)
    return max(lines + (last != b"\n") - 1, 0)


def _names(items: list[str], limit: int = _MAX_NAMES) -> str:
    shown = ", ".join(f"`{c}`" for c in items[:limit])
    return shown + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


def _fmt(value: object) -> str:
    if hasattr(value, "item"):  # numpy scalars as plain Python values
        value = value.item()  # type: ignore[union-attr]
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value) if isinstance(value, str) else str(value)


def _inventory(public: Path, files: list[Path]) -> str:
    """The top-level entries: files by name, folders with their file counts and kinds."""
    top_files: list[str] = []
    folders: dict[str, Counter] = {}
    for path in files:
        rel = path.relative_to(public)
        if len(rel.parts) == 1:
            top_files.append(rel.name)
        else:
            folders.setdefault(rel.parts[0], Counter())[path.suffix.lower() or "(no extension)"] += 1
    entries = [f"`{name}`" for name in sorted(top_files)]
    for folder in sorted(folders):
        kinds = folders[folder]
        total = sum(kinds.values())
        top = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        kind = ", ".join(f"{n} {ext}" for ext, n in top)
        entries.append(f"`{folder}/` ({total} files: {kind})")
    shown = entries[:_MAX_TOP_ENTRIES]
    more = f", ... and {len(entries) - len(shown)} more" if len(entries) > len(shown) else ""
    return (
        "- These are the only files under `./input/`: " + ", ".join(shown) + more
        + ". No other file exists (there is no validation file: make your own split)."
    )


def _pick(tables: list[_Table], word: str, exclude: set[str]) -> list[_Table]:
    return [t for t in tables if word in Path(t.rel).stem.lower() and t.rel not in exclude]


def _is_integer_valued(s: pd.Series) -> bool:
    if pd.api.types.is_integer_dtype(s) or pd.api.types.is_bool_dtype(s):
        return True
    if pd.api.types.is_float_dtype(s):
        v = s.dropna()
        return len(v) > 0 and bool((v == v.round()).all())
    return False


def _is_classes(s: pd.Series) -> bool:
    """Whether a target holds classes (strings, booleans, few integer values) or numbers."""
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return True
    return _is_integer_valued(s) and s.nunique() <= _CLASS_LIMIT


def _full_column(table: _Table, col: str) -> tuple[pd.Series, bool]:
    """A column read over up to `_TARGET_ROWS` rows; True when that is the whole table. Read once
    per table (kept in `table.full`); callers must not change the Series."""
    if col not in table.full:
        table.full[col] = _read_column(table, col)
    return table.full[col]


def _read_column(table: _Table, col: str) -> tuple[pd.Series, bool]:
    sep = "\t" if table.path.suffix == ".tsv" else ","
    try:
        s = pd.read_csv(table.path, sep=sep, usecols=[col], nrows=_TARGET_ROWS, low_memory=False)[col]
    except Exception:  # noqa: BLE001 - fall back to the head, and say so
        return table.head[col], table.rows is not None and len(table.head) >= table.rows
    return s, len(s) < _TARGET_ROWS


def _is_text_target(s: pd.Series) -> bool:
    """A target of strings with nearly one value per row: text to produce, not classes."""
    v = s.dropna()
    return (not pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
            and v.nunique() > _CLASS_LIMIT and v.nunique() >= 0.5 * len(v))


def _describe_target(table: _Table, col: str) -> tuple[str, list[str], bool]:
    """One line about a target column, its classes (as strings) when it holds classes, and
    whether it is text to produce."""
    s, whole = _full_column(table, col)
    scope = "" if whole else f" (counted over the first {len(s):,} rows)"
    missing = int(s.isna().sum())
    miss = f"; {missing} missing" if missing else ""
    v = s.dropna()
    if _is_text_target(s):
        text = v.astype(str)
        examples = ", ".join(_fmt(x) for x in sorted(text.unique())[:3])
        words, chars = text.str.split().str.len(), text.str.len()
        line = (f"`{col}`: text to produce, not a set of classes: {v.nunique()} distinct values in "
                f"{len(v)} rows{scope} (nearly one per row), e.g. {examples}; {words.min()} to {words.max()} "
                f"words, {chars.min()} to {chars.max()} characters{miss}. "
                "A classifier can return only values seen in training (and is slow with this many)")
        return line, [], True
    if _is_classes(s):
        counts = v.value_counts()
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        shown = ", ".join(f"{_fmt(k)}: {n}" for k, n in ordered[:_MAX_CLASSES])
        rest = len(ordered) - _MAX_CLASSES
        rarest = f"rarest {_fmt(ordered[-1][0])}: {ordered[-1][1]}"
        more = f", ... {rest} more classes ({rarest})" if rest > 0 else ""
        line = (f"`{col}`: classification, {len(ordered)} classes{scope}: {shown}{more}{miss}")
        return line, [str(k) for k, _ in ordered], False
    line = (f"`{col}`: numeric (regression), range {v.min():.6g} .. {v.max():.6g}, "
            f"mean {v.mean():.6g}, median {v.median():.6g}{scope}{miss}")
    return line, [], False


def _id_column(sample: pd.DataFrame, others: list[pd.DataFrame]) -> str | None:
    """The sample submission's id column: its first column when that is a key, not a prediction."""
    first = str(sample.columns[0])
    s = sample[first]
    in_inputs = any(first in df.columns for df in others)
    named = first.lower() == "id" or first.lower().endswith(("id", "_id")) or first.lower().startswith("id")
    unique = s.is_unique and not pd.api.types.is_float_dtype(s)
    if sample.shape[1] > 1 and (in_inputs or named or unique):
        return first
    return None


def _is_text(s: pd.Series) -> bool:
    v = s.dropna().astype(str)
    return len(v) > 0 and v.str.len().mean() > 30 and v.str.contains(" ").mean() > 0.5


class _FileIndex:
    """Non-table files under the public dir by relative path, name and stem."""

    def __init__(self, public: Path, files: list[Path]) -> None:
        self.public = public
        self.by_rel: dict[str, str] = {}
        self.by_name: dict[str, set[str]] = {}
        self.by_stem: dict[str, set[str]] = {}
        for path in files:
            if path.suffix.lower() in _TABLE_SUFFIXES or path.name == "description.md":
                continue
            rel = path.relative_to(public)
            folder = rel.parent.as_posix()
            self.by_rel[rel.as_posix()] = folder
            self.by_name.setdefault(rel.name, set()).add(folder)
            self.by_stem.setdefault(path.stem, set()).add(f"{folder}\0{path.suffix}")

    def __bool__(self) -> bool:
        return bool(self.by_rel)

    def _match(self, s: pd.Series) -> tuple[str, list[str]] | None:
        """How the column's values name files ("path", "name" or "stem") and the one or two
        places they are in, most first; None when they do not (90 % must match)."""
        if pd.api.types.is_float_dtype(s) or pd.api.types.is_bool_dtype(s):
            return None
        values = [str(v).strip().removeprefix("./") for v in s.dropna().unique()[:_MAP_VALUES]]
        if len(values) < 2:
            return None
        need = 0.9 * len(values)
        for kind, index in (("path", self.by_rel), ("name", self.by_name), ("stem", self.by_stem)):
            hits = [index[v] for v in values if v in index]
            if len(hits) < need:
                continue
            where: Counter = Counter()
            for hit in hits:
                for place in ([hit] if isinstance(hit, str) else sorted(hit)):
                    where[place] += 1
            return kind, [p for p, _ in sorted(where.items(), key=lambda kv: (-kv[1], kv[0]))[:2]]
        return None

    def mapping(self, s: pd.Series, col: str) -> str | None:
        """How the column's values name files, or None when they do not."""
        found = self._match(s)
        if found is None:
            return None
        kind, places = found
        if kind == "path":
            return f"file paths under `./input/` (`./input/<{col}>`)"
        if kind == "name":
            return "file names in " + " or ".join(
                f"`./input/{p}/`" if p != "." else "`./input/`" for p in places)
        shown = []
        for place in places:
            folder, ext = place.split("\0")
            prefix = "./input/" if folder == "." else f"./input/{folder}/"
            shown.append(f"`{prefix}<{col}>{ext}`")
        return " or ".join(shown)

    def template(self, s: pd.Series) -> tuple[str, str] | None:
        """The folder (under ./input/, "." for itself) and the f-string body naming one row's file,
        with `{name}` for the value, when every matched file is in one folder; else None."""
        found = self._match(s)
        if found is None or len(found[1]) != 1:
            return None
        kind, (place,) = found
        if kind == "path":
            return ".", "./input/{name}"
        folder, ext = place.split("\0") if kind == "stem" else (place, "")
        prefix = "./input/" if folder == "." else f"./input/{folder}/"
        return folder, prefix + "{name}" + ext

    def files_in(self, folder: str) -> list[Path]:
        """The non-table files directly in `folder` (relative to ./input/)."""
        return [self.public / rel for rel, where in self.by_rel.items() if where == folder]


def _looks_like_keys(s: pd.Series, col: str) -> bool:
    """A unique string column is a key when its name says so or its values carry digits (`r0042`,
    hashes, file stems); unique plain words (one word per row) are a feature, not an id."""
    name = col.lower()
    if name == "id" or name.endswith(("id", "_id", "key", "uuid")) or name.startswith("id"):
        return True
    return bool(s.astype(str).str.contains(r"\d").mean() > 0.5)


def _feature_lines(
    train: pd.DataFrame, features: list[str], id_col: str | None, mapped: set[str]
) -> tuple[list[str], dict[str, list[str]]]:
    """The lines about the feature columns, and the columns by kind (strings, numbers, texts, ids)."""
    strings, numbers, texts, ids = [], [], [], []
    for col in features:
        s = train[col]
        if col in mapped:
            continue
        if col == id_col:
            ids.append(col)
        elif pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            if len(s) >= 20 and s.is_unique and _is_integer_valued(s) and (
                    "id" in col.lower() or bool((s.sort_values().diff().dropna() == 1).all())):
                ids.append(col)
            else:
                numbers.append(col)
        elif _is_text(s):
            texts.append(col)
        elif len(s) >= 20 and s.dropna().is_unique and s.notna().all() and _looks_like_keys(s, col):
            ids.append(col)
        else:
            strings.append(col)
    lines = []

    def near_unique(c: str) -> bool:
        n = train[c].nunique()
        return n >= 0.5 * max(1, train[c].notna().sum()) and n > 20

    if strings:
        def distinct(c: str) -> str:
            n = train[c].nunique()
            many = near_unique(c)
            hint = (": nearly one per row, so use features of its characters (e.g. character n-grams), "
                    "not one-hot") if many else ""
            return f"`{c}` ({n} distinct{hint})"
        shown = ", ".join(distinct(c) for c in strings[:_MAX_NAMES])
        more = f" ... and {len(strings) - _MAX_NAMES} more" if len(strings) > _MAX_NAMES else ""
        if all(near_unique(c) for c in strings):  # one-hot of near-unique values learns nothing
            how = ("Turn each into character n-gram features (TfidfVectorizer(analyzer='char_wb', "
                   "ngram_range=(1, 3)) on the column as a Series) before a numeric model.")
        else:
            how = ("Encode them (for example one-hot or ordinal, with unknown categories allowed) before "
                   "a numeric model.")
        lines.append(f"- String/categorical feature columns: {shown}{more}. {how}")
    if texts:
        lines.append(f"- Free-text columns: {_names(texts)} (need a text vectorizer).")
    if numbers:
        with_missing = [c for c in numbers if train[c].isna().any()]
        miss = f" (with missing values: {_names(with_missing, 10)})" if with_missing else ""
        lines.append(f"- Numeric feature columns: {_names(numbers)}{miss}.")
    if ids:
        lines.append(f"- Id-like columns (unique per row, not a feature): {_names(ids)}.")
    return lines, {"strings": strings, "numbers": numbers, "texts": texts, "ids": ids,
                   "near_unique": [c for c in strings if near_unique(c)]}


def _submission_lines(sample_t: _Table, id_col: str | None, targets: list[str], train: _Table | None,
                      classes: dict[str, list[str]], texts: set[str]) -> list[str]:
    sample = sample_t.head
    cols = [str(c) for c in sample.columns]
    rows = f"{sample_t.rows} rows" if sample_t.rows is not None else "many rows"
    lines = [f"- Submission (`{sample_t.rel}`, {rows}): columns {_names(cols, 40)}, in this order; "
             + (f"id column `{id_col}`." if id_col else "no id column detected.")]
    preds = [c for c in cols if c != id_col]
    if not preds:
        return lines
    numeric = [c for c in preds if pd.api.types.is_numeric_dtype(sample[c])]
    in_unit = bool(numeric) and all(sample[c].dropna().between(0, 1).all() for c in numeric)
    if len(preds) > 1:
        for target in targets:
            names = set(classes.get(target, []))
            if names and sum(c in names for c in preds) >= 0.8 * len(preds):
                lines.append(f"- The submission holds per-class probabilities: one column per class of "
                             f"`{target}` (column name = class), each row's values summing to 1. "
                             "Not a label column.")
                return lines
        if len(numeric) == len(preds) and in_unit:
            sums = sample[preds].sum(axis=1)
            if len(sums) and bool(((sums - 1).abs() < 1e-3).all()):
                lines.append("- The submission holds per-class probabilities: one float column per class, "
                             "each row summing to 1. Not a label column.")
                return lines
        lines.append(f"- The submission has {len(preds)} prediction columns: one value per column and row.")
        return lines
    col = preds[0]
    target = col if col in targets else (targets[0] if len(targets) == 1 else None)
    if target is None or train is None:
        return lines
    s = sample[col].dropna()
    if target in texts:
        lines.append(f"- Submission column `{col}` holds text like the values of `{target}`, one per row.")
    elif classes.get(target):
        non_integer = pd.api.types.is_float_dtype(s) and not _is_integer_valued(s)
        if non_integer and in_unit and len(classes[target]) == 2:
            positive = sorted(classes[target])[-1]
            lines.append(f"- Submission column `{col}` holds a probability (floats in 0..1, e.g. "
                         f"{_fmt(s.iloc[0])}) of `{target}` = {positive}, not a hard label.")
        else:
            lines.append(f"- Submission column `{col}` holds a class label (one of the classes of "
                         f"`{target}`), not a probability.")
    else:
        lines.append(f"- Submission column `{col}` holds a number: the predicted `{target}`.")
    return lines


def _order(sample_t: _Table, test_t: _Table | None, id_col: str | None) -> tuple[str, str | None]:
    """How the sample's rows relate to the test table's rows: (a comment for the prediction
    line, a line that puts the test table in the sample's row order when it is not already)."""
    if test_t is None or id_col is None or id_col not in test_t.head.columns:
        return "in the order of the sample submission's rows", None
    ids, whole = _full_column(sample_t, id_col)
    test_ids, test_whole = _full_column(test_t, id_col)
    if not (whole and test_whole):
        return f"in the sample's row order (match the rows to `{test_t.rel}` by `{id_col}`)", None
    if len(ids) == len(test_ids) and bool((ids.astype(str).values == test_ids.astype(str).values).all()):
        return (f"one per row of `{test_t.rel}`, in its row order (the sample lists the same "
                f"`{id_col}`s in the same order)"), None
    reorder = (f"test = test.set_index({id_col!r}).loc[pd.read_csv('./input/{sample_t.rel}')[{id_col!r}]]"
               ".reset_index()  # the sample's row order, which is not the test file's")
    return "one per row of `test`, after the reordering above", reorder


def _hold_out(test_t: _Table) -> str:
    """The outline's word on validation data: a part of the training rows (small models validate
    on the test table, dropping or checking for a target it never has)."""
    return f"hold out part of X, y for validation (`{test_t.rel}` has no labels)"


_NEAREST = ("the target is text with nearly one value per row: a first model returns the target of "
            "the most similar training row (KNeighborsClassifier(n_neighbors=1))")


def _start(train_t: _Table, test_t: _Table, targets: list[str], kinds: dict[str, list[str]],
           reorder: str | None, text_target: bool = False) -> tuple[list[str], list[str], list[str]]:
    """The first lines of a tabular script (both tables, one feature list for train and test),
    what to do to the features (`prep`) and how to train (`fit`), for `_middle`;
    `text_target`: the target is text to produce (a nearest-row model to start with)."""
    ids = kinds["ids"]
    y = f"train[{targets[0]!r}]" if len(targets) == 1 else f"train[{targets!r}]"
    lines = ["import pandas as pd",
             f"train = pd.read_csv('./input/{train_t.rel}')",
             f"test = pd.read_csv('./input/{test_t.rel}')"]
    if reorder:
        lines.append(reorder)
    used = kinds["strings"] + kinds["numbers"] + kinds["texts"]
    words = used if len(used) == 1 and (kinds["texts"] or kinds.get("near_unique")) else []
    if words:
        # one column of strings: a Series, which a text vectorizer takes as it is (iterating a
        # DataFrame yields its column names, so a vectorizer given one sees one "document")
        col = words[0]
        lines += [f"X, y = train[{col!r}], {y}  # the one feature: a Series of strings, which a text "
                  "vectorizer takes as it is (given a DataFrame, it reads the column name)",
                  f"X_test = test[{col!r}]  # the same column"]
        how = ("TfidfVectorizer(analyzer='char_wb', ngram_range=(1, 3))"
               if col in kinds.get("near_unique", []) else "TfidfVectorizer()")
        model = "KNeighborsClassifier(n_neighbors=1)" if text_target else "<a classifier or regressor>"
        prep: list[str] = []
        fit = [f"train a pipeline that vectorizes the strings first "
               f"(model = make_pipeline({how}, {model}), whose fit and predict take the Series as it is"
               + ("; the target is text with nearly one value per row: this returns the target of the "
                  "most similar training row, a start to improve on" if text_target else "") + ")"]
    else:
        if ids:
            lines.append(f"features = [c for c in test.columns if c not in {ids!r}]  "
                         "# the columns train and test share, without id-like columns")
        else:
            lines.append("features = list(test.columns)  # the columns train and test share")
        lines += [f"X, y = train[features], {y}",
                  "X_test = test[features]  # the same columns, in the same order"]
        prep = ["encode the string columns"] if kinds["strings"] else []
        if kinds["texts"]:
            text = kinds["texts"][0]
            prep += [f"vectorize each free-text column as a Series (X[{text!r}]; in a ColumnTransformer "
                     f"name it as a string, ('text', TfidfVectorizer(), {text!r}), not as a list)"]
        fit = [*([_NEAREST] if text_target else []), "train"]
    return lines, prep, fit


_SPLIT = ["from sklearn.model_selection import train_test_split",
          "X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.2, random_state=0)"]


def _middle(test_t: _Table, prep: list[str], fit: list[str], *, split: bool, per_class: bool) -> list[str]:
    """The middle of the outline. With `split` (scikit-learn where scripts run), as code: the
    validation rows held out of X, y (small models validate on the test table, or score their
    test predictions against the validation labels), the training left to the script, the
    validation predictions; else one comment line saying all of it."""
    if not split:
        return [f"# ... {', '.join([*prep, _hold_out(test_t), *fit, 'validate', 'predict X_test'])} ..."]
    lines = [_SPLIT[0], _SPLIT[1] + f"  # validation rows held out of the training rows "
             f"(`{test_t.rel}` has no labels)",
             f"# ... {', '.join([*prep, *[f if f != 'train' else 'train `model`' for f in fit]])} "
             "on X_train, y_train ..."]
    if per_class:
        lines.append("# validation_score = the competition's metric of y_val and model.predict_proba(X_val)")
    else:
        lines += ["val_predictions = model.predict(X_val)  # the held-out rows' predictions (never X_test's)",
                  "# validation_score = the competition's metric of y_val and val_predictions"]
    return lines


@dataclass
class _FileRows:
    """Rows that are files: the train and test tables' columns naming them, the f-string body
    of one row's path (`{name}` for the value), and what the files are (`FileKind`)."""
    train_col: str
    train_path: str
    test_col: str
    test_path: str
    kind: FileKind


def _file_rows(index: _FileIndex, train_t: _Table | None, test_t: _Table | None,
               mapped: dict[str, set[str]], installed: frozenset[str] | None
               ) -> tuple[list[str], _FileRows | None]:
    """Lines about the files the tables' columns name (one per folder, measured), and the rows
    the outline reads when train and test each name files of one readable type."""
    lines: list[str] = []
    where: dict[str, tuple[str, str, str]] = {}  # table -> (column, path template, folder)
    kinds: dict[str, FileKind | None] = {}
    for table in (train_t, test_t):
        if table is None:
            continue
        for col in sorted(mapped.get(table.rel, set())):
            found = index.template(table.head[col])
            if found is None:
                continue
            folder, path = found
            where.setdefault(table.rel, (col, path, folder))
            if folder not in kinds:
                kinds[folder] = measure_files(index.files_in(folder), installed)
                if kinds[folder] is not None:
                    shown = "`./input/`" if folder == "." else f"`./input/{folder}/`"
                    notes = "".join(f" ({note})" for note in kinds[folder].notes)
                    lines.append(f"- Files in {shown}: {kinds[folder].fact}{notes}.")
    if train_t is None or test_t is None or train_t.rel not in where or test_t.rel not in where:
        return lines, None
    train_col, train_path, train_folder = where[train_t.rel]
    test_col, test_path, test_folder = where[test_t.rel]
    kind, test_kind = kinds.get(train_folder), kinds.get(test_folder)
    if kind is None or test_kind is None or kind.kind != test_kind.kind or not kind.reader:
        return lines, None
    return lines, _FileRows(train_col, train_path, test_col, test_path, kind)


def _files_start(train_t: _Table, test_t: _Table, targets: list[str], rows: _FileRows,
                 reorder: str | None) -> tuple[list[str], list[str], list[str]]:
    """The first lines of a script whose rows are files (both tables, a function reading one file
    into a vector, `X` and `X_test` stacked in the tables' row order), with `_start`'s prep and fit."""
    y = f"train[{targets[0]!r}]" if len(targets) == 1 else f"train[{targets!r}]"
    lines = ["import numpy as np", "import pandas as pd", *rows.kind.imports,
             f"train = pd.read_csv('./input/{train_t.rel}')",
             f"test = pd.read_csv('./input/{test_t.rel}')"]
    if reorder:
        lines.append(reorder)
    lines += [*rows.kind.reader,
              f"X = np.stack([features_of(f'{rows.train_path}') for name in train[{rows.train_col!r}]])"
              "  # one row per file, in the table's row order",
              f"y = {y}",
              f"X_test = np.stack([features_of(f'{rows.test_path}') for name in test[{rows.test_col!r}]])"]
    return lines, [], ["train"]


def _skeleton(sample_t: _Table, train_t: _Table | None, test_t: _Table | None, id_col: str | None,
              preds: list[str], targets: list[str], per_class: bool,
              kinds: dict[str, list[str]] | None, files: _FileRows | None = None,
              texts: set[str] | None = None, split: bool = True) -> str:
    """The lines every script needs, for this task's files and submission format, as a code
    block: for a table of features or rows that are files, the first lines (one feature list,
    or one reader of a file, for train and test); always the last (the metric line, the
    submission in the sample's format and row order)."""
    comment, reorder = _order(sample_t, test_t, id_col)
    start = None
    chosen = [c for c in targets if c in preds] or targets[:1]
    begun = None
    if train_t is not None and test_t is not None and targets and files is not None:
        begun = _files_start(train_t, test_t, chosen, files, reorder)
    elif train_t is not None and test_t is not None and targets and kinds and (
            kinds["numbers"] or kinds["strings"] or kinds["texts"]):
        begun = _start(train_t, test_t, chosen, kinds, reorder,
                       text_target=bool(set(chosen) & (texts or set())))
    elif reorder:
        comment = f"in the sample's row order (match the rows of `{test_t.rel}` by `{id_col}`)"
    coded = begun is not None and split  # the split and the validation predictions written out
    if begun is not None:
        head, prep, fit = begun
        start = [*head, *_middle(test_t, prep, fit, split=split, per_class=per_class)]  # type: ignore[arg-type]
    lines = ["import os", *(start or ["import pandas as pd",
                                      "# ... load, split, train, validate, predict the test set ..."]),
             "print(f\"METRIC: {validation_score}\")  # the metric on held-out data, on its own line"]
    if coded and preds and not per_class:
        lines.append("test_predictions = model.predict(X_test)  # refit on all of X, y first if you like")
    lines.append(f"submission = pd.read_csv('./input/{sample_t.rel}')")
    if not preds:
        lines.append("# fill in the predictions " + comment)
    elif per_class:
        lines += [f"# {comment}; columns in the sample's order",
                  "proba = pd.DataFrame(model.predict_proba(X_test), "
                  "columns=[str(c) for c in model.classes_])",
                  "pred_columns = list(submission.columns[1:])" if id_col else
                  "pred_columns = list(submission.columns)",
                  "submission[pred_columns] = proba[pred_columns].values"]
    elif len(preds) == 1:
        lines.append(f"submission[{preds[0]!r}] = test_predictions  # {comment}")
    else:
        shown = preds if len(preds) <= 6 else preds[:6] + ["..."]
        lines.append(f"submission[{shown!r}] = test_predictions  # shape (rows, {len(preds)}); {comment}")
    lines += ['os.makedirs("./submission", exist_ok=True)',
              'submission.to_csv("./submission/submission.csv", index=False)']
    what = "starts and ends" if start else "ends"
    return (f"- Every script {what} like this (fill in the middle; keep the metric line and the "
            "submission format):\n```python\n" + "\n".join(lines) + "\n```")


@dataclass
class _Layout:
    """Which table is which: the sample submission, the test and the train table, the
    submission's id column and prediction columns, and the targets (train columns the test
    lacks, else the predictions the train table has)."""
    files: list[Path]
    tables: list[_Table]
    unreadable: list[str]
    sample_t: _Table | None
    test_t: _Table | None
    train_t: _Table | None
    id_col: str | None
    preds: list[str]
    targets: list[str]


def _layout(public: Path, sample_submission: Path | None) -> _Layout:
    """The folder's layout, read once while its files stay as they are: every failure of a run
    looks its value or column up in the same tables (`value_home`, `column_home`, the harness's
    vectorizer), and reading them (the heads, the row counts, whole columns) is the slow part.
    Keyed by each file's path, size and change time, so a table written since is read again.
    Callers must not change what it holds."""
    files = sorted((p for p in public.rglob("*") if p.is_file() and p.name != "description.md"),
                   key=lambda p: p.relative_to(public).as_posix())
    stamp = []
    for p in files:
        st = p.stat()
        stamp.append((p.relative_to(public).as_posix(), st.st_size, st.st_mtime_ns))
    return _cached_layout(public, sample_submission, tuple(stamp))


@lru_cache(maxsize=8)
def _cached_layout(public: Path, sample_submission: Path | None,
                   stamp: tuple[tuple[str, int, int], ...]) -> _Layout:
    files = [public / rel for rel, _, _ in stamp]
    tables: list[_Table] = []
    unreadable: list[str] = []
    for path in files:
        if path.suffix.lower() not in _TABLE_SUFFIXES:
            continue
        rel = path.relative_to(public).as_posix()
        head = _read_head(path)
        if head is None or head.shape[1] == 0:
            unreadable.append(rel)
            continue
        tables.append(_Table(rel=rel, path=path, head=head, rows=_row_count(path)))
    sample_t = None
    if sample_submission is not None:
        try:
            sample_rel = Path(sample_submission).resolve().relative_to(public.resolve()).as_posix()
        except ValueError:
            sample_rel = None
        sample_t = next((t for t in tables if t.rel == sample_rel), None)
    if sample_t is None:
        named = [t for t in tables if "submission" in Path(t.rel).stem.lower()]
        sample_t = named[0] if len(named) == 1 else None
    used = {sample_t.rel} if sample_t else set()
    tests = _pick(tables, "test", used)
    test_t = tests[0] if tests else None
    if test_t is not None:
        used.add(test_t.rel)
    trains = _pick(tables, "train", used)
    # the train table overlapping most with the submission's and the test's columns
    wanted = set(sample_t.head.columns if sample_t else []) | set(test_t.head.columns if test_t else [])
    trains.sort(key=lambda t: (-len(wanted & set(t.head.columns)), t.rel))
    train_t = trains[0] if trains else None

    id_col = None
    if sample_t is not None:
        others = [t.head for t in (train_t, test_t) if t is not None]
        id_col = _id_column(sample_t.head, others)
    preds = [str(c) for c in sample_t.head.columns if c != id_col] if sample_t else []
    targets: list[str] = []
    if train_t is not None:
        train_cols = [str(c) for c in train_t.head.columns]
        if test_t is not None:
            targets = [c for c in train_cols if c not in set(map(str, test_t.head.columns))]
        if not targets:
            targets = [c for c in preds if c in train_cols]
    return _Layout(files, tables, unreadable, sample_t, test_t, train_t, id_col, preds, targets)


def _features(lay: _Layout) -> list[str]:
    """The train table's feature columns: those the test shares, or all but the targets."""
    assert lay.train_t is not None
    src = lay.train_t.head
    if lay.test_t is not None:
        return [str(c) for c in src.columns if c in set(lay.test_t.head.columns)]
    return [str(c) for c in src.columns if str(c) not in lay.targets]


def data_facts(public_dir: Path, sample_submission: Path | None = None,
               installed: frozenset[str] | None = None) -> str:
    """The facts, as markdown bullet lines (deterministic for the same files). `installed`: the
    distributions installed where scripts run (None: this interpreter's), which decide the
    reader of files in folders the outline may use."""
    public = Path(public_dir)
    lay = _layout(public, sample_submission)
    files, tables = lay.files, lay.tables
    if not files:
        return "- `./input/` holds no data files."
    lines = [_inventory(public, files)]
    if lay.unreadable:
        lines.append(f"- Could not read as tables: {_names(lay.unreadable)}.")
    counted = rows_fact([(t.rel, t.rows, t.head.shape[1]) for t in tables][:_MAX_NAMES])
    if counted:
        lines.append(counted)
    sample_t, test_t, train_t = lay.sample_t, lay.test_t, lay.train_t
    id_col, preds, targets = lay.id_col, lay.preds, lay.targets

    classes: dict[str, list[str]] = {}
    texts: set[str] = set()  # targets that are text to produce
    if train_t is not None:
        if targets:
            shown = targets[:5]
            what = "the targets, or columns you cannot use as features" if len(targets) > 1 else "the target"
            if test_t is not None:
                lines.append(f"- `{train_t.rel}` columns that `{test_t.rel}` lacks ({what}): "
                             f"{_names(targets)}.")
            else:
                lines.append(f"- Target column(s) in `{train_t.rel}`: {_names(targets)}.")
            predicted = [c for c in targets if c in preds]
            if test_t is not None and preds and predicted and len(predicted) < len(targets):
                lines.append(f"- Of these the submission asks for: {_names(predicted)}; do not use the "
                             "others as features (the test has none).")
            for col in shown:
                line, cls, text = _describe_target(train_t, col)
                lines.append(f"- {line}.")
                if cls:
                    classes[col] = cls
                if text:
                    texts.add(col)
        else:
            lines.append(f"- No target column found in `{train_t.rel}` (it has the same columns as "
                         "the test).")
    if sample_t is not None:
        lines.extend(_submission_lines(sample_t, id_col, targets, train_t, classes, texts))
    else:
        lines.append("- No sample submission found: follow the task description for the submission format.")

    index = _FileIndex(public, files)
    mapped: dict[str, set[str]] = {}
    files = None
    if index:
        for table in tables:
            for col in table.head.columns:
                how = index.mapping(table.head[col], str(col))
                if how is not None:
                    lines.append(f"- `{table.rel}` column `{col}` names files: {how}.")
                    mapped.setdefault(table.rel, set()).add(str(col))
        if not mapped:
            lines.append("- No table column names the files in the folders; see the task description "
                         "for how files map to rows.")
        file_lines, files = _file_rows(index, train_t, test_t, mapped, installed)
        lines.extend(file_lines)

    kinds: dict[str, list[str]] | None = None
    if train_t is not None:
        feature_lines, kinds = _feature_lines(train_t.head, _features(lay), id_col,
                                              mapped.get(train_t.rel, set()))
        lines.extend(feature_lines)
    if sample_t is not None:
        per_class = any("per-class probabilities" in line for line in lines)
        sklearn = ("scikit-learn" in installed if installed is not None
                   else importlib.util.find_spec("sklearn") is not None)
        lines.append(_skeleton(sample_t, train_t, test_t, id_col, preds, targets, per_class,
                               None if mapped else kinds, files, texts, split=sklearn))
    return "\n".join(lines)


# ---------------------------------------------------------------- where a value in an error message lives


@dataclass(frozen=True)
class ValueHome:
    """The column of the task's tables that holds a value an error message quotes (`could not
    convert string to float: 'chamness'`), and what that column is, so a remedy can say what to
    do with that column instead of guessing which column it was."""
    value: str
    column: str
    table: str  # the table's path under ./input/
    role: str  # "target", "feature" or "id"
    kind: str  # target: "text" (to produce), "classes" or "numeric"; feature: "near_unique" (strings
    #            with nearly one value per row), "strings" (categories) or "texts" (free text)
    train: str | None  # the train table's path under ./input/
    test: str | None  # the test table's path under ./input/
    features: tuple[str, ...]  # the feature columns (the test's, without id-like ones)
    strings: tuple[tuple[str, str], ...]  # the feature columns of strings, each with its kind


def _holds(table: _Table, col: str, value: str) -> bool:
    """Whether a string column of the table has `value` as a whole cell (over up to
    `_TARGET_ROWS` rows; a numeric column never does)."""
    s = table.head[col]
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return False
    if (s.dropna().astype(str).str.strip() == value).any():
        return True
    if table.rows is not None and len(table.head) >= table.rows:
        return False
    full, _ = _full_column(table, col)
    return bool((full.dropna().astype(str).str.strip() == value).any())


def value_home(public_dir: Path, value: str, sample_submission: Path | None = None) -> ValueHome | None:
    """Where `value` (stripped) is a whole cell of the train or the test table (up to
    `_TARGET_ROWS` rows of a column): the target is looked at first, then the features and id-like
    columns; None when no column holds it or the tables cannot be told apart."""
    value = value.strip()
    public = Path(public_dir)
    if not value or not public.is_dir():
        return None
    lay = _layout(public, sample_submission)
    if lay.train_t is None:
        return None
    train = lay.train_t.head
    features = _features(lay)
    _, kinds = _feature_lines(train, features, lay.id_col, set())

    def kind_of(col: str) -> str:
        if col in kinds["texts"]:
            return "texts"
        return "near_unique" if col in kinds["near_unique"] else "strings"

    strings = tuple((c, kind_of(c)) for c in features if c in kinds["strings"] or c in kinds["texts"])
    common = dict(value=value, table=lay.train_t.rel, train=lay.train_t.rel,
                  test=lay.test_t.rel if lay.test_t else None,
                  features=tuple(c for c in features if c not in kinds["ids"]), strings=strings)
    for col in lay.targets:
        if col in train.columns and _holds(lay.train_t, col, value):
            s = train[col]
            kind = "text" if _is_text_target(s) else "classes" if _is_classes(s) else "numeric"
            return ValueHome(column=col, role="target", kind=kind, **common)
    for tab in (lay.train_t, lay.test_t):
        if tab is None:
            continue
        for col in features:
            if col not in tab.head.columns or not _holds(tab, col, value):
                continue
            common["table"] = tab.rel
            if col in kinds["ids"]:
                return ValueHome(column=col, role="id", kind="id", **common)
            return ValueHome(column=col, role="feature", kind=kind_of(col), **common)
    return None


@dataclass(frozen=True)
class ColumnHome:
    """Which of the task's tables have a column a KeyError names, so the remedy can say where it
    is (the target only in train) or what the tables have instead (names close to it)."""
    name: str
    role: str  # "target" (train only), "shared" (train and test), "train-only", "test-only" or "none"
    train: str | None  # the train table's path under ./input/
    test: str | None
    close: tuple[str, ...]  # columns of either table named like it (spelling, case), for "none"
    columns: tuple[str, ...]  # the train table's columns (the first 30), for "none"
    id_col: str | None = None  # the submission's id column


def column_home(public_dir: Path, name: str, sample_submission: Path | None = None) -> ColumnHome | None:
    """Where a column named `name` is among the train and test tables; None when the tables
    cannot be told apart, or no table has it and no column is named like it (then the KeyError
    is as likely a dict key as a column)."""
    public = Path(public_dir)
    if not name or not public.is_dir():
        return None
    lay = _layout(public, sample_submission)
    if lay.train_t is None:
        return None
    train_cols = [str(c) for c in lay.train_t.head.columns]
    test_cols = [str(c) for c in lay.test_t.head.columns] if lay.test_t else []
    in_train, in_test = name in train_cols, name in test_cols
    if in_train and name in lay.targets:
        role = "target"
    elif in_train and in_test:
        role = "shared"
    elif in_train or in_test:
        role = "train-only" if in_train else "test-only"
    else:
        role = "none"
    close: tuple[str, ...] = ()
    if role == "none":
        every = list(dict.fromkeys(train_cols + test_cols))
        folded = {c.lower(): c for c in every}
        close = tuple(dict.fromkeys(
            [folded[m] for m in difflib.get_close_matches(name.lower(), list(folded), n=3, cutoff=0.6)]))
        if not close:
            return None
    test = lay.test_t.rel if lay.test_t else None
    return ColumnHome(name=name, role=role, train=lay.train_t.rel, test=test, close=close,
                      columns=tuple(train_cols[:30]), id_col=lay.id_col)


# ---------------------------------------------------------------- a table filled with values for other rows


@dataclass(frozen=True)
class RowsHome:
    """A length mismatch (`Length of values (56) does not match length of index (164)`) where the
    table being filled has one row per test row: the values are predictions for other rows (a
    validation split, the train table), put where the test rows' predictions go."""
    values: int  # how many values were put in
    rows: int  # the rows of the table being filled: the test table's
    test: str  # the test table's path under ./input/
    sample: str | None  # the sample submission's path under ./input/
    train: str | None
    train_rows: int | None
    preds: tuple[str, ...]  # the submission's prediction columns
    id_col: str | None


def rows_home(public_dir: Path, values: int, rows: int,
              sample_submission: Path | None = None) -> RowsHome | None:
    """The `RowsHome` of a mismatch between `values` values and a table of `rows` rows, when that
    is the test table's row count and `values` is not; None otherwise (the tables cannot be told
    apart, or their counts say nothing about it)."""
    public = Path(public_dir)
    if values == rows or not public.is_dir():
        return None
    lay = _layout(public, sample_submission)
    if lay.test_t is None or lay.test_t.rows != rows:
        return None
    train_rows = lay.train_t.rows if lay.train_t else None
    sample = lay.sample_t.rel if lay.sample_t else None
    return RowsHome(values=values, rows=rows, test=lay.test_t.rel, sample=sample,
                    train=lay.train_t.rel if lay.train_t else None, train_rows=train_rows,
                    preds=tuple(lay.preds), id_col=lay.id_col)
