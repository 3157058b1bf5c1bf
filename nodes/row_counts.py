"""Row counts named in shape errors: which table (or split of one) each count is.

Small models often put the predictions of one table into another: the validation split's
predictions into the test table's submission, the train table's target beside the test's
features, a text DataFrame (whose iteration yields its column names) where one column was
meant. The error then says only `Length of values (56) does not match length of index (164)` or
`inconsistent numbers of samples: [2, 413]`; the remedy in prompts/known_errors.yaml says what
to do in general. This module says which arrays they are: the data facts state each table's
rows (`rows_fact`, in the stable prefix), and `count_note` matches the counts an error names to
those rows, to the size of either part of a train/validation split of a table, to two tables
together, to a table's column count, and to a little under a table's rows (rows dropped). No
LLM call; a count that matches nothing is said to match nothing.
"""

from __future__ import annotations

import math
import re

ROWS_PREFIX = "- Rows per table (header not counted): "
_ROWS_LINE = re.compile(re.escape(ROWS_PREFIX) + r"(.*)")
_ROWS_ITEM = re.compile(r"`([^`]+)` (\d+) rows(?: x (\d+) columns)?")
# the test fractions a split commonly holds out (train_test_split's test_size)
_SPLITS = (0.1, 0.15, 0.2, 0.25, 0.3, 1 / 3, 0.5)
# errors that name the row counts of arrays that should match
_COUNT_ERRORS = (
    re.compile(r"inconsistent numbers of samples: \[([\d, ]+)\]"),
    re.compile(r"Length of values \((\d+)\) does not match length of index \((\d+)\)"),
    re.compile(r"[Aa]rray length (\d+) does not match index length (\d+)"),
    re.compile(r"size of axis is (\d+) but size of corresponding boolean axis is (\d+)"),
    re.compile(r"Length mismatch: Expected axis has (\d+) elements, new values have (\d+) elements"),
    re.compile(r"Shape of passed values is \((\d+), \d+\), indices imply \((\d+), \d+\)"),
    re.compile(r"operands could not be broadcast together with shapes \((\d+),?[\d,]*\) \((\d+),?[\d,]*\)"),
    re.compile(r"Lengths must match to compare', \((\d+),?\), \((\d+),?\)"),
    re.compile(r"Found array with (\d+) sample\(s\)"),
)
_MAX_COUNTS = 4


def rows_fact(tables: list[tuple[str, int | None, int]]) -> str | None:
    """The data-facts line of each table's rows and columns: (name, rows or None, columns)."""
    items = [f"`{name}` {rows} rows x {cols} columns" for name, rows, cols in tables if rows is not None]
    return ROWS_PREFIX + ", ".join(items) + "." if items else None


def table_rows(text: str | None) -> dict[str, tuple[int, int | None]]:
    """{table: (rows, columns)} from a prompt holding the data facts' rows line (empty without it)."""
    found = _ROWS_LINE.search(text or "")
    if not found:
        return {}
    return {name: (int(rows), int(cols) if cols else None)
            for name, rows, cols in _ROWS_ITEM.findall(found.group(1))}


def error_counts(*texts: str | None) -> list[int]:
    """The distinct row counts a shape error names, in order (first text that has one)."""
    for text in texts:
        for pattern in _COUNT_ERRORS:
            found = pattern.search(text or "")
            if found:
                counts = [int(n) for g in found.groups() for n in re.findall(r"\d+", g)]
                return list(dict.fromkeys(counts))[:_MAX_COUNTS]
    return []


def _split_parts(rows: int, frac: float) -> tuple[int, int]:
    """(the validation part, the training part) of train_test_split(test_size=frac) on `rows` rows."""
    held = math.ceil(frac * rows)
    return held, rows - held


def _percent(frac: float) -> str:
    return f"{frac * 100:.0f} %"


def what_count(n: int, tables: dict[str, tuple[int, int | None]]) -> str | None:
    """What `n` is among the tables: their rows, a split's parts, two tables' rows together,
    or a table's column count (None when it is none of those)."""
    exact = [name for name, (rows, _) in tables.items() if rows == n]
    if exact:
        return "the rows of " + " and of ".join(f"`{name}`" for name in exact)
    for frac in _SPLITS:
        for name, (rows, _) in tables.items():
            held, kept = _split_parts(rows, frac)
            if n == held and rows > n:
                return f"as many as the validation part of a {_percent(frac)} split of `{name}` ({rows} rows)"
            if n == kept and rows > n:
                return f"as many as the training part of a {_percent(frac)} split of `{name}` ({rows} rows)"
    names = list(tables)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if tables[a][0] + tables[b][0] == n:
                return f"the rows of `{a}` and `{b}` together"
    cols = [name for name, (_, c) in tables.items() if c == n]
    if cols:
        return (f"the number of columns of `{cols[0]}`: a table was used where one column was meant "
                "(iterating a DataFrame yields its column names)")
    # a little under a table's rows: rows dropped (dropna, a filter) from one array only
    under = sorted((rows - n, name) for name, (rows, _) in tables.items() if 0.8 * rows <= n < rows)
    if under:
        fewer, name = under[0]
        return f"{fewer} fewer than the {tables[name][0]} rows of `{name}` (rows dropped or filtered)"
    return None


def count_note(tables: dict[str, tuple[int, int | None]], *texts: str | None) -> str | None:
    """One line naming what each row count of a shape error is, or None when the error names no
    counts or no table's rows are known."""
    counts = error_counts(*texts)
    if not counts or not tables:
        return None
    parts = []
    for n in counts:
        what = what_count(n, tables)
        parts.append(f"{n} = {what}" if what else f"{n} = no table's rows, nor a split of one")
    return ("Row counts in this error: " + "; ".join(parts) + ". Arrays used together must come from "
            "the same rows: fit on a split's features with that split's target, score on the validation "
            "part, and predict the submission from the test table's features (one prediction per test row).")
