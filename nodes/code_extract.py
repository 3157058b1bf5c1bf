"""Pull the plan and the Python script out of a model's answer (reasoning already removed)."""

from __future__ import annotations

import re

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_plan_and_code(answer: str) -> tuple[str, str]:
    """Return (plan, code).

    The code is the largest fenced block tagged python (or untagged); an unterminated block at
    the end of a truncated answer still counts. With no fence at all, the whole answer is taken
    as code only if it compiles. The plan is the prose before the chosen block.
    """
    blocks = []
    for m in _FENCE_RE.finditer(answer):
        lang = m.group(1).lower()
        if lang in {"", "python", "py", "python3"}:
            blocks.append((m.start(), m.group(2)))
    if blocks:
        start, code = max(blocks, key=lambda b: len(b[1]))
        return answer[:start].strip(), code.strip("\n") + "\n"
    stripped = answer.strip()
    if stripped:
        try:
            compile(stripped, "<answer>", "exec")
        except (SyntaxError, ValueError):
            return stripped, ""
        return "", stripped + "\n"
    return "", ""
