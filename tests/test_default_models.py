"""Each provider's default model per mode (catalog data): a request that names no model gets one
that can do the work, on every front end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.catalog import MODES, Catalog
from studio.service import Studio
from studio.types import GenerationRequest
from tests.helpers import png

ROOT = Path(__file__).resolve().parent.parent
PROVIDERS = ("openai", "replicate", "stability", "gemini", "local")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
def test_every_provider_names_a_usable_default_for_every_mode(provider, mode):
    catalog = Catalog()
    model = catalog.default_model(provider, mode)
    assert model is not None and model.known and not model.retired and model.supports(mode)
    assert model.id == catalog._providers[provider]["defaults"][mode]  # the data names it, no fallback
    if mode == "variation":  # a variation runs as image-to-image (of an image) or text-to-image (of a prompt)
        assert model.supports("image-to-image") and model.supports("text-to-image")


@pytest.mark.parametrize("provider", ("openai", "replicate", "stability", "gemini"))
@pytest.mark.parametrize("mode", MODES)
def test_a_request_without_a_model_is_prepared_with_its_modes_default(studio_home, provider, mode):
    studio = Studio(studio_home)
    image = png(512, 512) if mode != "text-to-image" else None
    mask = png(512, 512, color=(255, 255, 255), mode="L") if mode == "inpaint" else None
    prepared = studio.prepare(GenerationRequest(prompt="a quiet harbour", provider=provider, mode=mode,
                                                init_image=image, mask=mask)).request
    assert prepared.model.id == studio.catalog.default_model(provider, mode).id


def test_overrides_change_a_modes_default_and_the_old_default_flag_still_works(studio_home):
    overrides = studio_home / "catalog"
    overrides.mkdir(parents=True)
    (overrides / "replicate.json").write_text(json.dumps({"defaults": {"image-to-image": "stability-ai/sdxl:"
        "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"}}))
    (overrides / "stability.json").write_text(json.dumps({"models": [{"id": "sd3.5-medium", "default": True}]}))
    catalog = Catalog(overrides)
    assert catalog.default_model("replicate", "image-to-image").id.startswith("stability-ai/sdxl:")
    assert catalog.default_model("replicate", "text-to-image").id == "black-forest-labs/flux-schnell"
    assert catalog.default_model("stability", "text-to-image").id == "sd3.5-medium"
    assert catalog.default_model("stability", "inpaint").id == "stable-image-inpaint"  # medium cannot inpaint
    flagged = [m.id for m in catalog.models("stability") if m.default]
    assert flagged == ["sd3.5-medium"]


def test_streamlit_edit_page_starts_with_the_providers_edit_default(app_home, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("STUDIO_DEFAULT_PROVIDER", "replicate")
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_not_used_in_this_test")
    page = AppTest.from_file(str(ROOT / "pages" / "2_Edit.py"), default_timeout=60).run()
    assert not page.exception
    model_box = next(box for box in page.selectbox if box.label == "Model")
    assert model_box.value == "black-forest-labs/flux-dev"
