"""A provider for tests of work sent to Celery workers (``STUDIO_PROVIDER_PLUGINS=wire=tests.fakes.
wire_provider:WireProvider``): the echo provider's images, with what it does chosen by the prompt,
since a test cannot reach into a worker process:

* ``fail:rate ...`` raises ``RateLimited`` (retry after 7 s), ``fail:provider ...`` ``ProviderFailure``;
* ``slow ...`` runs until it is cancelled (or a minute passes), reporting progress first;
* anything else: one image per ``n``, as echo does.

Two models: ``wire-1`` at $0.01 an image, and ``wire-pricey`` at $10 (more than a test's budget).
"""

from __future__ import annotations

import copy
import json
import threading

from studio.errors import ProviderFailure, RateLimited
from studio.types import PreparedRequest, ProviderResult, RunContext
from tests.fakes.echo_provider import ECHO_CATALOG, EchoProvider

SLOW_SECONDS = 60.0


def _catalog() -> dict:
    catalog = copy.deepcopy(ECHO_CATALOG)
    catalog["label"] = "Wire (test)"
    [model] = catalog["models"]
    model["id"], model["label"] = "wire-1", "Wire"
    pricey = copy.deepcopy(model)
    pricey.update(id="wire-pricey", label="Wire (pricey)", default=False, price={"kind": "per_image", "usd": 10.0})
    catalog["models"].append(pricey)
    return catalog


WIRE_CATALOG = _catalog()


class WireProvider(EchoProvider):
    name = "wire"
    label = "Wire (test)"

    def __init__(self, settings, catalog):
        folder = settings.home / "catalog"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "wire.json"
        if not target.exists():
            target.write_text(json.dumps(WIRE_CATALOG))
        catalog._merge("wire", WIRE_CATALOG)  # a process that loaded its catalog before the file was written
        super().__init__(settings, catalog)

    def generate(self, request: PreparedRequest, ctx: RunContext) -> ProviderResult:
        prompt = request.prompt
        if "fail:rate" in prompt:
            raise RateLimited("wire: too many requests", provider=self.name, retry_after=7.0)
        if "fail:provider" in prompt:
            raise ProviderFailure("wire: the server broke", provider=self.name)
        if "slow" in prompt:
            ctx.report("generating", 0.1, step=1, total_steps=10, message="slowly")
            stop = threading.Event()
            for _ in range(int(SLOW_SECONDS / 0.05)):
                ctx.check_cancelled()  # raises Cancelled once the caller's cancel reaches this worker
                stop.wait(0.05)
        return super().generate(request, ctx)


PLUGIN_SPEC = "wire=tests.fakes.wire_provider:WireProvider"
