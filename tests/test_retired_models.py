"""Models a provider has shut down are refused by the studio before anything is sent, for every
provider: one rule (studio.catalog.check_not_retired, called by validation.prepare), fed by catalog
data (``retired`` / ``retires_on`` and ``replacement``), so a shutdown is a data change."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from studio.catalog import Catalog
from studio.errors import InvalidRequest
from studio.service import Studio
from studio.types import GenerationRequest

# A retired model per provider. Gemini's is in the built-in catalog; the others are declared in the
# user's catalog override, as an operator would when a provider announces a shutdown.
OVERRIDES = {
    "openai": None,  # dall-e-3 is in the built-in catalog
    "gemini": None,  # gemini-2.5-flash-image is in the built-in catalog
    "replicate": {"id": "stability-ai/stable-diffusion", "retires_on": "2026-01-15",
                  "replacement": "black-forest-labs/flux-schnell"},
    "stability": {"id": "sd3-large", "retires_on": "2026-01-15", "replacement": "sd3.5-large"},
    "local": {"id": "CompVis/stable-diffusion-v1-4", "retires_on": "2026-01-15",
              "replacement": "stabilityai/sd-turbo"},
}
BUILT_IN = {"openai": ("dall-e-3", "2026-05-12", "gpt-image-2.5-flare"),
            "gemini": ("gemini-2.5-flash-image", "2026-10-02", "gemini-3.1-flash-image")}


@pytest.fixture
def fakes(cloud_fake):
    return {name: cloud_fake(name) for name in ("openai", "gemini", "replicate", "stability")}


@pytest.mark.parametrize("provider", list(OVERRIDES))
def test_a_retired_model_is_refused_before_any_request_for_every_provider(studio_home, fakes, provider):
    entry = OVERRIDES[provider]
    if entry is None:
        model_id, day, replacement = BUILT_IN[provider]
    else:
        (studio_home / "catalog").mkdir(parents=True, exist_ok=True)
        (studio_home / "catalog" / f"{provider}.json").write_text(
            json.dumps({"models": [{**entry, "label": "old", "modes": ["text-to-image"]}]}), encoding="utf-8")
        model_id, day, replacement = entry["id"], entry["retires_on"], entry["replacement"]
    studio = Studio(home=studio_home)
    try:
        with pytest.raises(InvalidRequest) as caught:
            studio.generate(GenerationRequest(prompt="a quiet harbour", provider=provider, model=model_id))
        assert str(caught.value) == (f"the {provider} model {model_id} was retired on {day}; "
                                     f"use {replacement} instead")
        # Nothing was asked of any provider, and nothing was recorded as spent.
        assert all(fake.server.requests == [] for fake in fakes.values())
        assert studio.storage.index.generations() == [] or all(
            not row["cost"] for row in studio.storage.index.generations())
    finally:
        studio.close()


def test_a_model_is_retired_from_its_retirement_day_on(tmp_path):
    today = date.today()
    (tmp_path / "gemini.json").write_text(json.dumps({"models": [
        {"id": "leaving-tomorrow", "retires_on": (today + timedelta(days=2)).isoformat(), "replacement": "x"},
        {"id": "left-yesterday", "retires_on": (today - timedelta(days=2)).isoformat(), "replacement": "x"},
    ]}), encoding="utf-8")
    catalog = Catalog(tmp_path)
    assert not catalog.model("gemini", "leaving-tomorrow").retired
    assert catalog.model("gemini", "left-yesterday").retired
    listed = [m.id for m in catalog.models("gemini")]
    assert "leaving-tomorrow" in listed and "left-yesterday" not in listed


def test_a_malformed_retirement_date_is_a_clear_catalog_error(tmp_path):
    (tmp_path / "gemini.json").write_text(json.dumps({"models": [{"id": "m", "retires_on": "soon"}]}),
                                          encoding="utf-8")
    with pytest.raises(ValueError, match="retires_on must be a date YYYY-MM-DD, not 'soon'"):
        Catalog(tmp_path).model("gemini", "m")


def test_every_built_in_retired_model_names_its_date_and_replacement():
    catalog = Catalog()
    for provider in catalog.providers():
        for model in catalog.models(provider, include_retired=True):
            if model.retired:
                assert model.retires_on and model.replacement, model.id
                replacement = catalog.model(provider, model.replacement)
                assert replacement.known and not replacement.retired, model.id
