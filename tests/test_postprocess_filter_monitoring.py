"""Post-processing (upscale, sharpen, auto-contrast), the studio's own content filter, and the
monitoring figures and alerts computed from the audit log."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from studio.cli import main
from studio.errors import ContentBlocked, InvalidRequest, ProviderFailure, QuotaExhausted, RateLimited
from studio.service import Studio
from studio.types import GenerationRequest
from tests.fakes import echo_provider
from tests.helpers import tree_snapshot


@pytest.fixture
def studio(studio_home):
    echo_provider.install(studio_home / "catalog")
    s = Studio(studio_home)
    yield s
    s.close()


def req(**kw):
    kw.setdefault("prompt", "a harbour")
    return GenerationRequest(provider="echo", **kw)


def test_upscale_and_enhance_change_the_saved_image_and_are_recorded(studio):
    plain = studio.generate(req(seed=3)).images[0]
    big = studio.generate(req(seed=3, postprocess={"upscale": 2, "enhance": True})).images[0]
    assert (big.width, big.height) == (128, 128) and (plain.width, plain.height) == (64, 64)
    assert big.params["postprocess"] == {"upscale": 2.0, "sharpen": 0.6, "autocontrast": True}
    with Image.open(big.abs_path) as image:
        assert image.size == (128, 128)
    meta = studio.info(big.abs_path)
    assert meta["parsed"]["pairs"]["Size"] == "128x128"
    rerun = studio.request_from_image(big.abs_path)
    assert rerun.postprocess == big.params["postprocess"]
    # Post-processing is part of the cache key: same seed, other options, other images.
    assert not studio.generate(req(seed=3, postprocess={"upscale": 1.5})).cached


@pytest.mark.parametrize("options, message", [
    ({"upscale": 9}, "upscale 9 is outside 1-4"),
    ({"upscale": "big"}, "upscale must be a number"),
    ({"sharpen": 7}, "sharpen 7 is outside 0-3"),
    ({"blur": 1}, "unknown post-processing blur"),
    ("nonsense", "unknown post-processing nonsense"),
])
def test_bad_postprocess_options_are_refused_and_write_nothing(studio, studio_home, options, message):
    before = tree_snapshot(studio_home)
    with pytest.raises(InvalidRequest, match=message):
        studio.generate(req(postprocess=options))
    assert tree_snapshot(studio_home) == before


def test_upscale_past_the_pixel_limit_is_refused():
    from studio.postprocess import clean_options

    assert clean_options({"upscale": 4}, 1024, 1024) == {"upscale": 4.0}
    with pytest.raises(InvalidRequest, match="pixel limit"):
        clean_options({"upscale": 4}, 2048, 2048)


def test_blocked_terms_from_the_data_dir_stop_the_request_before_the_provider(studio_home):
    echo_provider.install(studio_home / "catalog")
    (studio_home / "blocked_terms.txt").write_text("# policy\nwar crime\nGore\n")
    studio = Studio(studio_home)
    calls = echo_provider.EchoProvider.calls
    with pytest.raises(ContentBlocked, match="'gore'"):
        studio.generate(req(prompt="a scene full of GORE"))
    with pytest.raises(ContentBlocked, match="'war crime'"):
        studio.generate(req(prompt="depict a war  crime".replace("  ", " ")))
    assert echo_provider.EchoProvider.calls == calls
    assert studio.history().total == 0
    audit = studio.storage.index.generations()
    assert [row["error_kind"] for row in audit] == ["content_blocked", "content_blocked"]
    assert studio.generate(req(prompt="a gorgeous sunset")).images  # whole words only


def test_stats_and_alerts_from_the_audit_log(studio):
    studio.settings.daily_budget = 0.05
    studio.generate(req(n=2))
    studio.generate(req(n=2))
    echo_provider.EchoProvider.failures = [ProviderFailure("boom", provider="echo")] * 3
    for _ in range(3):
        with pytest.raises(ProviderFailure):
            studio.generate(req(seed=None))
    (figures,) = studio.stats()
    assert (figures.requests, figures.completed, figures.failed, figures.images) == (5, 2, 3, 4)
    assert figures.success_rate == pytest.approx(0.4) and figures.cost_per_image == pytest.approx(0.01)
    kinds = {(a.kind, a.level) for a in studio.alerts()}
    assert ("consecutive_failures", "error") in kinds
    assert ("budget", "warning") in kinds  # $0.04 of $0.05
    echo_provider.EchoProvider.failures = [RateLimited("slow down", provider="echo")] * 3 + [
        QuotaExhausted("no credit", provider="echo")]
    for _ in range(4):
        with pytest.raises((RateLimited, QuotaExhausted)):
            studio.generate(req())
    messages = " ".join(a.message for a in studio.alerts())
    assert "rate-limited 3 times" in messages and "quota or credit is exhausted" in messages


def test_cli_stats_json(studio, capsys):
    studio.generate(req())
    assert main(["stats", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["models"][0]["provider"] == "echo" and out["alerts"] == []


def test_cli_postprocess_flags(studio, capsys):
    assert main(["generate", "a harbour", "--provider", "echo", "--upscale", "1.5", "--enhance", "--json"]) == 0
    image = json.loads(capsys.readouterr().out)["images"][0]
    assert (image["width"], image["height"]) == (96, 96)
    assert main(["generate", "a harbour", "--provider", "echo", "--upscale", "5"]) == 2
    assert capsys.readouterr().err == "error: upscale 5 is outside 1-4\n"
