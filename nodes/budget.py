"""A run's compute budget: tokens (prompt + completion) and seconds (LLM seconds plus script
execution seconds: compute used, not the wall time of waiting), and the rule that stops the
search before a step it cannot pay for. Pure functions of numbers, tested without any LLM.

The rule (`budget_stop`): before each step, predict its cost (the largest cost of one step of the
branch so far) and stop when the use so far plus that prediction would pass the budget, or when
the budget is spent already. Nothing is used before the first step and nothing predicts its
cost, so the first step of a run always runs (a budget is positive).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cost:
    """Compute: prompt + completion tokens, and LLM + script execution seconds."""

    tokens: int = 0
    seconds: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.tokens + other.tokens, self.seconds + other.seconds)

    def largest(self, other: Cost) -> Cost:
        """The larger of the two in each measure."""
        return Cost(max(self.tokens, other.tokens), max(self.seconds, other.seconds))

    @staticmethod
    def total(costs: Iterable[Cost]) -> Cost:
        """The sum of `costs`."""
        out = Cost()
        for c in costs:
            out += c
        return out

    @staticmethod
    def largest_of(costs: Iterable[Cost]) -> Cost:
        """The largest of `costs` in each measure (zero for none)."""
        out = Cost()
        for c in costs:
            out = out.largest(c)
        return out

    def as_dict(self) -> dict[str, Any]:
        """`{"tokens", "seconds"}` (seconds rounded to the millisecond), for JSON."""
        return {"tokens": self.tokens, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class Budget:
    """The most a run may use; None: that measure is not bounded."""

    tokens: int | None = None
    seconds: float | None = None

    @property
    def bounded(self) -> bool:
        """Whether any measure is bounded."""
        return self.tokens is not None or self.seconds is not None

    def as_dict(self) -> dict[str, Any]:
        """`{"tokens", "seconds"}`, None where not bounded, for JSON."""
        return {"tokens": self.tokens, "seconds": self.seconds}


@dataclass(frozen=True)
class BudgetStop:
    """Why the search stops before a step: which measure, how much is used, the prediction."""

    measure: str  # "tokens" or "seconds"
    limit: float
    used: float
    predicted: float

    def as_dict(self) -> dict[str, Any]:
        """The record kept in the search state and summary.json."""
        return {"measure": self.measure, "limit": self.limit, "used": round(self.used, 3),
                "predicted": round(self.predicted, 3)}


def budget_stop(budget: Budget, used: Cost, largest_step: Cost) -> BudgetStop | None:
    """The reason to expand no further, or None: a bounded measure whose use has reached its
    budget, or whose use plus the next step's predicted cost would pass it.

    The prediction is `largest_step`, the largest cost one step of this branch has had so far
    in that measure (zero before the first step). Why the largest and not the mean or the last:
    steps of one run differ several-fold (a draft that fails the static check costs one call and
    no execution; a working script adds a review and a whole training run; a strategy's step
    holds N samples or R rounds, each with its repairs), and compute-matched comparisons rely on
    the budget holding. With the mean about every other stop would come after a step that passed
    the budget; with the largest a step passes it only when it costs more than every step of the
    branch before it, at the price of stopping up to one step's cost early."""
    for measure, limit, spent, next_cost in (("tokens", budget.tokens, used.tokens, largest_step.tokens),
                                             ("seconds", budget.seconds, used.seconds, largest_step.seconds)):
        if limit is not None and (spent >= limit or spent + next_cost > limit):
            return BudgetStop(measure=measure, limit=limit, used=spent, predicted=next_cost)
    return None


def describe_stop(stop: dict[str, Any], step: int) -> str:
    """One line about a budget stop (a `BudgetStop.as_dict()` record) before `step` (0-based)."""
    unit = " tokens" if stop.get("measure") == "tokens" else " s"
    used, limit, predicted = stop.get("used", 0), stop.get("limit", 0), stop.get("predicted", 0)
    return (f"stopped by the {stop.get('measure')} budget before step {step + 1}: {used:g}{unit} of "
            f"{limit:g}{unit} used, the next step would take about {predicted:g}{unit}")
