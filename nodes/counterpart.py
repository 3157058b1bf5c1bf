"""A split's line the script forgot, made from the line it wrote for another split.

Small models transform the train and the test rows and forget the validation rows: the script
assigns `X_test_scaled = scaler.transform(X_test)` and later uses `X_val_scaled`, which nothing
assigns. The static check names the counterpart (`nodes.static_check.counterpart`); when that
line is a plain assignment whose right side reads the other split's names, the harness writes
the same line for the missing split (`X_val_scaled = scaler.transform(X_val)`) just before the
top-level statement that first uses it, under a comment saying so.

A line is added only when it cannot change what the script already does and reads only what
exists there: the missing name is assigned nowhere in the script, the counterpart's right side
names the other split (so the new line is not a copy of it) and fits nothing (`fit_transform`
becomes `transform`: the validation and test rows are transformed with what the train rows
fitted; a `fit` or `fit_predict` is left to the repair call), and every name the new line reads
is assigned at the top level above the place it goes. Anything else is left to the repair call.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass

from nodes.outline import bound_names, first_line, top_bound
from nodes.pyast import parse
from nodes.static_check import _SPLITS  # the split words the static check names counterparts by

COUNTERPART_COMMENT = "# added by the harness: the line the script wrote for another split, for this one:"
# a static check's problem with the counterpart it names
_LIKE = re.compile(r"^line (\d+): undefined name '(\w+)' \(like '(\w+)', which line (\d+) makes: ")
_FITS = ("fit", "fit_predict", "partial_fit")
_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class Counterpart:
    name: str  # the name the script uses unassigned
    twin: str  # the name the script assigns for the other split
    line: str  # the line the harness adds
    before: int  # the line of the top-level statement it goes above


def _swap(name: str, twin: str) -> tuple[str, str] | None:
    """(the split word of `name`, that of `twin`) when the two names differ in that word only."""
    a, b = name.split("_"), twin.split("_")
    if len(a) != len(b):
        return None
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if len(diff) != 1 or a[diff[0]].lower() not in _SPLITS or b[diff[0]].lower() not in _SPLITS:
        return None
    return a[diff[0]], b[diff[0]]


def _renamed(ident: str, old: str, new: str) -> str:
    parts = ident.split("_")
    return "_".join(new if p == old else new.upper() if p == old.upper() else p for p in parts)


def _made(tree: ast.Module, twin: str, line: int) -> ast.Assign | None:
    for s in tree.body:
        if (isinstance(s, ast.Assign) and s.lineno == line and len(s.targets) == 1
                and isinstance(s.targets[0], ast.Name) and s.targets[0].id == twin):
            return s
    return None


def _for_split(value: ast.expr, new: str, old: str) -> ast.expr | None:
    """`value` with the names of split `old` made those of `new`, its fit_transform calls
    transform; None when it names no such name or fits something."""
    value = parse(ast.unparse(value), mode="eval").body  # a copy to change
    renamed = False
    for node in ast.walk(value):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in _FITS:
                return None
            if node.func.attr == "fit_transform":
                node.func.attr = "transform"
        if isinstance(node, ast.Name) and _renamed(node.id, old, new) != node.id:
            node.id, renamed = _renamed(node.id, old, new), True
    return value if renamed else None


def find_counterparts(code: str, problems: list[str]) -> list[Counterpart]:
    """The lines to add for the static check's `problems` (see the module), in the order of
    the problems; each name once."""
    try:
        tree = parse(code)
    except SyntaxError:
        return []
    anywhere = bound_names(tree)
    body = tree.body
    found: list[Counterpart] = []
    for m in map(_LIKE.match, problems):
        if not m or m.group(2) in anywhere or any(c.name == m.group(2) for c in found):
            continue
        used, name, twin, line = int(m.group(1)), m.group(2), m.group(3), int(m.group(4))
        words = _swap(name, twin)
        stmt = _made(tree, twin, line)
        at = next((i for i, s in enumerate(body) if s.lineno <= used <= (s.end_lineno or s.lineno)), None)
        if words is None or stmt is None or at is None:
            continue
        value = _for_split(stmt.value, *words)
        if value is None:
            continue
        reads = {n.id for n in ast.walk(value) if isinstance(n, ast.Name)} - _BUILTINS
        bound = set().union(*(top_bound(s) for s in body[:at]), *(c.name for c in found if c.before <= used))
        if reads - bound:
            continue
        found.append(Counterpart(name, twin, f"{name} = {ast.unparse(value)}", first_line(body[at])))
    return found


def add_counterparts(code: str, problems: list[str]) -> tuple[str, list[Counterpart]] | None:
    """`code` with the lines of `find_counterparts` added above the statements that first use
    their names: (the new script, the lines added), or None when there is none to add."""
    found = find_counterparts(code, problems)
    if not found:
        return None
    lines = code.splitlines()
    # bottom first; of two lines above one statement, the later first (the earlier goes above it)
    for _, c in sorted(enumerate(found), key=lambda ic: (ic[1].before, ic[0]), reverse=True):
        lines[c.before - 1:c.before - 1] = [f"{COUNTERPART_COMMENT} {c.twin}", c.line]
    return "\n".join(lines) + "\n", found
