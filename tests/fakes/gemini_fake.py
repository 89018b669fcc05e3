"""A loopback Gemini API (the Developer API, ``v1beta`` and ``v1``) as ``google-genai`` 3.4 speaks it.

What it checks and answers like the real service:
- ``POST /{v1beta|v1}/models/{model}:generateContent`` only (another API version or method is a 404);
  ``v1``'s published GenerationConfig has no ``responseModalities`` or ``imageConfig``, so there they
  are unknown fields (``versions`` records the version of each request); with
  the key in ``x-goog-api-key`` (a wrong key is 400 INVALID_ARGUMENT with ErrorInfo reason
  API_KEY_INVALID, a missing one 403 PERMISSION_DENIED);
- the camelCase JSON body: ``contents[].parts[]`` of ``text`` and ``inlineData`` (base64 that must
  decode to a real image), ``generationConfig`` with ``responseModalities``, an int32 ``seed`` and
  ``imageConfig.aspectRatio``/``imageSize`` checked against what each model takes (the data block
  below names its source and date; nothing is taken from the studio's catalog); unknown fields are
  a 400 "Invalid JSON payload received";
- answers with ``candidates[0].content.parts`` holding a text part and an ``inlineData`` PNG of the
  requested aspect ratio and size tier (gemini-3-pro-image first sends a ``thought`` image),
  ``finishReason`` and ``usageMetadata`` token counts by modality;
- blocks as HTTP 200: ``promptFeedback.blockReason`` without candidates, or a candidate whose
  ``finishReason`` is IMAGE_SAFETY and the like; a text-only answer (no image);
- errors as ``{"error": {"code", "message", "status", "details"}}``, queued by a test, and delays.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import threading
from dataclasses import dataclass
from typing import Any

from PIL import Image

from tests.fakes.http import Request, Response, image_bytes

KEY = "AIzaSyFAKE-gemini-key-0123456789abcdef"
# -- What Google documents, as data --------------------------------------------------------------------
# Sources, checked 2026-11-29: the Gemini API reference for models.generateContent (GenerateContentRequest,
# GenerationConfig, ImageConfig, Candidate.FinishReason, PromptFeedback.BlockReason, error statuses) and
# the image generation guide's table of aspect ratios and sizes per model. Nothing here comes from the
# studio's catalog: a catalog entry that claims more than this fails against the fake.
MODELS = ("gemini-3.1-flash-image", "gemini-3-pro-image")
RETIRED_MODELS = ("gemini-2.5-flash-image",)  # shut down 2026-10-02: a 404 like any unknown model
THINKING_MODELS = ("gemini-3-pro-image",)
# The 1K pixel sizes Gemini image models answer per aspect ratio; 2K and 4K double and quadruple them.
SIZES_1K = {"1:1": (1024, 1024), "2:3": (848, 1264), "3:2": (1264, 848), "3:4": (896, 1200), "4:3": (1200, 896),
            "4:5": (928, 1152), "5:4": (1152, 928), "9:16": (768, 1376), "16:9": (1376, 768), "21:9": (1584, 672),
            "1:4": (512, 2048), "4:1": (2048, 512), "1:8": (384, 3072), "8:1": (3072, 384)}
COMMON_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
# imageConfig.aspectRatio and imageConfig.imageSize each model takes ("512" is half the 1K size).
ASPECT_RATIOS = {"gemini-3.1-flash-image": COMMON_RATIOS + ("1:4", "4:1", "1:8", "8:1"),
                 "gemini-3-pro-image": COMMON_RATIOS}
IMAGE_SIZES = {"gemini-3.1-flash-image": ("512", "1K", "2K", "4K"), "gemini-3-pro-image": ("1K", "2K", "4K")}
TIERS = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}
IMAGE_TOKENS = {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520}
SEED_RANGE = (-2**31, 2**31 - 1)  # GenerationConfig.seed is an int32
RESPONSE_MODALITIES = ("TEXT", "IMAGE", "AUDIO")
# Candidate.finishReason values (the reference's FinishReason enum, as google-genai 3.4 carries it in
# types.FinishReason): STOP is a normal end; the others end the answer without (or with a cut) result.
FINISH_REASONS = ("FINISH_REASON_UNSPECIFIED", "STOP", "MAX_TOKENS", "SAFETY", "RECITATION", "LANGUAGE", "OTHER",
                  "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "MALFORMED_FUNCTION_CALL", "IMAGE_SAFETY",
                  "IMAGE_PROHIBITED_CONTENT", "IMAGE_OTHER", "NO_IMAGE", "IMAGE_RECITATION",
                  "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS", "MISSING_THOUGHT_SIGNATURE", "MALFORMED_RESPONSE",
                  "ESCALATION", "PUP_LIMITED_DISABLED", "CONTINUATION", "MODEL_ARMOR")
# The ones that mean a safety or policy filter stopped the answer.
BLOCKING_FINISH_REASONS = ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                           "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR")
# promptFeedback.blockReason values (types.BlockedReason); the answer then has no candidates.
BLOCK_REASONS = ("BLOCKED_REASON_UNSPECIFIED", "SAFETY", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "IMAGE_SAFETY",
                 "MODEL_ARMOR", "JAILBREAK")
GENERATION_CONFIG_FIELDS = {"responseModalities", "imageConfig", "seed", "temperature", "topP", "topK",
                            "candidateCount", "maxOutputTokens", "stopSequences", "thinkingConfig"}
# Fields of GenerationConfig that only v1beta's reference defines.
BETA_ONLY_CONFIG_FIELDS = {"responseModalities", "imageConfig"}
API_VERSIONS = ("v1beta", "v1")
TOP_LEVEL_FIELDS = {"contents", "generationConfig", "safetySettings", "systemInstruction", "tools", "toolConfig",
                    "cachedContent"}


def error(code: int, status: str, message: str, details: list[dict] | None = None,
          headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        body["details"] = details
    return Response(code, {"error": body}, headers=dict(headers or {}))


def rate_limited(period: str = "Minute", retry_delay: str = "0s", quota_value: str = "10") -> Response:
    """A 429 as Gemini sends it: the same words for every limit; the details tell which limit it was."""
    return error(429, "RESOURCE_EXHAUSTED",
                 "You exceeded your current quota, please check your plan and billing details. For more "
                 "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
                 [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                   "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                                   "quotaId": f"GenerateRequestsPer{period}PerProjectPerModel",
                                   "quotaDimensions": {"location": "global", "model": MODELS[0]},
                                   "quotaValue": quota_value}]},
                  {"@type": "type.googleapis.com/google.rpc.Help",
                   "links": [{"description": "Learn more about Gemini API quotas",
                              "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
                  {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}])


@dataclass
class Call:
    model: str
    texts: list[str]
    images: list[Image.Image]
    config: dict[str, Any]


class GeminiFake:
    """The request handler for ``FakeServer``. Tests steer it through its attributes:

    ``block_prompt``: a blockReason for promptFeedback; ``finish_reason``: e.g. "IMAGE_SAFETY";
    ``blocks_from_call``: the first call (1-based) that those two and ``text_only`` apply to;
    ``text_only``: answer this text and no image; ``thought_image_only``: the answer's one image part
    is flagged ``"thought": true`` (seen from thinking models); ``no_candidates``: a billed answer
    with ``usageMetadata`` but no candidates and no ``promptFeedback``; ``delay``: seconds before answering;
    ``queue_error(response)``: answer the next calls with it.
    """

    def __init__(self, key: str = KEY):
        self.key = key
        self.block_prompt: str | None = None
        self.finish_reason: str | None = None
        self.blocks_from_call = 1
        self.text_only: str | None = None
        self.thought_image_only = False
        # thoughtsTokenCount a thinking model reports per answer (billed as text output; at most the
        # model's output token limit, 32,768 for the image models, less the answer's other tokens)
        self.thought_tokens = 180
        self.no_candidates = False
        self.delay = 0.0
        self.calls: list[Call] = []
        self.versions: list[str] = []
        self.queued: list[Response] = []
        self._lock = threading.Lock()

    def queue_error(self, response: Response, times: int = 1) -> None:
        self.queued.extend([response] * times)

    def __call__(self, request: Request) -> Response:
        m = re.fullmatch(r"/(v1[a-z0-9]*)/models/([^/:]+):(\w+)", request.path)
        if request.method != "POST" or not m or m[1] not in API_VERSIONS or m[3] != "generateContent":
            return error(404, "NOT_FOUND", f"The requested URL {request.path} was not found on this server.")
        self.versions.append(m[1])
        key = request.headers.get("x-goog-api-key")
        if not key:
            return error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without "
                         "established identity). Please use API Key or other form of API consumer identity.")
        if key != self.key:
            return error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                         [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                           "domain": "googleapis.com",
                           "metadata": {"service": "generativelanguage.googleapis.com"}}])
        model = m[2]
        if model not in MODELS:
            return error(404, "NOT_FOUND", f"models/{model} is not found for API version {m[1]}, or is not supported "
                         "for generateContent. Call ListModels to see the list of available models.")
        with self._lock:
            queued = self.queued.pop(0) if self.queued else None
        if queued:
            return queued
        try:
            call = self._parse(model, request, m[1])
        except ValueError as exc:
            return error(400, "INVALID_ARGUMENT", str(exc))
        self.calls.append(call)
        answer = self._answer(call)
        answer.delay = self.delay
        return answer

    # -- the request ----------------------------------------------------------------------------

    def _parse(self, model: str, request: Request, version: str = "v1beta") -> Call:
        if not request.content_type.startswith("application/json"):
            raise ValueError("Invalid JSON payload received.")
        body = request.json()
        unknown = set(body) - TOP_LEVEL_FIELDS
        if unknown:
            raise ValueError(f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}": Cannot find field.')
        config = body.get("generationConfig") or {}
        unknown = set(config) - GENERATION_CONFIG_FIELDS
        if version == "v1":
            unknown |= set(config) & BETA_ONLY_CONFIG_FIELDS
        if unknown:
            raise ValueError(f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at '
                             "'generation_config': Cannot find field.")
        image_config = config.get("imageConfig") or {}
        if image_config.get("aspectRatio", "1:1") not in ASPECT_RATIOS[model]:
            raise ValueError(f"Unsupported aspect ratio: {image_config['aspectRatio']}")
        if image_config.get("imageSize", "1K") not in IMAGE_SIZES[model]:
            raise ValueError(f"Unsupported image size: {image_config['imageSize']}")
        seed = config.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
            raise ValueError(f"Invalid value at 'generation_config.seed' (TYPE_INT32), {seed}")
        for modality in config.get("responseModalities") or []:
            if modality not in RESPONSE_MODALITIES:
                raise ValueError(f"Invalid value at 'generation_config.response_modalities' (type.googleapis.com/"
                                 f"google.ai.generativelanguage.v1.GenerationConfig.Modality), \"{modality}\"")
        texts, images = [], []
        contents = body.get("contents")
        if not contents:
            raise ValueError("* GenerateContentRequest.contents: contents is not specified")
        for content in contents:
            for part in content.get("parts") or []:
                if "text" in part:
                    texts.append(part["text"])
                elif "inlineData" in part:
                    images.append(self._decode(part["inlineData"]))
                else:
                    raise ValueError(f"Unsupported part: {sorted(part)}")
        return Call(model, texts, images, config)

    @staticmethod
    def _decode(blob: dict[str, Any]) -> Image.Image:
        # The SDK sends mime_type in snake case; the API accepts both spellings.
        mime = blob.get("mimeType") or blob.get("mime_type") or ""
        if not mime.startswith("image/"):
            raise ValueError(f"Unsupported MIME type: {mime or 'none'}")
        try:
            # Protobuf JSON accepts standard and URL-safe base64; the SDK sends URL-safe.
            data = (blob.get("data") or "").replace("-", "+").replace("_", "/")
            image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
            image.load()
        except (binascii.Error, OSError) as exc:
            raise ValueError(f"Unable to process input image: {exc}") from None
        return image

    # -- the answer -----------------------------------------------------------------------------

    def _answer(self, call: Call) -> Response:
        prompt_tokens = sum(len(t.split()) for t in call.texts) + 258 * len(call.images)
        blocking = len(self.calls) >= self.blocks_from_call
        # A test may script only what Gemini documents (a typo would test a state that cannot happen).
        if self.block_prompt and self.block_prompt not in BLOCK_REASONS:
            raise ValueError(f"not a documented blockReason: {self.block_prompt}")
        if self.finish_reason and self.finish_reason not in FINISH_REASONS:
            raise ValueError(f"not a documented finishReason: {self.finish_reason}")
        if self.block_prompt and blocking:
            return Response(200, {"promptFeedback": {"blockReason": self.block_prompt},
                                  "usageMetadata": {"promptTokenCount": prompt_tokens,
                                                    "totalTokenCount": prompt_tokens},
                                  "modelVersion": call.model})
        if self.finish_reason and blocking:
            return Response(200, {"candidates": [{"finishReason": self.finish_reason, "index": 0,
                                                  "finishMessage": "Unable to show the generated image."}],
                                  "usageMetadata": {"promptTokenCount": prompt_tokens,
                                                    "totalTokenCount": prompt_tokens},
                                  "modelVersion": call.model})
        if self.no_candidates:
            return Response(200, {"usageMetadata": {"promptTokenCount": prompt_tokens,
                                                    "totalTokenCount": prompt_tokens},
                                  "modelVersion": call.model})
        modalities = call.config.get("responseModalities") or ["TEXT"]
        image_config = call.config.get("imageConfig") or {}
        tier = image_config.get("imageSize", "1K")
        width, height = SIZES_1K[image_config.get("aspectRatio", "1:1")]
        width, height = int(width * TIERS[tier]), int(height * TIERS[tier])

        parts: list[dict[str, Any]] = []
        thoughts = 0
        if call.model in THINKING_MODELS:
            thoughts = self.thought_tokens
            parts.append({"text": "Planning the composition.", "thought": True})
            parts.append({"inlineData": {"mimeType": "image/png", "data": _b64(image_bytes(64, 64, "PNG", (9, 9, 9)))},
                          "thought": True})
        text_only = self.text_only if blocking else None
        text = text_only or "Here is the image you asked for."
        parts.append({"text": text})
        image_tokens = 0
        if "IMAGE" in modalities and text_only is None:
            seed = call.config.get("seed", 0)
            color = (seed * 37 % 256, seed * 91 % 256, 128)
            parts.append({"inlineData": {"mimeType": "image/png",
                                         "data": _b64(image_bytes(width, height, "PNG", color))}})
            if self.thought_image_only:
                parts = [p for p in parts if not ("inlineData" in p and p.get("thought"))]
                parts[-1]["thought"] = True
            image_tokens = IMAGE_TOKENS[tier]
        text_tokens = len(text.split())
        details = [{"modality": "TEXT", "tokenCount": text_tokens}]
        if image_tokens:
            details.append({"modality": "IMAGE", "tokenCount": image_tokens})
        usage = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": text_tokens + image_tokens,
                 "totalTokenCount": prompt_tokens + text_tokens + image_tokens + thoughts,
                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens - 258 * len(call.images)}]
                 + ([{"modality": "IMAGE", "tokenCount": 258 * len(call.images)}] if call.images else []),
                 "candidatesTokensDetails": details}
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return Response(200, {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP",
                                              "index": 0}],
                              "usageMetadata": usage, "modelVersion": call.model,
                              "responseId": f"fake-{len(self.calls)}"})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
