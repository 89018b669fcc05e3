"""One rule for "budget left today" (issue 12 §1): the batch preview the Batch page, Gradio's Batch
tab, the CLI and the job API show takes it from ``studio.estimates`` like every other front end,
so a day whose spend ran past the budget (a provider may bill more than its bound) reads $0 left,
never a negative amount."""

from __future__ import annotations

import pytest

from studio.estimates import BudgetToday, budget_left
from studio.jobs import JobManager


def test_batch_preview_budget_left_is_the_estimates_rule_never_below_zero(echo_studio, monkeypatch):
    echo_studio.settings.daily_budget = 0.05
    monkeypatch.setattr(echo_studio, "spent_today", lambda: 0.08)  # booked actuals past the budget
    preview = JobManager(echo_studio).preview("a harbour at night", provider="echo")
    assert budget_left(echo_studio) == BudgetToday(0.08, 0.05).left == 0.0
    assert preview.budget_remaining == 0.0
    assert preview.to_dict()["budget_remaining"] == 0.0
    assert not preview.within_budget  # a paid scene still does not fit


def test_batch_preview_budget_left_within_budget_and_without_one(echo_studio, monkeypatch):
    monkeypatch.setattr(echo_studio, "spent_today", lambda: 0.02)
    jobs = JobManager(echo_studio)
    echo_studio.settings.daily_budget = 0.05
    preview = jobs.preview("a harbour at night", provider="echo")
    assert preview.budget_remaining == pytest.approx(budget_left(echo_studio)) == 0.03
    assert preview.within_budget
    echo_studio.settings.daily_budget = None
    preview = jobs.preview("a harbour at night", provider="echo")
    assert preview.budget_remaining is None and preview.within_budget
