"""The provider registry.

Built-in providers are named here by import path and imported only when first used, so that
listing providers never imports torch or a cloud SDK. ``register`` adds another (a plugin, or a
test's fake) under a name.
"""

from __future__ import annotations

import importlib
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


def names() -> list[str]:
    return list(BUILTIN) + [n for n in _registered if n not in BUILTIN]


def factory_for(name: str) -> ProviderFactory | None:
    if name in _registered:
        return _registered[name]
    target = BUILTIN.get(name)
    if target is None:
        return None
    module_name, class_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


__all__ = ["Provider", "ProviderStatus", "READY", "MISSING_KEY", "UNAVAILABLE", "register", "unregister",
           "names", "factory_for", "BUILTIN"]
