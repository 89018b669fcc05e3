"""Prices: what a request is expected to cost, and the most it can cost, before it runs.

The price of every model is data (``studio/data/catalog/*.json``). Before a request runs, ``quote``
gives two figures from the model's price entry and the request itself:

- ``estimate``: what the request is expected to cost, input included (the prompt's text tokens and
  the input images' tokens where the provider bills them). This is what the UIs show before the click.
- ``bound``: the most the request can cost. The daily budget reserves this figure, so concurrent
  requests can never book more than the budget while each provider stays within its bound.

After the request, the provider reports the actual cost (tokens, credits, GPU seconds) and the
reservation is replaced by it. Where a provider's output is its own choice (thinking tokens, a
model's own text), the bound reserves the model's published output token limit when the catalog
gives it; where it does not, the quote says so (``exact=False``) and reserves the catalog's
allowance; see ``quote``.

Price entry fields used here (all optional except ``kind`` and the kind's own fields):

- ``usd_per_1m_tokens`` (OpenAI: ``text_input``, ``image_input``, ``image_output``, ``text_output``)
  or ``usd_per_million_tokens`` (Gemini: ``input``, ``output_text``, ``output_image``): token rates.
- ``input_image_tokens`` / ``max_input_image_tokens``: tokens one input image (init image, mask or
  reference image) is typically / at most billed as. OpenAI: 765 is a 1024x1024 image (85 + 170
  per 512-px tile); any image is at most 1,445 at low fidelity (8 tiles once scaled to fit 2048 px
  with its short side at 768), and high input fidelity adds up to 6,240, hence 8,000 (1,500 for
  models without high fidelity). Gemini 3: 1,120 at the default media resolution, 2,240 the highest.
- ``text_output_tokens`` / ``max_text_output_tokens``: text (or thinking) tokens a call is
  typically / at most expected to write besides the image.
- ``output_token_limit``: the model's published output token limit per call (Gemini image models:
  32,768). No request field caps a model's text and thinking output, but the model cannot write past
  this limit, so the bound reserves it at the text output rate: a documented worst case, and the
  quote is exact. Without it the bound holds ``max_text_output_tokens`` and says ``exact=False``.
- ``images_per_call``: how many images one API call makes (input is billed once per call).
- ``max_seconds`` (per-second prices): the longest one image may run at the model's default steps,
  from the run time its provider publishes (Replicate's model page: "predictions typically complete
  within N seconds", with room above it). A request may run ``max_seconds`` x images x (steps asked
  / default steps, at least 1), never past its timeout (``run_limit``); the provider cancels the run
  when it passes that, so the bound is that many seconds plus ``CANCEL_MARGIN_SECONDS`` for the
  cancel to land. Without ``max_seconds`` the request's timeout is the limit.
- ``checked_on`` / ``source``: when and where the price was last compared with the provider's list;
  ``checked_on`` null with ``unverified`` saying why, where no published list could be read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from studio.catalog import ModelInfo
from studio.sizes import IMAGE_SIZE_TIERS as GEMINI_IMAGE_SIZES, image_size_tier

if TYPE_CHECKING:
    from studio.types import PreparedRequest

# Published per-image prices are rounded to a tenth of a cent; the token count behind one can be up
# to half of that above the printed figure.
PUBLISHED_ROUNDING_USD = 0.0005
# Typical English text is about four characters per token: the estimate.
CHARS_PER_TOKEN = 4
# A token is at least one byte of UTF-8, so a text of B bytes is at most B tokens: the bound.
# Providers add a few words around the prompt (the variation and inpaint instructions, "Avoid: ...").
INSTRUCTION_TOKENS = 64
# A per-second run the provider is asked to cancel may still bill this long before it stops (our
# poll noticing, the cancel request, the model's worker stopping).
CANCEL_MARGIN_SECONDS = 5.0
# Gemini's image sizes, as the long side in pixels (its ``image_size`` option).


@dataclass(frozen=True)
class CostQuote:
    """What a request is expected to cost and the most it can cost, in USD.

    ``exact`` is False when the provider can bill more than ``bound`` (output it decides on its own,
    such as thinking tokens); the bound then holds the catalog's allowance for that output."""

    estimate: float
    bound: float
    exact: bool = True


def price_per_image(price: dict[str, Any], width: int, height: int, quality: str | None = None) -> float:
    """USD of one output image (no input costs), as the price list gives it."""
    kind = price.get("kind", "free")
    if kind == "free":
        return 0.0
    if kind == "per_image":
        return float(price["usd"])
    if kind == "per_image_by_quality":
        table = price["usd"]
        value = float(table.get(quality or "", table.get(price.get("default_quality", ""), max(table.values()))))
        return value * _pixel_scale(price, width, height)
    if kind == "credits_per_image":
        return float(price["credits"]) * float(price.get("usd_per_credit", 0.01))
    if kind == "per_second":
        return float(price["usd_per_second"]) * float(price.get("estimated_seconds", 10))
    if kind == "per_image_tiers":
        return _tier_price(price, max(width, height))
    raise ValueError(f"unknown price kind {kind!r}")


def estimate(model: ModelInfo, *, width: int, height: int, n: int, quality: str | None = None) -> float:
    """Estimated USD for ``n`` output images of ``width`` x ``height`` from ``model``, without input
    costs (for price tables; a request's own figure comes from ``quote``)."""
    return round(price_per_image(model.price, width, height, quality) * n, 6)


def quote(prepared: "PreparedRequest", *, timeout: float) -> CostQuote:
    """The estimate and the upper bound of one prepared request, in USD.

    ``timeout`` (seconds) is the request's deadline: a per-second price can bill at most that long,
    because the provider cancels the run when it passes. Raises ValueError for an unknown price kind."""
    model = prepared.model
    price = model.price
    kind = price.get("kind", "free")
    n = prepared.n
    width, height = prepared.width, prepared.height
    if kind == "free":
        return CostQuote(0.0, 0.0)
    if kind == "per_second":
        expected = price_per_image(price, width, height) * n
        most = float(price["usd_per_second"]) * (run_limit(prepared, timeout=timeout) + CANCEL_MARGIN_SECONDS)
        return CostQuote(round(expected, 6), round(max(expected, most), 6))
    if kind == "per_image_by_quality":
        quality = prepared.quality or model.default_quality
        expected_out = price_per_image(price, width, height, quality)
        # "auto" lets the model pick any quality: the bound is the dearest one.
        table = price["usd"]
        top = max(table.values()) if quality in (None, "auto") else table.get(quality, max(table.values()))
        most_out = (float(top) + PUBLISHED_ROUNDING_USD) * _pixel_scale(price, width, height)
    elif kind == "per_image_tiers":
        # Gemini draws at its image_size option (1K/2K/4K) when one is given, else at the size asked.
        tier = str(prepared.extra.get("image_size") or image_size_tier(width, height))
        expected_out = _tier_price(price, GEMINI_IMAGE_SIZES.get(tier, max(width, height)))
        most_out = expected_out + PUBLISHED_ROUNDING_USD
    else:
        expected_out = most_out = price_per_image(price, width, height, prepared.quality)
    expected = expected_out * n
    most = most_out * n
    rates = _token_rates(price)
    exact = True
    if rates is not None:
        calls = math.ceil(n / int(price.get("images_per_call") or n))
        images_in = input_image_count(prepared)
        text = _prompt_text(prepared)
        typical_text = math.ceil(len(text) / CHARS_PER_TOKEN) + INSTRUCTION_TOKENS
        most_text = len(text.encode("utf-8")) + INSTRUCTION_TOKENS
        typical_image = float(price.get("input_image_tokens", 0))
        most_image = float(price.get("max_input_image_tokens", typical_image))
        typical_out = float(price.get("text_output_tokens", 0))
        # The model's own output limit is the most it can write (and bill); else the catalog's allowance.
        limit = price.get("output_token_limit")
        most_out_text = float(limit) if limit else float(price.get("max_text_output_tokens", typical_out))
        expected += calls * (typical_text * rates["text_input"] + images_in * typical_image * rates["image_input"]
                             + typical_out * rates["text_output"])
        most += calls * (most_text * rates["text_input"] + images_in * most_image * rates["image_input"]
                         + most_out_text * rates["text_output"])
        # Text output (thinking included) is the model's own choice: no request field caps it, only
        # the model's published output limit does.
        exact = not rates["text_output"] or bool(limit)
    return CostQuote(round(expected, 6), round(max(most, expected), 6), exact)


def run_limit(prepared: "PreparedRequest", *, timeout: float) -> float:
    """Seconds a per-second-priced request may run before the provider cancels it: the catalog's
    ``max_seconds`` per image x images x (steps asked / the model's default steps, at least 1), at
    most ``timeout`` (the request's deadline, seconds); ``timeout`` without ``max_seconds``."""
    timeout = max(float(timeout), 0.0)
    per_image = prepared.model.price.get("max_seconds")
    if per_image is None:
        return timeout
    steps = prepared.model.steps
    default_steps = steps.default if steps is not None and steps.default else None
    scale = max(1.0, (prepared.steps or default_steps) / default_steps) if default_steps else 1.0
    return min(timeout, float(per_image) * prepared.n * scale)


def input_image_count(prepared: "PreparedRequest") -> int:
    """Images the request sends: the init image, the mask, and any reference images."""
    references = prepared.extra.get("reference_images") or []
    return (prepared.init_image is not None) + (prepared.mask is not None) + len(references)


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


def _pixel_scale(price: dict[str, Any], width: int, height: int) -> float:
    reference = price.get("reference_pixels")
    return width * height / reference if reference else 1.0


def _tier_price(price: dict[str, Any], long_side: int) -> float:
    tiers = sorted(price["tiers"], key=lambda tier: tier[0])
    for max_side, usd in tiers:
        if long_side <= max_side:
            return float(usd)
    return float(tiers[-1][1])


def _token_rates(price: dict[str, Any]) -> dict[str, float] | None:
    """USD per token for text input, image input and text output; None when not token-priced."""
    openai_rates = price.get("usd_per_1m_tokens")
    if openai_rates:
        return {"text_input": openai_rates.get("text_input", 0.0) / 1e6,
                "image_input": openai_rates.get("image_input", 0.0) / 1e6,
                "text_output": openai_rates.get("text_output", 0.0) / 1e6}
    gemini_rates = price.get("usd_per_million_tokens")
    if gemini_rates:
        return {"text_input": gemini_rates.get("input", 0.0) / 1e6, "image_input": gemini_rates.get("input", 0.0) / 1e6,
                "text_output": gemini_rates.get("output_text", 0.0) / 1e6}
    return None


def _prompt_text(prepared: "PreparedRequest") -> str:
    return f"{prepared.prompt}\n{prepared.negative_prompt}" if prepared.negative_prompt else prepared.prompt
