"""The catalog agrees with the providers' published references.

Every model the catalog lists, in every mode it claims, goes through the studio's real validation and
the real provider code to that provider's loopback fake, with every output format, quality, size or
aspect ratio, listed option value and range end the catalog offers. The fakes take their limits from
the providers' references (each fake's data block names its source and the date it was checked) and
import nothing from the catalog, so a catalog entry that promises what the service refuses fails here.

The other way round, a catalog entry that leaves out what the service documents (and the provider
knows how to send) is checked against the same data: sd3 models' WEBP output, ``style_preset`` on
sd3 and Ultra. The last tests are the cases the fakes used to get wrong.
"""

from __future__ import annotations

import base64
import io
import json
import math
import urllib.request
from typing import Any, Iterator

import pytest
from PIL import Image

from providers.gemini import GeminiProvider
from providers.openai_images import OpenAIProvider
from providers.replicate_models import ReplicateProvider
from providers.stability import StabilityProvider, route_for
from studio.catalog import Catalog, ModelInfo
from studio.controls import STRENGTH_FLOOR
from studio.errors import ContentBlocked, InvalidRequest, StudioError, UnusableResult
from studio.options import option_specs
from studio.styles import StyleBook
from studio.types import GenerationRequest, Mode, RunContext
from studio.validation import prepare
from tests.fakes import gemini_fake, openai_fake, replicate_fake, stability_fake
from tests.fakes.prepared import prepared

CLASSES = {"openai": OpenAIProvider, "stability": StabilityProvider, "replicate": ReplicateProvider,
           "gemini": GeminiProvider}
CATALOG = Catalog()
MODES_WITH_IMAGE = {"image-to-image", "inpaint", "variation"}


def _cases() -> Iterator:
    for provider in CLASSES:
        for model in CATALOG.models(provider):
            for mode in model.modes:
                yield pytest.param(provider, model.id, mode, id=f"{provider}:{model.id}:{mode}")


@pytest.fixture
def run(cloud_fake, cloud_provider):
    """``run(provider, GenerationRequest)``: the request validated by the studio and sent by the real
    provider to its fake; returns the provider's result (an error from the fake raises)."""
    providers, styles = {}, StyleBook()

    def send(name: str, request: GenerationRequest):
        if name not in providers:
            fake = cloud_fake(name)
            if name == "replicate":
                fake.polls_to_finish = 0  # done on the first poll: the answer, not the wait, is under test
            providers[name] = cloud_provider(CLASSES[name])
        provider = providers[name]
        model = CATALOG.model(name, request.model)
        ready = prepare(request, name, model, styles, seed_space=provider.seed_space).request
        return provider.generate(ready, RunContext(timeout=60))

    return send


def _png(width: int = 1024, height: int = 1024) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def _mask(width: int = 1024, height: int = 1024) -> bytes:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 4, height // 4, width // 2, height // 2))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


def _ratio_size(ratio: str) -> tuple[int, int]:
    """About a megapixel at ``ratio``, in sides divisible by 64."""
    w, h = (float(part) for part in ratio.split(":"))
    scale = math.sqrt(1024 * 1024 / (w * h))
    return max(64, round(w * scale / 64) * 64), max(64, round(h * scale / 64) * 64)


def _sizes(model: ModelInfo) -> list[tuple[int, int]]:
    """Every size the catalog offers for ``model``: its fixed sizes, one per aspect ratio, or the ends
    of its size range."""
    if model.sizes:
        return [tuple(int(side) for side in size.split("x")) for size in model.sizes]
    if model.aspect_ratios:
        return [_ratio_size(ratio) for ratio in model.aspect_ratios]
    if model.size_range:
        low, high = model.size_range["min"], model.size_range["max"]
        ratio = model.size_range.get("max_ratio")
        ends = [(low, low), (high, high)]
        if ratio:
            step = model.size_range.get("multiple", 1)
            ends.append((high, math.ceil(high / ratio / step) * step))
        return ends
    return [(model.default_width, model.default_height)]


def _variants(model: ModelInfo, mode: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(what, GenerationRequest fields) for everything the catalog offers ``model`` in ``mode``. A
    variation of an image runs as image-to-image, so it is sent once with each output format only."""
    yield "defaults", {}
    for fmt in model.output_formats:
        yield f"output_format={fmt}", {"output_format": fmt}
    if mode == "variation":
        return
    for quality in model.qualities:
        yield f"quality={quality}", {"quality": quality}
    for name, spec in option_specs(model).items():
        if spec.choices:
            values = list(spec.choices)
        elif spec.kind == "boolean":
            values = [True, False]
        elif spec.kind in ("integer", "number") and spec.min is not None and spec.max is not None:
            values = [spec.min, spec.max]
        else:  # free text, images, paths: no ends to check
            values = []
        for value in values:
            yield f"{name}={value}", {"extra": {name: value}}
    for name in ("steps", "guidance"):
        limits = getattr(model, name)
        if limits:
            for end in (limits.min, limits.max):
                yield f"{name}={end:g}", {name: end}
    if model.strength and mode in ("image-to-image", "inpaint"):
        # The studio's own floor (studio.controls.STRENGTH_FLOOR) refuses less before any call.
        for end in (max(model.strength.min, STRENGTH_FLOOR), model.strength.max):
            yield f"strength={end:g}", {"strength": end}
    if mode == "text-to-image":
        for width, height in _sizes(model):
            yield f"size={width}x{height}", {"width": width, "height": height}
        yield f"n={model.max_images}", {"n": model.max_images}
    if model.seed:
        yield "highest seed", {"seed": CLASSES[model.provider].seed_space - 1}


@pytest.mark.parametrize(("provider", "model_id", "mode"), list(_cases()))
def test_every_catalog_model_and_mode_is_accepted_by_the_reference(provider, model_id, mode, run):
    model = CATALOG.model(provider, model_id)
    failures = []
    for what, fields in _variants(model, mode):
        request = GenerationRequest(prompt="a lighthouse at dusk", mode=mode, provider=provider, model=model_id,
                                    **fields)
        if mode in MODES_WITH_IMAGE:  # small inputs keep the uploads quick; the model picks its own size
            request.init_image = _png(512, 512)
        if mode == "inpaint":
            request.mask = _mask(512, 512)
        try:
            result = run(provider, request)
        except StudioError as error:  # collect every refusal, then fail once with all of them
            failures.append(f"{what}: {type(error).__name__}: {error}")
            continue
        if len(result.images) != request.n:
            failures.append(f"{what}: {len(result.images)} images for n={request.n}")
    assert not failures, f"{provider} {model_id} {mode}:\n" + "\n".join(failures)


# -- what the references document and the catalog must offer ---------------------------------------

@pytest.mark.parametrize("model", [m for m in CATALOG.models("stability")], ids=lambda m: m.id)
def test_stability_models_offer_what_their_endpoint_documents(model):
    endpoint = route_for(prepared(model)).path
    assert set(model.output_formats) == stability_fake.OUTPUT_FORMATS[endpoint]
    if "style_preset" in stability_fake.FIELDS[endpoint]:
        assert set(model.options.get("style_preset") or []) == stability_fake.STYLE_PRESETS


def test_retired_models_are_the_ones_the_references_retired():
    retired = {(m.provider, m.id) for p in CLASSES for m in CATALOG.models(p, include_retired=True) if m.retired}
    gone = {("openai", m) for m in openai_fake.RETIRED_MODELS} | {("gemini", m) for m in gemini_fake.RETIRED_MODELS}
    assert retired == gone
    for model in CATALOG.models("openai"):
        assert model.id in openai_fake.GPT_IMAGE_MODELS
    for model in CATALOG.models("gemini"):
        assert model.id in gemini_fake.MODELS


def test_openai_models_offer_the_documented_qualities_sizes_and_input_fidelity():
    for model in CATALOG.models("openai"):
        qualities = openai_fake.QUALITIES | (openai_fake.EXTRA_QUALITIES
                                             if model.id in openai_fake.EXTRA_QUALITY_MODELS else set())
        assert set(model.qualities) == qualities, model.id
        assert bool(model.size_range) == (model.id in openai_fake.FREE_SIZE_MODELS), model.id
        fidelity = openai_fake.INPUT_FIDELITY_BY_MODEL.get(model.id)
        if fidelity is not None:
            assert set(model.options.get("input_fidelity") or []) == fidelity, model.id


# -- the cases the fakes used to get wrong ---------------------------------------------------------

def _raw(fake_server_url: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
    """POST ``body`` to a fake as is, for what the studio never sends; (status, JSON answer)."""
    request = urllib.request.Request(fake_server_url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.fixture
def openai_raw(cloud_fake):
    fake = cloud_fake("openai")

    def post(**params) -> tuple[int, dict]:
        body = json.dumps({"model": "gpt-image-1.5", "prompt": "a kite", **params}).encode()
        return _raw(fake.server.url, "/v1/images/generations", {"authorization": f"Bearer {fake.api_key}",
                                                                 "content-type": "application/json"}, body)

    return post


def test_openai_refuses_output_compression_above_100(openai_raw):
    status, body = openai_raw(output_format="jpeg", output_compression=150)
    assert status == 400 and body["error"]["param"] == "output_compression"
    assert openai_raw(output_format="jpeg", output_compression=100)[0] == 200


def test_openai_refuses_a_prompt_over_32000_characters(openai_raw):
    status, body = openai_raw(prompt="a" * 40_000)
    assert status == 400 and body["error"]["param"] == "prompt"
    assert openai_raw(prompt="a" * 32_000)[0] == 200


def test_openai_refuses_high_input_fidelity_on_gpt_image_1_mini(cloud_fake, cloud_provider):
    fake = cloud_fake("openai")
    provider = cloud_provider(OpenAIProvider)
    mini = CATALOG.model("openai", "gpt-image-1-mini")
    source = Image.new("RGB", (1024, 1024), (10, 20, 30))
    with pytest.raises(InvalidRequest, match="OpenAI rejected the request: Invalid value: 'high'"):
        provider.generate(prepared(mini, mode=Mode.IMAGE_TO_IMAGE, init_image=source,
                                   extra={"input_fidelity": "high"}), RunContext(timeout=30))
    provider.generate(prepared(mini, mode=Mode.IMAGE_TO_IMAGE, init_image=source, extra={"input_fidelity": "low"}),
                      RunContext(timeout=30))
    assert fake.calls[-1]["input_fidelity"] == "low"


@pytest.mark.parametrize("model_id", ["sd3.5-large", "sd3.5-medium", "stable-image-ultra"])
def test_stability_takes_webp_and_style_presets_on_sd3_and_ultra(model_id, run, cloud_fake):
    result = run("stability", GenerationRequest(prompt="a glass city", provider="stability", model=model_id,
                                                output_format="webp", extra={"style_preset": "neon-punk"}))
    assert Image.open(io.BytesIO(result.images[0].data)).format == "WEBP"
    assert result.images[0].info["style_preset"] == "neon-punk"


def test_replicate_flux_pro_takes_custom_sizes_and_not_21_9(cloud_fake):
    fake = cloud_fake("replicate")
    token = {"authorization": f"Bearer {fake.token}", "content-type": "application/json"}
    path = "/v1/models/black-forest-labs/flux-1.1-pro/predictions"

    def create(**inputs) -> int:
        body = json.dumps({"input": {"prompt": "a kite", **inputs}}).encode()
        return _raw(fake.server.url, path, token, body)[0]

    assert create(aspect_ratio="custom", width=1440, height=256) == 201
    assert create(aspect_ratio="custom", width=1441, height=256) == 422
    assert create(aspect_ratio="21:9") == 422


# -- documented states the studio must turn into clear outcomes --------------------------------------

@pytest.mark.parametrize("reason", [r for r in gemini_fake.FINISH_REASONS if r != "STOP"])
def test_every_documented_gemini_finish_reason_is_a_clear_failure(reason, cloud_fake, cloud_provider):
    fake = cloud_fake("gemini")
    fake.finish_reason = reason
    provider = cloud_provider(GeminiProvider)
    expected = ContentBlocked if reason in gemini_fake.BLOCKING_FINISH_REASONS else UnusableResult
    with pytest.raises(expected, match=reason):
        provider.generate(prepared(provider.model(None)), RunContext(timeout=30))


@pytest.mark.parametrize("reason", gemini_fake.BLOCK_REASONS)
def test_every_documented_gemini_block_reason_is_blocked(reason, cloud_fake, cloud_provider):
    fake = cloud_fake("gemini")
    fake.block_prompt = reason
    provider = cloud_provider(GeminiProvider)
    with pytest.raises(ContentBlocked, match=reason):
        provider.generate(prepared(provider.model(None)), RunContext(timeout=30))


def test_openai_fake_streams_partial_images_as_the_sdk_reads_them(cloud_fake):
    """``stream=true`` is documented (the studio does not use it yet): the real SDK reads the fake's
    events into its own ImageGenPartialImageEvent / ImageGenCompletedEvent types."""
    from openai import OpenAI

    fake = cloud_fake("openai")
    client = OpenAI(api_key=fake.api_key, base_url=fake.server.url + "/v1", max_retries=0)
    try:
        events = list(client.images.generate(model="gpt-image-1.5", prompt="a kite", stream=True, partial_images=2,
                                             output_format="webp"))
    finally:
        client.close()
    assert [event.type for event in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    completed = events[-1]
    assert completed.usage.output_tokens > 0
    assert Image.open(io.BytesIO(base64.b64decode(completed.b64_json))).format == "WEBP"
