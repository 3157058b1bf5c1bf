"""Names the data facts' outline defines, added where a script uses them without defining them.

The data facts end with the lines every script starts and ends with (`nodes.task_facts`): read
the tables, the feature list, `X, y`, `X_test`, the sample submission. Small models keep the
middle of that outline and drop one of its lines: the script then uses `X_test` or `submission`
and never assigns it, and the repair call that is shown the error often answers with a fragment.
When the static check names an undefined name that an outline line assigns, the harness adds
that line (and the outline lines it needs, such as the read of `test` for `X_test`) just before
the top-level statement that first uses the name, under a comment saying so.

A line is added only when it cannot change what the script already does: every name it assigns
is one the script never assigns anywhere, and every name it reads is assigned above the place it
goes (or by another line added there). Anything else is left to the repair call.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass

from nodes.pyast import parse

OUTLINE_COMMENT = "# added by the harness from the data facts' outline: names the script used unassigned"
_HEADER = re.compile(r"Every script (?:starts and ends|ends) like this[^\n]*\n```python\n(.*?)\n```", re.S)
_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class OutlineLine:
    text: str
    assigns: frozenset[str]  # the names the line binds
    reads: frozenset[str]  # the names it reads (builtins left out)


def outline_from_prompt(text: str) -> tuple[OutlineLine, ...]:
    """The outline lines that bind names, in order, from a prompt holding the data facts (none
    when it has no outline, e.g. with the data facts off, or the outline does not parse)."""
    found = _HEADER.search(text or "")
    if not found:
        return ()
    try:
        tree = parse(found.group(1))
    except SyntaxError:
        return ()
    lines = []
    for stmt in tree.body:
        assigns = top_bound(stmt)
        if not assigns:
            continue
        local = bound_names(stmt) - assigns  # comprehension variables: their own scope
        reads = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        source = ast.get_source_segment(found.group(1), stmt) or ""
        lines.append(OutlineLine(source, frozenset(assigns), frozenset(reads - _BUILTINS - assigns - local)))
    return tuple(lines)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp,
           ast.DictComp, ast.GeneratorExp)


def top_bound(node: ast.AST) -> set[str]:
    """The names `node` binds in the scope it runs in (not inside the functions, classes,
    lambdas and comprehensions it holds, whose own names are theirs)."""
    names: set[str] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
            continue
        if n is not node and isinstance(n, _SCOPES):
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            names.add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            names.add(n.name)
        elif isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name):
            names.add(n.target.id)
        todo.extend(ast.iter_child_nodes(n))
    return names


def bound_names(node: ast.AST) -> set[str]:
    """The names `node` binds anywhere inside it: assignments, loop and `with` targets, imports,
    functions, classes, their arguments."""
    names: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            names.add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, ast.arg):
            names.add(n.arg)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            names.add(n.name)
    return names


def add_outline_lines(code: str, undefined: list[tuple[str, int]],
                      outline: tuple[OutlineLine, ...]) -> tuple[str, list[str]] | None:
    """`code` with the outline lines that define its `undefined` names ((name, line of its first
    use), in the order of use) added before the top-level statements that first use them:
    (the new script, the lines added), or None when no name can be added safely."""
    if not outline or not undefined:
        return None
    try:
        tree = parse(code)
    except SyntaxError:
        return None
    anywhere = bound_names(tree)
    body = tree.body
    added: dict[int, list[OutlineLine]] = {}  # statement index -> the lines to put before it
    seen: set[str] = set()
    for name, line in undefined:
        if name in seen:  # its first use decides where it goes
            continue
        seen.add(name)
        at = next((i for i, s in enumerate(body) if first_line(s) <= line <= (s.end_lineno or line)), None)
        if at is None or name in anywhere:
            continue
        bound = set().union(*(top_bound(s) for s in body[:at]))
        bound.update(n for i, group in added.items() if i <= at for o in group for n in o.assigns)
        chain = _chain(name, bound, anywhere, outline, [])
        if chain:
            added.setdefault(at, []).extend(o for o in chain if o not in added.get(at, []))
    if not added:
        return None
    source = code.splitlines()
    out: list[str] = []
    for i, stmt in enumerate(body):
        start = first_line(stmt) - 1 if i else 0
        end = first_line(body[i + 1]) - 1 if i + 1 < len(body) else len(source)
        if i in added:
            out += [OUTLINE_COMMENT, *(o.text for o in added[i])]
        out += source[start:end]
    lines = [o.text for group in added.values() for o in group]
    return "\n".join(out) + "\n", lines


def first_line(stmt: ast.stmt) -> int:
    """The first line of a top-level statement, its decorators included."""
    return min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", []))])


def _chain(name: str, bound: set[str], anywhere: set[str], outline: tuple[OutlineLine, ...],
           chain: list[OutlineLine], depth: int = 0) -> list[OutlineLine] | None:
    """The outline lines, in outline order, that define `name` given the names `bound` above the
    place; None when one of them would rebind a name the script assigns or reads a name not
    available there."""
    defs = [o for o in outline if name in o.assigns]
    if not defs or depth > 4:
        return None
    for o in defs:
        if o in chain:
            continue
        if o.assigns & anywhere:
            return None  # it would rebind one of the script's own names
        earlier = {n for c in chain for n in c.assigns}
        for dep in sorted(o.reads - bound - earlier - o.assigns):
            if dep in anywhere or _chain(dep, bound, anywhere, outline, chain, depth + 1) is None:
                return None
        if o not in chain:
            chain.append(o)
    return sorted(chain, key=outline.index)
