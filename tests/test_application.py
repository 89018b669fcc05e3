"""The application layer (studio.application) is the one place front ends get their rules from.

The table below gives the same inputs to every front end; each front end has one function that
returns the request it would run. They must agree on the size, the estimate and the cache key (a
cached image is then found from any of them). Each front end (library, application layer, Gradio's
endpoint and tab, the Streamlit page, the HTTP API) is one function in ``FRONT_ENDS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from streamlit.testing.v1 import AppTest

from studio.application import Application, coerce_fields, error_text, random_base_seed
from studio.errors import ContentBlocked, InvalidRequest, NotConfigured, RateLimited
from studio.http import create_app
from studio.service import GenerationResult, Studio
from studio.sizes import ratio_size
from studio.types import GenerationRequest
from studio.usertext import markdown_literal
from studio.validation import parse_size
from ui.widgets import control_key

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a lighthouse on a cliff at dawn"
SEED = 7
KEYS = {"replicate": "REPLICATE_API_TOKEN", "gemini": "GEMINI_API_KEY", "stability": "STABILITY_API_KEY",
        "openai": "OPENAI_API_KEY"}


@dataclass(frozen=True)
class Case:
    provider: str
    model: str
    size: str  # what the user picks: an aspect ratio "W:H" or a pixel size "WxH"

    @property
    def ratio(self) -> bool:
        return ":" in self.size


CASES = [
    Case("replicate", "black-forest-labs/flux-1.1-pro", "16:9"),
    Case("gemini", "gemini-3.1-flash-image", "3:4"),
    Case("stability", "sd3.5-large", "21:9"),
    Case("openai", "gpt-image-1.5", "1536x1024"),  # a list of sizes, no seed
]


# -- one function per front end: the request it builds for a case ------------------------------


def via_library(env, case: Case) -> GenerationRequest:
    """A library user gives pixels: the size studio.sizes names for the ratio."""
    model = env.studio.provider(case.provider).model(case.model)
    width, height = ratio_size(model, case.size) if case.ratio else parse_size(case.size)
    return GenerationRequest(prompt=PROMPT, provider=case.provider, model=case.model, width=width, height=height,
                             seed=SEED if model.seed else None)


def via_application(env, case: Case) -> GenerationRequest:
    """What every front end hands the layer: form values, the size as picked."""
    model = env.studio.provider(case.provider).model(case.model)
    values = {"prompt": PROMPT, "provider": case.provider, "model": case.model, "size": case.size,
              "seed": str(SEED) if model.seed else ""}
    return env.app.form_request("local", values)


def via_gradio_endpoint(env, case: Case) -> GenerationRequest:
    """Gradio's named /generate endpoint (gradio_client's call), with the size as a client writes it."""
    model = env.studio.provider(case.provider).model(case.model)
    generate = next(fn.fn for fn in env.demo.fns.values() if fn.api_name == "generate")
    options = {"size": case.size, **({"seed": SEED} if model.seed else {})}
    env.generated.clear()
    generate(PROMPT, case.provider, case.model, options)
    [request] = env.generated
    return request


def via_gradio_tab(env, case: Case) -> GenerationRequest:
    """Gradio's Generate tab: the model's size list as the tab fills it, read by ModelControls."""
    from gradio_ui.controls import ModelControls, model_props

    controls = next(fn.fn.__self__ for fn in env.demo.fns.values()
                    if getattr(fn.fn, "__name__", "") == "on_model" and fn.fn.__self__.mode == "text-to-image")
    assert isinstance(controls, ModelControls)
    model = env.studio.provider(case.provider).model(case.model)
    props = model_props(model, "text-to-image")
    [size] = [value for label, value in props["size"]["choices"]
              if label.split(" ")[0] == case.size or value == case.size]
    values = {controls.provider: case.provider, controls.model: case.model, controls.size: size,
              controls.negative: "", controls.seed: SEED if model.seed else None, controls.n: 1,
              controls.strength: None, controls.output_format: props["output_format"]["value"],
              controls.quality: props["quality"]["value"], controls.options: ""}
    for name in ("steps", "guidance"):
        values[getattr(controls, name)] = props[name].get("value")
    return env.app.form_request("local", {"prompt": PROMPT, "style": "none", **controls.request_fields(values)})


def via_streamlit(env, case: Case) -> GenerationRequest:
    """The Streamlit Generate page: the request it estimates once the picks and the prompt are in."""
    seen: list[GenerationRequest] = []
    real_prepare = Studio.prepare

    def watched(self, request):
        seen.append(request)
        return real_prepare(self, request)

    env.monkeypatch.setattr(Studio, "prepare", watched)
    try:
        at = AppTest.from_file(str(ROOT / "pages" / "1_Generate.py"), default_timeout=30).run()
        at.selectbox(key="gen_provider").select(case.provider).run()
        at.selectbox(key=f"gen_model_{case.provider}").select(case.model).run()
        model = env.studio.provider(case.provider).model(case.model)
        if case.ratio:
            at.selectbox(key=control_key("gen", "ratio", model)).select(case.size).run()
        else:
            at.selectbox(key=control_key("gen", "size", model)).select(case.size).run()
        if model.seed:
            at.number_input(key=control_key("gen", "seed", model)).set_value(SEED).run()
        at.text_area(key="gen_prompt").input(PROMPT).run()
        assert not at.exception, [e.value for e in at.exception]
    finally:
        env.monkeypatch.setattr(Studio, "prepare", real_prepare)
    assert seen, "the page estimated nothing"
    return seen[-1]


def via_http(env, case: Case) -> GenerationRequest:
    """The HTTP API (/api/v1) as a script calls it: the size as the client writes it (a ratio as
    ``aspect_ratio``, pixels as ``size``). The request is what POST /generate runs; the estimate is
    what POST /estimate answers for the same body, which must be the layer's figure for that request."""
    model = env.studio.provider(case.provider).model(case.model)
    body = {"prompt": PROMPT, "provider": case.provider, "model": case.model,
            ("aspect_ratio" if case.ratio else "size"): case.size, **({"seed": SEED} if model.seed else {})}
    env.generated.clear()
    answer = env.http.post("/api/v1/generate", json=body)
    assert answer.status_code == 200, answer.text
    [request] = env.generated
    estimate = env.http.post("/api/v1/estimate", json=body)
    assert estimate.status_code == 200, estimate.text
    env.reported_estimates["http"] = estimate.json()["estimate"]
    return request


FRONT_ENDS = {"library": via_library, "application": via_application, "gradio endpoint": via_gradio_endpoint,
              "gradio tab": via_gradio_tab, "streamlit": via_streamlit, "http": via_http}


@dataclass
class FrontEnds:
    studio: Studio
    app: Application
    demo: object
    generated: list
    monkeypatch: pytest.MonkeyPatch
    http: object  # a TestClient on studio.http.create_app over the same studio
    reported_estimates: dict  # front end -> the estimate it showed, where it shows its own figure


@pytest.fixture
def front_ends(app_home, monkeypatch, tmp_path):
    import gradio_app
    from gradio_ui.identity import Access

    for name in KEYS.values():  # nothing is sent: sizes, estimates and keys call no one
        monkeypatch.setenv(name, "test-key-not-used")
    studio = Studio(app_home)
    generated: list[GenerationRequest] = []

    def recorded(self, request, **_ignored):  # what the endpoint would run, not run
        generated.append(request)
        return GenerationResult([], 0.0, 0.0, False, "recorded", 0.0)

    demo = gradio_app.build_app(studio, access=Access(single_user=True), export_dir=tmp_path / "exports")
    monkeypatch.setattr(Studio, "generate", recorded)
    monkeypatch.setenv("STUDIO_VISITORS", "local")  # the API's callers without a token are the local owner
    with TestClient(create_app(studio)) as http:
        yield FrontEnds(studio, Application(studio), demo, generated, monkeypatch, http, {})
    demo.close()
    studio.close()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.provider}-{c.size}")
def test_every_front_end_gives_one_size_estimate_and_cache_key(front_ends, case):
    app = front_ends.app
    figures = {}
    for name, build in FRONT_ENDS.items():
        request = build(front_ends, case)
        prepared = front_ends.studio.prepare(request)
        estimate = app.estimate(request).estimate
        figures[name] = (prepared.request.size, front_ends.reported_estimates.get(name, estimate),
                         app.cache_key(request), prepared.warnings)
    library = figures["library"]
    assert library[3] == []  # a size the front ends offer is made as it is
    assert {name: figure for name, figure in figures.items() if figure != library} == {}, library


# -- history: the one visibility rule, the CSV export, spend by day ------------------------------


def _make(studio: Studio, owner: str, prompt: str, n: int = 1, **extra):
    request = GenerationRequest(prompt=prompt, provider="echo", n=n, user=owner, width=64, height=64, **extra)
    return studio.generate(request).images


def test_gradio_history_shows_shared_images_of_others_and_not_their_private_ones(echo_studio, tmp_path):
    from gradio_ui.endpoints import Actions, Exporter

    [shared] = _make(echo_studio, "alice", "a shared harbour")
    _make(echo_studio, "alice", "a private harbour")
    [own] = _make(echo_studio, "bob", "bob's own harbour")
    echo_studio.update_image(shared.id, "alice", shared=True)
    actions = Actions(echo_studio, Exporter(echo_studio, tmp_path / "exports", cache_dir=tmp_path / "cache"))
    page = actions.history("bob")
    assert {r.id for r in page.items} == {shared.id, own.id} and page.total == 2
    assert {r.id for r in actions.history("bob", search="harbour", limit=1, offset=1).items} <= {shared.id, own.id}
    assert {r.id for r in Application(echo_studio).history("bob").items} == {shared.id, own.id}


def test_gradio_history_endpoint_lists_a_shared_image(app_home, tmp_path):
    import gradio_app
    from gradio_ui.identity import Access

    studio = Studio(app_home)
    demo = gradio_app.build_app(studio, access=Access(single_user=True), export_dir=tmp_path / "exports")
    try:
        [shared] = _make(studio, "alice", "a shared kite")
        studio.update_image(shared.id, "alice", shared=True)
        history = next(fn.fn for fn in demo.fns.values() if fn.api_name == "history")
        _files, answer = history()
        assert [item["id"] for item in answer["items"]] == [shared.id] and answer["total"] == 1
        assert "owner" not in answer["items"][0]  # visible, but whose it is never leaves the server
    finally:
        demo.close()
        studio.close()


def test_history_pages_with_a_cursor_until_the_last(echo_studio):
    app = Application(echo_studio)
    made = [record.id for record in _make(echo_studio, "local", "a kite", n=3)]
    first = app.history("local", limit=2)
    second = app.history("local", cursor=first.next_cursor, limit=2)
    assert first.total == 3 and len(first.items) == 2 and second.next_cursor is None
    assert sorted(r.id for r in first.items + second.items) == sorted(made)
    assert first.next_cursor == echo_studio.history(app.history_query("local", limit=2)).next_cursor  # one rule
    with pytest.raises(InvalidRequest, match="the page cursor is not one this studio gave out"):
        app.history("local", cursor="abc")
    with pytest.raises(InvalidRequest, match="unknown history filter"):
        app.history("local", {"owner": "alice"})


def test_history_csv_export_reads_every_page_and_only_what_the_owner_may_see(echo_studio, monkeypatch):
    import csv
    import io

    from studio.application import history

    monkeypatch.setattr(history, "_CSV_PAGE", 2)  # several pages from five images
    mine = _make(echo_studio, "bob", "a red kite", n=4, tags=["kites"])
    [shared] = _make(echo_studio, "alice", "a shared red kite", tags=["kites"])
    _make(echo_studio, "alice", "alice's private kite", tags=["kites"])
    echo_studio.update_image(shared.id, "alice", shared=True)
    _make(echo_studio, "bob", "a blue boat")
    text = Application(echo_studio).export_history_csv("bob", {"tag": "KITES"})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(row["id"] for row in rows) == sorted([r.id for r in mine] + [shared.id])
    assert "alice" not in text and "bob" not in text  # no owner id leaves the server


def test_spend_by_day_is_monitorings_figures(echo_studio):
    from tests.fakes import echo_provider

    _make(echo_studio, "local", "a kite", n=2)
    _make(echo_studio, "local", "a boat")
    echo_provider.EchoProvider.failures = [RateLimited("slow down")]
    with pytest.raises(RateLimited):
        _make(echo_studio, "local", "a failing kite")
    _make(echo_studio, "someone-else", "not mine")
    days = Application(echo_studio).spend_by_day("local", 7)
    [stats] = echo_studio.stats(7, "local")
    assert sum(d.cost for d in days) == pytest.approx(stats.cost) == pytest.approx(0.03)
    assert sum(d.requests for d in days) == stats.requests == 3
    assert sum(d.failed for d in days) == stats.failed == 1
    assert {d.provider for d in days} == {"echo"}


# -- coercion, errors, seeds ------------------------------------------------------------------


@pytest.mark.parametrize("given, expected", [
    ({"n": "2", "seed": 7.0, "guidance": "3.5", "size": " 64x32 "}, {"n": 2, "seed": 7, "guidance": 3.5,
                                                                   "width": 64, "height": 32}),
    ({"tags": "a, b,,c ", "style": "none", "extra": '{"go_fast": "false"}', "cache": "true", "seed": ""},
     {"tags": ["a", "b", "c"], "style": None, "extra": {"go_fast": "false"}, "cache": True}),
    ({"extra": ["background=transparent", "n=2"], "output_format": "PNG", "negative_prompt": None},
     {"extra": {"background": "transparent", "n": "2"}, "output_format": "png"}),
])
def test_one_coercion_reads_what_any_front_end_holds(given, expected):
    assert coerce_fields(given) == expected


@pytest.mark.parametrize("given, message", [
    ({"n": 2.5}, "n must be a whole number, not '2.5'"),
    ({"seed": "x" * 100}, "seed must be a whole number, not 'xxxx"),
    ({"guidance": "nan"}, "guidance must be a number, not 'nan'"),
    ({"steps": True}, "steps must be a whole number, not True"),
    ({"size": "64x64", "width": 64}, "give one of size, ratio, or width and height"),
    ({"size": "16:9"}, "an aspect ratio \\(16:9\\) needs a model"),
    ({"owner": "alice"}, "unknown option\\(s\\) 'owner'"),
    ({"extra": "[1]"}, "provider options must be a JSON object"),
    ({"cache": "maybe"}, "cache must be true or false"),
    ("n=2", "options must be a JSON object"),
])
def test_a_value_that_cannot_be_read_is_refused_never_adjusted(given, message):
    with pytest.raises(InvalidRequest, match=message):
        coerce_fields(given)


def test_a_ratio_is_sized_for_the_chosen_model(echo_studio, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", "test-key-not-used")
    app = Application(echo_studio)
    request = app.form_request("local", {"prompt": PROMPT, "provider": "replicate",
                                         "model": "black-forest-labs/flux-1.1-pro", "ratio": "16:9"})
    assert (request.width, request.height) == (1360, 768)
    assert ("16:9 (1360x768)", "1360x768") in app.sizes_for("replicate", "black-forest-labs/flux-1.1-pro")
    form = {"prompt": PROMPT, "provider": "replicate", "model": "black-forest-labs/flux-1.1-pro", "size": "16:9"}
    assert app.estimate(form) == app.estimate(request)  # form values or the request they make


@pytest.mark.parametrize("error", [ContentBlocked("refused", provider="openai"), RateLimited("later", retry_after=2.5),
                                   NotConfigured("no key", provider="openai", needs_key=True),
                                   InvalidRequest("bad <b>size</b>")])
def test_gradio_and_streamlit_title_an_error_as_the_layer_does(app_home, error):
    import gradio as gr
    from gradio_ui.endpoints import visitor_errors

    text = error_text(error)
    with pytest.raises(gr.Error) as raised:
        with visitor_errors(api=True):
            raise error
    assert (raised.value.title, raised.value.message) == (text.title, text.message)

    def page(kind: str, message: str, provider: str | None, needs_key: bool) -> None:
        from studio import errors
        from ui.widgets import show_error

        extra = {"needs_key": needs_key} if kind == "NotConfigured" else {}
        show_error(getattr(errors, kind)(message, provider=provider, **extra))

    at = AppTest.from_function(page, args=(type(error).__name__, error.message, error.provider,
                                           getattr(error, "needs_key", False))).run()
    assert not at.exception and at.error[0].value.startswith(f"**{text.title}:** ")


def test_the_batch_base_seed_is_drawn_in_the_providers_range(echo_studio):
    assert {random_base_seed(1) for _ in range(20)} == {0}
    assert all(0 <= random_base_seed(5) < 5 for _ in range(50))
    with pytest.raises(ValueError):
        random_base_seed(0)
    space = echo_studio.provider("echo").seed_space
    assert 0 <= Application(echo_studio).base_seed("echo") < space


def test_a_request_left_to_chance_is_seeded_by_the_batch_seeds_rule(echo_studio, monkeypatch):
    from studio import validation

    asked: list[int] = []

    def last_seed(space: int) -> int:  # the one rule, replaced: who draws a seed without it shows
        asked.append(space)
        return space - 1

    monkeypatch.setattr(validation, "random_seed", last_seed)
    space = echo_studio.provider("echo").seed_space
    prepared = echo_studio.prepare(GenerationRequest(prompt=PROMPT, provider="echo", width=64, height=64))
    assert prepared.request.seed == space - 1
    assert Application(echo_studio).base_seed("echo") == space - 1
    assert asked == [space, space]


def test_streamlit_history_lists_a_shared_image_and_not_a_private_one(app_home):
    studio = Studio(app_home)
    try:
        [shared] = _make(studio, "alice", "a shared kite")
        studio.update_image(shared.id, "alice", shared=True)
        _make(studio, "alice", "alice's private kite")
    finally:
        studio.close()
    at = AppTest.from_file(str(ROOT / "pages" / "4_History.py"), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(caption.value.startswith("1 image · page 1 of 1") for caption in at.caption), \
        [caption.value for caption in at.caption]


@pytest.mark.parametrize("budget, spent_images, left", [("0.05", 2, "$0.03"), ("0", 0, "$0.00")])
def test_home_page_and_sidebar_show_the_budget_left_by_the_one_rule(app_home, monkeypatch, budget, spent_images,
                                                                     left):
    from studio.estimates import budget_left

    monkeypatch.setenv("STUDIO_DAILY_BUDGET", budget)
    studio = Studio(app_home)
    try:
        if spent_images:
            _make(studio, "local", "a kite", n=spent_images)
        assert f"${budget_left(studio):.2f}" == left
    finally:
        studio.close()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}.get("Daily budget left") == left  # a budget of 0 is a budget
    [bar] = at.sidebar.get("progress")
    assert bar.proto.text == f"Spent today: ${0.01 * spent_images:.2f} of ${float(budget):.2f}"


def test_a_remembered_slider_value_out_of_range_is_moved_and_the_user_told():
    def page() -> None:
        from studio.controls import Bounds
        from ui.widgets import bounded_slider

        bounded_slider("Steps", Bounds(1, 50, 28, 1, integer=True), "gen_steps_x")

    at = AppTest.from_function(page)
    at.session_state["gen_steps_x"] = 80  # what an earlier model allowed
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.slider(key="gen_steps_x").value == 50
    assert [w.value for w in at.warning] == [markdown_literal("Steps: 80 is outside 1-50 here; set to 50.")]
    at.run()  # in range now: nothing more to say
    assert not at.warning and at.slider(key="gen_steps_x").value == 50


# -- the CLI's --size W:H: the size every front end makes for the ratio ----------------------------


@pytest.mark.parametrize("provider, model", [("replicate", "black-forest-labs/flux-1.1-pro"),
                                             ("gemini", None)])  # None: the provider's default model
def test_the_cli_sizes_a_ratio_as_the_application_layer_does(studio_home, monkeypatch, capsys, provider, model):
    from studio.cli import main

    for name in KEYS.values():  # nothing is sent: the run is recorded
        monkeypatch.setenv(name, "test-key-not-used")
    runs: list[GenerationRequest] = []

    def recorded(self, request, **_ignored):
        runs.append(request)
        return GenerationResult([], 0.0, 0.0, False, "recorded", 0.0)

    monkeypatch.setattr(Studio, "generate", recorded)
    named = ["--model", model] if model else []
    assert main(["generate", PROMPT, "--provider", provider, *named, "--size", "16:9", "--json"]) == 0, \
        capsys.readouterr().err
    studio = Studio(studio_home)
    try:
        expected = Application(studio).form_request("local", {"prompt": PROMPT, "provider": provider,
                                                              "model": model, "size": "16:9"})
    finally:
        studio.close()
    [request] = runs
    assert (request.model, request.width, request.height) == (model, expected.width, expected.height)
    assert expected.width and expected.height


def test_the_batch_cli_sizes_a_ratio_and_a_command_without_a_studio_names_the_fix(studio_home, monkeypatch,
                                                                                    capsys, tmp_path):
    from studio.cli import build_parser, generation_options, main
    from studio.jobs.manager import JobManager

    monkeypatch.setenv("REPLICATE_API_TOKEN", "test-key-not-used")
    seen: list[dict] = []
    real_preview = JobManager.preview

    def watched(self, source, **options):
        seen.append(options)
        return real_preview(self, source, **options)

    monkeypatch.setattr(JobManager, "preview", watched)
    script = tmp_path / "scenes.txt"
    script.write_text("a quay at dusk\n", encoding="utf-8")
    assert main(["batch", str(script), "--provider", "replicate", "--model", "black-forest-labs/flux-1.1-pro",
                 "--size", "16:9", "--dry-run", "--json"]) == 0, capsys.readouterr().err
    assert (seen[0]["width"], seen[0]["height"]) == (1360, 768)

    args = build_parser().parse_args(["generate", PROMPT, "--size", "16:9"])
    with pytest.raises(InvalidRequest, match="--size 16:9 is an aspect ratio.*give WIDTHxHEIGHT"):
        generation_options(args)  # a caller with no studio to find the model in
