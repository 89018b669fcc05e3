"""HTTP routes of the studio's own API for batch jobs: /api/v1/jobs (create from a script, status,
result, pause, resume, cancel, retry, export, server-sent events). Filled in by the HTTP jobs helper."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
