"""Assignments moved above the statement that first uses their names.

A repair answer from a small model often puts its new lines above the lines they read: the
script uses `X_train` on line 9 and assigns it with `train_test_split` on line 18, below the reads
of `train` and `features` that line needs. The static check names the line that assigns it
(`nodes.static_check.assigned_later`); a repair call shown that often writes the same order again.
The harness moves the assignment, with the top-level lines it needs that also sit below the use,
to just above the top-level statement that first uses the name, under a comment saying so.

A block is moved only when that cannot change what any statement reads:

- every moved statement is a plain top-level assignment of names (`a = ...`, `a, b = ...`) or an
  import, alone on its lines;
- every name a moved statement reads is assigned above the place it goes, or by a moved statement
  before it, and by nothing left between (so it reads the same value);
- a statement it moves past neither assigns a name the block assigns, nor reads one the block
  assigns unless that name was unassigned there (the use being fixed), nor changes in place
  (`df[c] = ...`, `.fit(...)`, `inplace=True`) what the block reads, and the block changes in
  place nothing that statement reads.

The script never ran past the failing use, so nothing it did is undone. Anything else is left to
the repair call. A `def` or `class` below its use is `hoist_fix`'s (`nodes.execute`).
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass

from nodes.outline import first_line, top_bound
from nodes.pyast import parse

REORDER_COMMENT = "# moved up by the harness: assigned below the line that first used them:"
# a static check's problem whose name a later line that is not a def or class assigns
_LATER = re.compile(r"^line \d+: undefined name '(\w+)' "
                    r"\(assigned only later, line \d+: `(?!(?:async )?(?:def|class) )")
_BUILTINS = frozenset(dir(builtins))
# methods that change their receiver in place (pandas' `inplace=True` is read from the call)
_IN_PLACE = frozenset({"fit", "fit_transform", "partial_fit", "fit_predict", "fit_resample", "append",
                       "extend", "insert", "pop", "remove", "clear", "update", "sort", "reverse",
                       "setdefault", "popitem", "add", "discard", "set_params", "shuffle"})
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass(frozen=True)
class Moved:
    names: tuple[str, ...]  # the names used above the line that assigned them
    above: int  # the first line of the statement the block went above (in the script before)
    lines: tuple[int, ...]  # the first line of each moved statement (in the script before)
    text: str  # the first moved statement's first line


def reads(stmt: ast.stmt) -> set[str]:
    """The names `stmt` reads when it runs: not those read inside the functions and lambdas it
    defines (they read when called), nor a comprehension's own loop names."""
    found: set[str] = set()
    local: set[str] = set()
    todo: list[ast.AST] = [stmt]
    while todo:
        n = todo.pop()
        if isinstance(n, _FUNCTIONS):
            args = n.args
            todo += [*getattr(n, "decorator_list", []), *args.defaults,
                     *(d for d in args.kw_defaults if d is not None)]
            continue
        if isinstance(n, _COMPREHENSIONS):
            local |= {t.id for g in n.generators for t in ast.walk(g.target) if isinstance(t, ast.Name)}
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            found.add(n.id)
        todo.extend(ast.iter_child_nodes(n))
    return found - local - _BUILTINS


def changed_in_place(stmt: ast.stmt) -> set[str]:
    """The names whose objects `stmt` may change without rebinding them: the base of a subscript
    or attribute it assigns or deletes (`df['x'] = ...`), the receiver of a method that works in
    place (`model.fit(...)`, `rows.append(...)`), the arguments of a call with `inplace=True` or of
    such a function (`numpy.random.shuffle(X)`), an augmented assignment's target."""
    found: set[str] = set()

    def base(e: ast.AST) -> str | None:
        while isinstance(e, (ast.Attribute, ast.Subscript)):
            e = e.value
        return e.id if isinstance(e, ast.Name) else None

    for n in ast.walk(stmt):
        if isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(n.ctx, (ast.Store, ast.Del)):
            found.add(base(n) or "")
        elif isinstance(n, ast.AugAssign):
            found.add(base(n.target) or "")
        elif isinstance(n, ast.Call):
            func = n.func
            method = func.attr if isinstance(func, ast.Attribute) else ""
            inplace = any(k.arg == "inplace" and not (isinstance(k.value, ast.Constant) and not k.value.value)
                          for k in n.keywords)
            if isinstance(func, ast.Attribute) and (method in _IN_PLACE or inplace):
                found.add(base(func.value) or "")
            if inplace or method == "shuffle":  # `numpy.random.shuffle(X)`
                found |= {base(a) or "" for a in n.args}
    return found - {""}


def _movable(stmt: ast.stmt) -> bool:
    """A plain assignment of names or an import: moving it moves nothing but what it binds."""
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return True
    if isinstance(stmt, ast.AnnAssign):
        return stmt.value is not None and isinstance(stmt.target, ast.Name)
    if not isinstance(stmt, ast.Assign):
        return False
    allowed = (ast.Name, ast.Tuple, ast.List, ast.Starred)
    return all(isinstance(n, allowed) or isinstance(n, ast.expr_context)
               for t in stmt.targets for n in ast.walk(t))


def _first_use(body: list[ast.stmt], name: str) -> tuple[int, int] | None:
    """(the index of the first top-level statement that reads `name` when it runs, the index of
    the first that binds it) when the first comes before the second; None otherwise."""
    use = next((i for i, s in enumerate(body) if name in reads(s)), None)
    bind = next((i for i, s in enumerate(body) if name in top_bound(s)), None)
    if use is None or bind is None or bind <= use:
        return None
    return use, bind


def _block(body: list[ast.stmt], at: int, binders: list[int]) -> list[int] | None:
    """The indices, in order, of the statements to move above `body[at]` so that the statements
    `binders` run before it, with the statements below `at` they read; None when that is not
    safe (see the module)."""
    bound_above = [top_bound(s) for s in body]
    block: set[int] = set()

    def last_binder(name: str, before: int) -> int | None:
        return next((k for k in range(before - 1, -1, -1) if name in bound_above[k]), None)

    def add(j: int) -> bool:
        if j in block:
            return True
        if j <= at or not _movable(body[j]):
            return False
        block.add(j)
        for name in reads(body[j]):
            k = last_binder(name, j)
            if k is None or (k >= at and not add(k)):
                return False
        return True

    if not all(add(j) for j in binders):
        return None
    moved = sorted(block)
    stays = [t for t in range(at, moved[-1]) if t not in block]
    for t in stays:
        later = [m for m in moved if m > t]
        bound_later = set().union(*(bound_above[m] for m in later))
        if bound_above[t] & bound_later:
            return None
        bound_before = set().union(*bound_above[:t])
        if reads(body[t]) & bound_later & bound_before:  # it read another value of that name
            return None
        changes = changed_in_place(body[t])
        for m in later:
            if changes & (reads(body[m]) | bound_above[m]):
                return None
            if changed_in_place(body[m]) & (reads(body[t]) | bound_above[t]):
                return None
    return moved


def _alone(body: list[ast.stmt], i: int) -> bool:
    """Whether top-level `body[i]` has its lines to itself (no `;` neighbour)."""
    end = body[i].end_lineno or body[i].lineno
    return ((i == 0 or (body[i - 1].end_lineno or 0) < first_line(body[i]))
            and (i + 1 == len(body) or first_line(body[i + 1]) > end))


def move_up(code: str, problems: list[str]) -> tuple[str, list[Moved]] | None:
    """`code` with the assignments of the names the static check's `problems` say are assigned
    only below their first use moved above it (see the module): (the new script, the blocks
    moved), or None when none can be moved safely."""
    wanted = list(dict.fromkeys(m.group(1) for m in map(_LATER.match, problems) if m))
    moved: list[Moved] = []
    lines = code.splitlines()
    while wanted:
        try:
            tree = parse("\n".join(lines) + "\n")
        except SyntaxError:
            return None
        body = tree.body
        found = {n: _first_use(body, n) for n in wanted}
        places = {n: p for n, p in found.items() if p is not None}
        if not places:
            break
        at = min(use for use, _ in places.values())
        names = [n for n, (use, _) in places.items() if use == at]
        wanted = [n for n in wanted if n in places and n not in names]
        block = _block(body, at, sorted({bind for n, (_, bind) in places.items() if n in names}))
        if block is None or not all(_alone(body, j) for j in block) or not _alone(body, at):
            continue
        top = first_line(body[at])
        cut = [lines[first_line(body[j]) - 1:body[j].end_lineno] for j in block]
        for j in reversed(block):
            del lines[first_line(body[j]) - 1:body[j].end_lineno]
        above = (body[at - 1].end_lineno or 0) if at else 0
        put = top  # above the comment lines right above the using statement, which are about it
        while put - 1 > above and lines[put - 2].lstrip().startswith("#"):
            put -= 1
        lines[put - 1:put - 1] = [f"{REORDER_COMMENT} {', '.join(names)}", *(t for c in cut for t in c)]
        moved.append(Moved(tuple(names), top, tuple(first_line(body[j]) for j in block), cut[0][0].strip()))
    if not moved:
        return None
    return "\n".join(lines) + "\n", moved
