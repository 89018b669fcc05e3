"""Provider plugins are Python entry points (group ``image_studio.providers``), and so are the
built-ins: a real distribution is built and installed with pip into a temporary folder, and the
studio finds its providers by that alone. A plugin that cannot be loaded shows why in its status
and hides no other provider."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import providers
from providers.base import READY, UNAVAILABLE
from studio.service import Studio
from studio.types import GenerationRequest

ROOT = Path(__file__).resolve().parent.parent
BUILTINS = ["gemini", "local", "openai", "replicate", "stability"]

PLUGIN_MODULE = '''
"""A provider plugin as a third party would write one."""
import io

from PIL import Image

from providers.base import Provider
from studio.types import ProviderImage, ProviderResult


class TinyProvider(Provider):
    name = "tiny"
    label = "Tiny (plugin)"

    def generate(self, request, ctx):
        images = []
        for _ in range(request.n):
            buffer = io.BytesIO()
            Image.new("RGB", (request.width, request.height), (10, 200, 30)).save(buffer, format="PNG")
            images.append(ProviderImage(buffer.getvalue()))
        return ProviderResult(images=images)
'''

PLUGIN_PYPROJECT = '''
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "studio-tiny-plugin"
version = "1.2.0"

[tool.setuptools]
py-modules = ["tiny_studio_plugin"]

[project.entry-points."image_studio.providers"]
tiny = "tiny_studio_plugin:TinyProvider"
broken = "no_such_module_for_studio:Provider"
missing = "tiny_studio_plugin:NoSuchClass"
openai = "tiny_studio_plugin:TinyProvider"
'''

TINY_CATALOG = {"label": "Tiny", "models": [{
    "id": "tiny-1", "label": "Tiny", "default": True, "modes": ["text-to-image"],
    "size_range": {"min": 64, "max": 256, "multiple": 8}, "default_size": "64x64", "max_images": 2,
    "price": {"kind": "per_image", "usd": 0.0}}]}


def pip_install(source: Path, target: Path) -> None:
    """``pip install`` a project folder into ``target``, as a user installs a distribution (no
    download: the build backend is the one installed here)."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(source)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """A folder holding the installed ``studio-tiny-plugin`` distribution (code and .dist-info)."""
    source = tmp_path_factory.mktemp("plugin-src")
    (source / "pyproject.toml").write_text(PLUGIN_PYPROJECT, encoding="utf-8")
    (source / "tiny_studio_plugin.py").write_text(PLUGIN_MODULE, encoding="utf-8")
    site = tmp_path_factory.mktemp("plugin-site")
    pip_install(source, site)
    assert any(site.glob("studio_tiny_plugin-1.2.0.dist-info/entry_points.txt"))
    return site


def test_an_installed_plugin_distribution_is_a_provider_and_a_broken_one_hides_nothing(
        plugin_site, studio_home, monkeypatch, caplog):
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.delenv("STUDIO_PROVIDER_PLUGINS", raising=False)
    names = providers.names()
    assert {"tiny", "broken", "missing"} <= set(names) and names[:5] == BUILTINS
    # A plugin may not take a built-in's name: the built-in keeps it, and the log says so.
    assert providers.sources()["openai"].builtin
    assert "openai_images" in providers.sources()["openai"].target
    assert "provider 'openai' from studio-tiny-plugin 1.2.0 is ignored" in caplog.text

    studio_home.mkdir(parents=True, exist_ok=True)
    (studio_home / "catalog").mkdir()
    (studio_home / "catalog" / "tiny.json").write_text(json.dumps(TINY_CATALOG), encoding="utf-8")
    studio = Studio(studio_home)
    try:
        statuses = {status.name: status for status in studio.provider_statuses()}
        assert set(BUILTINS) | {"tiny", "broken", "missing"} <= set(statuses)
        assert statuses["tiny"].state == READY
        for name, why in (("broken", "ModuleNotFoundError"), ("missing", "AttributeError")):
            assert statuses[name].state == UNAVAILABLE
            assert f"provider plugin {name!r}" in statuses[name].reason
            assert "studio-tiny-plugin 1.2.0" in statuses[name].reason and why in statuses[name].reason
        # The plugin works end to end: request checked against its catalog entry, images kept.
        result = studio.generate(GenerationRequest(prompt="a green square", provider="tiny", width=64, height=64))
        assert result.images[0].provider == "tiny" and (studio_home / result.images[0].path).is_file()
    finally:
        studio.close()


def test_the_test_hook_reaches_the_same_registry(monkeypatch):
    monkeypatch.setenv("STUDIO_PROVIDER_PLUGINS", "hooked=tests.fakes.echo_provider:EchoProvider,bad=nocolon")
    assert providers.factory_for("hooked").__name__ == "EchoProvider"
    assert {"hooked", "bad"} <= set(providers.names()) and providers.names()[:5] == BUILTINS
    with pytest.raises(providers.PluginError, match=r"'bad' \(nocolon from STUDIO_PROVIDER_PLUGINS\).*module:attribute"):
        providers.factory_for("bad")
    assert providers.factory_for("nobody") is None


def _project_copy(folder: Path) -> Path:
    """What a source distribution of this project holds: its packages and project files."""
    for name in ("pyproject.toml", "README.md", "requirements.txt", "app.py", "gradio_app.py"):
        shutil.copy2(ROOT / name, folder / name)
    for package in ("studio", "providers", "ui", "gradio_ui"):
        shutil.copytree(ROOT / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


SHOW_REGISTRY = textwrap.dedent("""
    import json, sys
    import providers
    if sys.argv[1:] == ["not-installed"]:  # as if no image-studio distribution were installed anywhere
        providers.DISTRIBUTION = "image-studio-not-installed"
    from studio.catalog import BUILTIN_DIR
    factory = providers.factory_for("openai")
    print(json.dumps({"sources": {n: [s.target, s.origin, s.builtin] for n, s in providers.sources().items()},
                      "openai_file": sys.modules[factory.__module__].__file__,
                      "catalog": sorted(p.name for p in BUILTIN_DIR.glob("*.json")),
                      "migrations": sorted(p.name for p in (BUILTIN_DIR.parent.parent / "migrations").rglob("*.*")
                                           if "__pycache__" not in p.parts)}))
""")


def test_the_builtins_are_this_projects_entry_points_installed_or_not(tmp_path):
    """The project installed from its pyproject.toml declares the five built-ins as entry points (and
    ships its data files); run from a checkout that was not installed, the same declaration is read."""
    (tmp_path / "src").mkdir()
    source = _project_copy(tmp_path / "src")
    site = tmp_path / "site"
    pip_install(source, site)
    dist_info = next(site.glob("image_studio-*.dist-info"))
    assert "[image_studio.providers]" in (dist_info / "entry_points.txt").read_text()

    def registry(pythonpath: Path, *args: str) -> dict:
        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
        env.pop("STUDIO_PROVIDER_PLUGINS", None)
        done = subprocess.run([sys.executable, "-c", SHOW_REGISTRY, *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    installed = registry(site)
    assert list(installed["sources"]) == BUILTINS
    assert all(origin.startswith("image-studio ") and builtin for _, origin, builtin in installed["sources"].values())
    assert installed["openai_file"].startswith(str(site))  # loaded from the installed copy
    assert installed["catalog"] == ["gemini.json", "local.json", "openai.json", "replicate.json", "stability.json"]
    # Everything the studio reads at run time is in the installed copy: the migration scripts too.
    assert installed["migrations"] == sorted(p.name for p in (ROOT / "studio" / "migrations").rglob("*.*")
                                             if "__pycache__" not in p.parts)

    checkout = registry(source, "not-installed")  # read from this copy's pyproject.toml
    assert checkout["sources"] == {name: [target, "pyproject.toml", True]
                                   for name, (target, _, _) in installed["sources"].items()}
    assert checkout["openai_file"].startswith(str(source))


def test_the_readme_commands_install_the_project_and_ci_runs_the_readme_test_command():
    """Entry points exist only for an installed project: both README commands install it after the
    requirements, and .ci/run is the README's test command, character for character."""
    commands = [line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
                if line.startswith("python3 -m venv .venv")]
    assert len(commands) == 2
    for command in commands:
        steps = [step.strip() for step in command.split("&&")]
        requirements = next(i for i, step in enumerate(steps) if "-r requirements" in step)
        assert steps[requirements + 1] in ("pip install -e .", "pip install -q -e ."), command
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[1] in ci
