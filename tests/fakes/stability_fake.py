"""A loopback stand-in for Stability AI's Stable Image API (v2beta), checking requests like the real one.

What it checks, on every request:
- ``POST /v2beta/stable-image/generate/{ultra,core,sd3}`` and ``/v2beta/stable-image/edit/inpaint``;
  anything else is a 404 in Stability's ``{"id", "name", "errors"}`` shape.
- ``authorization: Bearer <key>``: missing or wrong is a 401 ``unauthorized``.
- ``content-type: multipart/form-data``, even without files: anything else (urlencoded, JSON) is a
  400 ``content-type: must be multipart/form-data``, as the real API answers.
- ``accept``: ``image/*`` (the default) or ``application/json``; anything else is a 400.
- Bodies over 10 MiB are a 413.
- Fields, with the limits Stability publishes (the data block below names its source and date; nothing
  is taken from the studio's catalog): ``prompt`` (1-10,000 characters), ``aspect_ratio`` from the
  nine ratios, ``seed`` 0-4294967294, ``output_format`` png/jpeg/webp on every endpoint,
  ``style_preset`` from Stability's list (ultra, core, sd3 and inpaint),
  ``strength`` 0-1; sd3: ``model``, ``mode`` (image-to-image needs ``image`` + ``strength`` and takes no
  ``aspect_ratio``; text-to-image takes no image), ``cfg_scale`` 1-10; ultra: ``strength`` with an
  image; core: no image; inpaint: ``image`` and ``mask``, ``grow_mask`` 0-100. Uploaded images must
  decode, have sides of at least 64 px and 4,096 to 9,437,184 pixels.
  Stricter than the real API in one way: a field the endpoint does not document is a 400, so a
  provider cannot send a field that the service would silently ignore.
- Safety: a prompt with a blocked word is a 403 ``content_moderation``; one with a filtered word is
  an HTTP 200 with ``finish-reason: CONTENT_FILTERED`` and a blurred image.

It answers with a real image in the asked format: about one megapixel at the asked aspect ratio
for text-to-image, the input's size for image-to-image and inpainting, with ``finish-reason`` and
``seed`` headers (or the JSON form for ``accept: application/json``). Tests script failures
(429 with ``Retry-After``, 402 out of credits, 500, a slow answer) with the methods below.
"""

from __future__ import annotations

import base64
import io
import itertools
import random
import uuid

from PIL import Image, ImageFilter

from tests.fakes.http import Request, Response

# -- What Stability AI documents, as data -----------------------------------------------------------
# Source: Stability AI's REST API reference, v2beta Stable Image (platform.stability.ai/docs/api-reference,
# "Generate" and "Edit" sections: request fields, enums, limits, error codes), checked 2026-11-29. Nothing
# here comes from the studio's catalog: a catalog entry that claims more than this fails against the fake.
# Pixel sizes Stability returns for each aspect ratio (about one megapixel).
RATIO_SIZES = {"21:9": (1536, 640), "16:9": (1344, 768), "3:2": (1216, 832), "5:4": (1152, 896),
               "1:1": (1024, 1024), "4:5": (896, 1152), "2:3": (832, 1216), "9:16": (768, 1344),
               "9:21": (640, 1536)}
STYLE_PRESETS = {"enhance", "anime", "photographic", "digital-art", "comic-book", "fantasy-art", "line-art",
                 "analog-film", "neon-punk", "isometric", "low-poly", "origami", "modeling-compound", "cinematic",
                 "3d-model", "pixel-art", "tile-texture"}
SD3_MODELS = {"sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash"}
MAX_PROMPT_CHARS = 10_000  # prompt and negative_prompt
SEED_RANGE = (0, 4294967294)
CFG_SCALE_RANGE = (1, 10)  # sd3 only
GROW_MASK_RANGE = (0, 100)  # inpaint only
# Uploaded images: every side at least 64 px, 4,096 to 9,437,184 pixels in all.
MIN_IMAGE_SIDE, IMAGE_PIXELS = 64, (4_096, 9_437_184)
# The fields each endpoint documents. style_preset is documented on ultra, core, sd3 and inpaint.
FIELDS = {
    "generate/ultra": {"prompt", "negative_prompt", "aspect_ratio", "seed", "output_format", "image", "strength",
                       "style_preset"},
    "generate/core": {"prompt", "negative_prompt", "aspect_ratio", "seed", "style_preset", "output_format"},
    "generate/sd3": {"prompt", "mode", "image", "strength", "aspect_ratio", "model", "seed", "output_format",
                     "negative_prompt", "cfg_scale", "style_preset"},
    "edit/inpaint": {"prompt", "negative_prompt", "image", "mask", "grow_mask", "seed", "output_format",
                     "style_preset"},
}
# output_format: jpeg, png and webp on every endpoint (sd3 included); png by default.
OUTPUT_FORMATS = {endpoint: {"png", "jpeg", "webp"} for endpoint in FIELDS}
# finish-reason of a 200 answer: SUCCESS, or CONTENT_FILTERED with a blurred image.
FINISH_REASONS = ("SUCCESS", "CONTENT_FILTERED")
# Error statuses the reference lists, with the ``name`` each answers: 400 bad_request, 401, 402
# payment_required, 403 content_moderation, 413 payload_too_large (bodies over 10 MiB), 422
# invalid_language (a prompt not in English) and the like, 429 rate_limit_exceeded (more than 150
# requests in 10 s), 500 internal_error.
ERROR_NAMES = {400: "bad_request", 401: "unauthorized", 402: "payment_required", 403: "content_moderation",
               404: "not_found", 413: "payload_too_large", 422: "invalid_language", 429: "rate_limit_exceeded",
               500: "internal_error"}
MAX_BODY = 10 * 1024 * 1024
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
COLORS = itertools.cycle([(30, 110, 180), (190, 90, 50), (70, 150, 80), (160, 60, 150)])


def error_body(name: str, *errors: str) -> dict:
    return {"id": uuid.uuid4().hex, "name": name, "errors": list(errors)}


class StabilityFake:
    """The request handler for ``FakeServer``; ``fake.calls`` lists the generations it accepted."""

    def __init__(self, api_key: str = "sk-test-stability-0123456789abcdefXYZ", blocked_words=("forbidden",),
                 filtered_words=("blurme",)):
        self.api_key = api_key
        self.blocked_words = blocked_words
        self.filtered_words = filtered_words
        self.scripted: list[Response | None] = []  # answered in order before normal handling; None: normally
        self.delay_next = 0.0
        self.calls: list[dict] = []  # {"endpoint", "fields", "files", "accept"} of each accepted request

    # -- scripting failures in Stability's real shapes -------------------------------------

    def succeed(self) -> None:
        self.scripted.append(None)

    def rate_limit(self, retry_after: str = "0") -> None:
        self.scripted.append(Response(429, error_body(
            ERROR_NAMES[429], "You have exceeded the rate limit of 150 requests within a 10 second period, "
            "and have been timed out for 60 seconds."), {"retry-after": retry_after}))

    def out_of_credits(self) -> None:
        self.scripted.append(Response(402, error_body(
            ERROR_NAMES[402], "You lack sufficient credits to make this request. Please purchase more credits "
            "at https://platform.stability.ai/account/credits and try again.")))

    def server_error(self) -> None:
        self.scripted.append(Response(500, error_body(
            ERROR_NAMES[500], "An unexpected server error has occurred, please try again later.")))

    def content_filtered(self) -> None:
        """Answer the next request with HTTP 200, a blurred image and ``finish-reason: CONTENT_FILTERED``."""
        buffer = io.BytesIO()
        Image.new("RGB", (1024, 1024), (128, 128, 128)).filter(ImageFilter.GaussianBlur(8)).save(buffer, "PNG")
        self.scripted.append(Response(200, buffer.getvalue(), {"content-type": "image/png",
                                                               "finish-reason": "CONTENT_FILTERED", "seed": "7"}))

    def slow(self, seconds: float) -> None:
        """Answer the next request normally, but only after ``seconds``."""
        self.delay_next = seconds

    # -- the handler ------------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        prefix = "/v2beta/stable-image/"
        endpoint = request.path[len(prefix):] if request.path.startswith(prefix) else ""
        if request.method != "POST" or endpoint not in FIELDS:
            return Response(404, error_body("not_found", f"{request.method} {request.path} does not exist"))
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            return Response(401, error_body("unauthorized", "authorization: invalid or missing header value"))
        if len(request.body) > MAX_BODY:
            return Response(413, error_body(ERROR_NAMES[413], "body: payloads cannot be larger than 10MiB in size"))
        if not request.content_type.startswith("multipart/form-data"):
            return Response(400, error_body("bad_request", "content-type: must be multipart/form-data"))
        accept = request.headers.get("accept", "image/*")
        if accept not in ("image/*", "application/json"):
            return Response(400, error_body("bad_request", "accept: must be either image/* or application/json"))
        if self.scripted:
            scripted = self.scripted.pop(0)
            if scripted is not None:
                return scripted
        try:
            fields, files = _parse(request)
            self._validate(endpoint, fields, files)
        except _Rejected as rejected:
            return rejected.response
        self.calls.append({"endpoint": endpoint, "fields": fields, "files": files, "accept": accept})
        return self._image(endpoint, fields, files, accept)

    def _validate(self, endpoint: str, fields: dict[str, str], files: dict[str, Image.Image]) -> None:
        for name in [*fields, *files]:
            if name not in FIELDS[endpoint]:
                raise _Rejected(400, "bad_request", f"{name}: is not a field of {endpoint}")
        prompt = fields.get("prompt", "")
        if not prompt.strip():
            raise _Rejected(400, "bad_request", "prompt: is required")
        for name in ("prompt", "negative_prompt"):
            if len(fields.get(name, "")) > MAX_PROMPT_CHARS:
                raise _Rejected(400, "bad_request", f"{name}: must be at most {MAX_PROMPT_CHARS} characters")
        formats = OUTPUT_FORMATS[endpoint]
        if fields.get("output_format", "png") not in formats:
            raise _Rejected(400, "bad_request", f"output_format: must be one of {sorted(formats)}")
        if "aspect_ratio" in fields and fields["aspect_ratio"] not in RATIO_SIZES:
            raise _Rejected(400, "bad_request", f"aspect_ratio: must be one of {list(RATIO_SIZES)}")
        if "seed" in fields and not _within(fields, "seed", int, SEED_RANGE):
            raise _Rejected(400, "bad_request", f"seed: must be between {SEED_RANGE[0]} and {SEED_RANGE[1]}")
        if "strength" in fields and not 0 <= _number(fields, "strength", float) <= 1:
            raise _Rejected(400, "bad_request", "strength: must be between 0 and 1")
        if "style_preset" in fields and fields["style_preset"] not in STYLE_PRESETS:
            raise _Rejected(400, "bad_request", "style_preset: must be one of the documented presets")
        for name, image in files.items():
            width, height = image.size
            if min(width, height) < MIN_IMAGE_SIDE or not IMAGE_PIXELS[0] <= width * height <= IMAGE_PIXELS[1]:
                raise _Rejected(400, "bad_request", f"{name}: dimensions must be at least 64px per side and "
                                                    "between 4,096 and 9,437,184 pixels")
        if endpoint == "generate/sd3":
            self._validate_sd3(fields, files)
        elif endpoint == "generate/ultra" and "image" in files and "strength" not in fields:
            raise _Rejected(400, "bad_request", "strength: is required when image is provided")
        elif endpoint == "edit/inpaint":
            if "image" not in files or "mask" not in files:
                raise _Rejected(400, "bad_request", "image and mask: are required")
            if "grow_mask" in fields and not _within(fields, "grow_mask", int, GROW_MASK_RANGE):
                raise _Rejected(400, "bad_request", "grow_mask: must be between 0 and 100")
        if any(word in prompt.lower() for word in self.blocked_words):
            raise _Rejected(403, ERROR_NAMES[403], "Your request was flagged by our content moderation system, "
                                                       "as a result your request was denied and you were not charged.")

    @staticmethod
    def _validate_sd3(fields: dict[str, str], files: dict) -> None:
        if fields.get("model", "sd3.5-large") not in SD3_MODELS:
            raise _Rejected(400, "bad_request", f"model: must be one of {sorted(SD3_MODELS)}")
        mode = fields.get("mode", "text-to-image")
        if mode == "image-to-image":
            if "image" not in files or "strength" not in fields:
                raise _Rejected(400, "bad_request", "image-to-image: image and strength are required")
            if "aspect_ratio" in fields:
                raise _Rejected(400, "bad_request", "aspect_ratio: is only valid for text-to-image requests")
        elif mode == "text-to-image":
            if "image" in files:
                raise _Rejected(400, "bad_request", "image: is not allowed in text-to-image mode")
        else:
            raise _Rejected(400, "bad_request", "mode: must be text-to-image or image-to-image")
        if "cfg_scale" in fields and not _within(fields, "cfg_scale", float, CFG_SCALE_RANGE):
            raise _Rejected(400, "bad_request", "cfg_scale: must be between 1 and 10")

    def _image(self, endpoint: str, fields: dict[str, str], files: dict, accept: str) -> Response:
        if "image" in files:
            size = files["image"].size
        else:
            size = RATIO_SIZES[fields.get("aspect_ratio", "1:1")]
        fmt = fields.get("output_format", "png")
        image = Image.new("RGB", size, next(COLORS))
        finish_reason = FINISH_REASONS[0]  # SUCCESS
        if any(word in fields["prompt"].lower() for word in self.filtered_words):
            finish_reason = FINISH_REASONS[1]  # CONTENT_FILTERED
            image = image.filter(ImageFilter.GaussianBlur(8))
        buffer = io.BytesIO()
        image.save(buffer, format=fmt.upper())
        seed = fields.get("seed") or str(random.randint(0, 4294967294))
        delay, self.delay_next = self.delay_next, 0.0
        if accept == "application/json":
            return Response(200, {"image": base64.b64encode(buffer.getvalue()).decode(),
                                  "finish_reason": finish_reason, "seed": int(seed)}, delay=delay)
        return Response(200, buffer.getvalue(), {"content-type": MIME[fmt], "finish-reason": finish_reason,
                                                 "seed": seed}, delay=delay)


class _Rejected(Exception):
    def __init__(self, status: int, name: str, message: str):
        super().__init__(message)
        self.response = Response(status, error_body(name, message))


def _parse(request: Request) -> tuple[dict[str, str], dict[str, Image.Image]]:
    fields: dict[str, str] = {}
    files: dict[str, Image.Image] = {}
    for name, parts in request.multipart().items():
        part = parts[0]
        if part.filename is None:
            fields[name] = part.text
            continue
        try:
            image = Image.open(io.BytesIO(part.data))
            image.load()
        except Exception:
            raise _Rejected(400, "bad_request", f"{name}: is not a valid image") from None
        files[name] = image
    return fields, files


def _number(fields: dict[str, str], name: str, kind):
    try:
        return kind(fields[name])
    except ValueError:
        raise _Rejected(400, "bad_request", f"{name}: must be a number") from None


def _within(fields: dict[str, str], name: str, kind, bounds: tuple[float, float]) -> bool:
    low, high = bounds
    return low <= _number(fields, name, kind) <= high
