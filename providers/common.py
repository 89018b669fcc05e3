"""Small helpers that more than one cloud provider needs.

Kept free of SDK imports so that ``import providers`` stays light.
"""

from __future__ import annotations

from studio.redaction import mask_secrets
from studio.sizes import nearest_aspect_ratio  # noqa: F401  (the one rule; providers import it from here)


def scrub(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` masked.

    Error details come from servers and proxies we do not control; an echoed key must never reach a
    message, a log or a record.
    """
    return mask_secrets(text, [secret])  # the core's rule (studio.redaction), as Studio.redact uses

