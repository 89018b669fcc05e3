"""A loopback Replicate: the HTTP API v1 as the ``replicate`` 1.x SDK speaks it.

What it checks and answers like the real service:
- ``Authorization: Bearer <token>`` on every API call (401 problem JSON otherwise);
- official models on ``POST /v1/models/{owner}/{name}/predictions`` and version-pinned models on
  ``POST /v1/predictions`` (``{"version", "input"}``), both answering 201 with a prediction;
  ``GET /v1/models/{owner}/{name}/versions/{id}``; ``POST /v1/files`` (multipart ``content``);
- each model's input schema, strictly: unknown fields, wrong types, out-of-range numbers and bad
  enum values are a 422 "Input validation failed", and image inputs must be data URIs or file URLs
  that decode to real images (a mask must match its image's size);
- ``GET /v1/predictions/{id}``: starting -> processing (with tqdm-style progress logs) ->
  succeeded, with ``metrics.predict_time``; output file URLs served by this same server as real
  images of the requested size/format, which need the API token like the SDK's ``FileOutput``
  sends it (``outputs_need_token``); or ``aborted`` straight from starting (its deadline passed
  before it could start; the 1.x SDK's model lacks that status);
- ``POST /v1/predictions/{id}/cancel``;
- errors as ``{"title", "detail", "status"}`` with the status code and headers (``Retry-After``)
  queued by a test.
"""

from __future__ import annotations

import base64
import io
import itertools
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image

from tests.fakes.http import Request, Response, image_bytes

TOKEN = "r8_fake_token_0123456789abcdef"
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"

# -- What Replicate documents, as data ---------------------------------------------------------------
# Sources, checked 2026-11-29: Replicate's HTTP API reference (predictions: create, get, cancel; statuses
# starting, processing, succeeded, failed, canceled, aborted; errors as problem JSON) and each model's
# published input schema (replicate.com/<owner>/<model>/api: black-forest-labs/flux-schnell, flux-dev,
# flux-1.1-pro, and stability-ai/sdxl at the pinned version). Nothing here comes from the studio's
# catalog: a catalog entry that claims more than these schemas fails against the fake.
STATUSES = ("starting", "processing", "succeeded", "failed", "canceled", "aborted")
FLUX_RATIOS = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]  # schnell, dev
# flux-1.1-pro: no 21:9 or 9:21; "custom" takes width and height (256-1440, rounded to a multiple of 32).
FLUX_PRO_RATIOS = ["custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3"]
FLUX_PRO_SIDE = (256, 1440)
FLUX_PRO_MULTIPLE = 32
FLUX_FORMATS = ["webp", "jpg", "png"]
PIL_NAMES = {"webp": "WEBP", "jpg": "JPEG", "png": "PNG"}


def _str(value):
    return isinstance(value, str)


def _int(lo, hi):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _num(lo, hi):
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi


def _enum(*values):
    return lambda v: v in values


def _bool(value):
    return isinstance(value, bool)


def _uri(value):
    return isinstance(value, str) and re.match(r"^(data:|https?://)", value) is not None


_FLUX_COMMON = {
    "prompt": _str, "aspect_ratio": _enum(*FLUX_RATIOS), "seed": _int(0, 2**32 - 1),
    "output_format": _enum(*FLUX_FORMATS), "output_quality": _int(0, 100),
    "disable_safety_checker": _bool, "go_fast": _bool, "megapixels": _enum("1", "0.25"),
}


@dataclass
class FakeModel:
    owner: str
    name: str
    version: str
    schema: dict[str, Callable[[Any], bool]]
    single_output: bool = False  # FLUX 1.1 pro answers one URL, not a list
    official: bool = True


MODELS = [
    FakeModel("black-forest-labs", "flux-schnell", "c846a69991daf4c0e5d016514849d14ee5b2e6846ce6b9d6f21369e564cfe51e",
              {**_FLUX_COMMON, "num_outputs": _int(1, 4), "num_inference_steps": _int(1, 4)}),
    FakeModel("black-forest-labs", "flux-dev", "6e4a938f85952bdabcc15aa329178c4d681c52bf25a0342403287dc26944661d",
              {**_FLUX_COMMON, "num_outputs": _int(1, 4), "num_inference_steps": _int(1, 50),
               "guidance": _num(0, 10), "image": _uri, "prompt_strength": _num(0, 1)}),
    FakeModel("black-forest-labs", "flux-1.1-pro", "80a09d66baa990429c2f5ae8a4306bf778a1b3775afd01cc2cc8bdbe9033769c",
              {"prompt": _str, "aspect_ratio": _enum(*FLUX_PRO_RATIOS), "seed": _int(0, 2**32 - 1),
               "width": _int(*FLUX_PRO_SIDE), "height": _int(*FLUX_PRO_SIDE), "image_prompt": _uri,
               "output_format": _enum(*FLUX_FORMATS), "output_quality": _int(0, 100),
               "safety_tolerance": _int(1, 6), "prompt_upsampling": _bool}, single_output=True),
    FakeModel("stability-ai", "sdxl", SDXL_VERSION,
              {"prompt": _str, "negative_prompt": _str, "image": _uri, "mask": _uri,
               "width": _int(128, 2048), "height": _int(128, 2048), "num_outputs": _int(1, 4),
               "num_inference_steps": _int(1, 500), "guidance_scale": _num(1, 50),
               "prompt_strength": _num(0, 1), "seed": _int(0, 2**32 - 1),
               "scheduler": _enum("DDIM", "DPMSolverMultistep", "HeunDiscrete", "KarrasDPM", "K_EULER_ANCESTRAL",
                                  "K_EULER", "PNDM"),
               "refine": _enum("no_refiner", "expert_ensemble_refiner", "base_image_refiner"),
               "high_noise_frac": _num(0, 1), "refine_steps": _int(1, 500), "lora_scale": _num(0, 1),
               "replicate_weights": _str, "apply_watermark": _bool, "disable_safety_checker": _bool},
              official=False),
]


# The pixel sizes FLUX answers for each aspect ratio at one megapixel.
FLUX_SIZES = {"1:1": (1024, 1024), "16:9": (1344, 768), "21:9": (1536, 640), "3:2": (1216, 832),
              "2:3": (832, 1216), "4:5": (896, 1088), "5:4": (1088, 896), "3:4": (896, 1152), "4:3": (1152, 896),
              "9:16": (768, 1344), "9:21": (640, 1536), "custom": (1024, 1024)}


@dataclass
class Prediction:
    id: str
    model: FakeModel
    input: dict[str, Any]
    images: dict[str, Image.Image]  # decoded image inputs, by field
    status: str = "starting"
    polls: int = 0
    output: Any = None
    error: str | None = None
    logs: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"title": title, "detail": detail, "status": status}, headers=dict(headers or {}))


class ReplicateFake:
    """The request handler for ``FakeServer``. Tests steer it through its attributes:

    ``outcome``: "succeed" | "nsfw" | "fail" | "never" (stays processing until cancelled) |
    "null_output" (succeeds, billed, with ``output: null``, as a model whose safety checker drops its
    image does) | "empty_output" (succeeds with ``output: []``);
    ``polls_to_finish``: GETs in "processing" before the end; ``predict_time``: seconds reported;
    ``queue_error(kind, response)``: answer the next ``kind`` ("create", "get", "files") with it;
    ``expired_outputs``: indexes of output files the delivery host answers 404 for (expired links);
    ``outcome = "aborted"``: the prediction goes from starting to aborted, no output, no metrics;
    ``outputs_need_token``: output files answer 401 without the token (default True);
    ``output_base``: where output URLs point (default this server), e.g. another host's server.
    """

    def __init__(self, token: str = TOKEN):
        self.token = token
        self.outcome = "succeed"
        self.polls_to_finish = 2
        self.predict_time = 2.5
        self.predictions: dict[str, Prediction] = {}
        self.files: dict[str, bytes] = {}
        self.cancelled: list[str] = []
        self.downloads: list[Request] = []
        self.expired_outputs: set[int] = set()
        self.outputs_need_token = True
        self.output_base: str | None = None
        self.queued: dict[str, list[Response]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def queue_error(self, kind: str, response: Response, times: int = 1) -> None:
        self.queued.setdefault(kind, []).extend([response] * times)

    def _queued(self, kind: str) -> Response | None:
        with self._lock:
            pending = self.queued.get(kind)
            return pending.pop(0) if pending else None

    # -- routing --------------------------------------------------------------------------------

    def __call__(self, request: Request) -> Response:
        path = request.path
        if request.method == "GET" and path.startswith("/output/"):
            return self._serve_output(request)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        base = f"http://{request.headers['host']}"
        if m := re.fullmatch(r"/v1/models/([^/]+)/([^/]+)/predictions", path):
            if request.method == "POST":
                return self._create(request, base, self._model_by_name(m[1], m[2]))
        if path == "/v1/predictions" and request.method == "POST":
            body = request.json() or {}
            model = next((mdl for mdl in MODELS if mdl.version == body.get("version")), None)
            if model is None or model.official:
                return problem(422, "Invalid version or not permitted",
                               "The specified version does not exist (or perhaps you don't have permission to use it?)")
            return self._create(request, base, model)
        if m := re.fullmatch(r"/v1/models/([^/]+)/([^/]+)/versions/([^/]+)", path):
            model = self._model_by_name(m[1], m[2])
            if model is None or model.version != m[3]:
                return problem(404, "Not found", "Not found.")
            return Response(200, {"id": model.version, "created_at": "2024-01-01T00:00:00Z", "cog_version": "0.9.4",
                                  "openapi_schema": {"components": {"schemas": {"Output": {"type": "array"}}}}})
        if m := re.fullmatch(r"/v1/predictions/([^/]+)", path):
            if request.method == "GET":
                return self._get(m[1], base)
        if m := re.fullmatch(r"/v1/predictions/([^/]+)/cancel", path):
            if request.method == "POST":
                return self._cancel(m[1], base)
        if path == "/v1/files" and request.method == "POST":
            return self._upload(request, base)
        if m := re.fullmatch(r"/v1/files/([^/]+)/download", path):
            data = self.files.get(m[1])
            if data is None:
                return problem(404, "Not found", "Not found.")
            return Response(200, data, {"content-type": "image/png"})
        return problem(404, "Not found", f"no route for {request.method} {path}")

    @staticmethod
    def _model_by_name(owner: str, name: str) -> FakeModel | None:
        return next((m for m in MODELS if (m.owner, m.name) == (owner, name)), None)

    # -- predictions ----------------------------------------------------------------------------

    def _create(self, request: Request, base: str, model: FakeModel | None) -> Response:
        if model is None or not model.official and "/models/" in request.path:
            return problem(404, "Not found", "The requested resource could not be found.")
        if queued := self._queued("create"):
            return queued
        if not request.content_type.startswith("application/json"):
            return problem(415, "Unsupported media type", "send JSON")
        body = request.json() or {}
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            return problem(422, "Input validation failed", "input: Invalid type. Expected: object")
        errors = [f"{key}: Additional property {key} is not allowed" for key in inputs if key not in model.schema]
        errors += [f"{key}: Does not match the schema" for key, value in inputs.items()
                   if key in model.schema and not model.schema[key](value)]
        if "prompt" not in inputs:
            errors.append("(root): prompt is required")
        images = {}
        for key in ("image", "mask"):
            if key in inputs and not errors:
                try:
                    images[key] = self._open_input(inputs[key], base)
                except ValueError as exc:
                    errors.append(f"{key}: {exc}")
        if "mask" in images and ("image" not in images or images["mask"].size != images["image"].size):
            errors.append("mask: must accompany an image of the same size")
        if errors:
            return problem(422, "Input validation failed", " - ".join(errors))
        with self._lock:
            prediction_id = f"fakepred{next(self._ids):06d}"
            prediction = Prediction(prediction_id, model, inputs, images)
            self.predictions[prediction_id] = prediction
        return Response(201, self._json(prediction, base))

    def _get(self, prediction_id: str, base: str) -> Response:
        prediction = self.predictions.get(prediction_id)
        if prediction is None:
            return problem(404, "Not found", "Not found.")
        if queued := self._queued("get"):
            return queued
        with self._lock:
            self._advance(prediction, base)
        return Response(200, self._json(prediction, base))

    def _advance(self, prediction: Prediction, base: str) -> None:
        if prediction.status in ("succeeded", "failed", "canceled", "aborted"):
            return
        prediction.polls += 1
        if self.outcome == "aborted":
            prediction.status = "aborted"
            return
        steps = prediction.input.get("num_inference_steps", 4)
        if prediction.status == "starting":
            prediction.status = "processing"
            seed = prediction.input.get("seed", 0)
            prediction.logs = f"Using seed: {seed}\n  0%|          | 0/{steps} [00:00<?, ?it/s]"
            return
        if self.outcome == "never" or prediction.polls <= self.polls_to_finish:
            done = steps // 2
            prediction.logs += f"\n 50%|#####     | {done}/{steps} [00:01<00:01, 2.00it/s]"
            return
        prediction.metrics = {"predict_time": self.predict_time}
        if self.outcome == "nsfw":
            prediction.status = "failed"
            prediction.error = "NSFW content detected. Try running it again, or try a different prompt."
        elif self.outcome == "fail":
            prediction.status = "failed"
            prediction.error = "CUDA out of memory. Tried to allocate 2.00 GiB"
        elif self.outcome in ("null_output", "empty_output"):
            prediction.status = "succeeded"
            prediction.output = None if self.outcome == "null_output" else []
        else:
            prediction.status = "succeeded"
            prediction.logs += f"\n100%|##########| {steps}/{steps} [00:02<00:00, 2.00it/s]"
            ext = prediction.input.get("output_format", "png")
            count = 1 if prediction.model.single_output else prediction.input.get("num_outputs", 1)
            urls = [f"{self.output_base or base}/output/{prediction.id}/out-{i}.{ext}" for i in range(count)]
            prediction.output = urls[0] if prediction.model.single_output else urls

    def _cancel(self, prediction_id: str, base: str) -> Response:
        prediction = self.predictions.get(prediction_id)
        if prediction is None:
            return problem(404, "Not found", "Not found.")
        with self._lock:
            self.cancelled.append(prediction_id)
            if prediction.status not in ("succeeded", "failed", "aborted"):
                prediction.status = "canceled"
        return Response(200, self._json(prediction, base))

    def _json(self, prediction: Prediction, base: str) -> dict[str, Any]:
        model = prediction.model
        return {
            "id": prediction.id,
            "model": f"{model.owner}/{model.name}",
            "version": model.version,
            "input": prediction.input,
            "logs": prediction.logs,
            "output": prediction.output,
            "data_removed": False,
            "error": prediction.error,
            "status": prediction.status,
            "created_at": "2026-11-01T12:00:00.000Z",
            "started_at": None if prediction.status in ("starting", "aborted") else "2026-11-01T12:00:01.000Z",
            "completed_at": "2026-11-01T12:00:03.000Z" if prediction.status in ("succeeded", "failed", "canceled",
                                                                                "aborted")
            else None,
            "metrics": prediction.metrics,
            "urls": {"get": f"{base}/v1/predictions/{prediction.id}",
                     "cancel": f"{base}/v1/predictions/{prediction.id}/cancel",
                     "stream": f"{base}/v1/stream/{prediction.id}"},
        }

    # -- files ----------------------------------------------------------------------------------

    def _upload(self, request: Request, base: str) -> Response:
        if queued := self._queued("files"):
            return queued
        try:
            parts = request.multipart()
        except ValueError:
            return problem(400, "Bad request", "expected multipart/form-data")
        content = parts.get("content", [None])[0]
        if content is None or not content.data:
            return problem(400, "Bad request", "missing content")
        with self._lock:
            file_id = f"fakefile{next(self._ids):06d}"
            self.files[file_id] = content.data
        return Response(201, {
            "id": file_id, "name": content.filename, "content_type": content.content_type, "size": len(content.data),
            "etag": "fake", "checksums": {}, "metadata": {}, "created_at": "2026-11-01T12:00:00Z",
            "expires_at": "2026-11-02T12:00:00Z", "urls": {"get": f"{base}/v1/files/{file_id}/download"},
        })

    def _open_input(self, value: str, base: str) -> Image.Image:
        if value.startswith("data:"):
            header, _, payload = value.partition(",")
            if ";base64" not in header:
                raise ValueError("data URI must be base64")
            data = base64.b64decode(payload)
        elif m := re.fullmatch(re.escape(base) + r"/v1/files/([^/]+)/download", value):
            data = self.files.get(m[1]) or b""
        else:
            raise ValueError("could not fetch the file")
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except Exception as exc:
            raise ValueError(f"not an image: {exc}") from None
        return image

    # -- outputs --------------------------------------------------------------------------------

    def _serve_output(self, request: Request) -> Response:
        self.downloads.append(request)
        if self.outputs_need_token and request.headers.get("authorization") != f"Bearer {self.token}":
            return problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        m = re.fullmatch(r"/output/([^/]+)/out-(\d+)\.(\w+)", request.path)
        prediction = self.predictions.get(m[1]) if m else None
        if prediction is None or prediction.status != "succeeded" or int(m[2]) in self.expired_outputs:
            return Response(404, "not found", {"content-type": "text/plain"})
        inputs = prediction.input
        if inputs.get("aspect_ratio") == "custom" and "width" in inputs and "height" in inputs:
            width, height = (round(inputs[side] / FLUX_PRO_MULTIPLE) * FLUX_PRO_MULTIPLE
                             for side in ("width", "height"))
        elif "aspect_ratio" in inputs:
            width, height = FLUX_SIZES[inputs["aspect_ratio"]]
        elif "image" in prediction.images:
            width, height = prediction.images["image"].size
        else:
            width, height = inputs.get("width", 1024), inputs.get("height", 1024)
        ext = m[3]
        color = (40 + 50 * int(m[2]), 120, 200)
        data = image_bytes(width, height, PIL_NAMES[ext], color=color)
        return Response(200, data, {"content-type": f"image/{'jpeg' if ext == 'jpg' else ext}"})
