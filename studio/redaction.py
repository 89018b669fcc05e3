"""Masking secrets in texts that leave the process (error messages, records, logs): one rule for the
core (``Studio.redact``) and the providers (``providers.common.scrub``).

    mask_secrets("401: key sk-abc123 refused", ["sk-abc123"])  # "401: key *** refused"
"""

from __future__ import annotations

from typing import Iterable

# A secret shorter than this is not searched for: masking every "ab" in a message would garble it,
# and no provider issues keys that short. The one minimum for every caller.
MIN_SECRET_CHARS = 4
MASK = "***"


def mask_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each secret (at least ``MIN_SECRET_CHARS`` long) replaced by
    ``MASK``; longer secrets first, so one that contains another is masked whole."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


__all__ = ["MASK", "MIN_SECRET_CHARS", "mask_secrets"]
