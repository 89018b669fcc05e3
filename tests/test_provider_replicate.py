"""ReplicateProvider against the loopback Replicate (tests/fakes/replicate_fake.py).

The real ``replicate`` SDK is pointed at the fake through ``REPLICATE_BASE_URL``; nothing is mocked.
A missing token is tested with the other providers in test_provider_contract.py.
"""

from __future__ import annotations

import os

import pytest
from PIL import Image

from providers.replicate_models import ReplicateProvider
from studio.catalog import Catalog
from studio.errors import (Cancelled, ContentBlocked, InvalidRequest, NotConfigured, ProviderFailure,
                           ProviderTimeout, QuotaExhausted)
from studio.types import Mode, PreparedRequest, RunContext
from providers.cloud import serves_provider
from providers.replicate_models import CREDENTIAL_HOSTS
from tests.fakes.http import FakeServer, Response, image_bytes
from tests.fakes.loopback import FAST_RETRIES, WaitLog
from tests.fakes.prepared import prepared as prepared_request
from tests.fakes.replicate_fake import SDXL_VERSION, TOKEN, ReplicateFake, problem
from tests.helpers import decoded

SCHNELL = "black-forest-labs/flux-schnell"
FLUX_DEV = "black-forest-labs/flux-dev"
FLUX_PRO = "black-forest-labs/flux-1.1-pro"
SDXL = f"stability-ai/sdxl:{SDXL_VERSION}"


@pytest.fixture
def fake(cloud_fake):
    return cloud_fake("replicate")


@pytest.fixture
def provider(cloud_provider):
    return cloud_provider(ReplicateProvider)


def prepared(model_id: str, **changes) -> PreparedRequest:
    """A request for ``model_id`` with the model's defaults, the lighthouse prompt and seed 1234, unless
    ``changes`` say otherwise (no strength: tests that edit an image give one)."""
    changes = {"prompt": "a lighthouse at dusk, oil painting", "seed": 1234, "strength": None, "compression": 90,
               **changes}
    return prepared_request(Catalog().model("replicate", model_id), **changes)


def creates(fake: ReplicateFake):
    return [r for r in fake.server.requests if r.method == "POST" and r.path.endswith("predictions")]


def test_flux_schnell_text_to_image_sends_its_inputs_and_reports_progress(fake, provider):
    events = []
    result = provider.generate(prepared(SCHNELL, width=1344, height=768, output_format="webp"),
                               RunContext(progress=events.append, timeout=10))

    [create] = creates(fake)
    assert create.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert create.headers["authorization"] == f"Bearer {TOKEN}"
    assert create.json() == {"input": {"prompt": "a lighthouse at dusk, oil painting", "aspect_ratio": "16:9",
                                       "num_outputs": 1, "seed": 1234, "num_inference_steps": 4,
                                       "output_format": "webp", "output_quality": 90}}
    [image] = result.images
    picture = decoded(image.data)
    assert (picture.format, picture.size) == ("WEBP", (1344, 768))
    assert image.seed == 1234 and image.info["prediction_id"] == result.usage["prediction_id"]
    assert result.cost == pytest.approx(0.003)  # catalog: $0.003 per image
    # Progress came from the polls, including the step counts parsed from the model's logs.
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] > 0.8
    assert any(e.step == 2 and e.total_steps == 4 for e in events)
    # Output files are fetched with the token, as Replicate's reference and its SDK's FileOutput do.
    assert fake.downloads and all(d.headers["authorization"] == f"Bearer {TOKEN}" for d in fake.downloads)


def test_several_images_in_one_prediction_are_all_downloaded_and_paid_per_image(fake, provider):
    result = provider.generate(prepared(SCHNELL, n=3, output_format="jpeg"), RunContext(timeout=10))

    assert creates(fake)[0].json()["input"]["num_outputs"] == 3
    assert creates(fake)[0].json()["input"]["output_format"] == "jpg"
    assert len(result.images) == 3
    assert len({img.data for img in result.images}) == 3  # three different files
    assert all(decoded(img.data).format == "JPEG" for img in result.images)
    # One prediction, one seed: each image says where it sits in the batch.
    assert [(img.seed, img.info["batch_index"], img.info["batch_size"]) for img in result.images] == [
        (1234, 0, 3), (1234, 1, 3), (1234, 2, 3)]
    assert result.cost == pytest.approx(0.009)


def test_version_pinned_sdxl_sends_size_negative_prompt_guidance_and_is_billed_by_gpu_time(fake, provider):
    fake.predict_time = 4.0
    request = prepared(SDXL, width=768, height=512, n=2, negative_prompt="blurry, text", steps=30, guidance=6.5,
                       extra={"scheduler": "K_EULER"})
    result = provider.generate(request, RunContext(timeout=10))

    [create] = creates(fake)
    assert create.path == "/v1/predictions"
    assert create.json() == {"version": SDXL_VERSION, "input": {
        "prompt": "a lighthouse at dusk, oil painting", "negative_prompt": "blurry, text", "width": 768,
        "height": 512, "num_outputs": 2, "seed": 1234, "num_inference_steps": 30, "guidance_scale": 6.5,
        "scheduler": "K_EULER"}}
    assert [decoded(img.data).size for img in result.images] == [(768, 512), (768, 512)]
    assert result.usage["predict_time"] == 4.0
    assert result.cost == pytest.approx(4.0 * 0.000975)


def test_sdxl_image_to_image_sends_the_image_and_prompt_strength(fake, provider):
    init = Image.new("RGB", (512, 384), (10, 200, 30))
    result = provider.generate(prepared(SDXL, mode=Mode.IMAGE_TO_IMAGE, init_image=init, strength=0.55,
                                        width=512, height=384), RunContext(timeout=10))

    sent = creates(fake)[0].json()["input"]
    assert sent["image"].startswith("data:image/png;base64,")
    assert sent["prompt_strength"] == 0.55
    [prediction] = fake.predictions.values()
    assert prediction.images["image"].size == (512, 384)
    assert prediction.images["image"].convert("RGB").getpixel((5, 5)) == (10, 200, 30)
    assert decoded(result.images[0].data).size == (512, 384)


def test_sdxl_inpaint_sends_a_mask_where_white_is_repainted(fake, provider):
    init = Image.new("RGB", (256, 256), "navy")
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (64, 64, 192, 192))
    provider.generate(prepared(SDXL, mode=Mode.INPAINT, init_image=init, mask=mask, strength=0.9,
                               width=256, height=256), RunContext(timeout=10))

    [prediction] = fake.predictions.values()
    sent_mask = prediction.images["mask"].convert("L")
    assert sent_mask.size == (256, 256)
    assert sent_mask.getpixel((128, 128)) == 255 and sent_mask.getpixel((5, 5)) == 0


def test_a_large_input_image_is_uploaded_through_the_files_api(fake, provider):
    noise = Image.frombytes("RGB", (640, 640), os.urandom(640 * 640 * 3))  # incompressible: > 1 MiB as PNG
    provider.generate(prepared(SDXL, mode=Mode.IMAGE_TO_IMAGE, init_image=noise, strength=0.5, width=640,
                               height=640), RunContext(timeout=10))

    [upload] = [r for r in fake.server.requests if r.path == "/v1/files"]
    assert upload.content_type.startswith("multipart/form-data")
    assert upload.headers["authorization"] == f"Bearer {TOKEN}"
    sent = creates(fake)[0].json()["input"]["image"]
    assert sent.startswith(fake.server.url + "/v1/files/")
    [prediction] = fake.predictions.values()
    assert prediction.images["image"].convert("RGB").tobytes() == noise.tobytes()


def test_flux_dev_image_to_image_is_image_plus_prompt_strength(fake, provider):
    init = Image.new("RGBA", (300, 200), (250, 0, 0, 128))  # transparency is flattened, not sent
    result = provider.generate(prepared(FLUX_DEV, mode=Mode.IMAGE_TO_IMAGE, init_image=init, strength=0.7,
                                        width=300, height=200, n=2), RunContext(timeout=10))

    sent = creates(fake)[0].json()["input"]
    assert sent["prompt_strength"] == 0.7 and sent["aspect_ratio"] == "3:2" and sent["num_outputs"] == 2
    [prediction] = fake.predictions.values()
    assert prediction.images["image"].mode == "RGB"
    assert len(result.images) == 2 and result.cost == pytest.approx(0.05)


def test_a_model_with_a_single_output_url(fake, provider):
    result = provider.generate(prepared(FLUX_PRO, width=1024, height=1024), RunContext(timeout=10))

    assert "num_outputs" not in creates(fake)[0].json()["input"]
    assert len(result.images) == 1 and result.cost == pytest.approx(0.04)


def test_an_unknown_model_id_is_still_sent_with_only_the_prompt(fake, provider):
    with pytest.raises(InvalidRequest, match="no such model"):
        provider.generate(prepared("someone/custom-model", seed=None), RunContext(timeout=10))

    [create] = creates(fake)
    assert create.path == "/v1/models/someone/custom-model/predictions"
    assert create.json() == {"input": {"prompt": "a lighthouse at dusk, oil painting"}}


# -- errors -------------------------------------------------------------------------------------


def test_a_rejected_token_is_not_configured_and_never_shown(fake, provider, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_wrong_secret_value_42")
    with pytest.raises(NotConfigured) as caught:
        provider.generate(prepared(SCHNELL), RunContext(timeout=10))

    assert "REPLICATE_API_TOKEN" in str(caught.value)
    assert "r8_wrong_secret_value_42" not in str(caught.value)
    assert len(creates(fake)) == 1  # an auth error is not retried


def test_the_safety_checker_blocking_the_image_is_content_blocked(fake, provider):
    fake.outcome = "nsfw"
    with pytest.raises(ContentBlocked, match="NSFW content detected"):
        provider.generate(prepared(SCHNELL), RunContext(timeout=10))
    assert len(creates(fake)) == 1 and fake.cancelled == []


def test_a_failed_prediction_is_a_provider_failure_with_the_model_error(fake, provider):
    fake.outcome = "fail"
    with pytest.raises(ProviderFailure, match="CUDA out of memory") as caught:
        provider.generate(prepared(SCHNELL), RunContext(timeout=10))
    assert not caught.value.retryable


def test_throttling_on_create_is_retried_after_retry_after(fake, provider):
    fake.queue_error("create", problem(429, "Request was throttled", "Request was throttled. Expected available "
                                       "in 1 second.", {"Retry-After": "0.3"}))
    ctx = RunContext(timeout=10, cancel=WaitLog())
    result = provider.generate(prepared(SCHNELL), ctx)

    assert len(result.images) == 1
    assert len(creates(fake)) == 2 and len(fake.predictions) == 1
    assert ctx.cancel.waits[0] == 0.3  # the Retry-After header was honoured (then come the polls)


def test_insufficient_credit_is_quota_exhausted_and_not_retried(fake, provider):
    fake.queue_error("create", problem(402, "Insufficient credit", "You have insufficient credit to run this model. "
                                       "Go to https://replicate.com/account/billing#billing to purchase credit."))
    with pytest.raises(QuotaExhausted, match="out of credit"):
        provider.generate(prepared(SCHNELL), RunContext(timeout=10))
    assert len(creates(fake)) == 1


def test_server_errors_are_retried_within_bounds_then_reported(fake, provider):
    fake.queue_error("create", problem(500, "Internal server error", "Something went wrong"), times=5)
    with pytest.raises(ProviderFailure, match="server error") as caught:
        provider.generate(prepared(SCHNELL), RunContext(timeout=10))
    assert caught.value.retryable
    assert len(creates(fake)) == FAST_RETRIES.max_tries


def test_input_validation_errors_are_invalid_requests_and_keys_are_scrubbed(fake, provider):
    fake.queue_error("create", problem(422, "Input validation failed", f"token {TOKEN} cannot use seed: -1"))
    with pytest.raises(InvalidRequest) as caught:
        provider.generate(prepared(SCHNELL), RunContext(timeout=10))
    assert TOKEN not in str(caught.value) and "***" in str(caught.value)


def test_the_fake_rejects_inputs_the_model_does_not_take(fake, provider):
    with pytest.raises(InvalidRequest, match="bogus"):
        provider.generate(prepared(SCHNELL, extra={"bogus": 1}), RunContext(timeout=10))


def test_a_prediction_that_outlives_the_timeout_is_cancelled_on_replicate(fake, provider):
    fake.outcome = "never"
    with pytest.raises(ProviderTimeout, match="did not finish within 0.3 s"):
        provider.generate(prepared(SCHNELL), RunContext(timeout=0.3))

    [prediction_id] = fake.predictions
    assert fake.cancelled == [prediction_id]
    assert any(r.path == f"/v1/predictions/{prediction_id}/cancel" and r.method == "POST"
               for r in fake.server.requests)


def test_a_user_cancel_while_polling_cancels_the_prediction(fake, provider):
    fake.outcome = "never"
    ctx = RunContext(timeout=10)
    ctx.progress = lambda event: ctx.cancel.set() if event.stage == "generating" else None
    with pytest.raises(Cancelled):
        provider.generate(prepared(SCHNELL), ctx)
    assert fake.cancelled == list(fake.predictions)


def test_oversized_outputs_are_refused(fake, provider):
    provider.max_download_bytes = 1000
    with pytest.raises(ProviderFailure, match="larger than"):
        provider.generate(prepared(SCHNELL), RunContext(timeout=10))


def test_status_is_ready_with_a_token_and_lists_the_catalog(fake, provider):
    status = provider.status()
    assert status.state == "ready"
    assert any(m["id"] == SCHNELL and m["default"] for m in status.models)


def test_the_fake_answers_the_version_lookup_the_sdk_makes_for_run(fake):
    """``replicate.run("owner/name:version")`` also GETs the version; the fake answers it."""
    import replicate

    client = replicate.Client(api_token=TOKEN)
    output = client.run(SDXL, input={"prompt": "x", "width": 256, "height": 256})
    assert any(r.path == f"/v1/models/stability-ai/sdxl/versions/{SDXL_VERSION}" for r in fake.server.requests)
    assert isinstance(output, list) and output[0].startswith(fake.server.url + "/output/")


# -- what Replicate documents beyond the SDK ----------------------------------------------------

def test_an_aborted_prediction_is_a_clear_retryable_failure_not_an_sdk_validation_error(fake, provider):
    """Replicate documents ``aborted`` (deadline passed before the prediction started); the 1.x SDK's
    model refuses to parse it (``ValidationError ... given=aborted``)."""
    fake.outcome = "aborted"
    with pytest.raises(ProviderFailure, match="aborted the prediction .* nothing was billed") as caught:
        provider.generate(prepared(SCHNELL), RunContext(timeout=10))
    assert caught.value.retryable  # nothing ran: a batch may try the item again
    assert "ValidationError" not in str(caught.value)
    assert fake.cancelled == [] and fake.downloads == []  # over already: nothing to cancel or fetch


def test_a_status_nobody_documented_stops_and_cancels_the_prediction(fake, provider):
    fake.outcome = "never"
    real_advance = fake._advance

    def advance(prediction, base):  # a future status appears while the prediction runs
        real_advance(prediction, base)
        prediction.status = "paused"

    fake._advance = advance
    with pytest.raises(ProviderFailure, match="'paused', a status the studio does not know"):
        provider.generate(prepared(SCHNELL), RunContext(timeout=10))
    assert fake.cancelled == list(fake.predictions)


def test_output_files_need_the_token_and_the_download_sends_it(fake, provider):
    fake.outputs_need_token = True
    result = provider.generate(prepared(SCHNELL, n=2), RunContext(timeout=10))
    assert len(result.images) == 2
    assert len(fake.downloads) == 2


def test_the_token_never_goes_to_an_output_host_that_is_not_replicates(fake, provider):
    """An output URL on another origin (here another loopback port) is fetched without the token."""
    def serve_image(request):
        return Response(200, image_bytes(64, 64, "PNG"), {"content-type": "image/png"})

    with FakeServer(serve_image) as elsewhere:
        fake.output_base = elsewhere.url
        result = provider.generate(prepared(SCHNELL, output_format="png"), RunContext(timeout=10))
    assert len(result.images) == 1
    [download] = elsewhere.requests
    assert "authorization" not in download.headers
    assert fake.downloads == []


@pytest.mark.parametrize("url, expected", [
    ("https://replicate.delivery/xezq/abc/out-0.webp", True),
    ("https://pbxt.replicate.delivery/abc/out-0.png", True),
    ("https://api.replicate.com/v1/files/abc/download", True),
    ("http://replicate.delivery/xezq/abc/out-0.webp", False),  # never in clear text
    ("https://evilreplicate.delivery/out.png", False),
    ("https://replicate.delivery.example.com/out.png", False),
    ("https://example.com/out.png", False),
    ("http://127.0.0.1:8123/output/x.png", True),  # the configured endpoint's origin
    ("http://127.0.0.1:9999/output/x.png", False),  # same machine, another origin
])
def test_which_output_hosts_get_the_token(url, expected):
    assert serves_provider(url, "http://127.0.0.1:8123", CREDENTIAL_HOSTS) is expected
