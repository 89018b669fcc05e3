"""Google Gemini image models ("Nano Banana") through the official ``google-genai`` SDK.

Why ``google-genai`` and not ``google-generativeai``: Google replaced the old package (support ended
2025-11-30) and only the new one returns Gemini's image output.

The story of one request: turn the prompt (plus the input image, and for inpainting the mask as a
second image) into ``contents``; call ``models.generate_content`` with image output, the nearest
supported aspect ratio and a seed, once per wanted image; read the image from the answer's inline
data. Safety blocks arrive as HTTP 200 answers and become ``ContentBlocked``; HTTP errors are
mapped from their structured fields; token usage becomes the cost.

``GOOGLE_GEMINI_BASE_URL`` (the SDK's own setting) points it at a proxy or a test server. The API
version is the studio's setting ``gemini_api_version`` (``v1beta`` by default: Google's ``v1``
reference does not define ``responseModalities`` or ``imageConfig``).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from providers.cloud import CloudProvider, Deadline, billed_cost, call_within, keep_partial
from providers.common import nearest_aspect_ratio, scrub
from providers.retry import parse_retry_after
from studio.catalog import ModelInfo
from studio.errors import (ContentBlocked, InvalidRequest, NotConfigured, ProviderFailure, ProviderTimeout,
                           QuotaExhausted, RateLimited, StudioError, UnusableResult)
from studio.imaging import flatten, png_bytes
from studio.sizes import image_size_tier
from studio.types import Mode, PreparedRequest, ProviderImage, ProviderResult, RunContext
from studio.validation import nth_seed

# Finish reasons that mean a safety or policy filter stopped the answer.
BLOCKING_FINISH_REASONS = {
    "SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST", "SPII",
    "RECITATION", "IMAGE_RECITATION", "MODEL_ARMOR",  # Model Armor: the project's own content screening
}
INPAINT_INSTRUCTION = (
    "The second image is a mask the same size as the first. Change only the areas that are white in "
    "the mask and keep the black areas exactly as they are in the first image. Return the whole edited image."
)
SEED_LIMIT = 2**31  # the API's seed is an int32


class GeminiProvider(CloudProvider):
    name = "gemini"
    label = "Google Gemini"
    key_names = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    seed_space = SEED_LIMIT
    sdk_module = "google.genai"
    sdk_package = "google-genai"

    # -- the story ------------------------------------------------------------------------------

    def generate(self, request: PreparedRequest, ctx: RunContext) -> ProviderResult:
        key = self.require_key()
        client = self._client(key)
        deadline = Deadline(ctx.timeout)
        contents = self._contents(request)

        images: list[ProviderImage] = []
        usage: dict[str, Any] = {"calls": 0, "prompt_tokens": 0, "image_tokens": 0, "text_tokens": 0}
        # Gemini draws one image per call, so n images are n calls, each with its own seed.
        for index in range(request.n):
            ctx.report("generating", index / request.n, step=index, total_steps=request.n,
                       message=f"asking Gemini for image {index + 1} of {request.n}")
            seed = nth_seed(request.seed, index, self.seed_space) if request.model.seed and request.seed is not None else None
            try:
                response = call_within(lambda: self._call(client, request, contents, seed, deadline, key),
                                       ctx=ctx, deadline=deadline, policy=self.retry_policy, window=self.retry_window,
                                       label="Gemini", provider=self.name)
                try:
                    images.append(self._image_from(response, seed, key))
                except UnusableResult:
                    _add_usage(usage, response.usage_metadata)  # paid for, though it holds no image
                    raise
            except StudioError as error:
                if not keep_partial(images, error):
                    raise billed_cost(error, self._cost(request.model, usage))
                usage["incomplete"] = f"{len(images)} of {request.n} images: {error.message}"
                break
            _add_usage(usage, response.usage_metadata)
        ctx.report("generating", 1.0, step=len(images), total_steps=request.n)
        return ProviderResult(images=images, cost=self._cost(request.model, usage), usage=usage)

    # -- the request ----------------------------------------------------------------------------

    def _contents(self, request: PreparedRequest) -> list[Any]:
        from google.genai import types

        if request.mode is Mode.TEXT_TO_IMAGE:
            return [request.prompt]
        if request.init_image is None:
            raise InvalidRequest(f"{request.mode.value} needs an input image", provider=self.name)
        image = types.Part.from_bytes(data=png_bytes(flatten(request.init_image)), mime_type="image/png")
        if request.mode is Mode.INPAINT:
            if request.mask is None:
                raise InvalidRequest("inpainting needs a mask (white = repaint)", provider=self.name)
            # Gemini has no mask parameter: the mask goes along as a second image, described in words.
            mask = types.Part.from_bytes(data=png_bytes(request.mask.convert("L")), mime_type="image/png")
            return [f"{request.prompt}\n\n{INPAINT_INSTRUCTION}", image, mask]
        return [request.prompt, image]

    def _config(self, request: PreparedRequest, seed: int | None, deadline: Deadline):
        from google.genai import types

        model = request.model
        image_config = types.ImageConfig(
            aspect_ratio=nearest_aspect_ratio(request.width, request.height, model.aspect_ratios or ("1:1",)),
            image_size=self._image_size(request) if "image_size" in model.options else None,
        )
        return types.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=image_config,
            seed=seed,
            # Each call may use only the time left; the SDK takes milliseconds.
            http_options=types.HttpOptions(timeout=max(1, int(deadline.remaining() * 1000))),
        )

    @staticmethod
    def _image_size(request: PreparedRequest) -> str:
        if request.extra.get("image_size"):
            return str(request.extra["image_size"])
        return image_size_tier(request.width, request.height)

    def _call(self, client, request: PreparedRequest, contents, seed, deadline: Deadline, key: str):
        from google.genai import errors

        timeouts, transport_errors = _network_errors()
        config = self._config(request, seed, deadline)
        try:
            return client.models.generate_content(model=request.model.id, contents=contents, config=config)
        # ``from None``: the SDK's exceptions carry the whole response; keep it out of tracebacks and logs.
        except errors.APIError as error:
            raise self._api_error(error, key) from None
        except timeouts:
            raise ProviderTimeout(f"Gemini did not answer within {deadline.seconds:g} s", provider=self.name) from None
        except transport_errors as error:
            raise ProviderFailure(f"cannot reach Gemini: {type(error).__name__}: {scrub(str(error), key)}",
                                  provider=self.name, retryable=True) from None
        except ValueError as error:  # the SDK refusing a field before sending anything
            raise InvalidRequest(f"the Gemini SDK refused the request: {scrub(str(error), key)}",
                                 provider=self.name) from None

    # -- the answer -----------------------------------------------------------------------------

    def _image_from(self, response, seed: int | None, key: str) -> ProviderImage:
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason:
            reason = _enum_text(feedback.block_reason)
            extra = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
            raise ContentBlocked(f"Gemini blocked the prompt ({reason}){extra}", provider=self.name)
        if not response.candidates:
            if _billed(response.usage_metadata):
                raise UnusableResult("Gemini answered (and billed the tokens) with no candidates", provider=self.name)
            raise ProviderFailure("Gemini answered with no candidates and billed nothing", provider=self.name,
                                  retryable=True)

        candidate = response.candidates[0]
        reason = _enum_text(candidate.finish_reason)
        if reason in BLOCKING_FINISH_REASONS:
            raise ContentBlocked(f"Gemini's safety filters stopped the image ({reason}); try rewording the prompt",
                                 provider=self.name)

        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        answer = [p for p in parts if not p.thought]
        # Thinking models also return interim "thought" images; the answer is the first non-thought
        # one. When the only image is flagged as a thought, it is still the image this call paid for:
        # keep the last one rather than fail (and pay again for a retry).
        images = [p for p in answer if _is_image(p)] or [p for p in parts if p.thought and _is_image(p)][-1:]
        if images:
            blob = images[0].inline_data
            text = " ".join(p.text for p in answer if p.text).strip()
            info = {"finish_reason": reason, "mime_type": blob.mime_type, "model_text": text[:500],
                    "model_version": response.model_version}
            if images[0].thought:
                info["thought_image"] = True
            return ProviderImage(data=blob.data, seed=seed, info=info)
        said = scrub(" ".join(p.text for p in answer if p.text).strip(), key) or "no text either"
        raise UnusableResult(f"Gemini answered (and billed) without an image (finish reason {reason or 'unknown'}): "
                             f"{said[:300]}", provider=self.name)

    # -- errors and cost ------------------------------------------------------------------------

    def _api_error(self, error, key: str) -> StudioError:
        """Map an HTTP error answer by its code, status and structured details, not its wording."""
        code, status = error.code or 0, error.status or ""
        message = scrub(error.message or str(status) or "no details", key)
        details = _details(error)
        reasons = {d.get("reason") for d in details if d.get("@type", "").endswith("google.rpc.ErrorInfo")}
        if "API_KEY_INVALID" in reasons or code == 401 or status == "UNAUTHENTICATED":
            return NotConfigured("Gemini rejected the API key: check GEMINI_API_KEY or GOOGLE_API_KEY",
                                 provider=self.name, needs_key=True)
        if code == 403 or status == "PERMISSION_DENIED":
            return NotConfigured(f"this Gemini API key may not use the model (is the API enabled for its "
                                 f"project?): {message}", provider=self.name)
        if code == 429 or status == "RESOURCE_EXHAUSTED":
            if _quota_exhausted(details, message):
                return QuotaExhausted(f"the Gemini quota is used up; check the plan and billing of the key's "
                                      f"project: {message}", provider=self.name)
            return RateLimited(f"Gemini is rate limiting requests: {message}", provider=self.name,
                               retry_after=_retry_delay(details, error, cap=self.retry_window.max_hold))
        if code == 404 or status == "NOT_FOUND":
            return InvalidRequest(f"Gemini has no such model: {message}", provider=self.name)
        if status == "FAILED_PRECONDITION":
            return NotConfigured(f"Gemini cannot serve this key here: {message}", provider=self.name)
        if 400 <= code < 500:
            return InvalidRequest(f"Gemini refused the request: {message}", provider=self.name)
        if code >= 500:
            return ProviderFailure(f"Gemini had a server error ({code} {status}): {message}", provider=self.name,
                                   retryable=True)
        return ProviderFailure(f"Gemini answered {code} {status}: {message}", provider=self.name)

    @staticmethod
    def _cost(model: ModelInfo, usage: dict[str, int]) -> float | None:
        rates = model.price.get("usd_per_million_tokens")
        if not rates or not (usage["prompt_tokens"] or usage["image_tokens"]):
            return None  # no usage reported: the estimate stands
        usd = (usage["prompt_tokens"] * rates["input"] + usage["text_tokens"] * rates["output_text"]
               + usage["image_tokens"] * rates["output_image"]) / 1_000_000
        return round(usd, 8)  # token costs are fractions of a cent

    # -- the client -----------------------------------------------------------------------------

    def _client(self, key: str):
        from google import genai
        from google.genai import types

        base_url = os.environ.get("GOOGLE_GEMINI_BASE_URL") or None  # read by the SDK too; part of the cache key
        # The API version is always ours to say (settings.gemini_api_version, v1beta by default):
        # the SDK would otherwise pick v1, whose reference lacks the image fields we send.
        version = self.settings.gemini_api_version
        # No retry_options: the SDK then makes one attempt, and call_within does the retrying.
        return self.cached_client((key, base_url, version), lambda: genai.Client(
            api_key=key, http_options=types.HttpOptions(api_version=version)))


def _network_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """Timeout and transport error classes of httpx and httpx2 (google-genai uses either)."""
    timeouts, transport = [], []
    for name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        transport.append(module.TransportError)
    return tuple(timeouts), tuple(transport)


def _enum_text(value) -> str:
    return str(getattr(value, "value", value) or "")


def _details(error) -> list[dict[str, Any]]:
    body = error.details if isinstance(error.details, dict) else {}
    details = body.get("error", body).get("details") or []
    return [d for d in details if isinstance(d, dict)]


def _quota_exhausted(details: list[dict[str, Any]], message: str) -> bool:
    """A daily quota, a zero quota (the model needs billing) or depleted credit: retrying won't help.
    Per-minute limits are rate limits."""
    violations = [v for d in details if d.get("@type", "").endswith("google.rpc.QuotaFailure")
                  for v in d.get("violations") or []]
    if violations:
        return any("PerDay" in (v.get("quotaId") or "") or str(v.get("quotaValue")) == "0" for v in violations)
    text = message.lower()
    return "depleted" in text or "prepayment" in text


def _retry_delay(details: list[dict[str, Any]], error, *, cap: float) -> float | None:
    """Seconds from the error's RetryInfo ``retryDelay`` ("37s", "1.5s"), else its Retry-After header;
    at most ``cap`` seconds."""
    for detail in details:
        if detail.get("@type", "").endswith("google.rpc.RetryInfo") and detail.get("retryDelay"):
            seconds = parse_retry_after({"retry-after": str(detail["retryDelay"]).rstrip("s")}, cap=cap)
            if seconds is not None:
                return seconds
            break
    return parse_retry_after(getattr(error.response, "headers", None), cap=cap)


def _is_image(part) -> bool:
    blob = part.inline_data
    return blob is not None and bool(blob.data) and (blob.mime_type or "").startswith("image/")


def _billed(metadata) -> bool:
    """Whether an answer's usage shows tokens billed. An answer without usage is taken as billed:
    not knowing is no reason to risk paying twice."""
    if metadata is None:
        return True
    return bool(metadata.total_token_count or metadata.prompt_token_count or metadata.candidates_token_count)


def _add_usage(usage: dict[str, int], metadata) -> None:
    usage["calls"] += 1
    if metadata is None:
        return
    image_tokens = sum(d.token_count or 0 for d in metadata.candidates_tokens_details or []
                       if _enum_text(d.modality) == "IMAGE")
    usage["prompt_tokens"] += metadata.prompt_token_count or 0
    usage["image_tokens"] += image_tokens
    # Thinking is billed as text output.
    usage["text_tokens"] += ((metadata.candidates_token_count or 0) - image_tokens
                             + (metadata.thoughts_token_count or 0))
