"""StabilityProvider against a loopback Stable Image API, reached through STABILITY_BASE_URL.

Shared behaviour (missing or wrong key, retries, timeouts, cancel) is tested in test_provider_contract.py.
"""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from PIL import Image

from providers.base import READY
from providers.stability import StabilityProvider
from studio.errors import ContentBlocked, InvalidRequest, QuotaExhausted
from studio.types import RunContext
from tests.fakes.http import Response
from tests.fakes.prepared import prepared
from tests.fakes.stability_fake import error_body
from tests.helpers import decoded


@pytest.fixture
def fake(cloud_fake):
    return cloud_fake("stability")


@pytest.fixture
def provider(cloud_provider):
    return cloud_provider(StabilityProvider)


def photo(width=768, height=512) -> Image.Image:
    return Image.new("RGB", (width, height), (120, 90, 60))


# -- text to image -----------------------------------------------------------------------------

def test_sd3_text_to_image_sends_a_multipart_form_and_costs_credits(provider, fake):
    model = provider.model(None)
    request = prepared(model, "a fox in the snow", negative_prompt="blurry", seed=1234, guidance=5.5)
    result = provider.generate(request, RunContext())

    sent = fake.server.requests[0]
    assert sent.path == "/v2beta/stable-image/generate/sd3"
    assert sent.content_type.startswith("multipart/form-data")
    assert sent.headers["authorization"] == f"Bearer {fake.api_key}"
    assert sent.headers["accept"] == "image/*"
    assert fake.calls[0]["fields"] == {"model": "sd3.5-large", "mode": "text-to-image", "prompt": "a fox in the snow",
                                       "negative_prompt": "blurry", "cfg_scale": "5.5", "aspect_ratio": "1:1",
                                       "seed": "1234", "output_format": "png"}
    image = decoded(result.images[0].data)
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert result.images[0].seed == 1234
    assert result.images[0].info["finish_reason"] == "SUCCESS"
    assert result.cost == pytest.approx(0.065)  # 6.5 credits at $0.01
    assert result.usage["credits"] == 6.5


def test_width_and_height_pick_the_nearest_aspect_ratio(provider, fake):
    result = provider.generate(prepared(provider.model("stable-image-ultra"), width=1792, height=1024), RunContext())
    assert fake.calls[0]["endpoint"] == "generate/ultra"
    assert fake.calls[0]["fields"]["aspect_ratio"] == "16:9"
    assert decoded(result.images[0].data).size == (1344, 768)
    provider.generate(prepared(provider.model("stable-image-ultra"), width=512, height=1024), RunContext())
    assert fake.calls[1]["fields"]["aspect_ratio"] == "9:16"


def test_core_maps_studio_styles_to_style_presets_unless_one_is_chosen(provider, fake):
    core = provider.model("stable-image-core")
    provider.generate(prepared(core, style="cinematic", output_format="webp"), RunContext())
    provider.generate(prepared(core, style="cinematic", extra={"style_preset": "neon-punk"}), RunContext())
    provider.generate(prepared(core, style="minimalist"), RunContext())
    presets = [call["fields"].get("style_preset") for call in fake.calls]
    assert presets == ["cinematic", "neon-punk", None]
    assert fake.calls[0]["fields"]["output_format"] == "webp"
    assert "cfg_scale" not in fake.calls[0]["fields"] and "model" not in fake.calls[0]["fields"]


def test_a_model_asks_for_png_when_the_wanted_format_is_not_offered(provider, fake):
    # Stability's sd3 endpoint takes webp too (tests/test_catalog_vs_references.py); a catalog entry
    # that does not list a format still gets png, which the core converts afterwards.
    model = dataclasses.replace(provider.model("sd3.5-medium"), output_formats=("png", "jpeg"))
    result = provider.generate(prepared(model, output_format="webp"), RunContext())
    assert fake.calls[0]["fields"]["output_format"] == "png"
    assert decoded(result.images[0].data).format == "PNG"


def test_sd3_makes_webp_itself(provider, fake):
    result = provider.generate(prepared(provider.model("sd3.5-medium"), output_format="webp"), RunContext())
    assert fake.calls[0]["fields"]["output_format"] == "webp"
    assert decoded(result.images[0].data).format == "WEBP"


def test_unknown_sd3_ids_are_sent_as_given(provider, fake):
    model = provider.model("sd3.5-flash")
    assert not model.known
    provider.generate(prepared(model), RunContext())
    assert fake.calls[0]["fields"]["model"] == "sd3.5-flash"


def test_ids_that_are_not_stability_models_are_refused(provider, fake):
    with pytest.raises(InvalidRequest, match="not a Stability AI model id"):
        provider.generate(prepared(provider.model("flux-dev")), RunContext())
    assert fake.server.requests == []


# -- image to image and inpainting -------------------------------------------------------------

def test_sd3_image_to_image_sends_image_and_strength_without_aspect_ratio(provider, fake):
    request = prepared(provider.model("sd3.5-large-turbo"), "oil painting", mode="image-to-image",
                       init_image=photo(), strength=0.35, width=768, height=512)
    result = provider.generate(request, RunContext())
    call = fake.calls[0]
    assert call["fields"]["mode"] == "image-to-image"
    assert call["fields"]["strength"] == "0.35"
    assert "aspect_ratio" not in call["fields"]
    assert call["files"]["image"].size == (768, 512)
    assert decoded(result.images[0].data).size == (768, 512)
    assert result.cost == pytest.approx(0.04)


def test_ultra_image_to_image(provider, fake):
    request = prepared(provider.model("stable-image-ultra"), "at night", mode="image-to-image",
                       init_image=photo(), strength=0.5)
    provider.generate(request, RunContext())
    assert fake.calls[0]["endpoint"] == "generate/ultra"
    assert fake.calls[0]["fields"]["strength"] == "0.5"


def test_inpaint_sends_image_and_mask_white_means_repaint(provider, fake):
    mask = Image.new("L", (768, 512), 0)
    mask.paste(255, (0, 0, 384, 512))
    request = prepared(provider.model("stable-image-inpaint"), "a red door", mode="inpaint", init_image=photo(),
                       mask=mask, seed=5, extra={"grow_mask": 8})
    result = provider.generate(request, RunContext())
    call = fake.calls[0]
    assert call["endpoint"] == "edit/inpaint"
    assert call["fields"]["grow_mask"] == "8" and call["fields"]["seed"] == "5"
    sent_mask = call["files"]["mask"].convert("L")
    assert sent_mask.getpixel((10, 10)) == 255 and sent_mask.getpixel((700, 10)) == 0
    assert "aspect_ratio" not in call["fields"] and "strength" not in call["fields"]
    assert decoded(result.images[0].data).size == (768, 512)
    assert result.cost == pytest.approx(0.05)  # Stability's published flat 5 credits for inpaint


# -- several images --------------------------------------------------------------------------

def test_n_images_are_n_calls_with_consecutive_seeds(provider, fake):
    result = provider.generate(prepared(provider.model(None), n=3, seed=100), RunContext())
    assert [call["fields"]["seed"] for call in fake.calls] == ["100", "101", "102"]
    assert [image.seed for image in result.images] == [100, 101, 102]
    assert result.cost == pytest.approx(3 * 0.065)


def test_content_filtered_results_are_blocked_not_returned(provider, fake):
    with pytest.raises(ContentBlocked, match="CONTENT_FILTERED"):
        provider.generate(prepared(provider.model(None), "please blurme"), RunContext())
    assert len(fake.server.requests) == 1


def test_a_filtered_image_among_several_is_dropped_and_not_charged(provider, fake):
    fake.succeed()
    fake.content_filtered()
    result = provider.generate(prepared(provider.model(None), n=3, seed=1), RunContext())
    assert len(result.images) == 2
    assert result.usage["blocked"] == 1
    assert result.cost == pytest.approx(2 * 0.065)


# -- errors ------------------------------------------------------------------------------------

def test_status_is_ready_with_a_key(provider, fake):
    assert provider.status().state == READY


def test_content_moderation_carries_stabilitys_reason(provider, fake):
    with pytest.raises(ContentBlocked, match="content moderation.*flagged"):
        provider.generate(prepared(provider.model(None), "something forbidden"), RunContext())
    assert len(fake.server.requests) == 1


def test_out_of_credits_is_not_retried(provider, fake):
    fake.out_of_credits()
    with pytest.raises(QuotaExhausted, match="out of credits"):
        provider.generate(prepared(provider.model(None)), RunContext())
    assert len(fake.server.requests) == 1


def test_bad_requests_surface_stabilitys_words(provider, fake):
    with pytest.raises(InvalidRequest, match="strength: must be between 0 and 1"):
        provider.generate(prepared(provider.model(None), mode="image-to-image", init_image=photo(), strength=1.5),
                          RunContext())


def test_images_already_paid_for_are_kept_when_a_later_call_fails(provider, fake):
    fake.succeed()
    fake.out_of_credits()
    result = provider.generate(prepared(provider.model(None), n=3), RunContext())
    assert len(result.images) == 1
    assert "out of credits" in result.usage["incomplete"]
    assert result.cost == pytest.approx(0.065)


def test_an_echoed_key_is_scrubbed_from_messages(provider, fake):
    fake.scripted.append(Response(400, error_body("bad_request", f"authorization: Bearer {fake.api_key} is odd")))
    with pytest.raises(InvalidRequest) as caught:
        provider.generate(prepared(provider.model(None)), RunContext())
    assert fake.api_key not in str(caught.value) and "***" in str(caught.value)


# -- the fake behaves like the service -----------------------------------------------------------

def test_the_fake_refuses_bodies_that_are_not_multipart(fake):
    url = f"{fake.server.url}/v2beta/stable-image/generate/core"
    headers = {"authorization": f"Bearer {fake.api_key}", "accept": "image/*"}
    answer = httpx.post(url, data={"prompt": "a cat"}, headers=headers)  # data= alone is urlencoded
    assert answer.status_code == 400
    assert answer.json()["errors"] == ["content-type: must be multipart/form-data"]
    answer = httpx.post(url, files={"prompt": (None, "a cat")}, headers={**headers, "accept": "application/json"})
    assert answer.status_code == 200 and answer.json()["finish_reason"] == "SUCCESS"
