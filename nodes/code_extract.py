"""Pull the plan and the Python script out of a model's answer (reasoning already removed)."""

from __future__ import annotations

import re
import textwrap

# An opening fence of 3+ backticks; the block ends at a line holding a fence at least as long
# (CommonMark's rule), so backticks inside the code (`print("```")`) do not cut it short.
_FENCE_RE = re.compile(
    r"(`{3,})[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:^[ \t]*\1`*[ \t]*$|\Z)", re.DOTALL | re.MULTILINE
)


def extract_plan_and_code(answer: str) -> tuple[str, str]:
    """Return (plan, code).

    The code is the largest fenced block tagged python (or untagged); an unterminated block at
    the end of a truncated answer still counts. A block indented as a whole (a fence inside a
    list item: `1. Fix it:\n   ```python\n   import os ...`) loses that common indentation, as
    markdown renders it; a top-level script never has one, so this changes no other block. With
    no fence at all, the whole answer is taken as code only if it compiles. The plan is the
    prose before the chosen block.
    """
    blocks = []
    for m in _FENCE_RE.finditer(answer):
        lang = m.group(2).lower()
        if lang in {"", "python", "py", "python3"}:
            blocks.append((m.start(), m.group(3)))
    if blocks:
        start, code = max(blocks, key=lambda b: len(b[1]))
        return answer[:start].strip(), textwrap.dedent(code).strip("\n") + "\n"
    stripped = answer.strip()
    if stripped:
        try:
            compile(stripped, "<answer>", "exec")
        except (SyntaxError, ValueError):
            return stripped, ""
        return "", stripped + "\n"
    return "", ""
