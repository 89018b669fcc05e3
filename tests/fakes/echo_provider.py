"""A provider for tests of the core: draws a deterministic image from the request, with a
configurable latency and failure plan. Registered under a name by the tests that use it."""

from __future__ import annotations

import hashlib
import io
import threading
import time

from PIL import Image, ImageDraw

import providers
from providers.base import Provider
from studio.types import PreparedRequest, ProviderImage, ProviderResult, RunContext
from studio.validation import nth_seed

ECHO_CATALOG = {
    "label": "Echo (test)",
    "models": [{
        "id": "echo-1", "label": "Echo", "default": True,
        "modes": ["text-to-image", "image-to-image", "inpaint", "variation"],
        "size_range": {"min": 64, "max": 1024, "multiple": 8}, "default_size": "64x64", "max_images": 4,
        "negative_prompt": True, "seed": True,
        "steps": {"min": 1, "max": 150, "default": 4}, "guidance": {"min": 1, "max": 20, "default": 7.5},
        "strength": {"min": 0.0, "max": 1.0, "default": 0.6}, "mask": True,
        "price": {"kind": "per_image", "usd": 0.01},
    }],
}


def draw(prompt: str, seed: int | None, width: int, height: int) -> bytes:
    digest = hashlib.sha256(f"{prompt}|{seed}".encode()).digest()
    image = Image.new("RGB", (width, height), tuple(digest[:3]))
    ImageDraw.Draw(image).rectangle([2, 2, width // 2, height // 2], fill=tuple(digest[3:6]))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class EchoProvider(Provider):
    name = "echo"
    label = "Echo (test)"
    latency = 0.0
    failures: list[Exception] = []  # raised one by one before succeeding
    calls = 0
    _lock = threading.Lock()

    def generate(self, request: PreparedRequest, ctx: RunContext) -> ProviderResult:
        with EchoProvider._lock:
            EchoProvider.calls += 1
            failure = EchoProvider.failures.pop(0) if EchoProvider.failures else None
        if failure is not None:
            raise failure
        deadline = time.monotonic() + self.latency
        while time.monotonic() < deadline:
            ctx.check_cancelled()
            time.sleep(min(0.01, self.latency))
        images = []
        for i in range(request.n):
            seed = None if request.seed is None else nth_seed(request.seed, i, self.seed_space)  # as local does
            ctx.report("generating", (i + 1) / request.n, step=i + 1, total_steps=request.n)
            images.append(ProviderImage(draw(request.prompt, seed, request.width, request.height), seed=seed,
                                        info={"sampler": "echo"}))
        return ProviderResult(images=images)


def install(catalog_dir=None, *, latency: float = 0.0) -> type[EchoProvider]:
    """Register the echo provider and its catalog entry (written into the studio's catalog dir)."""
    import json

    if catalog_dir is not None:
        catalog_dir.mkdir(parents=True, exist_ok=True)
        (catalog_dir / "echo.json").write_text(json.dumps(ECHO_CATALOG))
    EchoProvider.latency = latency
    EchoProvider.failures = []
    EchoProvider.calls = 0
    providers.register("echo", EchoProvider)
    return EchoProvider


class CatalogedEchoProvider(EchoProvider):
    """The echo provider for other processes (``STUDIO_PROVIDER_PLUGINS=echo=tests.fakes.echo_provider:
    CatalogedEchoProvider``): writes its catalog entry into the studio's catalog folder on start, and
    takes its latency from ``ECHO_LATENCY``."""

    def __init__(self, settings, catalog):
        import json
        import os

        folder = settings.home / "catalog"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "echo.json"
        if not target.exists():
            target.write_text(json.dumps(ECHO_CATALOG))
            catalog._merge("echo", ECHO_CATALOG)
        EchoProvider.latency = float(os.environ.get("ECHO_LATENCY", "0"))
        super().__init__(settings, catalog)


PLUGIN_SPEC = "echo=tests.fakes.echo_provider:CatalogedEchoProvider"
