"""OpenAI and Stability AI through the library (Studio) and the CLI, against their loopback fakes.

What the whole path must do: images saved and recorded with the provider's actual cost; a failed
request records no image and no cost; no API key in the data directory, the audit log or messages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from studio.cli import main
from studio.errors import ContentBlocked, QuotaExhausted
from studio.service import Studio
from studio.types import GenerationRequest
from tests.helpers import assert_no_key_under

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fakes(cloud_fake):
    return cloud_fake("openai"), cloud_fake("stability")


@pytest.fixture
def studio(studio_home, fakes):
    instance = Studio(home=studio_home)
    yield instance
    instance.close()


def test_openai_through_the_studio_records_token_cost(studio, fakes, studio_home):
    openai_fake, _ = fakes
    result = studio.generate(GenerationRequest(prompt="a paper boat", provider="openai", n=2, quality="low",
                                               style="cinematic", tags=["boats"]))
    assert len(result.images) == 2
    expected = openai_fake.calls[0]  # one call for both images
    assert expected["n"] == 2 and expected["quality"] == "low"
    assert expected["prompt"].startswith("cinematic film still of a paper boat")
    assert "Avoid: cartoon" in expected["prompt"]  # the style's negative prompt, as an instruction
    record = result.images[0]
    assert (record.provider, record.model, record.width, record.height) == ("openai", "gpt-image-2.5-flare",
                                                                            1024, 1024)
    assert Path(record.abs_path).is_file()
    assert record.params["usage"]["image_output_tokens"] == 2 * 272
    # 544 image tokens at $30/M plus the prompt's text tokens at $5/M, split over two images.
    text_tokens = record.params["usage"]["text_input_tokens"]
    assert result.cost == pytest.approx((544 * 30 + text_tokens * 5) / 1e6, abs=1e-6)
    assert studio.storage.index.generations()[0]["status"] == "completed"
    assert_no_key_under(studio_home, openai_fake.api_key)


def test_openai_inpaint_through_the_studio(studio, fakes, tmp_path):
    openai_fake, _ = fakes
    source = tmp_path / "room.png"
    Image.new("RGB", (1536, 1024), (200, 200, 200)).save(source)
    mask = tmp_path / "mask.png"
    mask_image = Image.new("L", (1536, 1024), 0)
    mask_image.paste(255, (600, 300, 900, 700))
    mask_image.save(mask)
    result = studio.edit(str(source), "a window with a view", mask=str(mask), provider="openai",
                         model="gpt-image-1.5")
    assert result.images[0].mode == "inpaint"
    assert (result.images[0].width, result.images[0].height) == (1536, 1024)
    sent = openai_fake.calls[0]
    assert sent["endpoint"] == "edits" and sent["size"] == "1536x1024"
    assert sent["mask"].getchannel("A").getpixel((700, 400)) == 0


def test_a_failed_openai_request_records_no_image_and_no_cost(studio, fakes, studio_home):
    openai_fake, _ = fakes
    openai_fake.quota_exhausted()
    with pytest.raises(QuotaExhausted) as caught:
        studio.generate(GenerationRequest(prompt="a kite", provider="openai"))
    assert openai_fake.api_key not in str(caught.value)
    assert studio.history().total == 0
    row = studio.storage.index.generations()[0]
    assert (row["status"], row["cost"], row["error_kind"]) == ("failed", 0, "quota_exhausted")
    assert_no_key_under(studio_home, openai_fake.api_key)


def test_stability_through_the_studio_records_credit_cost_and_seeds(studio, fakes, studio_home):
    _, stability_fake = fakes
    result = studio.generate(GenerationRequest(prompt="a glass city", provider="stability",
                                               model="stable-image-core", style="cinematic", n=2, seed=42,
                                               width=1344, height=768, output_format="webp"))
    assert [call["fields"]["seed"] for call in stability_fake.calls] == ["42", "43"]
    assert stability_fake.calls[0]["fields"]["style_preset"] == "cinematic"
    assert stability_fake.calls[0]["fields"]["aspect_ratio"] == "16:9"
    assert [r.seed for r in result.images] == [42, 43]
    assert result.cost == pytest.approx(0.06)  # 2 images x 3 credits x $0.01
    assert all(r.cost == pytest.approx(0.03) for r in result.images)
    assert result.images[0].format == "webp"
    assert_no_key_under(studio_home, stability_fake.api_key)


def test_a_content_filtered_stability_result_records_nothing(studio, fakes):
    with pytest.raises(ContentBlocked):
        studio.generate(GenerationRequest(prompt="blurme please", provider="stability"))
    assert studio.history().total == 0
    row = studio.storage.index.generations()[0]
    assert (row["status"], row["cost"], row["error_kind"]) == ("failed", 0, "content_blocked")


def test_cli_generate_with_stability_and_openai(fakes, capsys):
    assert main(["generate", "a red kite", "--provider", "stability", "--model", "sd3.5-medium", "--size",
                 "832x1216", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cost"] == pytest.approx(0.035)
    assert (out["images"][0]["width"], out["images"][0]["height"]) == (832, 1216)
    assert main(["generate", "a blue kite", "--provider", "openai", "--quality", "standard", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"][0]["provider"] == "openai" and out["cost"] > 0


def test_cli_reports_a_blocked_prompt_in_one_line(fakes, capsys):
    assert main(["generate", "something forbidden", "--provider", "openai", "--json"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "safety system" in err and "\n" not in err


def test_cli_providers_lists_both_with_their_models(fakes, capsys):
    assert main(["providers", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    providers = {p["name"]: p for p in out["providers"]}
    assert providers["openai"]["state"] == "ready" and providers["stability"]["state"] == "ready"
    assert "gpt-image-2.5-flare" in [m["id"] for m in providers["openai"]["models"]]
    assert "stable-image-inpaint" in [m["id"] for m in providers["stability"]["models"]]


def test_cli_in_a_fresh_process_reaches_the_fake_through_the_base_url(fakes, studio_home):
    openai_fake, _ = fakes
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "studio", "generate", "a lantern", "--provider", "openai",
                           "--model", "gpt-image-1-mini", "--json"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["images"][0]["model"] == "gpt-image-1-mini"
    assert openai_fake.calls[0]["model"] == "gpt-image-1-mini"
