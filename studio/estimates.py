"""The cost shown before the click, one rule for every front end.

``cost_preview(studio, request)`` is what the Streamlit pages and Gradio's tabs show under their
settings: the request's expected cost with its input priced in (prompt tokens, input images:
``Studio.quote``), what today's budget holds while it runs (the quote's bound), and what is left of
that budget. Both front ends print ``CostPreview.text()``, so the same inputs read the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from studio.service import Studio
    from studio.types import GenerationRequest


@dataclass
class CostPreview:
    """``estimate``: expected USD, input text and images included; ``bound``: the USD today's budget
    holds while it runs; ``budget_left``: USD left of today's budget (None without a budget)."""

    estimate: float
    bound: float
    budget_left: float | None = None

    def text(self) -> str:
        """One Markdown line: "Estimated cost: **$0.0051** · up to $0.0200 is held while it runs ·
        $0.95 left of today's budget" (the last two only with a budget)."""
        if self.estimate <= 0:
            return "Estimated cost: **free** (runs on this machine)"
        held = (f" · up to ${self.bound:.4f} is held while it runs"
                if self.budget_left is not None and self.bound > self.estimate else "")
        left = f" · ${self.budget_left:.2f} left of today's budget" if self.budget_left is not None else ""
        return f"Estimated cost: **${self.estimate:.4f}**{held}{left}"


@dataclass(frozen=True)
class BudgetToday:
    """Today's (UTC) spend across the whole studio and the daily budget, in USD (``budget`` None:
    no cap; 0 is a budget that allows nothing)."""

    spent: float
    budget: float | None

    @property
    def left(self) -> float | None:
        """USD left of today's budget, never below 0; None without a budget."""
        return None if self.budget is None else max(0.0, self.budget - self.spent)

    @property
    def used(self) -> float:
        """The share of the budget spent, 0 to 1 (1 for a budget of 0, 0 without a budget)."""
        if self.budget is None:
            return 0.0
        return min(1.0, self.spent / self.budget) if self.budget > 0 else 1.0


def budget_today(studio: "Studio") -> BudgetToday:
    """What the pages' spend lines show: ``studio.spent_today()`` and the ``daily_budget`` setting."""
    return BudgetToday(studio.spent_today(), studio.settings.daily_budget)


def budget_left(studio: "Studio") -> float | None:
    """USD left of today's budget (``BudgetToday.left``); None without a budget (nothing is read then)."""
    return None if studio.settings.daily_budget is None else budget_today(studio).left


def cost_preview(studio: "Studio", request: "GenerationRequest", *, count: int = 1) -> CostPreview:
    """What every front end shows before the click: ``studio.quote(request)``'s estimate and bound
    times ``count`` (requests of this kind, e.g. one per scene variation), and what is left of
    today's budget. Raises what ``Studio.prepare`` raises for a request it would refuse."""
    quote = studio.quote(request)
    return CostPreview(round(quote.estimate * count, 6), round(quote.bound * count, 6), budget_left(studio))
