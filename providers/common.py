"""Small helpers that more than one cloud provider needs.

Kept free of SDK imports so that ``import providers`` stays light.
"""

from __future__ import annotations

import math
from typing import Iterable


def nearest_aspect_ratio(width: int, height: int, ratios: Iterable[str]) -> str:
    """The ratio from ``ratios`` ("W:H" strings) closest to ``width`` x ``height``.

    Closeness is measured on a log scale so that 2:1 and 1:2 are equally far from 1:1.
    """
    wanted = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = (float(part) for part in ratio.split(":"))
        return abs(math.log(w / h) - wanted)

    choices = list(ratios)
    if not choices:
        raise ValueError("no aspect ratios to choose from")
    return min(choices, key=distance)


def scrub(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` masked.

    Error details come from servers and proxies we do not control; an echoed key must never reach a
    message, a log or a record.
    """
    if secret and len(secret) >= 4 and secret in text:
        return text.replace(secret, "***")
    return text

