"""The Streamlit studio in a real browser: ``streamlit run app.py`` on localhost, driven by Playwright
on Debian's chromium, with the OpenAI and Stability providers talking to loopback fakes of their APIs
(the other providers unconfigured, as on a new machine). Generate images, see them in the session gallery, download the selection as a
zip and check it, push the selection to a mood board, paint an inpainting mask on the canvas. Also:
switching Gradio's tabs, and Streamlit's file watcher against the README's .venv.

Screenshots of every page are written to a temporary folder, or to ``docs/screenshots/`` with
``UPDATE_SCREENSHOTS=1`` (that is how the committed ones were made).

Skipped (with the reason) only when chromium is not installed; ``.ci/run`` installs it.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from studio.service import Studio

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
SIDEBAR = "[data-testid='stSidebar']"

if CHROMIUM is None:
    pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does it)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def streamlit_server(studio_home: Path, *options: str, **env_overrides: str):
    """``streamlit run app.py`` as the README starts it (the project's .streamlit/config.toml, file
    watcher included, plus ``options``), on a free loopback port: yields (url, process)."""
    port = free_port()
    env = {**os.environ, "STUDIO_HOME": str(studio_home), "STUDIO_VISITORS": "local", "PYTHONPATH": str(ROOT),
           **env_overrides}
    log_path = studio_home.parent / "streamlit.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true", f"--server.port={port}",
         "--server.address=127.0.0.1", "--browser.gatherUsageStats=false", *options],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("streamlit did not start:\n" + log_path.read_text()[-3000:])
        time.sleep(0.2)
    try:
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def server(studio_home):
    """A real ``streamlit run app.py`` whose OpenAI and Stability providers talk, through their real
    SDKs, to the loopback fakes of those APIs (their keys set); Replicate and Gemini have no key and
    the local model is not downloaded, as on a new machine. What the screenshots show is real."""
    from tests.fakes.http import FakeServer
    from tests.fakes.loopback import WIRING

    env = {"STUDIO_DEFAULT_PROVIDER": "openai"}
    with ExitStack() as stack:
        for name in ("openai", "stability"):
            wiring = WIRING[name]
            fake = wiring.make_fake()
            fake_server = stack.enter_context(FakeServer(fake))
            env.update({wiring.base_url_setting: fake_server.url + wiring.url_suffix,
                        wiring.key_setting: wiring.key_of(fake), **wiring.settings})
        # The code does not change during the walk-through: no watcher, so edits to a shared working
        # tree cannot reload modules under it.
        with streamlit_server(studio_home, "--server.fileWatcherType=none", **env) as (url, _process):
            yield url


def inotify_watches(pid: int) -> int:
    """How many inotify watches the process holds (one per watched folder)."""
    count = 0
    for descriptor in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            count += sum(line.startswith("inotify wd:") for line in descriptor.read_text().splitlines())
        except OSError:  # a descriptor closed while we looked
            continue
    return count


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = ROOT / "docs" / "screenshots" if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1700}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page
        context.close()
        browser.close()


def idle(page) -> None:
    """Wait until the script run that the last action started has finished."""
    page.wait_for_timeout(150)  # let the rerun start
    page.wait_for_selector(IDLE, timeout=30_000)


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("[data-testid='stApp']")
    idle(page)


def navigate(page, name: str) -> None:
    """Go to another page through the sidebar, in the same browser session (the gallery stays)."""
    page.locator(SIDEBAR).get_by_role("link", name=name, exact=True).click()
    page.wait_for_url(f"**/{name.replace(' ', '_')}" if name != "app" else "**/")
    idle(page)


def shoot(page, folder: Path, name: str) -> None:
    idle(page)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_generate_gallery_zip_board_and_inpaint_in_a_real_browser(server, browser_page, screenshots, studio_home):
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # full-size pictures from the fakes on a busy 2-core machine
    page = browser_page
    started = time.monotonic()
    open_page(page, f"{server}/Generate")
    for prompt in ("a lighthouse at dusk", "a fox in the snow"):
        box = page.get_by_label("Prompt", exact=True)
        box.fill(prompt)
        box.press("Control+Enter")  # commit the text before clicking
        idle(page)
        expect(page.get_by_text("Estimated cost:")).to_be_visible()
        page.get_by_role("button", name="Generate").click()
        expect(page.get_by_text(re.compile(r"^1 image\(s\) · \$0\.\d{4} · "))).to_be_visible()
        idle(page)
    sidebar = page.locator(SIDEBAR)
    expect(sidebar.locator("[data-testid='stCheckbox']")).to_have_count(2)  # both are in the session gallery
    shoot(page, screenshots, "generate")

    # Select everything and download it: the images and a manifest describing them.
    sidebar.get_by_role("button", name="Select all").click()
    idle(page)
    with page.expect_download() as download:
        sidebar.get_by_role("button", name="Download selection (.zip)").click()
    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    names = archive.namelist()
    images = [n for n in names if n.endswith(".png")]
    assert len(images) == 2 and "manifest.csv" in names and "manifest.json" in names
    manifest = json.loads(archive.read("manifest.json"))["images"]
    assert sorted(row["prompt"] for row in manifest) == ["a fox in the snow", "a lighthouse at dusk"]
    assert sorted(row["file"] for row in manifest) == sorted(images)

    # Push the selection to a new mood board, then look at it.
    name_box = sidebar.get_by_label("New board name")
    name_box.fill("Browser board")
    name_box.press("Enter")
    idle(page)
    sidebar.get_by_role("button", name="Push selection to board").click()
    idle(page)
    studio = Studio(studio_home)
    boards = __import__("studio.boards", fromlist=["Boards"]).Boards(studio)
    deadline = time.monotonic() + 10
    while not boards.list("local") and time.monotonic() < deadline:
        time.sleep(0.1)
    board = boards.list("local")[0]
    assert board.name == "Browser board" and board.item_count == 2
    navigate(page, "Mood boards")
    expect(page.get_by_role("combobox", name="Board", exact=True)).to_have_value("Browser board (2)")
    expect(page.get_by_text("#2 · a lighthouse at dusk")).to_be_visible()
    # The selection made on Generate is still shown on this page (same session, sidebar gallery).
    expect(page.locator(SIDEBAR).locator("input[type='checkbox']:checked")).to_have_count(2)
    page.get_by_text("Show the collage").click()
    idle(page)
    shoot(page, screenshots, "mood-boards")

    # Inpainting: paint on the canvas over the first gallery image; the painted area becomes the mask.
    navigate(page, "Edit")
    page.get_by_text("Inpaint with a mask").click()
    idle(page)
    canvas = page.locator("canvas").last
    canvas.wait_for()
    mask_shown = page.get_by_text("Mask (white = repaint)")
    for attempt in range(2):  # a stroke made while the canvas still loads its picture is not sent: paint again
        area = canvas.bounding_box()
        page.mouse.move(area["x"] + area["width"] * 0.3, area["y"] + area["height"] * (0.3 + 0.1 * attempt))
        page.mouse.down()
        page.mouse.move(area["x"] + area["width"] * 0.7, area["y"] + area["height"] * 0.6, steps=8)
        page.mouse.up()
        idle(page)  # the canvas sends its strokes, which start a rerun
        try:
            expect(mask_shown).to_be_visible(timeout=10_000)
            break
        except AssertionError:
            if attempt:
                raise
    box = page.get_by_label("What should change")
    box.fill("a red door")
    box.press("Control+Enter")
    idle(page)
    shoot(page, screenshots, "edit")
    idle(page)  # a click during a rerun can be lost
    page.get_by_role("button", name="Apply edit").click()
    expect(page.get_by_text("Linked to parent image")).to_be_visible()
    inpainted = [r for r in studio.history(owner="local").items if r.mode == "inpaint"]
    assert len(inpainted) == 1 and inpainted[0].parent_id is not None

    navigate(page, "Variations")
    page.get_by_role("button", name="Make 4 variations").click()
    expect(page.get_by_text(re.compile(r"^4 image\(s\) · \$0\.\d{4} · "))).to_be_visible()
    shoot(page, screenshots, "variations")
    navigate(page, "History")
    expect(page.get_by_text("7 images · page 1 of 1")).to_be_visible()
    shoot(page, screenshots, "history")
    navigate(page, "app")
    expect(page.get_by_text("Recent images")).to_be_visible()
    shoot(page, screenshots, "home")
    if (ROOT / "pages" / "5_Batch.py").exists():
        navigate(page, "Batch")
        shoot(page, screenshots, "batch")
    assert {r.provider for r in studio.history(owner="local").items} == {"openai"}
    studio.close()
    print(f"browser walk-through: {time.monotonic() - started:.1f}s")


# -- Gradio: switching tabs --------------------------------------------------------------------------

GRADIO_TABS = ["Generate", "Edit", "Variations", "Batch from script", "History", "Mood boards", "API tokens"]


@pytest.fixture
def gradio_url(studio_home, tmp_path, monkeypatch):
    """The Gradio app over a fresh install, on loopback."""
    import gradio_app
    from gradio_ui.identity import Access

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-tmp"))
    studio = Studio(studio_home)
    demo = gradio_app.build_app(studio, access=Access(), export_dir=tmp_path / "exports")
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield url
    demo.close()
    studio.close()


def test_gradio_tab_bar_keeps_every_tab_while_switching(gradio_url):
    """Each tab, in turn and back again: the bar always lists every tab once, and the tab clicked is
    the one selected (a component between two tabs once made History replace Mood boards)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(gradio_url)
        page.get_by_role("tab", name="Generate").wait_for()
        for name in [*GRADIO_TABS[1:], "History", "Mood boards", "Generate", "History", "Batch from script"]:
            page.get_by_role("tab", name=name, exact=True).click()
            page.get_by_role("tab", name=name, exact=True, selected=True).first.wait_for()
            assert page.locator("[role='tab']").all_inner_texts() == GRADIO_TABS, f"after opening {name}"
            assert page.locator("[role='tab'][aria-selected='true']").all_inner_texts() == [name]
        assert not errors, errors
        browser.close()


# -- Streamlit's file watcher and the README's .venv -------------------------------------------------


def test_the_file_watcher_does_not_watch_the_project_tree_with_its_venv(studio_home, browser_page):
    """The README puts .venv inside the project. Streamlit's default watcher put a recursive inotify
    watch on the whole project, .venv included (1,475 watches; "inotify queue overflowed" in the log
    and a slower server). With the project's config, a fresh install opened in a browser holds none."""
    with streamlit_server(studio_home) as (url, process):
        open_page(browser_page, url)
        assert browser_page.get_by_role("heading", name="Image Studio").count()
        assert inotify_watches(process.pid) == 0
