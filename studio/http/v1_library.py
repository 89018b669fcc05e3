"""HTTP routes of the studio's own API for what is stored (``/api/v1``): history, images, mood boards,
API tokens. Filled in by the next commits."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["library"])
