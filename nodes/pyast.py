"""Python source parsed to an AST, one thread at a time.

CPython 3.11's AST constructor keeps its recursion depth in state the interpreter's threads share:
two threads building AST objects at once (self-consistency runs its candidates, and their
harness fixes, side by side) can fail with `SystemError: AST constructor recursion depth
mismatch (before=54, after=50)` (python/cpython#106905; seen in the compare-strategies notebook's
sweep). Every parse of a script in nodes/ goes through `parse`, which holds one lock while it
builds the tree; walking and unparsing a built tree need no lock.
"""

from __future__ import annotations

import ast
import threading
from typing import Any

_LOCK = threading.Lock()


def parse(source: str, filename: str = "<unknown>", mode: str = "exec") -> Any:
    """`ast.parse(source, filename, mode)` (an `ast.Module` for "exec"), never at the same time as
    another thread's; SyntaxError as it raises."""
    with _LOCK:
        return ast.parse(source, filename, mode)
