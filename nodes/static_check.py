"""A cheap check before spending an execution: syntax errors, undefined names, and imports of
modules (or names in modules) that the interpreter scripts run with does not have.

Importability is asked of that interpreter in a subprocess (never of the agent's own): a plain
`import X` costs one `importlib.util.find_spec` (X is not imported), a `from X import Y` imports
X there once and checks `hasattr` (or a submodule `X.Y`). Answers are cached per interpreter
for the life of the process (one run), so after the first script a check costs milliseconds.
Imports guarded by `try: ... except ImportError` are not checked: the script handles them.
A name the module does not have is reported with the module's public names closest in spelling
(`close_names`): small models misremember APIs (`from sklearn.metrics import f1_macro`), and the
repair or debug call that reads the problem then has the real name in front of it.
An undefined name that is a data split's counterpart of a name the script makes (`X_test_tfidf`
where line 22 makes `X_val_tfidf`) is reported with that line (`counterpart`): small models
often transform the train and validation rows and forget the test rows.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from functools import lru_cache

from pyflakes import checker, messages

from nodes.pyast import parse

_FATAL = (messages.UndefinedName, messages.UndefinedLocal)
PROBE_TIMEOUT_S = 60.0

# Runs in the scripts' interpreter: stdin {"modules": [...], "names": {module: [names]}};
# stdout {module: {"found": bool, "error": str|null, "dir": [...], "names": {name: bool}}}.
_PROBE = r"""
import importlib, importlib.util, json, sys
req = json.load(sys.stdin)
out = {}
for mod in req["modules"]:
    info = {"found": False, "error": None, "dir": [], "names": {}}
    try:
        info["found"] = importlib.util.find_spec(mod) is not None
    except Exception as exc:  # a parent package missing or failing to import
        info["error"] = f"{type(exc).__name__}: {exc}"[:300]
    names = req["names"].get(mod) or []
    if info["found"] and names:
        try:
            m = importlib.import_module(mod)
        except BaseException as exc:
            info["error"] = f"{type(exc).__name__}: {exc}"[:300]
        else:
            info["dir"] = [n for n in dir(m) if not n.startswith("__")]
            for n in names:
                ok = hasattr(m, n)
                if not ok:
                    try:
                        ok = importlib.util.find_spec(f"{mod}.{n}") is not None
                    except Exception:
                        ok = False
                info["names"][n] = ok
    out[mod] = info
sys.stdout.write(json.dumps(out))
"""


@dataclass
class _ModuleInfo:
    found: bool
    error: str | None = None
    names: dict[str, bool] = field(default_factory=dict)
    known: frozenset[str] = frozenset()  # the module's dir() when it was imported


@dataclass
class ImportReport:
    """Imports that would fail, one line each; `note` says when the check could not be done."""

    problems: list[str]
    note: str | None = None


class ImportChecker:
    """Which imports of a script would fail under `python` (default: this interpreter)."""

    def __init__(self, python: str | None = None, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        if python and os.sep not in python:
            python = shutil.which(python) or python
        self.python = os.path.abspath(python) if python else sys.executable
        self.timeout_s = timeout_s
        self._cache: dict[str, _ModuleInfo] = {}
        self._lock = threading.Lock()
        self.probes = 0  # subprocesses started (tests and measurements)

    def check(self, tree: ast.AST) -> ImportReport:
        """The failing imports of a parsed script."""
        wanted = _imports(tree)
        note = None
        with self._lock:
            todo = self._unknown(wanted)
            if todo:
                note = self._probe(todo)
            problems = []
            for lineno, mod, name in wanted:
                problem = self._problem(mod, name)
                if problem:
                    problems.append(f"line {lineno}: {problem}")
        return ImportReport(problems=problems, note=note)

    def _unknown(self, wanted: list[tuple[int, str, str | None]]) -> dict[str, set[str]]:
        todo: dict[str, set[str]] = {}
        for _, mod, name in wanted:
            info = self._cache.get(mod)
            if info is None:
                todo.setdefault(mod, set())
            if name is not None and (info is None or (info.found and not info.error and name not in info.names
                                                      and name not in info.known)):
                todo.setdefault(mod, set()).add(name)
        return todo

    def _probe(self, todo: dict[str, set[str]]) -> str | None:
        request = {"modules": sorted(todo), "names": {m: sorted(n) for m, n in todo.items() if n}}
        env = {"PATH": os.path.dirname(self.python) + ":/usr/bin:/bin", "LANG": "C.UTF-8",
               "HOME": tempfile.gettempdir()}
        self.probes += 1
        try:
            proc = subprocess.run([self.python, "-I", "-c", _PROBE], input=json.dumps(request),
                                  capture_output=True, text=True, timeout=self.timeout_s,
                                  cwd=tempfile.gettempdir(), env=env)
            answer = json.loads(proc.stdout)
        except subprocess.TimeoutExpired:
            return f"import check skipped: probing {', '.join(sorted(todo))} took over {self.timeout_s:.0f} s"
        except (OSError, ValueError) as exc:
            return f"import check skipped: the probe of {self.python} failed ({type(exc).__name__})"
        for mod, raw in answer.items():
            info = self._cache.get(mod)
            if info is None:
                info = self._cache[mod] = _ModuleInfo(found=bool(raw["found"]), error=raw["error"])
            info.names.update(raw["names"])
            if raw["dir"]:
                info.known = frozenset(raw["dir"])
        return None

    def _problem(self, mod: str, name: str | None) -> str | None:
        info = self._cache.get(mod)
        if info is None:  # the probe failed: unknown, reported in the note
            return None
        if info.error:
            return f"import of '{mod}' fails: {info.error}"
        if not info.found:
            return f"ModuleNotFoundError: No module named '{mod}' (not installed where scripts run)"
        if name is not None and not (name in info.known or info.names.get(name, True)):
            close = close_names(name, info.known)
            hint = f" (names it has that are close: {', '.join(repr(n) for n in close)})" if close else ""
            return f"ImportError: cannot import name '{name}' from '{mod}'{hint}"
        return None


CLOSE_MIN_CHARS = 4  # shorter names match too much by chance ('cer' ~ 'cluster')
CLOSE_CUTOFF = 0.6
CLOSE_STEM_CUTOFF = 0.5  # what is left of two names without the ending they share


def close_names(name: str, known: frozenset[str], n: int = 3) -> list[str]:
    """The public names of a module closest in spelling to a name it does not have (difflib's
    ratio, at least `CLOSE_CUTOFF`, and as close without the ending they share: `_stems_close`),
    best first: what a model that misremembers an API most likely meant ('f1_macro' in
    sklearn.metrics: 'f1_score'). None for short names."""
    if len(name) < CLOSE_MIN_CHARS:
        return []
    public = sorted(k for k in known if not k.startswith("_"))
    close = difflib.get_close_matches(name, public, n=len(public), cutoff=CLOSE_CUTOFF)
    return [k for k in close if _stems_close(name, k)][:n]


def _stems_close(name: str, other: str) -> bool:
    """Whether two names are close beyond an ending they share: 'XGBClassifier' is not close to
    'BaggingClassifier' ('XGB' ~ 'Bagging'), 'OrderDict' is to 'OrderedDict'."""
    shared = len(os.path.commonprefix([name[::-1], other[::-1]]))
    a, b = name[: len(name) - shared], other[: len(other) - shared]
    return not shared or not a or difflib.SequenceMatcher(None, a, b).ratio() >= CLOSE_STEM_CUTOFF


@lru_cache(maxsize=8)
def import_checker_for(python: str | None = None) -> ImportChecker:
    """The process-wide checker (and cache) for one interpreter."""
    return ImportChecker(python)


_GUARDS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def _guarded(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, ast.Name) and t.id in _GUARDS for t in types)


def _imports(tree: ast.AST) -> list[tuple[int, str, str | None]]:
    """(line, module, name or None) of every absolute import outside try/except ImportError."""
    found: list[tuple[int, str, str | None]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Try) and any(_guarded(h) for h in node.handlers):
            for child in (*node.handlers, *node.orelse, *node.finalbody):
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend((node.lineno, node.module, alias.name) for alias in node.names if alias.name != "*")
            if not any(alias.name != "*" for alias in node.names):
                found.append((node.lineno, node.module, None))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


# the words that name a data split, in the order a counterpart is looked for (the validation
# rows first: they are transformed like the test rows, while the train rows are fitted)
_SPLITS = ("val", "valid", "validation", "va", "test", "te", "dev", "train", "tr", "trn")


def counterpart(tree: ast.AST, code: str, name: str) -> str:
    """For an undefined `name` with a split's word in it (`X_test_tfidf`): " (like 'X_val_tfidf',
    which line 22 makes: `X_val_tfidf = vectorizer.transform(X_val)`)" when the script assigns
    the name with another split's word; "" otherwise."""
    parts = name.split("_")
    made: dict[str, ast.stmt] = {}
    for stmt in ast.walk(tree):
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With)):
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    made.setdefault(node.id, stmt)
    swapped = ("_".join([*parts[:i], word.upper() if part.isupper() else word, *parts[i + 1:]])
               for i, part in enumerate(parts) if part.lower() in _SPLITS
               for word in _SPLITS if word != part.lower())
    twins = [twin for twin in swapped if twin in made]
    if not twins:
        return ""

    def split_of_another(twin: str) -> bool:  # `X_val, y_val = X_train[...]`: made from the train twin
        return any(isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in twins
                   for n in ast.walk(made[twin]))

    twin = next((t for t in twins if not split_of_another(t)), twins[0])
    stmt = made[twin]
    return f" (like '{twin}', which line {stmt.lineno} makes: `{_first_line(code, stmt)}`)"


def _shown(text: str, limit: int = 100) -> str:
    """One line of the script as a hint quotes it: stripped, cut at `limit` characters."""
    text = text.strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _first_line(code: str, stmt: ast.stmt) -> str:
    source = (ast.get_source_segment(code, stmt) or "").splitlines()
    return _shown(source[0]) if source else ""


def assigned_later(tree: ast.AST, code: str, name: str, lineno: int) -> str:
    """For a `name` used on `lineno` before the statement that first assigns it: " (assigned
    only later, line 16: `X_train, X_val, ... = train_test_split(X, y)`: use it after that
    line)"; "" when nothing assigns it below."""
    later = [stmt for stmt in ast.walk(tree)
             if isinstance(stmt, ast.stmt) and stmt.lineno >= lineno and name in bound_by(stmt)]
    if not later:
        return ""
    below = [st for st in later if st.lineno > lineno]
    if not below:  # `a, y_tr = split(X, y_tr)`: only the line that uses it assigns it
        return " (the line that uses it is the one that assigns it: it must exist before that line)"
    stmt = min(below, key=lambda st: st.lineno)
    return f" (assigned only later, line {stmt.lineno}: `{_first_line(code, stmt)}`: use it after that line)"


def bound_by(stmt: ast.stmt) -> set[str]:
    """The names a statement binds at its own level (assignment targets, a def's or class's
    name, imports); statements of other kinds bind none here."""
    if isinstance(stmt, (ast.FunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    targets = stmt.targets if isinstance(stmt, ast.Assign) else (
        [stmt.target] if isinstance(stmt, (ast.AnnAssign, ast.AugAssign, ast.For)) else
        [i.optional_vars for i in stmt.items if i.optional_vars is not None]
        if isinstance(stmt, ast.With) else [])
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def commented_out(code: str, name: str) -> str:
    """For an undefined `name` that a comment line assigns (`# model = load_model(...)`, a
    placeholder small models leave): " (assigned only in a comment, line 14: `# model = ...`: a
    commented-out line does not run)"; "" otherwise."""
    pattern = re.compile(rf"^\s*#+\s*(?:[\w\s,]*,\s*)?{re.escape(name)}\s*(?:,[\w\s,]*)?=(?!=)")
    for i, line in enumerate(code.splitlines(), 1):
        if pattern.match(line):
            return (f" (assigned only in a comment, line {i}: `{_shown(line)}`: "
                    "a commented-out line does not run)")
    return ""


# a static failure's failure line: this, then the problems joined by "; "
STATIC_PREFIX = "static check: "


def missing_ending(code: str) -> str | None:
    """What an answer that parses lacks of a whole script's ending, or None: no text in it names
    the metric line or the submission, so it can print neither (the line must start `METRIC:`,
    the file is ./submission/submission.csv). A debug or improve answer of only the lines it
    changed; not a crash, so not one of `static_problems`."""
    try:
        tree = parse(code)
    except (SyntaxError, ValueError):
        return None
    texts = [n.value.lower() for n in ast.walk(tree)
             if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    if any("metric" in t or "submission" in t for t in texts):
        return None
    return "it never prints the 'METRIC:' line and never writes ./submission/submission.csv"


def static_problems(code: str, imports: ImportChecker | None = None) -> list[str]:
    """Problems that would certainly crash the script, as one-line strings (empty: looks runnable).

    With `imports`, imports the scripts' interpreter cannot satisfy count too."""
    return static_report(code, imports)[0]


def static_report(code: str, imports: ImportChecker | None = None) -> tuple[list[str], str | None]:
    """(problems, note): `note` says when the import check could not be done."""
    if not code.strip():
        return ["the answer contained no Python code block"], None
    try:
        tree = parse(code)
    except SyntaxError as exc:
        return [f"SyntaxError: {exc.msg} (line {exc.lineno})"], None
    except ValueError as exc:
        return [f"cannot parse the script: {exc}"], None
    result = checker.Checker(tree, filename="solution.py")
    problems = []
    for msg in result.messages:
        if isinstance(msg, _FATAL):
            problem = f"line {msg.lineno}: " + (msg.message % msg.message_args)
            if isinstance(msg, messages.UndefinedName):
                name = msg.message_args[0]
                problem += (assigned_later(tree, code, name, msg.lineno) or counterpart(tree, code, name)
                            or commented_out(code, name))
            if problem not in problems:  # a name used twice on one line is one problem
                problems.append(problem)
    note = None
    if imports is not None:
        report = imports.check(tree)
        problems = sorted(problems + report.problems, key=_line_of)
        note = report.note
    return problems, note


def _line_of(problem: str) -> int:
    head = problem.split(":", 1)[0]
    return int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else 0
