"""What the /api/v1 generation and job routes answer about an image: one shape for both routers.

An image leaves the server as its id, its facts (size, format, seed, cost, provider, model) and
either two server routes (``url``: the file, ``thumbnail_url``) or the file itself as base64. Never
an owner id or a server path (``ImageRecord.public_dict`` is the starting point).
"""

from __future__ import annotations

import base64
from typing import Any

from studio.imaging import MIME_TYPES
from studio.types import ImageRecord

API_PREFIX = "/api/v1"
RETURN_CHOICES = ("url", "base64")


def image_urls(image_id: str) -> dict[str, str]:
    """The server routes of one stored image (served by the library routes)."""
    return {"url": f"{API_PREFIX}/images/{image_id}/file", "thumbnail_url": f"{API_PREFIX}/images/{image_id}/thumbnail"}


def image_answer(record: ImageRecord, *, data: bytes | None = None) -> dict[str, Any]:
    """One generated image as the API answers it: ``{id, width, height, format, seed, cost (USD),
    provider, model, mode, parent_id, created_at}`` plus ``url`` and ``thumbnail_url``, or, when
    ``data`` (the file as it may leave the server: ``Studio.image_bytes``) is given, ``base64`` and
    ``media_type`` instead of the two URLs."""
    shown = record.public_dict()
    answer = {name: shown[name] for name in ("id", "width", "height", "format", "seed", "provider", "model",
                                              "mode", "parent_id", "created_at")}
    answer["cost"] = round(record.cost, 6)
    if data is None:
        answer.update(image_urls(record.id))
    else:
        answer["base64"] = base64.b64encode(data).decode("ascii")
        answer["media_type"] = MIME_TYPES.get(record.format, "application/octet-stream")
    return answer


def summary_with_urls(summary: dict[str, Any]) -> dict[str, Any]:
    """An image of a job answer (``ImageRecord.public_summary``: id, file name, size, seed...) with
    its two server routes added."""
    return {**summary, **image_urls(summary["id"])}
