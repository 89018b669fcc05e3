"""GeminiProvider against the loopback Gemini API (tests/fakes/gemini_fake.py).

The real ``google-genai`` SDK is pointed at the fake through ``GOOGLE_GEMINI_BASE_URL``; nothing is mocked.
A missing key is tested with the other providers in test_provider_contract.py.
"""

from __future__ import annotations


import pytest
from PIL import Image

from providers.gemini import INPAINT_INSTRUCTION, GeminiProvider
from studio.catalog import Catalog
from studio.config import Settings
from studio.errors import (Cancelled, ContentBlocked, InvalidRequest, NotConfigured, ProviderFailure,
                           ProviderTimeout, QuotaExhausted)
from studio.types import Mode, PreparedRequest, RunContext
from tests.fakes.gemini_fake import KEY, error, rate_limited
from tests.fakes.loopback import FAST_RETRIES, WaitLog
from tests.fakes.prepared import prepared as prepared_request
from tests.helpers import decoded

FLASH = "gemini-3.1-flash-image"
PRO = "gemini-3-pro-image"


@pytest.fixture
def fake(cloud_fake):
    return cloud_fake("gemini")


@pytest.fixture
def provider(cloud_provider):
    return cloud_provider(GeminiProvider)


def prepared(model_id: str = FLASH, **changes) -> PreparedRequest:
    """A 1024x1024 request for ``model_id`` with the fox prompt and seed 77, unless ``changes`` say otherwise."""
    changes = {"prompt": "a red fox in fresh snow, watercolour", "seed": 77, "compression": 90, **changes}
    return prepared_request(Catalog().model("gemini", model_id), **changes)


def test_text_to_image_sends_image_output_aspect_ratio_and_seed(fake, provider):
    events = []
    result = provider.generate(prepared(width=1600, height=900), RunContext(progress=events.append, timeout=10))

    [request] = fake.server.requests
    # v1beta: the API version whose reference defines responseModalities and imageConfig.
    assert request.path == f"/v1beta/models/{FLASH}:generateContent"
    assert request.headers["x-goog-api-key"] == KEY
    body = request.json()
    assert body["contents"] == [{"parts": [{"text": "a red fox in fresh snow, watercolour"}], "role": "user"}]
    assert body["generationConfig"] == {"seed": 77, "responseModalities": ["TEXT", "IMAGE"],
                                        "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"}}
    [image] = result.images
    assert decoded(image.data).size == (2752, 1536)  # Gemini's 2K size for 16:9
    assert image.seed == 77 and image.info["finish_reason"] == "STOP"
    assert image.info["model_text"] == "Here is the image you asked for."
    assert [e.fraction for e in events] == [0.0, 1.0]


def test_cost_comes_from_token_usage_at_the_catalog_rates(fake, provider):
    result = provider.generate(prepared(), RunContext(timeout=10))

    # The fake counts 7 prompt words, 7 text tokens out and 1120 image tokens (1K).
    assert result.usage == {"calls": 1, "prompt_tokens": 7, "image_tokens": 1120, "text_tokens": 7}
    assert result.cost == pytest.approx((7 * 0.5 + 7 * 3.0 + 1120 * 60.0) / 1e6)


def test_several_images_are_several_calls_with_consecutive_seeds(fake, provider):
    result = provider.generate(prepared(n=3, width=768, height=1024), RunContext(timeout=10))

    assert [c.config["seed"] for c in fake.calls] == [77, 78, 79]
    assert {c.config["imageConfig"]["aspectRatio"] for c in fake.calls} == {"3:4"}
    assert [img.seed for img in result.images] == [77, 78, 79]
    assert len({img.data for img in result.images}) == 3
    assert result.usage["calls"] == 3 and result.usage["image_tokens"] == 3 * 1120


def test_edit_sends_the_prompt_and_the_input_image(fake, provider):
    init = Image.new("RGB", (640, 480), (12, 34, 56))
    result = provider.generate(prepared(mode=Mode.IMAGE_TO_IMAGE, init_image=init, prompt="make it night",
                                        width=640, height=480), RunContext(timeout=10))

    [call] = fake.calls
    assert call.texts == ["make it night"]
    [sent] = call.images
    assert sent.size == (640, 480) and sent.convert("RGB").getpixel((0, 0)) == (12, 34, 56)
    assert call.config["imageConfig"]["aspectRatio"] == "4:3"
    assert decoded(result.images[0].data).size == (1200, 896)


def test_inpaint_sends_the_mask_as_a_second_image_with_instructions(fake, provider):
    init = Image.new("RGBA", (512, 512), (200, 10, 10, 255))
    mask = Image.new("L", (512, 512), 0)
    mask.paste(255, (0, 0, 256, 512))
    provider.generate(prepared(mode=Mode.INPAINT, init_image=init, mask=mask, prompt="a window",
                               width=512, height=512), RunContext(timeout=10))

    [call] = fake.calls
    assert call.texts == [f"a window\n\n{INPAINT_INSTRUCTION}"]
    image, sent_mask = call.images
    assert image.mode == "RGB"  # flattened
    assert sent_mask.convert("L").getpixel((10, 10)) == 255 and sent_mask.convert("L").getpixel((500, 10)) == 0


def test_thought_images_are_skipped_and_thinking_is_billed_as_text(fake, provider):
    result = provider.generate(prepared(PRO), RunContext(timeout=10))

    [image] = result.images
    assert decoded(image.data).size == (1024, 1024)  # not the 64x64 thought image
    assert result.usage["text_tokens"] == 7 + 180
    assert result.cost == pytest.approx((7 * 2.0 + 187 * 12.0 + 1120 * 120.0) / 1e6)


# -- blocks and errors ----------------------------------------------------------------------------


def test_a_blocked_prompt_is_content_blocked_with_the_reason(fake, provider):
    fake.block_prompt = "PROHIBITED_CONTENT"
    with pytest.raises(ContentBlocked, match="PROHIBITED_CONTENT"):
        provider.generate(prepared(), RunContext(timeout=10))
    assert len(fake.server.requests) == 1  # not retried


def test_an_image_stopped_by_safety_filters_is_content_blocked(fake, provider):
    fake.finish_reason = "IMAGE_SAFETY"
    with pytest.raises(ContentBlocked, match="IMAGE_SAFETY"):
        provider.generate(prepared(), RunContext(timeout=10))


def test_an_answer_without_an_image_is_a_failure_carrying_the_models_text(fake, provider):
    fake.text_only = "I can only describe foxes today."
    with pytest.raises(ProviderFailure, match="without an image.*describe foxes"):
        provider.generate(prepared(), RunContext(timeout=10))


def test_an_invalid_key_is_not_configured_and_never_shown(fake, provider, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaSy-wrong-secret-key-999")
    with pytest.raises(NotConfigured) as caught:
        provider.generate(prepared(), RunContext(timeout=10))

    assert "GEMINI_API_KEY" in str(caught.value)
    assert "wrong-secret-key" not in str(caught.value)
    assert len(fake.server.requests) == 1


def test_google_api_key_is_accepted_too(fake, provider, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    assert provider.status().state == "ready"
    assert len(provider.generate(prepared(), RunContext(timeout=10)).images) == 1


def test_permission_denied_is_not_configured(fake, provider):
    fake.queue_error(error(403, "PERMISSION_DENIED", "Generative Language API has not been used in project 1 "
                           "before or it is disabled."))
    with pytest.raises(NotConfigured, match="disabled"):
        provider.generate(prepared(), RunContext(timeout=10))


def test_a_per_minute_rate_limit_is_retried_after_the_retry_delay(fake, provider):
    fake.queue_error(rate_limited("Minute", retry_delay="0.3s"))
    ctx = RunContext(timeout=10, cancel=WaitLog())
    result = provider.generate(prepared(), ctx)

    assert len(result.images) == 1 and len(fake.server.requests) == 2
    assert ctx.cancel.waits[0] == 0.3  # RetryInfo.retryDelay was honoured


def test_a_daily_quota_is_exhausted_and_not_retried(fake, provider):
    fake.queue_error(rate_limited("Day", retry_delay="40s"))
    with pytest.raises(QuotaExhausted, match="quota is used up"):
        provider.generate(prepared(), RunContext(timeout=10))
    assert len(fake.server.requests) == 1


def test_depleted_credit_without_details_is_quota_exhausted(fake, provider):
    fake.queue_error(error(429, "RESOURCE_EXHAUSTED", "Your prepayment credits are depleted. Please go to AI "
                           "Studio at https://ai.studio/projects to manage your project and billing."))
    with pytest.raises(QuotaExhausted):
        provider.generate(prepared(), RunContext(timeout=10))
    assert len(fake.server.requests) == 1


def test_invalid_argument_is_an_invalid_request(fake, provider):
    with pytest.raises(InvalidRequest, match="Unsupported image size"):
        provider.generate(prepared(extra={"image_size": "8K"}), RunContext(timeout=10))


def test_an_unknown_model_id_is_sent_and_reported_as_not_found(fake, provider):
    with pytest.raises(InvalidRequest, match="no such model"):
        provider.generate(prepared("gemini-9-imaginary-image"), RunContext(timeout=10))
    assert fake.server.requests[0].path == "/v1beta/models/gemini-9-imaginary-image:generateContent"


def test_server_errors_are_retried_within_bounds_then_reported(fake, provider):
    fake.queue_error(error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."), times=5)
    with pytest.raises(ProviderFailure, match="overloaded") as caught:
        provider.generate(prepared(), RunContext(timeout=10))
    assert caught.value.retryable and len(fake.server.requests) == FAST_RETRIES.max_tries


def test_a_server_error_then_success(fake, provider):
    fake.queue_error(error(500, "INTERNAL", "An internal error has occurred."))
    assert len(provider.generate(prepared(), RunContext(timeout=10)).images) == 1
    assert len(fake.server.requests) == 2


def test_a_slow_answer_is_a_timeout(fake, provider):
    fake.delay = 2.0  # had the provider waited for this answer, it would have an image, not a timeout
    with pytest.raises(ProviderTimeout, match="within 0.4 s"):
        provider.generate(prepared(), RunContext(timeout=0.4))
    assert fake.server.requests[0].headers["x-server-timeout"] == "1"


def test_cancel_between_images_stops_before_the_next_call(fake, provider):
    ctx = RunContext(timeout=10)
    ctx.progress = lambda event: ctx.cancel.set() if event.step == 1 else None
    with pytest.raises(Cancelled):
        provider.generate(prepared(n=3), ctx)
    assert len(fake.calls) == 1


def test_a_key_echoed_by_the_server_is_scrubbed(fake, provider):
    fake.queue_error(error(400, "INVALID_ARGUMENT", f"Request with key {KEY} has an invalid field"))
    with pytest.raises(InvalidRequest) as caught:
        provider.generate(prepared(), RunContext(timeout=10))
    assert KEY not in str(caught.value) and "***" in str(caught.value)


def test_retired_models_stay_out_of_the_list_and_name_their_replacement(provider):
    assert "gemini-2.5-flash-image" not in [m.id for m in provider.models()]
    retired = provider.model("gemini-2.5-flash-image")
    assert retired.retired and (retired.retires_on, retired.replacement) == ("2026-10-02", FLASH)
    assert provider.default_model().id == FLASH
    # Refusing it is the studio's rule for every provider: tests/test_retired_models.py.


# -- as Google publishes the API --------------------------------------------------------------

# ImageConfig.aspectRatio in the Gemini API reference (and google-genai 3.4's ImageConfig docstring,
# generated from it): "1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9". Checked 2026-11-29.
DOCUMENTED_RATIOS = {"1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9"}


def test_the_api_version_is_explicit_and_a_setting(fake, cloud_provider, studio_home, monkeypatch):
    """google-genai 3.x alone calls v1, whose reference lacks responseModalities and imageConfig;
    the studio names the version itself, v1beta unless the setting says otherwise."""
    monkeypatch.setenv("GOOGLE_GENAI_API_VERSION", "v1")  # the SDK's own variable does not decide
    provider = cloud_provider(GeminiProvider)
    provider.generate(prepared(), RunContext(timeout=10))
    assert fake.versions == ["v1beta"]

    monkeypatch.setenv("STUDIO_GEMINI_API_VERSION", "v1")
    on_v1 = GeminiProvider(Settings.load(studio_home), Catalog())
    on_v1.retry_policy = FAST_RETRIES
    try:
        # The fake follows v1's reference: the image fields are unknown there.
        with pytest.raises(InvalidRequest, match="Unknown name"):
            on_v1.generate(prepared(), RunContext(timeout=10))
    finally:
        on_v1.close()
    assert fake.versions == ["v1beta", "v1"]


@pytest.mark.parametrize("value", ["beta", "v1/../x", "", "V1"])
def test_a_malformed_api_version_setting_is_refused(studio_home, monkeypatch, value):
    monkeypatch.setenv("STUDIO_GEMINI_API_VERSION", value)
    if not value:  # empty means unset: the default
        assert Settings.load(studio_home).gemini_api_version == "v1beta"
        return
    with pytest.raises(ValueError, match="API version looks like v1 or v1beta"):
        Settings.load(studio_home)


def test_the_api_version_can_come_from_studio_toml(studio_home):
    studio_home.mkdir(parents=True, exist_ok=True)
    (studio_home / "studio.toml").write_text('[gemini]\napi_version = "v1alpha"\n', encoding="utf-8")
    assert Settings.load(studio_home).gemini_api_version == "v1alpha"


@pytest.mark.parametrize("width, height, ratio", [(896, 1120, "3:4"), (1120, 896, "4:3"), (1600, 900, "16:9")])
def test_only_documented_aspect_ratios_are_sent(fake, provider, width, height, ratio):
    """4:5 and 5:4 are not in the reference's list: a 4:5 request gets the nearest documented ratio."""
    provider.generate(prepared(width=width, height=height), RunContext(timeout=10))
    [call] = fake.calls
    assert call.config["imageConfig"]["aspectRatio"] == ratio


def test_every_gemini_catalog_entry_offers_only_documented_ratios():
    catalog = Catalog()
    entries = catalog.models("gemini", include_retired=True) + [catalog.model("gemini", "some-future-image-model")]
    for model in entries:
        assert set(model.aspect_ratios) <= DOCUMENTED_RATIOS, model.id


def test_images_already_made_are_kept_when_a_later_call_is_blocked(fake, provider):
    """Each call is paid for on its own: a block on image 2 does not throw image 1 away."""
    fake.block_prompt, fake.blocks_from_call = "SAFETY", 2
    result = provider.generate(prepared(n=3), RunContext(timeout=10))

    assert len(result.images) == 1 and len(fake.calls) == 2
    assert "1 of 3 images" in result.usage["incomplete"] and "SAFETY" in result.usage["incomplete"]
    assert result.usage["calls"] == 1 and result.cost is not None
