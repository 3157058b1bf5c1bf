"""The submission's column filled with the predictions for the test rows, not a validation split's.

A small model scores its validation split and then writes those predictions into the submission:
`submission['target'] = val_predictions`, where `val_predictions = model.predict(X_val)`, and
pandas stops with `Length of values (56) does not match length of index (164)`. The script has
the test rows' features already (`X_test = test[features]`: the data facts' outline puts that
line in every script), and the repair call told so slices the validation predictions to the
test table's length instead. After such a crash the harness (`nodes.execute.test_rows_fix`)
makes the failing line's value the same computation on the test rows' features: the one
`.predict(...)`/`.predict_proba(...)` call it comes from, with its argument for another split
(`X_val`, `X_val_scaled`, `X_train`) swapped for the test split's (`X_test`, `X_test_scaled`).

Only when all of these hold: the failing line is a top-level `table[...] = value` whose table the
script writes with `to_csv` to a path naming the submission; the value is, or is a name (perhaps
sliced) last assigned from, an expression with exactly one predict call on one argument that names
a split other than test; and the test split's name is assigned at the top level above the failing
line from what reads no other split (so not a piece of the train table, as
`X_val, X_test, ... = train_test_split(X_train, ...)` makes), or assigned nowhere and made by the
data facts' outline line (`X_test = test[features]`, added as `nodes.outline` adds it). Anything
else is left to the repair call and its remedy (`nodes.task_facts.rows_home`).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from nodes.pyast import parse
from nodes.source_span import span
from nodes.static_check import _SPLITS  # the split words, as the static check names counterparts

_MISMATCH = re.compile(r"Length of values \(\d+\) does not match length of index \(\d+\)"
                       r"|array length \d+ does not match index length \d+")
_PREDICTS = ("predict", "predict_proba")
_OTHER = tuple(w for w in _SPLITS if w not in ("test", "te"))


@dataclass(frozen=True)
class Repredicted:
    line: int  # the failing line
    was: str  # its value as the script had it
    now: str  # the value the harness put there
    features: str  # the test split's name the predict call now reads
    unassigned: bool = False  # the script assigns that name nowhere: the outline's line is needed


def length_mismatch(failure: str | None) -> bool:
    """Whether `failure` is pandas' error for a column given another number of values than rows."""
    return bool(_MISMATCH.search(failure or ""))


def _split_words(name: str) -> list[str]:
    return [p.lower() for p in name.split("_") if p.lower() in _SPLITS]


def _for_test(name: str) -> str | None:
    """`name` with its one split word that is not test made test (`X_val_scaled` ->
    `X_test_scaled`); None when it has no such word or several."""
    parts = name.split("_")
    at = [i for i, p in enumerate(parts) if p.lower() in _OTHER]
    if len(at) != 1:
        return None
    word = parts[at[0]]
    parts[at[0]] = "TEST" if word.isupper() else "Test" if word[0].isupper() else "test"
    return "_".join(parts)


def _predict_call(node: ast.AST) -> ast.Call | None:
    """The one predict call inside `node` on one positional argument that is a name; None when
    there is none or several."""
    calls = [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr in _PREDICTS]
    if len(calls) != 1 or len(calls[0].args) != 1 or calls[0].keywords:
        return None
    return calls[0] if isinstance(calls[0].args[0], ast.Name) else None


def _reads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def repredict(code: str, failure: str, line: int) -> tuple[str, Repredicted] | None:
    """`code` with the value of the statement on `line`, which failed with `failure`, made the
    predictions for the test rows (see the module): (the new script, what changed), or None."""
    if not length_mismatch(failure):
        return None
    try:
        tree = parse(code)
    except SyntaxError:
        return None
    stmt = next((s for s in tree.body if s.lineno <= line <= (s.end_lineno or s.lineno)), None)
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Subscript) and isinstance(stmt.targets[0].value, ast.Name)):
        return None
    table = stmt.targets[0].value.id
    written = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr == "to_csv" and isinstance(n.func.value, ast.Name)
               and n.func.value.id == table]
    if not any("submission" in (ast.get_source_segment(code, a) or "").lower()
               for n in written for a in [*n.args, *(k.value for k in n.keywords)]):
        return None
    source: ast.expr = stmt.value
    call = _predict_call(source)
    if call is None:  # `= val_predictions` or `= val_predictions[:164]`: where that name was made
        base = source.value if isinstance(source, ast.Subscript) else source
        if not isinstance(base, ast.Name):
            return None
        made = [n for n in ast.walk(tree) if isinstance(n, ast.Assign) and n.lineno < stmt.lineno
                and any(isinstance(t, ast.Name) and t.id == base.id for t in n.targets)
                and _predict_call(n.value) is not None]
        if not made:
            return None
        source = max(made, key=lambda n: n.lineno).value
        call = _predict_call(source)
        assert call is not None
    features = call.args[0].id  # type: ignore[attr-defined]
    test = _for_test(features)
    if test is None:
        return None
    makers = [s for s in tree.body if s.lineno < stmt.lineno and isinstance(s, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == test for t in s.targets)]
    unassigned = not any(isinstance(n, ast.Name) and n.id == test and isinstance(n.ctx, ast.Store)
                         for n in ast.walk(tree))
    if not makers and not unassigned:
        return None  # assigned only below, or inside a block
    if makers:
        last = makers[-1]
        if len(last.targets) != 1 or not isinstance(last.targets[0], ast.Name):
            return None  # `X_val, X_test, y_val, y_test = train_test_split(...)`: a piece of another table
        if any(set(_split_words(n)) - {"test", "te"} for n in _reads(last.value)):
            return None
    begin, end = span(code, source)
    arg_begin, arg_end = span(code, call.args[0])
    now = code[begin:arg_begin] + test + code[arg_end:end]
    value_begin, value_end = span(code, stmt.value)
    was = code[value_begin:value_end]
    return code[:value_begin] + now + code[value_end:], Repredicted(stmt.lineno, was, now, test, unassigned)
