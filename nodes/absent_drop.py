"""A drop of the target from the test table, which never had it, let pass.

Small models write `X_test = test.drop('target', axis=1)` (or `columns=['target']`) after the
same line for the train table, and pandas stops with `KeyError: "['target'] not found in axis"`:
the test table has no target column, which the data facts say and the repair call often repeats.
After such a crash the harness (`nodes.execute.absent_drop_fix`) adds `errors="ignore"` to the
`.drop(...)` calls on the failing line that name those labels, so the drop takes what is there:
the same table the script meant, its features.

Only when every label the error names is a target of the task (in the train table, not the test
table: `nodes.task_facts.column_home`), and the call has no `errors=` already. A label of any
other column (a misspelled feature, say) is left to the repair call: ignoring it would keep the
column the script meant to leave out.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from nodes.pyast import parse
from nodes.source_span import span

_NOT_FOUND = re.compile(r"KeyError: \"(\[.*?\]) not found in axis\"")


def absent_labels(failure: str | None) -> list[str]:
    """The labels of pandas' `KeyError: "['a', 'b'] not found in axis"` in `failure` (none when
    it is not that error or they are not strings)."""
    m = _NOT_FOUND.search(failure or "")
    if not m:
        return []
    try:
        labels = ast.literal_eval(m.group(1))
    except (ValueError, SyntaxError):
        return []
    return [x for x in labels if isinstance(x, str)] if all(isinstance(x, str) for x in labels) else []


def ignore_absent(code: str, failure: str, line: int, is_target: Callable[[str], bool]
                  ) -> tuple[str, list[str], list[str]] | None:
    """`code` with `errors="ignore"` added to the `.drop` calls on `line` that name the labels of
    `failure`, when each is a target (`is_target`): (the new script, the labels, the calls as they
    were), or None."""
    labels = absent_labels(failure)
    if not labels or not all(is_target(x) for x in labels):
        return None
    try:
        tree = parse(code)
    except SyntaxError:
        return None
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "drop" and n.lineno <= line <= (n.end_lineno or n.lineno)
             and not any(k.arg == "errors" for k in n.keywords)
             and set(labels) & {c.value for c in ast.walk(n) if isinstance(c, ast.Constant)}]
    if not calls:
        return None
    was = []
    for call in sorted(calls, key=lambda c: (c.lineno, c.col_offset), reverse=True):
        start, end = span(code, call)
        text = code[start:end]
        if not text.endswith(")"):
            return None
        was.append(text)
        inner = text[:-1].rstrip()
        sep = "" if inner.endswith(("(", ",")) else ", "
        code = code[:start] + inner + sep + 'errors="ignore")' + code[end:]
    return code, labels, was[::-1]
