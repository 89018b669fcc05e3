"""OpenAI's GPT Image models through the official ``openai`` SDK.

Text-to-image goes to ``images.generate``; image-to-image, inpainting and variations go to
``images.edit`` (OpenAI retired ``/images/variations`` together with DALL·E). GPT image models
always answer with base64 images and token ``usage``, which becomes the recorded cost.

The SDK's own retries are switched off: ``call_within`` retries rate limits and server errors in
one place, with the studio's bounds, inside ``ctx.timeout``. The SDK is imported only when a
request runs, so listing providers never imports it.
"""

from __future__ import annotations

import base64
from typing import Any

from PIL import Image, ImageOps

from providers.cloud import CloudProvider, Deadline, billed_cost, call_within, keep_partial
from providers.common import scrub
from studio.catalog import ModelInfo, check_not_retired
from studio.errors import (ContentBlocked, InvalidRequest, NotConfigured, ProviderFailure, ProviderTimeout,
                           QuotaExhausted, RateLimited, StudioError, UnusableResult)
from studio.identity import VisitorIds
from studio.imaging import load_image, png_bytes
from studio.sizes import fit_pixel_budget
from studio.types import Mode, PreparedRequest, ProviderImage, ProviderResult, RunContext

# The API takes n from 1 to 10 per call; more images mean more calls.
MAX_N_PER_CALL = 10
# One edit call takes up to 16 input images (the init image plus references).
MAX_INPUT_IMAGES = 16
# Options each endpoint accepts, when the model's catalog entry offers them.
GENERATE_OPTIONS = ("background", "moderation")
EDIT_OPTIONS = ("background", "input_fidelity")
# Error codes OpenAI uses when its safety system refuses a prompt or an input image.
BLOCKED_CODES = {"moderation_blocked", "content_policy_violation"}
VARIATION_INSTRUCTION = ("Create a variation of this image: keep its subject, composition and style, "
                         "and change the details.")
# Linked outputs (``data[].url``) are downloaded up to this size.
MAX_OUTPUT_BYTES = 50 * 1024 * 1024
TOKEN_KINDS = ("text_input", "image_input", "image_output", "text_output")


class OpenAIProvider(CloudProvider):
    name = "openai"
    label = "OpenAI"
    key_names = ("OPENAI_API_KEY",)
    sdk_module = "openai"
    sdk_package = "openai"

    # -- the story: build the request, call the SDK, map errors, return images ------------------

    def generate(self, request: PreparedRequest, ctx: RunContext) -> ProviderResult:
        model = request.model
        check_not_retired(model)  # also checked in validation.prepare; kept for direct provider use
        key = self.require_key()
        client = self._client(key)
        params = self._params(request)
        deadline = Deadline(ctx.timeout)

        images: list[ProviderImage] = []
        usage: dict[str, Any] = {"calls": 0}
        for count in _batches(request.n, MAX_N_PER_CALL):
            ctx.report("generating", len(images) / request.n,
                       message=f"OpenAI: image {len(images) + 1}-{len(images) + count} of {request.n}")
            try:
                response = call_within(lambda: self._call(client, request.mode, params, count, deadline, key),
                                       ctx=ctx, deadline=deadline, policy=self.retry_policy, window=self.retry_window,
                                       label="OpenAI", provider=self.name)
                _add_usage(usage, response)  # every answer is billed, whether or not its images are usable
                made, lost = self._images(response, ctx, deadline, str(client.base_url))
                images.extend(made)
            except StudioError as error:
                if not keep_partial(images, error):
                    raise billed_cost(error, token_cost(model, usage))
                usage["incomplete"] = f"{len(images)} of {request.n} images: {error.message}"
                break
            if lost:  # the answer is paid in full: keep its usable images, say what was lost
                usage["incomplete"] = f"{len(images)} of {request.n} images: {lost.message}"
            ctx.report("generating", len(images) / request.n)
        return ProviderResult(images=images, cost=token_cost(model, usage), usage=usage)

    # -- building the request ---------------------------------------------------------------

    def _params(self, request: PreparedRequest) -> dict[str, Any]:
        """Keyword arguments for ``images.generate`` / ``images.edit`` (without ``n``)."""
        model = request.model
        output_format = request.output_format if request.output_format in model.output_formats else "png"
        params: dict[str, Any] = {
            "model": model.id,
            "prompt": _prompt(request),
            "size": _api_size(model, request.width, request.height),
            "output_format": output_format,
        }
        quality = _quality(model, request.quality)
        if quality:
            params["quality"] = quality
        if output_format in ("jpeg", "webp"):
            params["output_compression"] = max(0, min(100, request.compression))
        allowed = GENERATE_OPTIONS if request.mode is Mode.TEXT_TO_IMAGE else EDIT_OPTIONS
        params.update(_options(model, request.extra, allowed))
        if params.get("background") == "transparent" and output_format == "jpeg":
            raise InvalidRequest("a transparent background needs png or webp output, not jpeg", provider=self.name)
        identifier = _safety_identifier(request.user, self.settings.home)
        if identifier:
            params["safety_identifier"] = identifier
        if request.mode is not Mode.TEXT_TO_IMAGE:
            params.update(_edit_files(request))
        return params

    # -- calling the SDK --------------------------------------------------------------------

    def _client(self, key: str):
        from openai import OpenAI

        # None lets the SDK read OPENAI_BASE_URL itself; settings also find it in Streamlit secrets.
        base_url = self.settings.secret("OPENAI_BASE_URL") or None
        return self.cached_client((key, base_url), lambda: OpenAI(api_key=key, base_url=base_url, max_retries=0))

    def _call(self, client, mode: Mode, params: dict[str, Any], n: int, deadline: Deadline, key: str):
        import openai

        try:
            if mode is Mode.TEXT_TO_IMAGE:
                return client.images.generate(**params, n=n, timeout=deadline.remaining())
            return client.images.edit(**params, n=n, timeout=deadline.remaining())
        except openai.APIError as error:
            # ``from None``: the SDK's exception carries the request; keep it out of tracebacks and logs.
            raise self._studio_error(error, key, str(client.base_url), deadline) from None

    # -- the answer -------------------------------------------------------------------------

    def _images(self, response, ctx: RunContext, deadline: Deadline,
                base_url: str) -> tuple[list[ProviderImage], UnusableResult | None]:
        """The usable images of an answer, and why any item was not usable (None when all were).
        Items carry ``data[].b64_json`` (GPT image models) or ``data[].url`` (what DALL·E-era and
        OpenAI-compatible servers send), downloaded through the outbound guard.

        The answer is billed, so an item without a usable image is an ``UnusableResult``, never
        retried (a retry would be paid again); it is raised when no item is usable."""
        images, lost = [], None
        for item in response.data or []:
            try:
                data = self._item_bytes(item, ctx, deadline, base_url)
            except UnusableResult as error:
                lost = lost or error
                continue
            info = {k: v for k, v in {"size": response.size, "quality": response.quality,
                                      "background": response.background, "output_format": response.output_format,
                                      "revised_prompt": item.revised_prompt}.items() if v}
            images.append(ProviderImage(data=data, seed=None, info=info))
        if not images:
            raise lost or UnusableResult("OpenAI answered (and billed) without any image", provider=self.name)
        return images, lost

    def _item_bytes(self, item, ctx: RunContext, deadline: Deadline, base_url: str) -> bytes:
        if item.b64_json:
            try:
                return base64.b64decode(item.b64_json, validate=True)
            except ValueError:
                raise UnusableResult("OpenAI answered (and billed) with an image that is not valid base64",
                                     provider=self.name) from None
        if item.url:
            return self.download_output(item.url, ctx=ctx, deadline=deadline, max_bytes=MAX_OUTPUT_BYTES,
                                        base_url=base_url)
        raise UnusableResult("OpenAI answered (and billed) an item with neither image data nor a link",
                             provider=self.name)

    def _studio_error(self, error, key: str, base_url: str, deadline: Deadline) -> StudioError:
        import openai

        detail = scrub(_error_detail(error), key)
        if isinstance(error, openai.APITimeoutError):
            return ProviderTimeout(f"OpenAI did not answer within {deadline.seconds:g} s", provider=self.name)
        if isinstance(error, openai.APIConnectionError):
            return ProviderFailure(f"could not reach OpenAI at {base_url}: {detail}", provider=self.name,
                                   retryable=True)
        if not isinstance(error, openai.APIStatusError):
            return ProviderFailure(f"OpenAI call failed: {detail}", provider=self.name)
        status, code = error.status_code, error.code
        if status == 401:
            return NotConfigured("OpenAI rejected the API key (invalid API key): check OPENAI_API_KEY",
                                 provider=self.name, needs_key=True)
        if status == 403:
            return NotConfigured(f"OpenAI refused access for this key: {detail}", provider=self.name)
        if code in BLOCKED_CODES:
            return ContentBlocked(f"OpenAI's safety system blocked this request ({code}): {detail}",
                                  provider=self.name)
        if status == 429 and code == "insufficient_quota":
            return QuotaExhausted("your OpenAI account is out of quota or credit: check billing at "
                                  "platform.openai.com", provider=self.name)
        if status == 429:
            return RateLimited(f"OpenAI rate limit reached: {detail}", provider=self.name,
                               retry_after=self.retry_after(error.response.headers))
        if status >= 500 or status in (408, 409):
            return ProviderFailure(f"OpenAI server error {status}: {detail}", provider=self.name, retryable=True)
        if status == 404:
            return InvalidRequest(f"OpenAI does not offer this model to your key: {detail}", provider=self.name)
        return InvalidRequest(f"OpenAI rejected the request: {detail}", provider=self.name)


# -- helpers: small, pure, one job each ------------------------------------------------------

def _batches(total: int, per_call: int) -> list[int]:
    """``[10, 10, 3]`` for 23 images at 10 per call."""
    return [min(per_call, total - start) for start in range(0, total, per_call)]


def _prompt(request: PreparedRequest) -> str:
    prompt = request.prompt.strip()
    if request.mode is Mode.VARIATION:
        prompt = f"{VARIATION_INSTRUCTION} {prompt}".strip()
    if not prompt:
        raise InvalidRequest("OpenAI needs a prompt that describes the image or the edit", provider="openai")
    # GPT image models have no negative prompt, but they follow plain instructions.
    if request.negative_prompt.strip():
        prompt = f"{prompt}\n\nAvoid: {request.negative_prompt.strip()}"
    return prompt


def _quality(model: ModelInfo, quality: str | None) -> str | None:
    """The API's quality for a studio quality (``standard/high/ultra`` or the model's own word)."""
    if not quality:
        return model.default_quality
    return model.quality_aliases.get(quality, quality)


def _api_size(model: ModelInfo, width: int, height: int) -> str:
    """The ``size`` to send: validation has already brought a free size into the model's pixel budget
    (``studio.sizes.fit_pixel_budget``, with a warning); the same rule here only guards direct callers."""
    width, height = fit_pixel_budget(model, width, height)
    return f"{width}x{height}"


def _options(model: ModelInfo, extra: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    """The options the person chose that this endpoint takes (the core checked their values)."""
    return {name: extra[name] for name in allowed if extra.get(name) is not None and name in model.options}


def _edit_files(request: PreparedRequest) -> dict[str, Any]:
    """The ``image`` (and ``mask``) uploads of an edit call."""
    if request.init_image is None:
        raise InvalidRequest(f"{request.mode.value} needs an input image", provider="openai")
    inputs = [request.init_image, *(load_image(ref, "reference image")
                                    for ref in request.extra.get("reference_images") or [])]
    if len(inputs) > MAX_INPUT_IMAGES:
        raise InvalidRequest(f"OpenAI edits take at most {MAX_INPUT_IMAGES} images, got {len(inputs)}",
                             provider="openai")
    files = [(f"image-{i}.png", png_bytes(image), "image/png") for i, image in enumerate(inputs)]
    upload: dict[str, Any] = {"image": files[0] if len(files) == 1 else files}
    if request.mode is Mode.INPAINT:
        if request.mask is None:
            raise InvalidRequest("inpainting needs a mask (white where the image should change)", provider="openai")
        upload["mask"] = ("mask.png", openai_mask(request.mask), "image/png")
    return upload


def openai_mask(mask: Image.Image) -> bytes:
    """Our mask (greyscale, white = repaint) as OpenAI wants it: a PNG whose transparent pixels are edited."""
    repaint = mask.convert("L").point(lambda v: 255 if v >= 128 else 0)
    rgba = Image.new("RGBA", mask.size, (0, 0, 0, 255))
    rgba.putalpha(ImageOps.invert(repaint))
    return png_bytes(rgba)


def _safety_identifier(user: str, home) -> str | None:
    """A stable, anonymous id per studio user, for OpenAI's abuse monitoring: a keyed hash, so it is
    neither the owner id nor something anyone could confirm by hashing a guessed e-mail address."""
    if not user or user == "local":
        return None
    return "studio-" + VisitorIds.for_home(home).opaque(user, "openai-safety-identifier", 32)


def _add_usage(usage: dict[str, Any], response) -> None:
    """Add one call's token counts to the running totals."""
    usage["calls"] += 1
    tokens = response.usage
    if tokens is None:  # a proxy may drop usage; then the cost falls back to the estimate
        usage["missing_usage"] = True
        return
    image_out = tokens.output_tokens
    text_out = 0
    if tokens.output_tokens_details is not None:
        image_out = tokens.output_tokens_details.image_tokens
        text_out = tokens.output_tokens_details.text_tokens
    counts = {
        "input_tokens": tokens.input_tokens,
        "output_tokens": tokens.output_tokens,
        "total_tokens": tokens.total_tokens,
        "text_input_tokens": tokens.input_tokens_details.text_tokens,
        "image_input_tokens": tokens.input_tokens_details.image_tokens,
        "image_output_tokens": image_out,
        "text_output_tokens": text_out,
    }
    for name, value in counts.items():
        usage[name] = usage.get(name, 0) + (value or 0)


def token_cost(model: ModelInfo, usage: dict[str, Any]) -> float | None:
    """USD from token counts and the catalog's per-million rates; None when either is missing."""
    rates = model.price.get("usd_per_1m_tokens")
    if not rates or usage.get("missing_usage") or "total_tokens" not in usage:
        return None
    return sum(usage.get(f"{kind}_tokens", 0) * rates.get(kind, 0.0) for kind in TOKEN_KINDS) / 1_000_000


def _error_detail(error) -> str:
    """OpenAI's own sentence from ``{"error": {"message": ...}}``, else the SDK's summary."""
    body = getattr(error, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return body["message"]
    return str(error) or type(error).__name__
