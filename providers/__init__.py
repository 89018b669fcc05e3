"""The provider registry: every provider, built-in or plugin, is a Python entry point.

A provider is an entry point in the group ``image_studio.providers``: its name is the provider's
name and its object a factory ``factory(settings, catalog) -> Provider`` (usually the Provider
subclass itself). The built-ins are declared in this project's ``pyproject.toml`` exactly as a
plugin distribution declares its own::

    [project.entry-points."image_studio.providers"]
    mine = "my_package.provider:MyProvider"

and ``pip install`` of that distribution is all it takes. Entry points are loaded only when the
provider is first used, so listing providers never imports torch, a cloud SDK or a plugin's code.

When this project runs from a checkout that was not installed (a Hugging Face Space or the Docker
image install requirements.txt only), its own entry points are read from ``pyproject.toml`` itself,
so that the built-ins still come from that one declaration.

A plugin that cannot be loaded never hides the others: ``factory_for`` raises ``PluginError`` saying
which plugin, from which distribution, and why, and ``Studio.provider_statuses`` shows that as the
plugin's status. A plugin cannot take a built-in's name (the built-in keeps it; a warning is logged).

For tests, ``register`` adds a factory in this process, and ``STUDIO_PROVIDER_PLUGINS=
"name=module:Class,..."`` in the environment adds entry points without installing anything (it
reaches CLI and server processes a test starts).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from providers.base import MISSING_KEY, READY, UNAVAILABLE, Provider, ProviderStatus
from studio.catalog import Catalog
from studio.config import Settings
from studio.errors import NotConfigured

log = logging.getLogger(__name__)

GROUP = "image_studio.providers"
DISTRIBUTION = "image-studio"  # this project's name in pyproject.toml
PLUGINS_ENV = "STUDIO_PROVIDER_PLUGINS"  # test hook: "name=module:Class,..."
_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

ProviderFactory = Callable[[Settings, Catalog], Provider]
_registered: dict[str, ProviderFactory] = {}
_sources_cache: dict[str, object] = {}
_sources_lock = threading.Lock()


class PluginError(NotConfigured):
    """A provider plugin could not be loaded or made: its message names the plugin, where it comes
    from and the underlying error. A ``NotConfigured`` (the studio's set-up error)."""

    kind = "plugin_error"


@dataclass(frozen=True)
class PluginSource:
    """One provider's declaration: ``name = target`` ("module:attribute"), declared by ``origin``
    (a distribution's "name version", this project's pyproject.toml, or the test hook)."""

    name: str
    target: str
    origin: str
    builtin: bool = False

    def load(self) -> ProviderFactory:
        """The factory this declaration names. Raises PluginError saying why it cannot be had."""
        module_name, _, attribute = self.target.partition(":")
        try:
            if not module_name.strip() or not attribute.strip():
                raise ValueError(f"{self.target!r} is not 'module:attribute'")
            factory = metadata.EntryPoint(self.name, self.target, GROUP).load()
        except Exception as exc:  # ImportError, AttributeError, an error raised by the plugin's own module
            raise PluginError(f"provider plugin {self.name!r} ({self.target} from {self.origin}) could not be "
                              f"loaded: {type(exc).__name__}: {exc}", provider=self.name) from exc
        if not callable(factory):
            raise PluginError(f"provider plugin {self.name!r} ({self.target} from {self.origin}) is not a "
                              "Provider class or factory", provider=self.name)
        return factory


def register(name: str, factory: ProviderFactory) -> None:
    """Make ``factory(settings, catalog)`` available as provider ``name`` in this process (tests)."""
    _registered[name] = factory


def unregister(name: str) -> None:
    _registered.pop(name, None)


def _builtin_sources() -> list[PluginSource]:
    """This project's own entry points, by name: from its installed metadata, else from its
    pyproject.toml (a checkout run without being installed)."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        origin = f"{DISTRIBUTION} {dist.version}"
        found = [PluginSource(ep.name, ep.value, origin, builtin=True) for ep in dist.entry_points if ep.group == GROUP]
        return sorted(found, key=lambda source: source.name)
    try:
        with _PYPROJECT.open("rb") as fh:
            declared = tomllib.load(fh)["project"]["entry-points"][GROUP]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        log.error("the built-in providers are not declared: %s is not installed and %s cannot be read (%s)",
                  DISTRIBUTION, _PYPROJECT, exc)
        return []
    return [PluginSource(name, str(target), "pyproject.toml", builtin=True)
            for name, target in sorted(declared.items())]


def _plugin_sources() -> list[PluginSource]:
    """Entry points other installed distributions declare, then the test hook's, sorted by name."""
    found: list[PluginSource] = []
    try:
        for ep in metadata.entry_points(group=GROUP):
            dist = ep.dist
            if dist is not None and dist.name == DISTRIBUTION:
                continue  # the built-ins, listed first
            origin = f"{dist.name} {dist.version}" if dist is not None else "an installed distribution"
            found.append(PluginSource(ep.name, ep.value, origin))
    except Exception:  # a broken distribution's metadata must not hide every provider
        log.exception("reading %s entry points failed", GROUP)
    for item in os.environ.get(PLUGINS_ENV, "").split(","):
        if item.strip():
            name, _, target = item.partition("=")
            found.append(PluginSource(name.strip(), target.strip(), PLUGINS_ENV))
    return sorted(found, key=lambda source: source.name)


def sources() -> dict[str, PluginSource]:
    """Every declared provider by name: built-ins, then plugins, each in name order (the order of an
    installed distribution's entry points, whatever pyproject.toml's was).
    A plugin whose name is taken (by a built-in or an earlier plugin) is left out, with a warning.
    Read again when ``sys.path`` or the test hook changes (scanning every distribution takes ~10 ms;
    a distribution installed into a folder already on the path is seen after a restart)."""
    key = (tuple(sys.path), os.environ.get(PLUGINS_ENV, ""))
    with _sources_lock:
        if _sources_cache.get("key") != key:
            _sources_cache.update(key=key, value=_read_sources())
        return dict(_sources_cache["value"])


def _read_sources() -> dict[str, PluginSource]:
    by_name: dict[str, PluginSource] = {}
    for source in [*_builtin_sources(), *_plugin_sources()]:
        taken = by_name.get(source.name)
        if taken is not None:
            if taken.target != source.target:
                log.warning("provider %r from %s is ignored: the name is %s's (%s)", source.name, source.origin,
                            taken.origin, taken.target)
            continue
        by_name[source.name] = source
    return by_name


def names() -> list[str]:
    """Every provider's name: declared ones (built-ins first), then those registered in this process."""
    declared = list(sources())
    return declared + [name for name in _registered if name not in declared]


def factory_for(name: str) -> ProviderFactory | None:
    """Provider ``name``'s factory, None when no provider has that name. Raises PluginError when its
    plugin cannot be loaded."""
    if name in _registered:
        return _registered[name]
    source = sources().get(name)
    return source.load() if source is not None else None


__all__ = ["Provider", "ProviderStatus", "READY", "MISSING_KEY", "UNAVAILABLE", "GROUP", "PluginError",
           "PluginSource", "register", "unregister", "names", "factory_for", "sources"]
