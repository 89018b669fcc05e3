"""Replicate and Gemini through the library (Studio) and the CLI, against their loopback fakes.

What the whole path must do: images saved and recorded with the provider's actual cost; a failed
request records no image and no cost; no API key in the data directory or in messages.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from studio.cli import main
from studio.errors import ContentBlocked, ProviderTimeout, QuotaExhausted
from studio.service import Studio
from studio.types import GenerationRequest
from tests.fakes.gemini_fake import KEY as GEMINI_KEY
from tests.fakes.gemini_fake import rate_limited
from tests.fakes.replicate_fake import SDXL_VERSION
from tests.fakes.replicate_fake import TOKEN as REPLICATE_TOKEN
from tests.helpers import assert_no_key_under

SDXL = f"stability-ai/sdxl:{SDXL_VERSION}"


@pytest.fixture
def fakes(cloud_fake):
    return cloud_fake("replicate"), cloud_fake("gemini")


@pytest.fixture
def studio(studio_home, fakes):
    instance = Studio(home=studio_home)
    yield instance
    instance.close()


def failed_row(studio: Studio) -> tuple:
    row = studio.storage.index.generations()[0]
    return row["status"], row["cost"], row["error_kind"]


def test_flux_schnell_through_the_studio_records_the_per_image_price(studio, fakes, studio_home):
    replicate_fake, _ = fakes
    result = studio.generate(GenerationRequest(prompt="a glass lighthouse", provider="replicate", n=2, seed=9,
                                               width=1344, height=768, output_format="jpeg"))

    sent = replicate_fake.predictions[next(iter(replicate_fake.predictions))].input
    assert (sent["aspect_ratio"], sent["num_outputs"], sent["seed"], sent["output_format"]) == ("16:9", 2, 9, "jpg")
    assert len(result.images) == 2
    assert all((r.provider, r.model, r.width, r.height, r.format) ==
               ("replicate", "black-forest-labs/flux-schnell", 1344, 768, "jpeg") for r in result.images)
    assert all(Path(r.abs_path).is_file() for r in result.images)
    assert result.cost == pytest.approx(0.006)
    assert studio.storage.index.generations()[0]["status"] == "completed"
    assert_no_key_under(studio_home, REPLICATE_TOKEN, GEMINI_KEY)


def test_sdxl_inpaint_through_the_studio_is_billed_by_gpu_time(studio, fakes, tmp_path):
    replicate_fake, _ = fakes
    source = tmp_path / "room.png"
    Image.new("RGB", (768, 512), (90, 90, 90)).save(source)
    mask = tmp_path / "mask.png"
    mask_image = Image.new("L", (768, 512), 0)
    mask_image.paste(255, (300, 100, 500, 400))
    mask_image.save(mask)
    result = studio.edit(str(source), "a round window", mask=str(mask), provider="replicate", model=SDXL,
                         negative_prompt="frame")

    [record] = result.images
    assert (record.mode, record.width, record.height) == ("inpaint", 768, 512)
    [prediction] = replicate_fake.predictions.values()
    assert prediction.input["negative_prompt"] == "frame" and "prompt_strength" in prediction.input
    assert prediction.images["mask"].convert("L").getpixel((400, 200)) == 255
    assert result.cost == pytest.approx(2.5 * 0.000975, abs=1e-6)  # records keep 6 decimals


def test_a_blocked_replicate_image_records_nothing(studio, fakes, studio_home):
    replicate_fake, _ = fakes
    replicate_fake.outcome = "nsfw"
    with pytest.raises(ContentBlocked):
        studio.generate(GenerationRequest(prompt="a beach", provider="replicate"))
    assert studio.history().total == 0
    assert failed_row(studio) == ("failed", 0, "content_blocked")
    assert_no_key_under(studio_home, REPLICATE_TOKEN, GEMINI_KEY)


def test_a_replicate_timeout_cancels_the_prediction_and_records_nothing(studio, fakes):
    replicate_fake, _ = fakes
    replicate_fake.outcome = "never"
    with pytest.raises(ProviderTimeout):
        studio.generate(GenerationRequest(prompt="a slow sunrise", provider="replicate"), timeout=0.3)
    assert replicate_fake.cancelled == list(replicate_fake.predictions)
    assert studio.history().total == 0
    assert failed_row(studio) == ("failed", 0, "timeout")


def test_gemini_through_the_studio_records_token_cost_and_seeds(studio, fakes, studio_home):
    _, gemini_fake = fakes
    result = studio.generate(GenerationRequest(prompt="a paper crane", provider="gemini", n=2, seed=40,
                                               width=1024, height=576))

    assert [c.config["seed"] for c in gemini_fake.calls] == [40, 41]
    assert {c.config["imageConfig"]["aspectRatio"] for c in gemini_fake.calls} == {"16:9"}
    assert [r.seed for r in result.images] == [40, 41]
    assert (result.images[0].width, result.images[0].height) == (1376, 768)  # Gemini's 1K size for 16:9
    usage = result.images[0].params["usage"]
    expected = (usage["prompt_tokens"] * 0.5 + usage["text_tokens"] * 3.0 + usage["image_tokens"] * 60.0) / 1e6
    assert usage["image_tokens"] == 2 * 1120
    assert result.cost == pytest.approx(expected, abs=2e-6)
    assert_no_key_under(studio_home, REPLICATE_TOKEN, GEMINI_KEY)


def test_gemini_variations_of_a_stored_image(studio, fakes):
    _, gemini_fake = fakes
    first = studio.generate(GenerationRequest(prompt="a teapot", provider="gemini"))
    result = studio.variations(first.images[0].id, n=2)

    assert [r.parent_id for r in result.images] == [first.images[0].id] * 2
    # The core runs a variation as image-to-image with the source's prompt and fresh seeds.
    variation_calls = gemini_fake.calls[1:]
    assert [(c.texts, len(c.images)) for c in variation_calls] == [(["a teapot"], 1)] * 2
    seeds = [c.config["seed"] for c in variation_calls]
    assert seeds[1] == seeds[0] + 1 and seeds[0] != gemini_fake.calls[0].config["seed"]


def test_an_exhausted_gemini_quota_records_nothing_and_is_not_retried(studio, fakes, studio_home):
    _, gemini_fake = fakes
    gemini_fake.queue_error(rate_limited("Day", retry_delay="3600s"))
    with pytest.raises(QuotaExhausted) as caught:
        studio.generate(GenerationRequest(prompt="a lantern", provider="gemini"))
    assert GEMINI_KEY not in str(caught.value)
    assert len(gemini_fake.server.requests) == 1
    assert studio.history().total == 0
    assert failed_row(studio) == ("failed", 0, "quota_exhausted")
    assert_no_key_under(studio_home, REPLICATE_TOKEN, GEMINI_KEY)


def test_cli_generate_with_replicate_and_gemini(fakes, capsys):
    assert main(["generate", "a red kite", "--provider", "replicate", "--size", "1216x832", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cost"] == pytest.approx(0.003)
    assert (out["images"][0]["width"], out["images"][0]["height"]) == (1216, 832)
    assert main(["generate", "a blue kite", "--provider", "gemini", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"][0]["provider"] == "gemini" and out["cost"] > 0


def test_cli_providers_lists_both_as_ready(fakes, capsys):
    assert main(["providers", "--json"]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)["providers"]}
    assert listed["replicate"]["state"] == "ready" and listed["gemini"]["state"] == "ready"
    assert "gemini-3.1-flash-image" in [m["id"] for m in listed["gemini"]["models"]]
