"""Scripts are parsed one thread at a time (nodes.pyast): CPython 3.11's AST constructor shares
its recursion depth between threads, and self-consistency runs its candidates' harness fixes side
by side (`SystemError: AST constructor recursion depth mismatch`, python/cpython#106905)."""

from __future__ import annotations

import ast
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nodes.pyast import parse

NODES = Path(__file__).resolve().parents[2] / "nodes"


def test_every_parse_in_nodes_goes_through_the_lock():
    direct = [f"{p.name}:{i}" for p in sorted(NODES.glob("*.py")) if p.name != "pyast.py"
              for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bast\.parse\(", line)]
    assert direct == []


def test_threads_parsing_at_once_get_the_same_trees():
    code = "\n".join(f"def f{i}(x):\n    return [[(x, {i}) for x in range(3)] for _ in range(2)]"
                     for i in range(300))
    want = ast.dump(ast.parse(code))
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda _: ast.dump(parse(code)), range(32)))
    assert got == [want] * 32
    assert isinstance(parse("1 + 2", mode="eval"), ast.Expression)
