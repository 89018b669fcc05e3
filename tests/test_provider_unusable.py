"""Answers that a provider billed but that hold no image we can keep are never retried.

Each provider's fake answers in a shape its published API reference allows: a Replicate prediction
that succeeds with ``output: null`` (or ``[]``), an OpenAI-compatible answer with ``data[].url``
links (downloaded through the outbound guard) or with items holding no image, a Gemini answer whose
only image part is flagged ``thought: true`` (kept) or that has no candidates but billed tokens, a
Stability 200 that is not an image. Retrying any of them would pay again, so each is an
``UnusableResult`` (not retryable) after exactly one provider call, and a batch does not retry the
scene either.
"""

from __future__ import annotations

import base64

import pytest

from providers.gemini import GeminiProvider
from providers.openai_images import OpenAIProvider
from providers.replicate_models import ReplicateProvider
from providers.stability import StabilityProvider
from studio.errors import UnusableResult
from studio.imaging import decode_result
from studio.types import RunContext
from tests.fakes.http import Response, image_bytes
from tests.fakes.prepared import prepared
from tests.helpers import decoded


def generate(provider, model_id: str | None = None, **changes):
    return provider.generate(prepared(provider.model(model_id), **changes), RunContext(timeout=10))


def unusable(provider, model_id: str | None = None) -> UnusableResult:
    with pytest.raises(UnusableResult) as caught:
        generate(provider, model_id)
    assert not caught.value.retryable
    assert caught.value.provider == provider.name
    return caught.value


# -- Replicate ------------------------------------------------------------------------------------

@pytest.mark.parametrize("outcome, shape", [("null_output", "output is null"), ("empty_output", "an empty list")])
def test_a_replicate_prediction_that_succeeds_without_output_is_not_retried(cloud_fake, cloud_provider, outcome,
                                                                            shape):
    fake = cloud_fake("replicate")
    fake.outcome = outcome
    error = unusable(cloud_provider(ReplicateProvider))
    assert "succeeded (and was billed)" in error.message and shape in error.message
    assert len(fake.predictions) == 1 and fake.downloads == []


def test_replicate_outputs_that_download_are_kept_when_another_cannot_be(cloud_fake, cloud_provider):
    fake = cloud_fake("replicate")
    fake.expired_outputs = {1}  # the delivery host answers 404 for the second file
    result = generate(cloud_provider(ReplicateProvider), n=3)
    assert [image.info["batch_index"] for image in result.images] == [0, 2]
    assert result.usage["incomplete"].startswith("2 of 3 images:") and "HTTP 404" in result.usage["incomplete"]
    assert result.cost == pytest.approx(3 * 0.003)  # all three outputs were made, and billed
    assert len(fake.predictions) == 1


def test_replicate_with_no_output_downloadable_is_unusable(cloud_fake, cloud_provider):
    fake = cloud_fake("replicate")
    fake.expired_outputs = {0}
    error = unusable(cloud_provider(ReplicateProvider))
    assert "could not be downloaded" in error.message and "HTTP 404" in error.message
    assert len(fake.predictions) == 1


# -- OpenAI -----------------------------------------------------------------------------------------

def test_openai_url_answers_are_downloaded_without_the_key(cloud_fake, cloud_provider):
    fake = cloud_fake("openai")
    fake.links = True
    result = generate(cloud_provider(OpenAIProvider), n=2, width=1536, height=1024)
    assert [decoded(image.data).size for image in result.images] == [(1536, 1024)] * 2
    assert len(fake.calls) == 1 and len(fake.downloads) == 2
    assert all("authorization" not in download.headers for download in fake.downloads)


@pytest.mark.parametrize("items, words", [
    ([{"url": "http://169.254.169.254/latest/meta-data/"}], "link-local or cloud metadata"),  # the guard refuses
    ([{"url": "http://10.1.2.3/image.png"}], "private or reserved"),  # not the configured endpoint's host
    ([{"revised_prompt": "a fox"}], "neither image data nor a link"),
    ([], "without any image"),
    ([{"b64_json": "not base64 at all!"}], "not valid base64"),
])
def test_openai_answers_without_a_usable_image_are_not_retried(cloud_fake, cloud_provider, items, words):
    fake = cloud_fake("openai")
    fake.answer_items = items
    error = unusable(cloud_provider(OpenAIProvider))
    assert words in error.message
    assert len(fake.calls) == 1 and fake.downloads == []


def test_openai_usable_items_of_a_paid_answer_are_kept_when_one_is_not(cloud_fake, cloud_provider):
    fake = cloud_fake("openai")
    good = base64.b64encode(image_bytes(1024, 1024)).decode()
    fake.answer_items = [{"b64_json": good}, {"url": "http://169.254.169.254/latest/meta-data/"}, {"b64_json": good}]
    result = generate(cloud_provider(OpenAIProvider), n=3)
    assert len(result.images) == 2
    assert result.usage["incomplete"].startswith("2 of 3 images:") and "metadata" in result.usage["incomplete"]
    assert result.usage["calls"] == 1 and result.cost is not None  # the one answer, paid in full, is costed
    assert len(fake.calls) == 1


def test_a_later_openai_answer_without_images_is_costed_with_the_kept_ones(cloud_fake, cloud_provider):
    fake = cloud_fake("openai")
    fake.answer_items, fake.answer_items_after = [], 1  # 11 images: 10 in the first answer, none in the second
    result = generate(cloud_provider(OpenAIProvider), n=11)
    assert len(result.images) == 10 and result.usage["incomplete"].startswith("10 of 11 images:")
    assert result.usage["calls"] == 2  # both answers are paid for, and costed
    assert len(fake.calls) == 2


def test_openai_link_the_guard_refuses_says_why(cloud_fake, cloud_provider):
    fake = cloud_fake("openai")
    fake.answer_items = [{"url": "file:///etc/passwd"}]
    error = unusable(cloud_provider(OpenAIProvider))
    assert "only http and https" in error.message


# -- Gemini -----------------------------------------------------------------------------------------

def test_a_gemini_image_flagged_as_a_thought_is_kept_when_it_is_the_only_one(cloud_fake, cloud_provider):
    fake = cloud_fake("gemini")
    fake.thought_image_only = True
    result = generate(cloud_provider(GeminiProvider), "gemini-3-pro-image", seed=5)
    [image] = result.images
    assert decoded(image.data).size == (1024, 1024)  # the answer's image, not a 64x64 interim one
    assert image.info["thought_image"] is True
    assert len(fake.calls) == 1


def test_a_later_gemini_answer_without_an_image_is_costed_with_the_kept_one(cloud_fake, cloud_provider):
    fake = cloud_fake("gemini")
    fake.text_only, fake.blocks_from_call = "No image this time.", 2
    result = generate(cloud_provider(GeminiProvider), n=2, seed=1)
    assert len(result.images) == 1 and result.usage["incomplete"].startswith("1 of 2 images:")
    assert result.usage["calls"] == 2  # the text-only answer was paid for too, and is costed
    assert len(fake.calls) == 2


def test_a_billed_gemini_answer_without_candidates_is_not_retried(cloud_fake, cloud_provider):
    fake = cloud_fake("gemini")
    fake.no_candidates = True
    error = unusable(cloud_provider(GeminiProvider))
    assert "no candidates" in error.message
    assert len(fake.calls) == 1


def test_a_gemini_text_only_answer_is_not_retried(cloud_fake, cloud_provider):
    fake = cloud_fake("gemini")
    fake.text_only = "I can only describe foxes today."
    unusable(cloud_provider(GeminiProvider))
    assert len(fake.calls) == 1


# -- Stability AI and every provider's bytes ------------------------------------------------------------

def test_a_stability_200_that_is_not_an_image_is_not_retried(cloud_fake, cloud_provider):
    fake = cloud_fake("stability")
    # A proxy in front of the API answering 200 with its own page.
    fake.scripted.append(Response(200, "<html>upstream says hello</html>", {"content-type": "text/html"}))
    error = unusable(cloud_provider(StabilityProvider))
    assert "text/html" in error.message
    assert len(fake.server.requests) == 1


@pytest.mark.parametrize("data", [b"", b"<html>proxy error</html>", image_bytes(64, 64)[:40]])
def test_undecodable_provider_bytes_are_unusable_not_retryable(data):
    with pytest.raises(UnusableResult) as caught:
        decode_result(data, "stability")
    assert not caught.value.retryable


# -- a batch: provider calls per scene --------------------------------------------------------------------

def test_a_batch_pays_once_per_scene_when_answers_are_unusable(cloud_fake, studio_home):
    """Figures for the report: provider calls per scene in a batch whose every answer is billed but
    unusable. Before: 3 (the runner retried each scene up to MAX_ATTEMPTS). After: 1."""
    from studio.jobs import get_manager
    from studio.service import Studio

    fake = cloud_fake("replicate")
    fake.outcome = "null_output"
    studio = Studio(studio_home)
    manager = get_manager(studio)
    try:
        script = "\n".join(f"scene {i}: a lighthouse at dusk, view {i}" for i in range(3))
        job = manager.submit(script, provider="replicate", model="black-forest-labs/flux-schnell", concurrency=2)
        manager.wait(job.id, timeout=120)
        items = manager.result(job.id)["items"]
    finally:
        manager.close()
        studio.close()
    assert [item["status"] for item in items] == ["FAILED"] * 3
    predictions_per_scene = len(fake.predictions) / len(items)
    assert predictions_per_scene == 1
    assert all("succeeded (and was billed)" in item["error"] for item in items)

