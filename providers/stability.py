"""Stability AI's Stable Image REST API (v2beta) through ``httpx``; Stability keeps no maintained SDK.

Which endpoint a model uses follows from its id: ``sd3*`` models share ``/generate/sd3`` (the id
goes in the ``model`` field), ``stable-image-NAME`` uses ``/generate/NAME``, and
``stable-image-inpaint`` uses ``/edit/inpaint``. One call makes one image, so ``n`` images are
``n`` calls, with seeds ``seed, seed+1, ...`` so that they differ and can each be re-run.

Bodies are always multipart/form-data (the API refuses anything else, even without files). With
``accept: image/*`` the answer is the image's bytes, with ``finish-reason`` and ``seed`` headers;
``CONTENT_FILTERED`` is an HTTP 200 carrying a blurred image, so it counts as blocked.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from providers.cloud import CloudProvider, Deadline, billed_cost, call_within, keep_partial
from providers.common import nearest_aspect_ratio, scrub
from studio.errors import (ContentBlocked, InvalidRequest, NotConfigured, ProviderFailure, ProviderTimeout,
                           QuotaExhausted, RateLimited, StudioError, UnusableResult)
from studio.imaging import flatten, png_bytes
from studio.types import Mode, PreparedRequest, ProviderImage, ProviderResult, RunContext
from studio.validation import nth_seed

DEFAULT_BASE_URL = "https://api.stability.ai"
EDIT_SERVICES = {"inpaint"}
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # larger bodies are refused with a 413
MAX_SEED = 4294967294
# Studio styles (studio/data/styles.json) that have a close Stability style preset. The prompt is
# already styled; the preset pushes the model the same way.
STYLE_PRESETS = {
    "photorealistic": "photographic",
    "documentary": "photographic",
    "cinematic": "cinematic",
    "anime": "anime",
    "cartoon": "comic-book",
    "3d-render": "3d-model",
    "concept-art": "digital-art",
    "illustration": "digital-art",
}


@dataclass
class Route:
    """Where a model's requests go and the fixed form fields that say which model."""

    path: str
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class Answer:
    data: bytes
    finish_reason: str
    seed: int | None


class StabilityProvider(CloudProvider):
    name = "stability"
    label = "Stability AI"
    key_names = ("STABILITY_API_KEY",)
    sdk_module = "httpx"
    sdk_package = "httpx"
    seed_space = MAX_SEED + 1  # the API's seed is 0-4294967294

    # -- the story: build the form, call the API once per image, map errors, return images -------

    def generate(self, request: PreparedRequest, ctx: RunContext) -> ProviderResult:
        key = self.require_key()
        route = route_for(request)
        fields, files = self._form(request, route)
        client = self._client()
        deadline = Deadline(ctx.timeout)

        images: list[ProviderImage] = []
        usage: dict[str, Any] = {"calls": 0, "blocked": 0, "unusable": 0}
        for index in range(request.n):
            ctx.report("generating", index / request.n, message=f"Stability AI: image {index + 1} of {request.n}")
            form = dict(fields)
            if request.seed is not None and request.model.seed:
                form["seed"] = str(nth_seed(request.seed, index, self.seed_space))
            try:
                answer = call_within(lambda: self._post(client, route.path, form, files, key, deadline),
                                     ctx=ctx, deadline=deadline, policy=self.retry_policy, window=self.retry_window,
                                     label="Stability AI", provider=self.name)
            except StudioError as error:
                if isinstance(error, UnusableResult):  # a 200: billed as a generation, though it holds no image
                    usage["calls"] += 1
                    usage["unusable"] += 1
                if not keep_partial(images, error):
                    raise billed_cost(error, credits_cost(request, len(images) + usage["unusable"]))
                usage["incomplete"] = f"{len(images)} of {request.n} images: {error.message}"
                break
            usage["calls"] += 1
            if answer.finish_reason == "CONTENT_FILTERED":
                usage["blocked"] += 1
                continue
            info = {"finish_reason": answer.finish_reason, "endpoint": route.path}
            info.update({name: form[name] for name in ("aspect_ratio", "style_preset") if name in form})
            images.append(ProviderImage(data=answer.data, seed=answer.seed, info=info))
        ctx.report("generating", 1.0)
        if not images:
            raise ContentBlocked("Stability AI's content filter blocked the result (finish-reason "
                                 "CONTENT_FILTERED); try a different prompt", provider=self.name)
        # Every 200 is a billed generation: the images kept and any answer that held none.
        billed = len(images) + usage["unusable"]
        usage["credits"] = request.model.price.get("credits", 0) * billed
        return ProviderResult(images=images, cost=credits_cost(request, billed), usage=usage)

    # -- building the form ------------------------------------------------------------------------

    def _form(self, request: PreparedRequest, route: Route) -> tuple[dict[str, str], list[tuple]]:
        """Text fields and file parts of the multipart body (the seed is added per call)."""
        model = request.model
        prompt = request.prompt.strip() or "a variation of the input image"
        fields = {**route.fields, "prompt": prompt,
                  "output_format": request.output_format if request.output_format in model.output_formats else "png"}
        if model.negative_prompt and request.negative_prompt.strip():
            fields["negative_prompt"] = request.negative_prompt.strip()
        if route.path == "generate/sd3" and model.guidance and request.guidance is not None:
            fields["cfg_scale"] = f"{request.guidance:g}"
        preset = request.extra.get("style_preset") or STYLE_PRESETS.get(request.style or "")
        if preset and "style_preset" in model.options:
            fields["style_preset"] = preset
        if request.extra.get("grow_mask") is not None:
            fields["grow_mask"] = str(int(request.extra["grow_mask"]))

        files: list[tuple] = []
        if request.mode is Mode.TEXT_TO_IMAGE:
            if model.aspect_ratios:
                fields["aspect_ratio"] = nearest_aspect_ratio(request.width, request.height, model.aspect_ratios)
        else:
            if request.init_image is None:
                raise InvalidRequest(f"{request.mode.value} needs an input image", provider=self.name)
            files.append(("image", _upload(request.init_image, "image")))
            if request.mode is Mode.INPAINT:
                if request.mask is None:
                    raise InvalidRequest("inpainting needs a mask (white = repaint)", provider=self.name)
                # Stability's masks match the studio's: white is repainted, black is kept.
                files.append(("mask", ("mask.png", png_bytes(request.mask.convert("L")), "image/png")))
            elif request.strength is not None:
                fields["strength"] = f"{request.strength:g}"
        if route.path == "generate/sd3":
            fields["mode"] = "text-to-image" if request.mode is Mode.TEXT_TO_IMAGE else "image-to-image"
        return fields, files

    # -- calling the API --------------------------------------------------------------------------

    def _client(self):
        import httpx

        # The key travels per request (in _post), so one client per base URL serves every key.
        base_url = (self.settings.secret("STABILITY_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        return self.cached_client(base_url, lambda: httpx.Client(base_url=base_url))

    def _post(self, client, path: str, fields: dict[str, str], files: list[tuple], key: str,
              deadline: Deadline) -> Answer:
        import httpx

        # Every field travels as a multipart part (filename None = a plain form field), so the body is
        # multipart even when there is no image to upload.
        parts = [(name, (None, value)) for name, value in fields.items()] + files
        try:
            response = client.post(f"/v2beta/stable-image/{path}", files=parts,
                                   headers={"authorization": f"Bearer {key}", "accept": "image/*"},
                                   timeout=deadline.remaining())
        except httpx.TimeoutException:
            raise ProviderTimeout(f"Stability AI did not answer within {deadline.seconds:g} s",
                                  provider=self.name) from None
        except httpx.TransportError as error:
            raise ProviderFailure(f"could not reach Stability AI at {client.base_url}: "
                                  f"{scrub(str(error) or type(error).__name__, key)}",
                                  provider=self.name, retryable=True) from None
        if response.status_code != 200:
            raise self._studio_error(response, path, key)
        # A 200 is a billed generation: an answer that is not an image is unusable, and not retried.
        content_type = response.headers.get("content-type", "")
        if not response.content or not content_type.startswith("image/"):
            raise UnusableResult(f"Stability AI answered (and billed) without an image "
                                 f"({content_type or 'no content type'}, {len(response.content)} bytes)",
                                 provider=self.name)
        seed = response.headers.get("seed")
        return Answer(data=response.content, finish_reason=response.headers.get("finish-reason", "SUCCESS"),
                      seed=int(seed) if seed and seed.isdigit() else None)

    def _studio_error(self, response, path: str, key: str) -> StudioError:
        status = response.status_code
        name, detail = _error_detail(response)
        detail = scrub(detail, key)
        if status == 401:
            return NotConfigured("Stability AI rejected the API key (invalid API key): check STABILITY_API_KEY",
                                 provider=self.name, needs_key=True)
        if status == 402:
            return QuotaExhausted("your Stability AI account is out of credits: buy more at "
                                  "platform.stability.ai/account/credits", provider=self.name)
        if status == 403 and name == "content_moderation":
            return ContentBlocked(f"Stability AI's content moderation refused the request: {detail}",
                                  provider=self.name)
        if status == 403:
            return NotConfigured(f"Stability AI refused access for this key: {detail}", provider=self.name)
        if status == 404:
            return InvalidRequest(f"Stability AI has no endpoint /v2beta/stable-image/{path}: check the model id",
                                  provider=self.name)
        if status == 429:
            return RateLimited(f"Stability AI rate limit reached: {detail}", provider=self.name,
                               retry_after=self.retry_after(response.headers))
        if status >= 500:
            return ProviderFailure(f"Stability AI server error {status}: {detail}", provider=self.name,
                                   retryable=True)
        return InvalidRequest(f"Stability AI rejected the request ({name or status}): {detail}", provider=self.name)


# -- helpers ------------------------------------------------------------------------------------

def route_for(request: PreparedRequest) -> Route:
    """The endpoint for the request's model (see the module docstring)."""
    model_id = request.model.id
    if model_id.startswith("sd3"):
        return Route("generate/sd3", {"model": model_id})
    if model_id.startswith("stable-image-"):
        service = model_id.removeprefix("stable-image-")
        return Route(f"edit/{service}" if service in EDIT_SERVICES else f"generate/{service}")
    raise InvalidRequest(f"{model_id!r} is not a Stability AI model id: use sd3.5-large, stable-image-core, "
                         "stable-image-ultra or stable-image-inpaint", provider="stability")


def _upload(image, name: str) -> tuple[str, bytes, str]:
    """An image as a file part; a PNG over the 10 MiB limit is sent as JPEG instead."""
    rgb = flatten(image)
    data = png_bytes(rgb)
    if len(data) <= MAX_UPLOAD_BYTES:
        return f"{name}.png", data, "image/png"
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=95)
    return f"{name}.jpg", buffer.getvalue(), "image/jpeg"


def credits_cost(request: PreparedRequest, images: int) -> float | None:
    """USD for ``images`` successful generations; None when the catalog has no credit price."""
    price = request.model.price
    if price.get("kind") != "credits_per_image":
        return None
    return float(price["credits"]) * float(price.get("usd_per_credit", 0.01)) * images


def _error_detail(response) -> tuple[str, str]:
    """``name`` and the joined ``errors`` of Stability's ``{"id", "name", "errors"}`` body."""
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:200] or response.reason_phrase
    if not isinstance(body, dict):
        return "", str(body)[:200]
    errors = body.get("errors") or []
    detail = "; ".join(str(e) for e in errors) if isinstance(errors, list) else str(errors)
    return str(body.get("name") or ""), detail or str(body.get("message") or response.reason_phrase)
