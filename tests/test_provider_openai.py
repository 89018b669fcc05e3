"""OpenAIProvider against a loopback OpenAI Images API: the real SDK, pointed there by OPENAI_BASE_URL.

Shared behaviour (missing or wrong key, retries, timeouts, cancel) is tested in test_provider_contract.py.
"""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from providers.base import READY
from providers.openai_images import OpenAIProvider, openai_mask
from studio.errors import ContentBlocked, InvalidRequest, QuotaExhausted
from studio.types import ProgressEvent, RunContext
from tests.fakes.http import Response
from tests.fakes.openai_fake import error_body
from tests.fakes.prepared import prepared
from tests.helpers import decoded


@pytest.fixture
def fake(cloud_fake):
    return cloud_fake("openai")


@pytest.fixture
def provider(cloud_provider):
    return cloud_provider(OpenAIProvider)


def photo(width=1024, height=1024, color=(90, 90, 200)) -> Image.Image:
    return Image.new("RGB", (width, height), color)


# -- text to image -----------------------------------------------------------------------------

def test_text_to_image_sends_the_models_parameters_and_costs_the_tokens(provider, fake):
    events: list[ProgressEvent] = []
    request = prepared(provider.model(None), "a red bicycle", output_format="webp", compression=80,
                       extra={"background": "opaque", "moderation": "low"})
    result = provider.generate(request, RunContext(progress=events.append))

    assert len(result.images) == 1
    image = decoded(result.images[0].data)
    assert (image.format, image.size) == ("WEBP", (1024, 1024))
    call = fake.server.requests[0]
    assert call.path == "/v1/images/generations"
    assert call.headers["content-type"].startswith("application/json")
    body = call.json()
    assert body["model"] == "gpt-image-2.5-flare"
    assert body["prompt"] == "a red bicycle"
    assert body["size"] == "1024x1024"
    assert body["quality"] == "medium"  # the catalog's default quality
    assert body["output_format"] == "webp" and body["output_compression"] == 80
    assert body["background"] == "opaque" and body["moderation"] == "low"
    assert body["n"] == 1
    assert "response_format" not in body
    # 1056 output image tokens at medium quality, $30 per million; text tokens at $5 per million.
    usage = result.usage
    assert usage["image_output_tokens"] == 1056
    expected = (usage["text_input_tokens"] * 5 + 1056 * 30) / 1_000_000
    assert result.cost == pytest.approx(expected)
    assert events[0].stage == "generating" and events[-1].fraction == 1.0


def test_quality_aliases_follow_the_catalog(provider, fake):
    flare = provider.model("gpt-image-2.5-flare")
    provider.generate(prepared(flare, quality="ultra"), RunContext())
    mini = provider.model("gpt-image-1-mini")
    provider.generate(prepared(mini, quality="standard"), RunContext())
    assert [c["quality"] for c in fake.calls] == ["max", "medium"]
    with pytest.raises(InvalidRequest, match="OpenAI rejected the request: Invalid value: 'xhigh'"):
        provider.generate(prepared(mini, quality="xhigh"), RunContext())  # only 2.5 models take xhigh


def test_free_size_models_take_any_allowed_size_and_scale_others_into_their_pixel_budget(provider, fake):
    model = provider.model("gpt-image-2")
    result = provider.generate(prepared(model, width=1536, height=864), RunContext())
    assert decoded(result.images[0].data).size == (1536, 864)
    # 512x512 is below the 655,360-pixel minimum: the same shape, just large enough, is asked for.
    result = provider.generate(prepared(model, width=512, height=512), RunContext())
    assert decoded(result.images[0].data).size == (816, 816)
    assert [call["size"] for call in fake.calls] == ["1536x864", "816x816"]
    with pytest.raises(InvalidRequest, match="3:1"):
        provider.generate(prepared(model, width=3072, height=768), RunContext())
    assert len(fake.calls) == 2


def test_negative_prompt_becomes_an_instruction_and_users_are_anonymised(provider, fake):
    request = prepared(provider.model(None), "a harbour", negative_prompt="people, text", user="alice")
    provider.generate(request, RunContext())
    body = fake.server.requests[0].json()
    assert body["prompt"] == "a harbour\n\nAvoid: people, text"
    assert body["safety_identifier"].startswith("studio-") and "alice" not in body["safety_identifier"]
    # Keyed: not a plain hash anyone could recompute from a guessed owner id or e-mail address.
    assert body["safety_identifier"] != "studio-" + __import__("hashlib").sha256(b"alice").hexdigest()[:32]


def test_transparent_background_with_jpeg_is_refused_locally(provider, fake):
    request = prepared(provider.model(None), output_format="jpeg", extra={"background": "transparent"})
    with pytest.raises(InvalidRequest, match="transparent background needs png or webp"):
        provider.generate(request, RunContext())
    assert fake.server.requests == []


# -- edits ------------------------------------------------------------------------------------

def test_image_to_image_uploads_the_image_as_multipart(provider, fake):
    model = provider.model("gpt-image-1.5")
    request = prepared(model, "make it winter", mode="image-to-image", init_image=photo(1536, 1024),
                       width=1536, height=1024, extra={"input_fidelity": "high", "moderation": "low"})
    result = provider.generate(request, RunContext())

    call = fake.server.requests[0]
    assert call.path == "/v1/images/edits"
    assert call.content_type.startswith("multipart/form-data")
    parts = call.multipart()
    assert parts["prompt"][0].text == "make it winter"
    assert parts["input_fidelity"][0].text == "high"
    assert "moderation" not in parts  # the edits endpoint has no moderation parameter
    assert "mask" not in parts
    assert decoded(parts["image"][0].data).size == (1536, 1024)
    assert decoded(result.images[0].data).size == (1536, 1024)
    assert result.usage["image_input_tokens"] == 765
    assert result.cost > 0


def test_inpaint_sends_a_png_mask_transparent_where_ours_is_white(provider, fake):
    mask = Image.new("L", (1024, 1024), 0)
    mask.paste(255, (0, 0, 512, 1024))  # repaint the left half
    request = prepared(provider.model(None), "add a window", mode="inpaint", init_image=photo(), mask=mask)
    provider.generate(request, RunContext())

    sent = fake.calls[0]["mask"]
    assert sent.format == "PNG" and sent.mode == "RGBA"
    alpha = sent.getchannel("A")
    assert alpha.getpixel((10, 10)) == 0  # edited
    assert alpha.getpixel((1000, 10)) == 255  # kept
    assert decoded(openai_mask(mask)).getchannel("A").getextrema() == (0, 255)


def test_inpaint_without_a_mask_is_refused(provider, fake):
    with pytest.raises(InvalidRequest, match="needs a mask"):
        provider.generate(prepared(provider.model(None), mode="inpaint", init_image=photo()), RunContext())


def test_variation_goes_through_edits_with_an_instruction(provider, fake):
    request = prepared(provider.model(None), "", mode="variation", init_image=photo())
    result = provider.generate(request, RunContext())
    assert len(result.images) == 1
    prompt = fake.server.requests[0].multipart()["prompt"][0].text
    assert prompt.startswith("Create a variation of this image")


def test_reference_images_are_sent_as_several_image_parts(provider, fake):
    request = prepared(provider.model(None), "put the hat on the dog", mode="image-to-image",
                       init_image=photo(), extra={"reference_images": [photo(512, 512, (200, 0, 0))]})
    provider.generate(request, RunContext())
    assert [img.size for img in fake.calls[0]["images"]] == [(1024, 1024), (512, 512)]


# -- several images --------------------------------------------------------------------------

def test_n_images_in_one_call(provider, fake):
    result = provider.generate(prepared(provider.model(None), n=3), RunContext())
    assert len(result.images) == 3
    assert [c["n"] for c in fake.calls] == [3]


def test_more_than_ten_images_are_split_into_calls_and_costs_add_up(provider, fake):
    model = dataclasses.replace(provider.model("gpt-image-1-mini"), max_images=12)
    result = provider.generate(prepared(model, n=12, quality="low"), RunContext())
    assert len(result.images) == 12
    assert [c["n"] for c in fake.calls] == [10, 2]
    assert result.usage["calls"] == 2 and result.usage["image_output_tokens"] == 272 * 12
    assert result.cost == pytest.approx((result.usage["text_input_tokens"] * 2 + 272 * 12 * 8) / 1_000_000)


def test_images_already_paid_for_are_kept_when_a_later_call_fails(provider, fake):
    model = dataclasses.replace(provider.model("gpt-image-1-mini"), max_images=12)
    fake.succeed()
    fake.quota_exhausted()
    result = provider.generate(prepared(model, n=12), RunContext())
    assert len(result.images) == 10
    assert "out of quota" in result.usage["incomplete"]


# -- errors ------------------------------------------------------------------------------------

def test_status_is_ready_with_a_key(provider, fake):
    status = provider.status()
    assert status.state == READY
    ids = [m["id"] for m in status.models]
    assert "gpt-image-2.5-flare" in ids and "dall-e-3" not in ids and "gpt-image-1" not in ids


def test_retired_models_are_refused_with_the_replacement(provider, fake):
    model = provider.catalog.model("openai", "dall-e-3")
    with pytest.raises(InvalidRequest, match="dall-e-3 was retired on 2026-05-12; use gpt-image-2.5-flare instead"):
        provider.generate(prepared(model), RunContext())
    assert fake.server.requests == []


def test_content_policy_block_carries_openais_reason(provider, fake):
    with pytest.raises(ContentBlocked, match="moderation_blocked.*safety system"):
        provider.generate(prepared(provider.model(None), "something forbidden"), RunContext())
    assert len(fake.server.requests) == 1


def test_quota_exhausted_is_not_retried(provider, fake):
    fake.quota_exhausted()
    with pytest.raises(QuotaExhausted, match="out of quota"):
        provider.generate(prepared(provider.model(None)), RunContext())
    assert len(fake.server.requests) == 1


def test_server_error_then_success(provider, fake):
    fake.server_error()
    assert len(provider.generate(prepared(provider.model(None)), RunContext()).images) == 1
    assert len(fake.server.requests) == 2


def test_an_echoed_key_is_scrubbed_from_provider_messages(provider, fake):
    fake.scripted.append(Response(400, error_body(f"bad header Bearer {fake.api_key}", "invalid_request_error",
                                                  None)))
    with pytest.raises(InvalidRequest) as caught:
        provider.generate(prepared(provider.model(None)), RunContext())
    assert fake.api_key not in str(caught.value) and "***" in str(caught.value)
