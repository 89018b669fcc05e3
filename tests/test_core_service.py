"""The generation service end to end on the echo provider: save, record, metadata, cache, budget."""

from __future__ import annotations

import json
import threading

import pytest
from PIL import Image

from studio.errors import BudgetExceeded, ContentBlocked, InvalidRequest, NotFound, RateLimited
from studio.service import Studio
from studio.types import GenerationRequest, Mode
from tests.fakes import echo_provider
from tests.helpers import db_rows, png, tree_snapshot


def request(**kw) -> GenerationRequest:
    kw.setdefault("prompt", "a red fox in snow")
    kw.setdefault("provider", "echo")
    return GenerationRequest(**kw)


def test_generate_saves_files_rows_and_full_record(echo_studio, studio_home):
    result = echo_studio.generate(request(n=2, seed=11, style="cinematic", tags=["Fox", "winter"], category="Animals",
                                          negative_prompt="blurry", steps=5, guidance=6.5, output_format="webp"))
    assert len(result.images) == 2
    first, second = result.images
    assert (first.seed, second.seed) == (11, 12)
    for record in result.images:
        path = studio_home / record.path
        assert path.is_file() and path.suffix == ".webp"
        assert record.path.startswith("images/animals/")  # hierarchical by category/date
        assert record.size_bytes == path.stat().st_size
        assert record.sha256 and len(record.sha256) == 64
        assert (studio_home / record.thumb_path).is_file()
        assert record.prompt.startswith("cinematic film still of a red fox in snow")
        assert record.user_prompt == "a red fox in snow"
        assert record.negative_prompt.startswith("blurry, ")
        assert record.tags == ["fox", "winter"] and record.category == "animals"
        assert record.params["steps"] == 5 and record.params["guidance"] == 6.5
        assert record.cost == pytest.approx(0.01)
        assert record.status == "completed" and record.created_at
        with Image.open(path) as image:
            assert image.size == (64, 64) and image.format == "WEBP"
    assert result.cost == pytest.approx(0.02)
    assert db_rows(studio_home) == 2
    stored = echo_studio.get_image(first.id)
    assert stored.to_dict()["path"] == first.abs_path and stored.sha256 == first.sha256
    audit = echo_studio.storage.index.generations()
    assert audit[0]["status"] == "completed" and audit[0]["cost"] == pytest.approx(0.02)


def test_metadata_embedded_and_read_back_reruns_identically(echo_studio):
    result = echo_studio.generate(request(seed=99, negative_prompt="ugly, noisy", steps=7))
    record = result.images[0]
    meta = echo_studio.info(record.abs_path)
    assert meta["parameters"].splitlines()[0] == "a red fox in snow"
    assert "Negative prompt: ugly, noisy" in meta["parameters"]
    pairs = meta["parsed"]["pairs"]
    assert pairs["Steps"] == "7" and pairs["Seed"] == "99" and pairs["Size"] == "64x64" and pairs["Model"] == "echo-1"
    assert meta["studio"]["id"] == record.id and meta["studio"]["provider"] == "echo"
    again = echo_studio.request_from_image(record.abs_path)
    assert (again.prompt, again.seed, again.steps, again.provider) == ("a red fox in snow", 99, 7, "echo")
    rerun = echo_studio.generate(again.replace(cache=False))
    assert echo_studio.image_bytes(rerun.images[0]) != b""
    # Same pixels: the echo provider is deterministic in prompt and seed.
    with Image.open(record.abs_path) as a, Image.open(rerun.images[0].abs_path) as b:
        assert list(a.getdata()) == list(b.getdata())


def test_identical_request_with_fixed_seed_is_served_from_cache(echo_studio):
    first = echo_studio.generate(request(seed=5, n=2))
    calls = echo_provider.EchoProvider.calls
    second = echo_studio.generate(request(seed=5, n=2))
    assert second.cached and second.cost == 0
    assert [r.id for r in second.images] == [r.id for r in first.images]
    assert echo_provider.EchoProvider.calls == calls
    third = echo_studio.generate(request(seed=6, n=2))  # a different seed is a different request
    assert not third.cached
    unseeded = echo_studio.generate(request())  # no seed: never cached
    assert not unseeded.cached


def test_variations_of_stored_image_form_a_chain(echo_studio):
    parent = echo_studio.generate(request(seed=1)).images[0]
    result = echo_studio.variations(parent.id, n=3, strength=0.4)
    assert len(result.images) == 3
    assert {r.parent_id for r in result.images} == {parent.id}
    assert {r.mode for r in result.images} == {"variation"}
    assert len({r.seed for r in result.images}) == 3
    child = result.images[0]
    grandchild = echo_studio.edit(child.id, "now at night", strength=0.5, provider="echo").images[0]
    assert grandchild.parent_id == child.id and grandchild.mode == "image-to-image"
    assert echo_studio.history(parent_id=parent.id).total == 3


def test_scene_variations_use_framing_modifiers(echo_studio):
    result = echo_studio.variations(prompt="a market street", n=3, scene=True, provider="echo")
    prompts = [r.prompt for r in result.images]
    assert prompts[0].endswith("wide establishing shot") and prompts[1].endswith("close-up shot, detailed")
    assert all(any(t.startswith("scene:") for t in r.tags) for r in result.images)


def test_inpaint_and_mask_checks(echo_studio, tmp_path):
    image = tmp_path / "in.png"
    image.write_bytes(png(64, 64))
    mask = tmp_path / "mask.png"
    mask.write_bytes(png(64, 64, color=(255, 255, 255), mode="L"))
    result = echo_studio.edit(str(image), "a door", mask=str(mask), provider="echo")
    assert result.images[0].mode == "inpaint"
    wrong = tmp_path / "wrong.png"
    wrong.write_bytes(png(32, 32, mode="L"))
    with pytest.raises(InvalidRequest, match="mask is 32x32 but the image is 64x64"):
        echo_studio.edit(str(image), "a door", mask=str(wrong), provider="echo")


def test_history_queries_filter_and_page(echo_studio):
    for i in range(5):
        echo_studio.generate(request(prompt=f"castle number {i}", tags=["castle"] if i % 2 else [], category="arch"))
    echo_studio.generate(request(prompt="a boat"))
    assert echo_studio.history(text="castle").total == 5
    assert echo_studio.history(tag="castle").total == 2
    assert echo_studio.history(category="arch").total == 5
    assert echo_studio.history(provider="echo", model="echo-1").total == 6
    page = echo_studio.history(limit=2, offset=2)
    assert page.total == 6 and len(page.items) == 2
    newest = echo_studio.history(limit=1).items[0]
    assert newest.prompt == "a boat"
    assert echo_studio.history(text="100%_").total == 0  # LIKE wildcards are literal
    assert echo_studio.history(owner="someone-else").total == 0


def test_users_never_see_each_others_images(echo_studio):
    mine = echo_studio.generate(request(user="alice")).images[0]
    with pytest.raises(NotFound):
        echo_studio.get_image(mine.id, user="bob")
    with pytest.raises(NotFound):
        echo_studio.delete_image(mine.id, user="bob")
    with pytest.raises(NotFound):
        echo_studio.variations(mine.id, user="bob", provider="echo")
    assert echo_studio.history(owner="bob").total == 0
    echo_studio.update_image(mine.id, user="alice", shared=True)
    assert echo_studio.get_image(mine.id, user="bob").id == mine.id  # shared images are visible
    with pytest.raises(NotFound):
        echo_studio.delete_image(mine.id, user="bob")  # ... but not deletable by others


def test_delete_removes_file_and_row_together(echo_studio, studio_home):
    record = echo_studio.generate(request()).images[0]
    echo_studio.delete_image(record.id)
    assert not (studio_home / record.path).exists()
    assert not (studio_home / record.thumb_path).exists()
    assert db_rows(studio_home) == 0
    assert echo_studio.repair().clean


def test_daily_budget_refuses_and_writes_nothing(studio_home):
    echo_provider.install(studio_home / "catalog")
    studio = Studio(studio_home)
    studio.settings.daily_budget = 0.03
    studio.generate(request(n=2))
    before = tree_snapshot(studio_home / "images")
    with pytest.raises(BudgetExceeded, match="budget of \\$0.03"):
        studio.generate(request(n=2))
    assert tree_snapshot(studio_home / "images") == before
    assert studio.spent_today() == pytest.approx(0.02)
    studio.generate(request(n=1))  # exactly reaches the cap
    assert studio.spent_today() == pytest.approx(0.03)


def test_budget_holds_when_eight_workers_start_at_once(studio_home):
    echo_provider.install(studio_home / "catalog", latency=0.2)
    studio = Studio(studio_home)
    studio.settings.daily_budget = 0.05
    barrier = threading.Barrier(8)
    outcomes = []

    def worker():
        barrier.wait()
        try:
            studio.generate(request())
            outcomes.append("ok")
        except BudgetExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 5 and outcomes.count("refused") == 3
    assert studio.spent_today() == pytest.approx(0.05)


def test_failed_provider_call_records_no_image_and_no_cost(echo_studio, studio_home):
    echo_provider.EchoProvider.failures = [ContentBlocked("blocked: violence", provider="echo")]
    with pytest.raises(ContentBlocked):
        echo_studio.generate(request())
    echo_provider.EchoProvider.failures = [RateLimited("slow down", provider="echo", retry_after=1)]
    with pytest.raises(RateLimited):
        echo_studio.generate(request())
    echo_provider.EchoProvider.failures = [RuntimeError("socket exploded")]
    with pytest.raises(Exception, match="echo failed: RuntimeError: socket exploded"):
        echo_studio.generate(request())
    assert db_rows(studio_home) == 0 and echo_studio.spent_today() == 0
    assert tree_snapshot(studio_home / "images") == {}
    audit = echo_studio.storage.index.generations()
    assert [row["status"] for row in audit] == ["failed"] * 3
    assert {row["error_kind"] for row in audit} == {"content_blocked", "rate_limited", "provider_failure"}


def test_broken_image_bytes_from_provider_are_a_provider_failure(echo_studio, studio_home, monkeypatch):
    from studio.types import ProviderImage, ProviderResult

    monkeypatch.setattr(echo_provider.EchoProvider, "generate",
                        lambda self, req, ctx: ProviderResult([ProviderImage(b"\x89PNG\r\n\x1a\nbroken")]))
    with pytest.raises(Exception, match="truncated or corrupt|not a readable image"):
        echo_studio.generate(request())
    # No image is kept, but the provider answered and so billed: that counts against the budget.
    assert db_rows(studio_home) == 0 and echo_studio.spent_today() == pytest.approx(0.01)


def test_progress_reports_each_stage_in_order(echo_studio):
    events = []
    echo_studio.generate(request(n=2), progress=events.append)
    stages = [e.stage for e in events]
    assert stages[0] == "initializing" and stages[-1] == "done"
    assert "generating" in stages and "saving" in stages
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_cancel_before_start_raises_cancelled(echo_studio):
    from studio.errors import Cancelled

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        echo_studio.generate(request(), cancel=cancel)


def test_secrets_are_redacted_from_errors(echo_studio, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-123456")
    echo_provider.EchoProvider.failures = [RuntimeError("bad header Authorization: Bearer sk-test-SECRET-123456")]
    with pytest.raises(Exception) as info:
        echo_studio.generate(request())
    assert "sk-test-SECRET-123456" not in str(info.value)
    assert "sk-test-SECRET-123456" not in json.dumps(echo_studio.storage.index.generations())


def test_mode_strings_and_unknown_provider(echo_studio):
    assert Mode.parse("img2img") is Mode.IMAGE_TO_IMAGE
    with pytest.raises(InvalidRequest, match="unknown provider 'nope'"):
        echo_studio.generate(request(provider="nope"))
