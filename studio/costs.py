"""Prices: an estimate for a request before it runs, from the catalog's price entry for its model.

The price of every model is data (``studio/data/catalog/*.json``). The actual cost of a finished
request comes from the provider when it knows it (tokens, credits, GPU seconds); otherwise the
estimate is what we record.
"""

from __future__ import annotations

from typing import Any

from studio.catalog import ModelInfo


def price_per_image(price: dict[str, Any], width: int, height: int, quality: str | None = None) -> float:
    kind = price.get("kind", "free")
    if kind == "free":
        return 0.0
    if kind == "per_image":
        return float(price["usd"])
    if kind == "per_image_by_quality":
        table = price["usd"]
        value = float(table.get(quality or "", table.get(price.get("default_quality", ""), max(table.values()))))
        reference = price.get("reference_pixels")
        return value * (width * height / reference) if reference else value
    if kind == "credits_per_image":
        return float(price["credits"]) * float(price.get("usd_per_credit", 0.01))
    if kind == "per_second":
        return float(price["usd_per_second"]) * float(price.get("estimated_seconds", 10))
    if kind == "per_image_tiers":
        long_side = max(width, height)
        tiers = sorted(price["tiers"], key=lambda tier: tier[0])
        for max_side, usd in tiers:
            if long_side <= max_side:
                return float(usd)
        return float(tiers[-1][1])
    raise ValueError(f"unknown price kind {kind!r}")


def estimate(model: ModelInfo, *, width: int, height: int, n: int, quality: str | None = None) -> float:
    """Estimated USD for ``n`` images of ``width`` x ``height`` from ``model``."""
    return round(price_per_image(model.price, width, height, quality) * n, 6)


def describe_price(model: ModelInfo) -> str:
    """A short human text for a price entry, for tables and pickers."""
    price = model.price
    kind = price.get("kind", "free")
    if kind == "free":
        return "free (local)"
    if kind == "per_image":
        return f"${price['usd']:.3f} / image"
    if kind == "per_image_by_quality":
        parts = ", ".join(f"{q} ${v:.3f}" for q, v in price["usd"].items())
        return f"{parts} / image"
    if kind == "credits_per_image":
        return f"{price['credits']} credits (${price_per_image(price, 1024, 1024):.2f}) / image"
    if kind == "per_second":
        return f"${price['usd_per_second']:.5f} / GPU second (~${price_per_image(price, 1024, 1024):.3f} / image)"
    if kind == "per_image_tiers":
        return ", ".join(f"≤{side}px ${usd:.3f}" for side, usd in price["tiers"]) + " / image"
    return kind
