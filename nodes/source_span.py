"""Where an AST node's source lies in a script, as indices into the script's text.

`ast` gives 1-based lines and UTF-8 byte columns; slicing a `str` needs character indices, and the
two differ on any line with a non-ASCII character before the column (`"naïve – café"`). The
harness's AST rewrites (`nodes.removed_api`, `nodes.execute.vectorize_fix`) cut and splice the
script's text through these.
"""

from __future__ import annotations

import ast


def char_offset(code: str, lineno: int, col_offset: int) -> int:
    """The index into `code` of an AST position (1-based line, UTF-8 byte column)."""
    lines = code.splitlines(keepends=True)
    return sum(map(len, lines[:lineno - 1])) + len(lines[lineno - 1].encode()[:col_offset].decode())


def span(code: str, node: ast.AST) -> tuple[int, int]:
    """`(start, end)` such that `code[start:end]` is `node`'s source."""
    return (char_offset(code, node.lineno, node.col_offset),  # type: ignore[attr-defined]
            char_offset(code, node.end_lineno or node.lineno,  # type: ignore[attr-defined]
                        node.end_col_offset or 0))  # type: ignore[attr-defined]
