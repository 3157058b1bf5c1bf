"""Strategies by name: each maps to the builder of its (uncompiled) graph."""

from __future__ import annotations

from collections.abc import Callable

from langgraph.graph import StateGraph

from graphs.search import build_search_graph

STRATEGIES: dict[str, Callable[[], StateGraph]] = {
    "aide": build_search_graph,
}


class UnknownStrategyError(Exception):
    """The user named a strategy that does not exist."""


def graph_builder(name: str) -> Callable[[], StateGraph]:
    """The graph builder of a strategy; UnknownStrategyError (one line) when unknown."""
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise UnknownStrategyError(f"unknown strategy '{name}' (known: {known})") from None
