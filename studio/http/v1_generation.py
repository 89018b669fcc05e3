"""HTTP routes of the studio's own API for generation: /api/v1/generate, edit, inpaint,
variations, estimate, providers and models. Filled in by the HTTP generation helper."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
