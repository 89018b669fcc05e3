"""What every provider is: a small class that declares its models and turns a request into images.

A provider reads like a short story: build the request, call the SDK, map errors, return images.
Capabilities and prices come from the catalog (``studio/data/catalog/<name>.json``), not code.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from studio.catalog import Catalog, ModelInfo
from studio.config import Settings
from studio.types import PreparedRequest, ProviderResult, RunContext
from studio.validation import SEED_SPACE

READY = "ready"
MISSING_KEY = "missing_key"
UNAVAILABLE = "unavailable"


@dataclass
class ProviderStatus:
    name: str
    label: str
    state: str  # ready | missing_key | unavailable
    reason: str = ""
    models: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.state == READY

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "state": self.state, "reason": self.reason,
                "models": self.models}


class Provider:
    """Base class. Subclasses set the class attributes and implement ``generate``."""

    name: str = ""
    label: str = ""
    key_names: tuple[str, ...] = ()  # environment / secrets names, any one of which is enough
    sdk_module: str | None = None  # import name of the SDK; checked without importing it
    sdk_package: str | None = None  # pip name, for the "unavailable" message
    max_concurrency: int = 4  # how many requests a batch may run at once against this provider
    seed_space: int = SEED_SPACE  # seeds the provider takes: 0 .. seed_space - 1 (see validation.nth_seed)

    def __init__(self, settings: Settings, catalog: Catalog):
        self.settings = settings
        self.catalog = catalog

    # -- what the provider offers -----------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return self.catalog.models(self.name)

    def default_model(self, user: str = "local", mode: str = "text-to-image") -> ModelInfo:
        """The catalog's default model of this provider for ``mode`` (see ``Catalog.default_model``).
        Raises LookupError when no listed model can do ``mode``."""
        model = self.catalog.default_model(self.name, mode)
        if model is None:
            raise LookupError(f"the catalog lists no {mode} model for {self.name}")
        return model

    def model(self, model_id: str | None, user: str = "local", mode: str = "text-to-image") -> ModelInfo:
        """``model_id``'s catalog entry, or the default model for ``mode`` when no id is given."""
        if not model_id:
            return self.default_model(user, mode)
        return self.catalog.model(self.name, model_id)

    def api_key(self) -> str | None:
        return self.settings.secret(*self.key_names) if self.key_names else None

    def key_hint(self) -> str:
        """Where a missing key goes, for the status line and the provider's own "needs a key" error."""
        return f"set {' or '.join(self.key_names)} in the environment or Streamlit secrets"

    def status(self) -> ProviderStatus:
        models = [m.to_dict() for m in self.models()]
        if self.sdk_module and importlib.util.find_spec(self.sdk_module) is None:
            return ProviderStatus(self.name, self.label, UNAVAILABLE,
                                  f"the {self.sdk_package or self.sdk_module} package is not installed", models)
        if self.key_names and not self.api_key():
            return ProviderStatus(self.name, self.label, MISSING_KEY, self.key_hint(), models)
        return ProviderStatus(self.name, self.label, READY, "", models)

    # -- the work ---------------------------------------------------------------------------

    def generate(self, request: PreparedRequest, ctx: RunContext) -> ProviderResult:
        raise NotImplementedError

    def close(self) -> None:
        """Release clients or models. Called when the studio shuts down or clears caches."""
