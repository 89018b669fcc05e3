"""F12: fixes of the faults A12 found in issue 12's work (tests/test_attack_issue12.py holds the
attacks themselves); these pin the parts of each fix that the attack tests do not reach."""

from __future__ import annotations

import pytest

from studio.jobs.model import Job, JobStatus
from studio.webhooks import JOB_API_OPTION


def a_job(**fields) -> Job:
    return Job(id="j1", owner="alice", status=JobStatus.COMPLETED, provider="echo", model="echo-1", **fields)


# --- fault 5: whose webhook a job view shows -----------------------------------------------------


def test_a_callers_own_webhook_is_shown_to_it_and_the_operators_is_not():
    pytest.importorskip("fastapi")
    from studio.http.v1_jobs import job_status

    own = job_status(a_job(webhook_url="https://hooks.example.com/mine", webhook_error="HTTP 500",
                           webhook_delivered=2))
    assert (own["webhook_url"], own["webhook_error"], own["webhook_delivered"]) == (
        "https://hooks.example.com/mine", "HTTP 500", 2)
    operators = job_status(a_job(webhook_url="https://ops.example.com/T0-SECRET", webhook_error="host ops.example.com",
                                 options={JOB_API_OPTION: {"size": "1024x1024"}}))
    assert operators["webhook_url"] is None and operators["webhook_error"] is None
    assert "ops.example.com" not in repr(operators)
