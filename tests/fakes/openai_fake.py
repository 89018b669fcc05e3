"""A loopback stand-in for OpenAI's Images API, checking requests the way the real service does.

What it checks, on every request:
- ``POST /v1/images/generations`` with a JSON body, ``POST /v1/images/edits`` with a multipart body;
  any other path is a 404 and a wrong content type a 400, in OpenAI's error shape.
- ``Authorization: Bearer <key>``: a missing or wrong key is a 401 ``invalid_api_key`` whose message
  shows the key masked, as OpenAI does.
- The model: retired ones (DALL·E, gpt-image-1) and unknown ids are a 404 ``model_not_found``.
- Parameters, with the limits OpenAI publishes (the data block below, which names its source and
  date; nothing is taken from the studio's catalog): no unknown ones, no ``response_format``/``style``
  for GPT image models (a 400, like the real API), ``moderation`` only on generations, ``n`` 1-10, a
  prompt of at most 32,000 characters, sizes the model takes (fixed sizes, or WxH divisible by 16
  within pixel and 3:1 limits for the free-size models), qualities the model takes, enums of
  ``background``/``moderation``/``complexity``/``output_format`` (gif and svg: a 403, preview only),
  ``output_compression`` 0-100 and only for jpeg/webp, ``background=transparent`` not with jpeg,
  ``input_fidelity`` per model (gpt-image-1-mini: low only; gpt-image-2: none), ``partial_images`` 0-3.
- Edits: one ``image`` (or up to 16 ``image[]``) part that is a real png/jpeg/webp under 50 MB; a
  ``mask`` must be a PNG under 4 MB with an alpha channel and the first image's size.
- Safety: a prompt with a blocked word is a 400 ``moderation_blocked``.

It answers with real images of the requested size and format as ``data[].b64_json``, plus ``usage``
token counts that grow with quality, size and ``n``. Tests script failures (429 rate limit with
``Retry-After``, 429 ``insufficient_quota``, 500, a slow answer) with the methods below.

An OpenAI-compatible server (and DALL·E with ``response_format=url``) answers ``data[].url`` instead,
a link valid for an hour: ``fake.links = True`` does that, serving the files at ``GET /files/<name>``
without auth. ``fake.answer_items`` replaces ``data`` of the next billed answer (a shape without a
usable image), usage still counted; ``fake.answer_items_after`` normal answers come first.
``stream=true`` (which the studio does not send yet) is answered as OpenAI documents it: server-sent
``partial_image`` and ``completed`` events.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import time
import uuid

from PIL import Image

from tests.fakes.http import Request, Response, image_bytes

# -- What OpenAI documents, as data -------------------------------------------------------------------
# Source: OpenAI's Images API reference as published in the openai 3.54 SDK (generated from OpenAI's
# OpenAPI spec): openai/types/image_generate_params.py, image_edit_params.py and image_model.py.
# Checked 2026-11-29. Nothing here comes from the studio's catalog: a catalog entry that claims more
# than this fails against the fake, as it would against OpenAI.
GPT_IMAGE_MODELS = {"gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2", "gpt-image-2-2026-04-21",
                    "gpt-image-2.5-sunburst", "gpt-image-2.5-sunburst-2026-09-08", "gpt-image-2.5-flare",
                    "gpt-image-2.5-flare-2026-09-08", "gpt-image-2.6-sunburst", "gpt-image-2.6-flare",
                    "chatgpt-image-latest"}
RETIRED_MODELS = {"gpt-image-1", "dall-e-2", "dall-e-3"}  # shut down 2026-10-23 / 2026-05-12: 404
MAX_PROMPT_CHARS = 32_000  # "The maximum length is 32000 characters" (GPT image models)
N_RANGE = (1, 10)  # "Must be between 1 and 10"
STANDARD_SIZES = {"1024x1024", "1536x1024", "1024x1536", "auto"}  # every GPT image model
# Models that take any "WIDTHxHEIGHT": both sides divisible by 16, aspect ratio within 1:3-3:1, at most
# 3840x2160 (8,294,400 pixels; longest edge 3840), and at least 655,360 pixels (the models' pixel limit).
FREE_SIZE_MODELS = {"gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-2.5-sunburst",
                    "gpt-image-2.5-sunburst-2026-09-08", "gpt-image-2.5-flare", "gpt-image-2.5-flare-2026-09-08"}
FREE_SIZE = {"multiple": 16, "max_ratio": 3, "max_edge": 3840, "min_pixels": 655_360, "max_pixels": 8_294_400}
QUALITIES = {"low", "medium", "high", "auto"}  # "high, medium and low are supported for the GPT image models"
EXTRA_QUALITY_MODELS = {"gpt-image-2.5-sunburst", "gpt-image-2.5-sunburst-2026-09-08", "gpt-image-2.5-flare",
                        "gpt-image-2.5-flare-2026-09-08"}  # "also support xhigh and max"
EXTRA_QUALITIES = {"xhigh", "max"}
OUTPUT_FORMATS = {"png", "jpeg", "webp"}
# gif and svg are documented too, but need preview access this key does not have: a 403.
PREVIEW_OUTPUT_FORMATS = {"gif", "svg"}
OUTPUT_COMPRESSION_RANGE = (0, 100)  # "The compression level (0-100%)", only for jpeg and webp
BACKGROUNDS = {"transparent", "opaque", "auto"}  # transparent needs png or webp
MODERATIONS = {"low", "auto"}  # generations only
COMPLEXITIES = {"low", "medium", "high"}
PARTIAL_IMAGES_RANGE = (0, 3)  # streaming only
# input_fidelity (edits): "Supports high and low on gpt-image-1.5; gpt-image-1-mini supports only low. For
# gpt-image-2, omit this parameter." Models the reference does not name take both values.
INPUT_FIDELITIES = {"high", "low"}
INPUT_FIDELITY_BY_MODEL = {"gpt-image-1.5": {"high", "low"}, "gpt-image-1-mini": {"low"}, "gpt-image-2": set(),
                           "gpt-image-2-2026-04-21": set()}
MAX_INPUT_IMAGES = 16  # "You can provide up to 16 images", each png, webp or jpg under 50 MB
MAX_INPUT_IMAGE_BYTES = 50 * 1024 * 1024
MAX_MASK_BYTES = 4 * 1024 * 1024  # "Must be a valid PNG file, less than 4MB", the first image's size
COMMON_PARAMS = {"model", "prompt", "n", "size", "quality", "output_format", "output_compression", "background",
                 "safety_identifier", "user", "stream", "partial_images", "complexity", "response_format", "style",
                 "frame_count", "frame_duration_ms", "svg"}
GENERATION_PARAMS = COMMON_PARAMS | {"moderation"}
EDIT_PARAMS = (COMMON_PARAMS - {"style"}) | {"image", "image[]", "mask", "input_fidelity", "markup"}
# Output image tokens of one 1024x1024 image at each quality.
OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "xhigh": 6240, "max": 8320, "auto": 4160}
IMAGE_INPUT_TOKENS = 765  # per input image of an edit
COLORS = itertools.cycle([(200, 80, 40), (40, 120, 200), (60, 160, 90), (180, 170, 40)])


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class OpenAIFake:
    """The request handler for ``FakeServer``; ``fake.calls`` lists the image requests it answered."""

    def __init__(self, api_key: str = "sk-test-openai-0123456789abcdefXYZ", blocked_words=("forbidden",)):
        self.api_key = api_key
        self.blocked_words = blocked_words
        self.scripted: list[Response | None] = []  # answered in order before normal handling; None: normally
        self.delay_next = 0.0
        self.calls: list[dict] = []  # the parameters of each image request that got past auth
        self.links = False  # answer data[].url links instead of b64_json
        self.files: dict[str, bytes] = {}  # what the links point at
        self.downloads: list[Request] = []
        self.answer_items: list[dict] | None = None  # the next answer's data[], billed as usual
        self.answer_items_after = 0  # normal answers before answer_items is used

    # -- scripting failures in OpenAI's real shapes ----------------------------------------

    def succeed(self) -> None:
        """Answer the next request normally (to script a failure on a later one)."""
        self.scripted.append(None)

    def rate_limit(self, retry_after: str = "0") -> None:
        self.scripted.append(Response(429, error_body(
            "Rate limit reached for images per minute (IPM): Limit 5, Used 5, Requested 1. Please try again in 1s.",
            "requests", "rate_limit_exceeded"), {"retry-after": retry_after, "x-ratelimit-limit-requests": "5"}))

    def quota_exhausted(self) -> None:
        self.scripted.append(Response(429, error_body(
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota", "insufficient_quota")))

    def server_error(self) -> None:
        self.scripted.append(Response(500, error_body(
            "The server had an error while processing your request. Sorry about that!", "server_error", None)))

    def slow(self, seconds: float) -> None:
        """Answer the next request normally, but only after ``seconds``."""
        self.delay_next = seconds

    # -- the handler ------------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        response = self._answer(request)
        response.headers.setdefault("x-request-id", f"req_{uuid.uuid4().hex[:24]}")
        return response

    def _answer(self, request: Request) -> Response:
        if request.method == "GET" and request.path.startswith("/files/"):
            self.downloads.append(request)
            data = self.files.get(request.path.removeprefix("/files/"))
            if data is None:
                return Response(404, "BlobNotFound", {"content-type": "text/plain"})
            return Response(200, data, {"content-type": "image/png"})
        endpoints = {"/v1/images/generations": "generations", "/v1/images/edits": "edits"}
        endpoint = endpoints.get(request.path)
        if request.method != "POST" or endpoint is None:
            return Response(404, error_body(f"Invalid URL ({request.method} {request.path})",
                                            "invalid_request_error", None))
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:]:
            return Response(401, error_body("You didn't provide an API key. You need to provide your API key in "
                                            "an Authorization header using Bearer auth.", "invalid_request_error",
                                            None))
        if auth[7:] != self.api_key:
            given = auth[7:]
            return Response(401, error_body(f"Incorrect API key provided: {given[:3]}{'*' * 20}{given[-4:]}. You "
                                            "can find your API key at https://platform.openai.com/account/api-keys.",
                                            "invalid_request_error", "invalid_api_key"))
        if self.scripted:
            scripted = self.scripted.pop(0)
            if scripted is not None:
                return scripted
        try:
            params, images, mask = self._parse(request, endpoint)
            self.calls.append({"endpoint": endpoint, **params, "images": images, "mask": mask})
            return self._generate(endpoint, params, images, mask, f"http://{request.headers['host']}")
        except _Rejected as rejected:
            return rejected.response

    def _parse(self, request: Request, endpoint: str):
        images: list[Image.Image] = []
        mask = None
        if endpoint == "generations":
            if not request.content_type.startswith("application/json"):
                raise _Rejected(400, f"Invalid Content-Type header ({request.content_type}), expected "
                                     "application/json.", "invalid_request_error", None)
            params = request.json()
        else:
            if not request.content_type.startswith("multipart/form-data"):
                raise _Rejected(400, f"Invalid Content-Type header ({request.content_type}), expected "
                                     "multipart/form-data.", "invalid_request_error", None)
            params = {}
            for name, parts in request.multipart().items():
                if name in ("image", "image[]"):
                    for part in parts:
                        if len(part.data) >= MAX_INPUT_IMAGE_BYTES:
                            raise _Rejected(400, f"Invalid '{name}': each image must be less than 50MB.",
                                            "invalid_request_error", "image_too_large", name)
                    images.extend(_open_upload(part.data, name) for part in parts)
                elif name == "mask":
                    if len(parts[0].data) >= MAX_MASK_BYTES:
                        raise _Rejected(400, "Invalid 'mask': the mask must be less than 4MB.",
                                        "invalid_request_error", "image_too_large", "mask")
                    mask = _open_upload(parts[0].data, "mask")
                else:
                    params[name] = parts[0].text
            for number in ("n", "output_compression", "partial_images", "frame_count", "frame_duration_ms"):
                if number in params:
                    params[number] = _int(params[number], number)
        allowed = GENERATION_PARAMS if endpoint == "generations" else EDIT_PARAMS
        for name in params:
            if name not in allowed:
                raise _Rejected(400, f"Unknown parameter: '{name}'.", "invalid_request_error", "unknown_parameter",
                                name)
        return params, images, mask

    def _generate(self, endpoint: str, params: dict, images: list, mask, base: str) -> Response:
        model = params.get("model")
        if model not in GPT_IMAGE_MODELS:
            return Response(404, error_body(f"The model `{model}` does not exist or you do not have access to it.",
                                            "invalid_request_error", "model_not_found"))
        for legacy in ("response_format", "style"):
            if legacy in params:
                raise _Rejected(400, f"Unknown parameter: '{legacy}'.", "invalid_request_error", "unknown_parameter",
                                legacy)
        prompt = params.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise _Rejected(400, "Missing required parameter: 'prompt'.", "invalid_request_error",
                            "missing_required_parameter", "prompt")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise _Rejected(400, f"Invalid 'prompt': string too long. Expected a string with maximum length "
                                 f"{MAX_PROMPT_CHARS}, but got a string with length {len(prompt)} instead.",
                            "invalid_request_error", "string_above_max_length", "prompt")
        n = params.get("n", 1)
        _check_int(n, "n", *N_RANGE)
        width, height = _size(model, params.get("size", "auto"))
        quality = params.get("quality", "auto")
        qualities = QUALITIES | (EXTRA_QUALITIES if model in EXTRA_QUALITY_MODELS else set())
        _check_enum(quality, "quality", qualities)
        fmt = params.get("output_format", "png")
        if fmt in PREVIEW_OUTPUT_FORMATS:
            raise _Rejected(403, f"output_format '{fmt}' requires access to its preview for {model}.",
                            "invalid_request_error", "model_not_found", "output_format")
        _check_enum(fmt, "output_format", OUTPUT_FORMATS)
        if "output_compression" in params:
            if fmt == "png":
                raise _Rejected(400, "output_compression is only supported for jpeg and webp.",
                                "invalid_request_error", "invalid_value", "output_compression")
            _check_int(params["output_compression"], "output_compression", *OUTPUT_COMPRESSION_RANGE)
        background = params.get("background", "auto")
        _check_enum(background, "background", BACKGROUNDS)
        if background == "transparent" and fmt == "jpeg":
            raise _Rejected(400, "Transparent background requires png or webp output.", "invalid_request_error",
                            "invalid_value", "background")
        if "moderation" in params:
            _check_enum(params["moderation"], "moderation", MODERATIONS)
        if "complexity" in params:
            _check_enum(params["complexity"], "complexity", COMPLEXITIES)
        if "partial_images" in params:
            _check_int(params["partial_images"], "partial_images", *PARTIAL_IMAGES_RANGE)
        if "input_fidelity" in params:
            fidelities = INPUT_FIDELITY_BY_MODEL.get(model, INPUT_FIDELITIES)
            if not fidelities:
                raise _Rejected(400, f"input_fidelity is not supported for {model}; omit it.",
                                "invalid_request_error", "unsupported_parameter", "input_fidelity")
            _check_enum(params["input_fidelity"], "input_fidelity", fidelities)
        if endpoint == "edits":
            self._check_edit_inputs(images, mask)
        if any(word in prompt.lower() for word in self.blocked_words):
            raise _Rejected(400, "Your request was rejected by the safety system. Your request may contain content "
                                 "that is not allowed by our safety system.", "image_generation_user_error",
                            "moderation_blocked")

        color = next(COLORS)
        pictures = [image_bytes(width, height, fmt.upper(), color) for _ in range(n)]
        if self.answer_items is not None and self.answer_items_after > 0:
            self.answer_items_after -= 1
            data = [{"b64_json": base64.b64encode(picture).decode()} for picture in pictures]
        elif self.answer_items is not None:
            data, self.answer_items = self.answer_items, None
        elif self.links:
            data = []
            for picture in pictures:
                name = f"img-{uuid.uuid4().hex[:16]}.{fmt}"
                self.files[name] = picture
                data.append({"url": f"{base}/files/{name}", "revised_prompt": prompt})
        else:
            data = [{"b64_json": base64.b64encode(picture).decode()} for picture in pictures]
        per_image = round(OUTPUT_TOKENS[quality] * width * height / (1024 * 1024))
        text_tokens = max(1, len(prompt) // 4)
        image_tokens = IMAGE_INPUT_TOKENS * len(images)
        usage = {
            "input_tokens": text_tokens + image_tokens,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
            "output_tokens": per_image * n,
            "output_tokens_details": {"image_tokens": per_image * n, "text_tokens": 0},
            "total_tokens": text_tokens + image_tokens + per_image * n,
        }
        body = {"created": int(time.time()), "data": data, "background": "transparent" if background == "transparent"
                else "opaque", "output_format": fmt, "quality": "high" if quality == "auto" else quality,
                "size": f"{width}x{height}", "usage": usage}
        delay, self.delay_next = self.delay_next, 0.0
        if params.get("stream") in (True, "true"):
            return Response(200, _event_stream(endpoint, body, pictures, params.get("partial_images", 0)),
                            {"content-type": "text/event-stream"}, delay=delay)
        return Response(200, body, delay=delay)

    @staticmethod
    def _check_edit_inputs(images: list, mask) -> None:
        if not images:
            raise _Rejected(400, "Missing required parameter: 'image'.", "invalid_request_error",
                            "missing_required_parameter", "image")
        if len(images) > MAX_INPUT_IMAGES:
            raise _Rejected(400, f"Too many images: at most {MAX_INPUT_IMAGES}.", "invalid_request_error",
                            "invalid_value", "image")
        if mask is None:
            return
        if mask.format != "PNG" or "A" not in mask.getbands():
            raise _Rejected(400, "Invalid mask image format - mask image missing alpha channel.",
                            "invalid_request_error", "invalid_image_format", "mask")
        if mask.size != images[0].size:
            raise _Rejected(400, "Invalid mask image - mask size does not match image size.",
                            "invalid_request_error", "invalid_image_size", "mask")


class _Rejected(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str | None, param: str | None = None):
        super().__init__(message)
        self.response = Response(status, error_body(message, type_, code, param))


def _event_stream(endpoint: str, body: dict, pictures: list[bytes], partial_images: int) -> bytes:
    """A streamed answer (``stream=true``) as server-sent events: for each image, ``partial_images``
    ``<kind>.partial_image`` events, then a ``<kind>.completed`` event carrying the image and the usage,
    where kind is ``image_generation`` or ``image_edit`` (openai 3.54: ImageGenStreamEvent, ImageEditStreamEvent)."""
    kind = "image_generation" if endpoint == "generations" else "image_edit"
    common = {name: body[name] for name in ("background", "output_format", "quality", "size")}
    common["created_at"] = body["created"]
    events = []
    for picture in pictures:
        encoded = base64.b64encode(picture).decode()
        for index in range(partial_images):
            events.append({"type": f"{kind}.partial_image", "b64_json": encoded, "partial_image_index": index,
                           **common})
        events.append({"type": f"{kind}.completed", "b64_json": encoded, "usage": body["usage"], **common})
    return "".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n" for event in events).encode()


def _check_int(value, name: str, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Rejected(400, f"Invalid type for '{name}': expected an integer, but got {type(value).__name__}.",
                        "invalid_request_error", "invalid_type", name)
    if value < low:
        raise _Rejected(400, f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, but got "
                             f"{value} instead.", "invalid_request_error", "integer_below_min_value", name)
    if value > high:
        raise _Rejected(400, f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, but got "
                             f"{value} instead.", "invalid_request_error", "integer_above_max_value", name)


def _check_enum(value, name: str, allowed: set[str]) -> None:
    if value not in allowed:
        raise _Rejected(400, f"Invalid value: '{value}'. Supported values are: "
                             f"{', '.join(repr(v) for v in sorted(allowed))}.", "invalid_request_error",
                        "invalid_value", name)


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _Rejected(400, f"Invalid type for '{name}': expected an integer.", "invalid_request_error",
                        "invalid_type", name) from None


def _open_upload(data: bytes, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception:
        raise _Rejected(400, f"Invalid image file or mode for '{name}'.", "invalid_request_error",
                        "invalid_image_format", name) from None
    if image.format not in ("PNG", "JPEG", "WEBP"):
        raise _Rejected(400, f"Unsupported image format {image.format} for '{name}'.", "invalid_request_error",
                        "invalid_image_format", name)
    return image


def _size(model: str, size: str) -> tuple[int, int]:
    if size == "auto":
        return 1024, 1024
    try:
        width, height = (int(v) for v in size.split("x"))
    except ValueError:
        raise _Rejected(400, f"Invalid size '{size}'.", "invalid_request_error", "invalid_value", "size") from None
    if model not in FREE_SIZE_MODELS:
        if size not in STANDARD_SIZES:
            raise _Rejected(400, f"Invalid size '{size}'. Supported sizes are 1024x1024, 1024x1536, 1536x1024, "
                                 "and auto.", "invalid_request_error", "invalid_value", "size")
        return width, height
    limits = FREE_SIZE
    if width % limits["multiple"] or height % limits["multiple"] \
            or max(width, height) > limits["max_ratio"] * min(width, height) \
            or max(width, height) > limits["max_edge"] \
            or not limits["min_pixels"] <= width * height <= limits["max_pixels"]:
        raise _Rejected(400, f"Invalid size '{size}': both sides must be multiples of 16, the aspect ratio at most "
                             "3:1, and the pixel count within the model's limits.", "invalid_request_error",
                        "invalid_value", "size")
    return width, height
