"""Strategies by name. `aide` is the plain tree search; every other strategy is a graph that
turns one request into one executed candidate and serves as the search's expansion operator."""

from __future__ import annotations

from collections.abc import Callable

from langgraph.graph import StateGraph

from graphs.planner_coder import build_planner_coder_graph
from graphs.self_consistency import build_self_consistency_graph
from graphs.self_reflection import build_self_reflection_graph

STRATEGIES: dict[str, Callable[[], StateGraph] | None] = {
    "aide": None,
    "self_consistency": build_self_consistency_graph,
    "self_reflection": build_self_reflection_graph,
    "planner_coder": build_planner_coder_graph,
}


class UnknownStrategyError(Exception):
    """The user named a strategy that does not exist."""


def strategy_builder(name: str) -> Callable[[], StateGraph] | None:
    """The expansion graph's builder (None for plain AIDE); UnknownStrategyError when unknown."""
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise UnknownStrategyError(f"unknown strategy '{name}' (known: {known})") from None
