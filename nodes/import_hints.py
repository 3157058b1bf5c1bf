"""Hints the debug and repair prompts add for an error text: the usual remedy of a known error,
and the import line of an undefined name.

Known errors (prompts/known_errors.yaml): a regular expression on the error text -> the usual
remedy in one line (which may quote what the pattern's named groups caught); the debug and
repair prompts add the first match as "Known remedy: ...". A static failure with problems of
several kinds gets one remedy for each kind (`known_remedies`), as "Known remedies, one for each
kind of problem listed:".

Where an undefined name usually comes from: `LogisticRegression` -> `from sklearn.linear_model
import LogisticRegression`, `np` -> `import numpy as np`.

Small models often use a class or function they never import. The static check catches the
undefined name; the repair and debug prompts then add the import line, looked up in the public
names of the common data-science modules installed here (a lookup, so whatever version is
installed is what it says).

Imports the harness adds (`auto_imports`, used by `nodes.execute.import_fix`): where an undefined
name has an unambiguous import line, the harness adds that line to the script before any repair
call, and records that it did (a repair record of stage "imports" on the node, with the lines).
Names that are as likely a forgotten variable (short ones, scipy.stats' distributions) only get
the prompt's hint.
"""

from __future__ import annotations

import ast
import importlib
import re
import types
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

import prompts
from nodes.static_check import STATIC_PREFIX
from nodes.task_facts import column_home, rows_home, value_home

_TABLE = Path(prompts.__file__).parent / "known_errors.yaml"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


# ---------------------------------------------------------------- known-error guidance


@dataclass(frozen=True)
class KnownError:
    name: str
    pattern: re.Pattern[str]
    remedy: str


@lru_cache(maxsize=4)
def known_errors(path: Path = _TABLE) -> tuple[KnownError, ...]:
    """The table, in file order (first match wins); a malformed table raises ValueError."""
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a list of {{name, pattern, remedy}} entries")
    table = []
    for i, entry in enumerate(raw):
        try:
            name, pattern, remedy = str(entry["name"]), re.compile(entry["pattern"]), str(entry["remedy"])
            table.append(KnownError(name, pattern, remedy.strip()))
        except (KeyError, TypeError, re.error) as exc:
            raise ValueError(f"{path}: entry {i + 1} is malformed ({exc})") from exc
    return tuple(table)


def _first_match(texts: tuple[str | None, ...]) -> tuple[KnownError, re.Match[str]] | None:
    """The first table entry that matches any of the texts (the failure line, the output's end),
    with its match: an entry that reads the traceback (the script's own line that failed) comes
    before a generic one the failure line alone matches."""
    for entry in known_errors():
        for text in texts:
            found = entry.pattern.search(text) if text else None
            if found:
                return entry, found
    return None


def match_known_error(*texts: str | None) -> KnownError | None:
    """The table entry for the error texts, as `known_remedy` picks it."""
    hit = _first_match(texts)
    return hit[0] if hit else None


def known_remedy(*texts: str | None) -> str | None:
    """The one-line remedy for the error texts (`_first_match`), or None when the table has
    none. A remedy may quote what the pattern's named groups caught (`{value}`: the value in the
    error message)."""
    hit = _first_match(texts)
    return _worded(*hit) if hit else None


def _worded(entry: KnownError, found: re.Match[str]) -> str:
    """The entry's remedy with what the pattern's named groups caught filled in."""
    caught = {k: (v or "")[:80] for k, v in found.groupdict().items()}
    return _PLACEHOLDER.sub(lambda m: caught.get(m.group(1), m.group(0)), entry.remedy)


def static_remedies(problems: str, limit: int = 3) -> list[tuple[str, str]]:
    """(entry name, remedy) for a static check's problems (one per line): each line's first
    matching entry, each entry once (its first line's wording), at most `limit`, in the problems'
    order. A script with three problems of three kinds gets all three remedies, not only the first."""
    found: dict[str, str] = {}
    for line in problems.splitlines():
        entry = match_known_error(line)
        if entry is not None and entry.name not in found and len(found) < limit:
            found[entry.name] = known_remedy(line) or entry.remedy
    return list(found.items())


def known_remedies(problems: str, limit: int = 3) -> list[str]:
    """The remedies of `static_remedies`, without their names."""
    return [remedy for _, remedy in static_remedies(problems, limit)]


# a value an error quotes that a column of the task's tables may hold (Python's float() and int(),
# pandas' to_numeric), as repr() wrote it: in single or double quotes, with escapes (`\n`, `\'`)
_QUOTED_VALUE = re.compile(
    r"(?:could not convert string to float|invalid literal for int\(\) with base \d+|Unable to parse string)"
    r""":? (?P<quoted>'(?:[^'\\\n]|\\.){1,5000}'|"(?:[^"\\\n]|\\.){1,5000}")""")


# the column a pandas KeyError names: `KeyError: 'category'`, `KeyError: "['category'] not found in
# axis"`, `KeyError: "['a', 'b'] not in index"`, `KeyError: "None of [Index(['a'], dtype='object')] are in
# the [columns]"` (the names of a list: the columns the table lacks)
_KEY_ERROR = re.compile(
    r"KeyError: (?:'(?P<bare>[^'\n]{1,80})'|\"(?:None of \[Index\()?\[(?P<listed>'[^\]\n]*)\])")


# a column or table given as many values as other rows: pandas' wordings, (values, rows)
_LENGTHS = re.compile(r"Length of values \((?P<values>\d+)\) does not match length of index \((?P<rows>\d+)\)"
                      r"|[Aa]rray length (?P<values2>\d+) does not match index length (?P<rows2>\d+)")


def _unquote(quoted: str) -> str:
    """The value a repr() wrote (`'a\\nb'` -> a, newline, b); as written when it is not one."""
    try:
        value = ast.literal_eval(quoted)
    except (ValueError, SyntaxError):
        return quoted[1:-1]
    return value if isinstance(value, str) else quoted[1:-1]


def quoted_value(*texts: str | None) -> str | None:
    """The value the first text quoting one says could not be made a number (`could not convert
    string to float: 'chamness'` -> chamness), as repr() wrote it unescaped; None when none does."""
    for text in texts:
        found = _QUOTED_VALUE.search(text) if text else None
        if found:
            return _unquote(found.group("quoted"))
    return None


def located_remedy(data: Path | str | None, *texts: str | None) -> str | None:
    """The remedy for a value an error quotes, worded for the column of the task's tables that
    holds it (`nodes.task_facts.value_home` on `data`, the ./input/ the script read): what that
    column is (the target, a feature of words, an id) and what to do with it, where the table's
    generic entry could only list the cases. Likewise for the column a KeyError names
    (`column_home`): the target only train has, a column both tables have (then a changed table
    lost it), or the columns named like it; and for a length mismatch in a table of one row per
    test row (`rows_home`): values for other rows (a validation split) where the test rows'
    predictions go. None when no text quotes a value or a key or names such lengths, `data` is
    not there, or the tables say nothing about it."""
    located = _located(data, *texts)
    return located[1] if located else None


def _located(data: Path | str | None, *texts: str | None) -> tuple[str, str] | None:
    """(`located:<role>/<kind>`, the remedy) of `located_remedy`."""
    if data is None or not Path(data).is_dir():
        return None
    for text in texts:
        found = _QUOTED_VALUE.search(text) if text else None
        if found:
            home = value_home(Path(data), _unquote(found.group("quoted")))
            if home is None:
                return None
            return f"located:{home.role}/{home.kind}", prompts.render("value_home", home=home).strip()
        key = _KEY_ERROR.search(text) if text else None
        if key:
            bare, listed = key.group("bare"), key.group("listed")
            names = [bare] if bare else re.findall(r"'([^']{1,80})'", listed)
            homes = [h for h in (column_home(Path(data), n) for n in names[:10]) if h is not None]
            if not homes:
                return None
            # a list names the columns a table lacks: the target among them is what went wrong
            column = next((h for h in homes if h.role == "target"), homes[0])
            return f"located:column/{column.role}", prompts.render("column_home", home=column).strip()
        lengths = _LENGTHS.search(text) if text else None
        if lengths:
            values = int(lengths.group("values") or lengths.group("values2"))
            rows = rows_home(Path(data), values, int(lengths.group("rows") or lengths.group("rows2")))
            if rows is None:
                return None
            kind = ("train" if rows.values == rows.train_rows
                    else "split" if rows.train_rows and rows.values < rows.train_rows else "other")
            return f"located:rows/{kind}", prompts.render("rows_home", home=rows).strip()
    return None


def named_failure_remedies(failure: str | None, *texts: str | None,
                           data: Path | str | None = None) -> list[tuple[str, str]]:
    """(name, remedy) for a failed run: for a static failure (its failure line is STATIC_PREFIX
    and the problems), one for each kind of problem (`static_remedies`); otherwise the remedy for
    a value the error quotes that a column of `data` (the ./input/ the script read) holds
    (`located_remedy`, named `located:<role>/<kind>`), else the remedy of the first text,
    `failure` first, that the table knows (named by its entry), if any."""
    if failure and failure.startswith(STATIC_PREFIX):
        found = static_remedies("\n".join(failure[len(STATIC_PREFIX):].split("; ")))
        if found:
            return found
    located = _located(data, failure, *texts)
    if located:
        return [located]
    hit = _first_match((failure, *texts))
    remedy = _worded(*hit) if hit else ""
    return [(hit[0].name, remedy)] if hit and remedy else []


def failure_remedies(failure: str | None, *texts: str | None, data: Path | str | None = None) -> list[str]:
    """The remedies of `named_failure_remedies`, without their names."""
    return [remedy for _, remedy in named_failure_remedies(failure, *texts, data=data)]


# ---------------------------------------------------------------- the import line of an undefined name

# conventional module aliases and plain modules
_ALIASES = {
    "np": "import numpy as np", "pd": "import pandas as pd", "plt": "import matplotlib.pyplot as plt",
    "sns": "import seaborn as sns", "lgb": "import lightgbm as lgb", "xgb": "import xgboost as xgb",
    "torch": "import torch", "nn": "import torch.nn as nn", "F": "import torch.nn.functional as F",
}
_PLAIN = ("os", "sys", "re", "json", "math", "random", "time", "glob", "pickle", "warnings", "itertools",
          "collections", "pathlib", "string", "functools", "shutil", "csv", "gc", "scipy", "sklearn")
# searched in this order; the first module with the name wins
_MODULES = (
    "sklearn.model_selection", "sklearn.linear_model", "sklearn.ensemble", "sklearn.metrics",
    "sklearn.preprocessing", "sklearn.pipeline", "sklearn.compose", "sklearn.impute",
    "sklearn.feature_extraction.text", "sklearn.svm", "sklearn.neighbors", "sklearn.tree",
    "sklearn.naive_bayes", "sklearn.decomposition", "sklearn.feature_selection", "sklearn.cluster",
    "sklearn.neural_network", "sklearn.calibration", "sklearn.utils", "scipy.stats", "scipy.sparse",
    "collections", "pathlib", "lightgbm", "xgboost", "catboost",
)
_UNDEFINED = re.compile(r"(?:undefined name|NameError: name) '(\w+)'")


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    found: dict[str, str] = {}
    for module in _MODULES:
        try:
            mod = importlib.import_module(module)
        except Exception:  # noqa: BLE001 - a module that is not installed (or breaks) offers nothing
            continue
        declared = getattr(mod, "__all__", None)
        for name in declared or [n for n in dir(mod) if not n.startswith("_")]:
            try:
                obj = getattr(mod, name, None) if isinstance(name, str) and name[:1].isalpha() else None
            except Exception:  # noqa: BLE001 - a lazy attribute that refuses (experimental APIs)
                continue
            if obj is None or isinstance(obj, types.ModuleType):
                continue  # submodules are not what an undefined name means
            if declared is None and not str(getattr(obj, "__module__", "")).startswith(module):
                continue  # without __all__: only what the module defines, not what it imported
            found.setdefault(name, f"from {module} import {name}")
    return found


def import_for(name: str) -> str | None:
    """The usual import line for `name`, or None when it is not an importable public name."""
    if name in _ALIASES:
        return _ALIASES[name]
    if name in _PLAIN:
        return f"import {name}"
    return _index().get(name)


def missing_imports(*texts: str | None) -> list[str]:
    """The import lines for the undefined names the texts mention (each once, in order)."""
    lines: list[str] = []
    for text in texts:
        for name in _UNDEFINED.findall(text or ""):
            line = import_for(name)
            if line and line not in lines:
                lines.append(line)
    return lines


# ---------------------------------------------------------------- imports the harness adds

# a name this short, or a scipy.stats distribution (`norm`, `t`), is as likely a variable the
# script forgot to define as something to import: the prompts suggest the import, nothing is added
_AUTO_MIN_LEN = 3
_AUTO_NEVER = ("from scipy.stats import",)


def auto_import_for(name: str) -> str | None:
    """The import line the harness may add for an undefined `name`: a conventional alias, a plain
    module, or an unambiguous public name of the common modules; None when adding one would be a
    guess (see `_AUTO_NEVER`)."""
    if name in _ALIASES or name in _PLAIN:
        return import_for(name)
    line = import_for(name)
    if line is None or len(name) < _AUTO_MIN_LEN or line.startswith(_AUTO_NEVER):
        return None
    return line


def auto_imports(problems: list[str]) -> dict[str, str]:
    """{undefined name: the import line the harness may add} for static-check problems."""
    found: dict[str, str] = {}
    for problem in problems:
        for name in _UNDEFINED.findall(problem):
            line = auto_import_for(name)
            if line is not None:
                found.setdefault(name, line)
    return found
