"""The provider registry.

Built-in providers are named here by import path and imported only when first used, so that
listing providers never imports torch or a cloud SDK. ``register`` adds another (a plugin, or a
test's fake) under a name; so does ``STUDIO_PROVIDER_PLUGINS="name=module:Class,..."`` in the
environment, which reaches a CLI or server process as well.
"""

from __future__ import annotations

import importlib
import os
from typing import Callable

from providers.base import MISSING_KEY, READY, UNAVAILABLE, Provider, ProviderStatus
from studio.catalog import Catalog
from studio.config import Settings

BUILTIN: dict[str, str] = {
    "local": "providers.local:LocalProvider",
    "openai": "providers.openai_images:OpenAIProvider",
    "replicate": "providers.replicate_models:ReplicateProvider",
    "stability": "providers.stability:StabilityProvider",
    "gemini": "providers.gemini:GeminiProvider",
}

ProviderFactory = Callable[[Settings, Catalog], Provider]
_registered: dict[str, ProviderFactory] = {}


def register(name: str, factory: ProviderFactory) -> None:
    """Make ``factory(settings, catalog)`` available as provider ``name``."""
    _registered[name] = factory


def unregister(name: str) -> None:
    _registered.pop(name, None)


def _plugins() -> dict[str, str]:
    plugins = {}
    for item in os.environ.get("STUDIO_PROVIDER_PLUGINS", "").split(","):
        if "=" in item:
            name, target = item.split("=", 1)
            plugins[name.strip()] = target.strip()
    return plugins


def names() -> list[str]:
    extra = [n for n in [*_registered, *_plugins()] if n not in BUILTIN]
    return list(BUILTIN) + list(dict.fromkeys(extra))


def factory_for(name: str) -> ProviderFactory | None:
    if name in _registered:
        return _registered[name]
    target = BUILTIN.get(name) or _plugins().get(name)
    if target is None:
        return None
    module_name, class_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


__all__ = ["Provider", "ProviderStatus", "READY", "MISSING_KEY", "UNAVAILABLE", "register", "unregister",
           "names", "factory_for", "BUILTIN"]
