"""The daily budget caps what is booked, not what was estimated.

Each request reserves the most it can cost (input text and input images included) and the reservation
is replaced by the actual cost when it is recorded. The OpenAI cases run the real provider code, SDK
and studio against the loopback fake, whose token usage follows OpenAI's published accounting (text
tokens for the prompt, tokens per input image, output tokens by quality and size): its actual cost is
above the output-only estimate the studio used to reserve.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest
from PIL import Image

from studio import costs
from studio.catalog import BUILTIN_DIR, Catalog
from studio.errors import BudgetExceeded
from studio.service import Studio
from studio.types import GenerationRequest, Mode, ProviderResult
from tests.fakes import echo_provider
from tests.fakes.prepared import prepared

# Every test here runs once per database back end (tests/pg_server.py): embedded SQLite, PostgreSQL.
pytestmark = pytest.mark.usefixtures("database_url")

LONG_PROMPT = ("a lighthouse on a rocky coast at dusk, waves breaking, gulls, warm windows, " * 60)[:4000]
WORKERS = 8
SDXL = "stability-ai/sdxl:39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"


@pytest.fixture
def openai_studio(studio_home, cloud_fake):
    fake = cloud_fake("openai")
    studio = Studio(home=studio_home)
    yield studio, fake
    studio.close()


def gate_until_all_settled(fake, workers: int, gated_call=lambda request: request.path.startswith("/v1/images/")):
    """Hold every request that reaches the fake (``gated_call(what the fake's _answer takes)``: the
    billed ones) until each worker has either reached it or been refused by the budget, so all
    admitted requests hold their reservations at the same time. Returns ``refused()``, which a worker
    calls when the studio refuses it."""
    state = threading.Condition()
    settled = [0]
    answer = fake._answer

    def settle():
        with state:
            settled[0] += 1
            state.notify_all()

    def gated(request):
        if gated_call(request):
            settle()
            with state:
                if not state.wait_for(lambda: settled[0] >= workers, timeout=60):
                    raise AssertionError("the workers never all settled")
        return answer(request)

    fake._answer = gated
    return settle


def run_concurrently(studio: Studio, fake, make_call, **gate) -> list[str]:
    refused = gate_until_all_settled(fake, WORKERS, **gate)
    barrier = threading.Barrier(WORKERS)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def worker(index: int):
        barrier.wait()
        try:
            make_call(index)
            outcomes.append("ok")
        except BudgetExceeded:
            outcomes.append("refused")
            refused()
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)
            refused()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return outcomes


@pytest.fixture
def source_image(tmp_path):
    path = tmp_path / "harbour.png"
    Image.new("RGB", (1024, 1024), (90, 120, 160)).save(path)
    return str(path)


@pytest.mark.parametrize("case, model, budget", [
    ("long prompts", "gpt-image-2.5-flare", 0.10),
    ("edits with an input image", "gpt-image-1-mini", 0.045),
    ("edits with an input image", "gpt-image-2.5-flare", 0.15),
])
def test_eight_concurrent_openai_requests_never_book_past_the_budget(openai_studio, source_image, case, model,
                                                                      budget):
    studio, fake = openai_studio
    studio.settings.daily_budget = budget

    def call(index: int):
        if case == "long prompts":
            studio.generate(GenerationRequest(prompt=f"{index} {LONG_PROMPT}"[:4000], provider="openai",
                                              model=model, quality="low"))
        else:
            studio.edit(source_image, f"{index} {LONG_PROMPT}"[:4000], provider="openai", model=model,
                        quality="low")

    outcomes = run_concurrently(studio, fake, call)
    booked = studio.spent_today()
    rows = [r for r in studio.storage.index.generations() if r["status"] == "completed"]
    assert outcomes.count("ok") == len(rows) >= 1
    assert booked <= budget + 1e-9, f"booked ${booked:.4f} against a ${budget:.3f} budget"
    # The fake really bills more than the per-image price: the input is what the old estimate left out.
    output_only = costs.estimate(studio.catalog.model("openai", model), width=1024, height=1024, n=1,
                                 quality="low")
    assert all(row["cost"] > output_only * 1.15 for row in rows)
    assert studio.storage.index.open_requests() == []


def test_the_estimate_shown_before_the_click_includes_input_costs(openai_studio, source_image):
    studio, _fake = openai_studio
    for request in (GenerationRequest(prompt=LONG_PROMPT, provider="openai", quality="low"),
                    GenerationRequest(prompt=LONG_PROMPT, provider="openai", quality="low", mode=Mode.IMAGE_TO_IMAGE,
                                      init_image=source_image)):
        shown = studio.estimate(request)
        actual = studio.generate(request).cost
        assert abs(actual - shown) / actual < 0.10, (shown, actual)


def test_stats_show_how_far_estimates_were_off_per_model(echo_studio, monkeypatch):
    generate = echo_provider.EchoProvider.generate

    def twice_the_price(self, request, ctx):
        result = generate(self, request, ctx)
        return ProviderResult(images=result.images, cost=0.02 * len(result.images), usage=result.usage)

    echo_studio.generate(GenerationRequest(prompt="a fox", provider="echo"))  # on estimate
    monkeypatch.setattr(echo_provider.EchoProvider, "generate", twice_the_price)
    echo_studio.generate(GenerationRequest(prompt="a fox", provider="echo", n=2))  # twice the estimate
    (figures,) = echo_studio.stats()
    assert figures.estimated_cost == pytest.approx(0.03)
    assert figures.cost == pytest.approx(0.05)
    assert figures.estimate_error == pytest.approx(0.05 / 0.03 - 1, abs=1e-3)
    assert figures.worst_estimate_error == pytest.approx(1.0)


def test_a_provider_billing_past_its_reservation_is_booked_in_full_and_stops_new_requests(
        echo_studio, monkeypatch, caplog):
    echo_studio.settings.daily_budget = 0.03
    generate = echo_provider.EchoProvider.generate

    def overbilled(self, request, ctx):
        result = generate(self, request, ctx)
        return ProviderResult(images=result.images, cost=0.05, usage=result.usage)

    monkeypatch.setattr(echo_provider.EchoProvider, "generate", overbilled)
    with caplog.at_level(logging.WARNING, logger="studio.service"):
        result = echo_studio.generate(GenerationRequest(prompt="a fox", provider="echo"))
    assert result.cost == pytest.approx(0.05)  # the actual, not the $0.01 reserved
    assert echo_studio.spent_today() == pytest.approx(0.05)
    assert any("above the $0.010000 reserved" in message for message in caplog.messages)
    with pytest.raises(BudgetExceeded, match="may cost up to \\$0.0100"):
        echo_studio.generate(GenerationRequest(prompt="another fox", provider="echo"))
    assert [a.kind for a in echo_studio.alerts()] == ["budget"]


def test_a_request_whose_bound_does_not_fit_is_refused_before_any_call(openai_studio, source_image):
    studio, fake = openai_studio
    quote = studio.quote(GenerationRequest(prompt=LONG_PROMPT, provider="openai", quality="low",
                                           mode=Mode.IMAGE_TO_IMAGE, init_image=source_image))
    assert quote.estimate < quote.bound
    studio.settings.daily_budget = (quote.estimate + quote.bound) / 2  # the estimate fits, the bound does not
    with pytest.raises(BudgetExceeded, match="may cost up to"):
        studio.edit(source_image, LONG_PROMPT, provider="openai", quality="low")
    assert fake.calls == [] and studio.spent_today() == 0


# -- the bound of each kind of price -------------------------------------------------------------


@pytest.fixture
def catalog():
    return Catalog()


def test_per_second_prices_are_bounded_by_the_models_run_limit(catalog):
    """SDXL on Replicate may run 30 s per image at its default steps (its page: typically 8 s); the
    bound is that plus the time a cancel takes to land, not the 300 s request timeout ($0.29)."""
    model = catalog.model("replicate", SDXL)
    one = costs.quote(prepared(model), timeout=300)
    assert one.estimate == pytest.approx(0.000975 * 8)
    assert one.bound == pytest.approx(0.000975 * (30 + costs.CANCEL_MARGIN_SECONDS))  # $0.034, was $0.29
    two = costs.quote(prepared(model, n=2, steps=50), timeout=300)  # twice the images, twice the default steps
    assert costs.run_limit(prepared(model, n=2, steps=50), timeout=300) == pytest.approx(120)
    assert two.bound == pytest.approx(0.000975 * (120 + costs.CANCEL_MARGIN_SECONDS))
    most = prepared(model, n=4, steps=100)  # 480 s of run time would pass the deadline: the deadline limits it
    assert costs.run_limit(most, timeout=300) == 300


def test_a_replicate_run_past_its_limit_is_cancelled_and_booked_within_its_bound(studio_home, cloud_fake):
    """The limit is enforced: a prediction still running when it passes is cancelled on Replicate,
    and what it can have been billed (its run so far and the cancel's margin) is booked, never more
    than the bound reserved for it."""
    from studio.errors import ProviderTimeout

    price = dict(Catalog().model("replicate", SDXL).price, max_seconds=0.3)
    (studio_home / "catalog").mkdir(parents=True, exist_ok=True)
    (studio_home / "catalog" / "replicate.json").write_text(json.dumps({"models": [{"id": SDXL, "price": price}]}))
    fake = cloud_fake("replicate")
    fake.outcome = "never"  # runs until cancelled
    studio = Studio(home=studio_home)
    studio.settings.daily_budget = 1.0
    try:
        request = GenerationRequest(prompt="a fox", provider="replicate", model=SDXL)
        bound = studio.quote(request, timeout=20).bound
        with pytest.raises(ProviderTimeout, match="ran past the 0.3 s this model may run"):
            studio.generate(request, timeout=20)
        booked = studio.spent_today()
    finally:
        studio.close()
    assert fake.cancelled == list(fake.predictions)  # the one prediction was stopped on Replicate
    # Booked: the run it can have had (at most its 0.3 s limit) and the cancel's margin, within the bound.
    assert 0 < booked <= 0.000975 * (0.3 + costs.CANCEL_MARGIN_SECONDS) + 1e-6 and booked <= bound


def test_fixed_prices_are_their_own_bound(catalog):
    inpaint = catalog.model("stability", "stable-image-inpaint")
    quote = costs.quote(prepared(inpaint, mode=Mode.INPAINT, n=2), timeout=300)
    assert (quote.estimate, quote.bound, quote.exact) == (pytest.approx(0.10), pytest.approx(0.10), True)
    schnell = catalog.model("replicate", "black-forest-labs/flux-schnell")
    assert costs.quote(prepared(schnell, n=4), timeout=300).bound == pytest.approx(0.012)


def test_gemini_tiers_follow_the_image_size_option_and_count_input(catalog):
    flash = catalog.model("gemini", "gemini-3.1-flash-image")
    small = costs.quote(prepared(flash), timeout=300)
    large = costs.quote(prepared(flash, extra={"image_size": "4K"}), timeout=300)
    assert small.estimate == pytest.approx(0.067, abs=0.001)
    assert large.estimate == pytest.approx(0.151, abs=0.001)
    edit = costs.quote(prepared(flash, mode=Mode.INPAINT, init_image=Image.new("RGB", (64, 64)),
                                mask=Image.new("L", (64, 64))), timeout=300)
    assert edit.bound - small.bound == pytest.approx(2 * 2240 * 0.5 / 1e6)  # two input images at most
    # No request field caps Gemini's text and thinking, but the model cannot write past its published
    # output limit (32,768 tokens): the bound reserves that, so it holds whatever the model writes.
    assert small.exact and small.bound >= 0.067 + 32768 * 3.0 / 1e6


def test_eight_concurrent_gemini_requests_that_think_at_length_never_book_past_the_budget(studio_home,
                                                                                          cloud_fake):
    """Finding 1: a provider billing above our bound. Gemini 3 Pro Image may think (billed as text
    output) far past the catalog's typical allowance; the fake reports 30,000 thinking tokens per
    answer (within the model's 32,768 output limit). The old bound (2,000 text tokens) admitted six
    $0.16 reservations against $1, which booked about $2.9."""
    fake = cloud_fake("gemini")
    fake.thought_tokens = 30_000
    studio = Studio(home=studio_home)
    studio.settings.daily_budget = budget = 1.0
    try:
        outcomes = run_concurrently(studio, fake, lambda index: studio.generate(GenerationRequest(
            prompt=f"{index} a lighthouse at dusk", provider="gemini", model="gemini-3-pro-image")),
            gated_call=lambda call: True)
        booked = studio.spent_today()
        rows = [r for r in studio.storage.index.generations() if r["status"] == "completed"]
    finally:
        studio.close()
    assert outcomes.count("ok") == len(rows) >= 1
    assert all(row["cost"] > 0.134 + 30_000 * 12.0 / 1e6 for row in rows)  # the thinking was billed
    assert booked <= budget + 1e-9, f"booked ${booked:.4f} against a ${budget:.2f} budget"


def test_openai_auto_quality_reserves_the_dearest_quality(catalog):
    flare = catalog.model("openai", "gpt-image-2.5-flare")
    auto = costs.quote(prepared(flare, quality="auto"), timeout=300)
    assert auto.bound >= 0.25  # "max" costs $0.25 a 1024x1024 image


def test_every_catalog_price_records_when_it_was_checked():
    for path in sorted(BUILTIN_DIR.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = [("*", data["*"])] if "*" in data else []
        entries += [(m["id"], m) for m in data["models"]]
        for model_id, entry in entries:
            price = entry["price"]
            assert "checked_on" in price, f"{path.stem}/{model_id}: no checked_on"
            assert price["checked_on"] or price.get("unverified"), f"{path.stem}/{model_id}: unchecked, no reason"
    assert Catalog().model("stability", "stable-image-inpaint").price["credits"] == 5


def test_an_answer_billed_without_a_usable_image_counts_against_the_budget(echo_studio):
    from studio.errors import UnusableResult

    echo_studio.settings.daily_budget = 0.03
    for _ in range(3):
        echo_provider.EchoProvider.failures = [UnusableResult("answered (and billed) without any image",
                                                              provider="echo")]
        with pytest.raises(UnusableResult):
            echo_studio.generate(GenerationRequest(prompt="a fox", provider="echo"))
    assert echo_studio.spent_today() == pytest.approx(0.03)  # each paid call is booked at its reservation
    with pytest.raises(BudgetExceeded):
        echo_studio.generate(GenerationRequest(prompt="a fox", provider="echo"))
    assert echo_provider.EchoProvider.calls == 3


# -- reservations ----------------------------------------------------------------------------------


def test_a_reservation_counts_as_long_as_its_request_may_run(echo_studio, monkeypatch):
    import studio.storage.index as index_module

    index = echo_studio.storage.index
    start = index_module.time.time()
    assert index.reserve("long-run", "2026-11-29", 0.04, 0.05, hold_seconds=7200)[0]
    monkeypatch.setattr(index_module.time, "time", lambda: start + 5000)  # past the default hour
    accepted, committed = index.reserve("next", "2026-11-29", 0.02, 0.05)
    assert not accepted and committed == pytest.approx(0.04)
    monkeypatch.setattr(index_module.time, "time", lambda: start + 7300)  # its process died long ago
    assert index.reserve("later", "2026-11-29", 0.02, 0.05)[0]


def test_the_studio_holds_a_reservation_for_the_whole_request_timeout(echo_studio, monkeypatch):
    echo_studio.settings.daily_budget = 1.0
    echo_studio.settings.request_timeout = 7200
    held = {}
    reserve = echo_studio.storage.index.reserve

    def spy(*args, **kwargs):
        held.update(kwargs)
        return reserve(*args, **kwargs)

    monkeypatch.setattr(echo_studio.storage.index, "reserve", spy)
    echo_studio.generate(GenerationRequest(prompt="a fox", provider="echo"))
    assert held["hold_seconds"] >= 7200


def test_a_reservation_made_before_midnight_still_counts_after_it(echo_studio):
    index = echo_studio.storage.index
    assert index.reserve("before-midnight", "2026-11-28", 0.04, 0.05)[0]
    accepted, committed = index.reserve("after-midnight", "2026-11-29", 0.02, 0.05)
    assert not accepted and committed == pytest.approx(0.04)


# -- an answer billed without a usable image is booked at the usage it reported --------------------------


def booked_for_unusable(studio: Studio, request: GenerationRequest) -> float:
    """What the studio books for ``request``, whose answer the fake makes unusable (USD)."""
    from studio.errors import UnusableResult

    before = studio.spent_today()
    with pytest.raises(UnusableResult):
        studio.generate(request)
    return studio.spent_today() - before


def test_an_openai_answer_without_image_data_is_booked_like_one_with_broken_bytes(openai_studio):
    """Both answers carry the same usage: both are booked at it (the one without image data was
    booked at the reserved bound, the one with broken bytes at its usage)."""
    import base64

    studio, fake = openai_studio
    studio.settings.daily_budget = 10.0
    request = GenerationRequest(prompt="a fox", provider="openai", quality="low")
    bound = studio.quote(request).bound
    fake.answer_items = [{"revised_prompt": "a fox"}]  # no b64_json, no url
    without_data = booked_for_unusable(studio, request)
    fake.answer_items = [{"b64_json": base64.b64encode(b"not an image").decode()}]
    broken_bytes = booked_for_unusable(studio, request)
    assert without_data == pytest.approx(broken_bytes) and 0 < without_data < bound


@pytest.mark.parametrize("name", ["gemini", "replicate"])
def test_every_provider_books_an_unusable_answer_at_its_reported_usage(studio_home, cloud_fake, name):
    fake = cloud_fake(name)
    studio = Studio(home=studio_home)
    studio.settings.daily_budget = 10.0
    try:
        if name == "gemini":  # a text-only answer, with its tokens in usageMetadata
            fake.text_only = "I can only describe foxes today."
            request = GenerationRequest(prompt="a fox", provider="gemini", model="gemini-3.1-flash-image")
        else:  # a succeeded prediction with null output and its metrics.predict_time
            fake.outcome, fake.predict_time = "null_output", 2.5
            request = GenerationRequest(prompt="a fox", provider="replicate", model=SDXL)
        bound = studio.quote(request).bound
        booked = booked_for_unusable(studio, request)
    finally:
        studio.close()
    assert 0 < booked < bound
    if name == "replicate":
        assert booked == pytest.approx(2.5 * 0.000975, abs=1e-6)  # predict_time x the per-second price


def test_a_failed_replicate_prediction_is_booked_for_the_gpu_seconds_it_ran(studio_home, cloud_fake):
    """Replicate bills a prediction that ran and failed (metrics.predict_time); it was booked $0."""
    from studio.errors import ProviderFailure

    fake = cloud_fake("replicate")
    fake.outcome, fake.predict_time = "fail", 4.0  # "CUDA out of memory" after 4 s of GPU time
    studio = Studio(home=studio_home)
    studio.settings.daily_budget = 1.0
    try:
        with pytest.raises(ProviderFailure, match="the model failed on Replicate"):
            studio.generate(GenerationRequest(prompt="a fox", provider="replicate", model=SDXL))
        booked = studio.spent_today()
    finally:
        studio.close()
    assert booked == pytest.approx(4.0 * 0.000975, abs=1e-6)


# A process that reserves against the budget as fast as it can, once told to start: each accepted
# reservation is booked right away (its reservation swapped for its audit row, as a finished request
# is), so the check races both kinds of rows. Prints how many it got.
_RESERVING_PROCESS = r"""
import sys
from studio.storage.index import HistoryIndex

target, name, tries, amount, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
index = HistoryIndex(target)
print("ready", flush=True)
sys.stdin.readline()  # the go: every process is connected and waiting
accepted = 0
for attempt in range(tries):
    rid = f"{name}-{attempt}"
    if index.reserve(rid, "2026-11-29", amount, limit, started_by={"pid": 1, "host": name}, request={})[0]:
        accepted += 1
        if attempt % 2:
            index.finish_generation(rid, [], {"id": rid, "owner": "o", "created_at": "2026-11-29T10:00:00",
                                              "provider": "p", "model": "m", "mode": "generate", "prompt": "x",
                                              "n": 1, "status": "completed", "cost": amount})
print(accepted, flush=True)
index.close()
"""


def test_processes_reserving_at_once_never_set_aside_more_than_the_budget(database_url, studio_home):
    """Three processes, 40 reservations of $0.01 each against a $0.25 budget, started together:
    exactly 25 are accepted in all (on PostgreSQL the advisory budget lock is what holds this; without
    it each process's check passes on the same committed total)."""
    import subprocess
    import sys

    from studio.storage.index import HistoryIndex

    target = database_url or str(studio_home / "index.sqlite3")
    HistoryIndex(target).close()  # the schema, made once before the race
    processes = [subprocess.Popen([sys.executable, "-c", _RESERVING_PROCESS, target, f"p{n}", "40", "0.01", "0.25"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for n in range(3)]
    try:
        for process in processes:
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        accepted = [int(process.communicate(timeout=120)[0].strip()) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert all(process.returncode == 0 for process in processes)
    assert sum(accepted) == 25, accepted
    index = HistoryIndex(target)
    try:
        assert index.spent_on("2026-11-29") + sum(r["amount"] for r in index.open_requests()) == pytest.approx(0.25)
    finally:
        index.close()
