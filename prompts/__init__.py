"""Prompt templates (Jinja2 text files beside this module) and a small loader."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

_DIR = Path(__file__).parent


def fenced(text: str, lang: str = "") -> str:
    """``text`` as a Markdown code block whose fence is longer than any run of backticks inside
    it, so quoted code or program output can never close the block early and pose as prompt."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["fenced"] = fenced
    return env


def render(name: str, **variables: Any) -> str:
    """Render `prompts/<name>.j2` with the given variables (missing ones are an error)."""
    return _env().get_template(f"{name}.j2").render(**variables).strip() + "\n"
