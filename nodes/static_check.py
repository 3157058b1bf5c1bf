"""A cheap check before spending an execution: syntax errors and undefined names."""

from __future__ import annotations

import ast

from pyflakes import checker, messages

_FATAL = (messages.UndefinedName, messages.UndefinedLocal)


def static_problems(code: str) -> list[str]:
    """Problems that would certainly crash the script, as one-line strings (empty: looks runnable)."""
    if not code.strip():
        return ["the answer contained no Python code block"]
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return [f"SyntaxError: {exc.msg} (line {exc.lineno})"]
    except ValueError as exc:
        return [f"cannot parse the script: {exc}"]
    result = checker.Checker(tree, filename="solution.py")
    problems = []
    for msg in result.messages:
        if isinstance(msg, _FATAL):
            problems.append(f"line {msg.lineno}: " + (msg.message % msg.message_args))
    return problems
