"""Building ``PreparedRequest`` objects by hand, as the core would, for provider-level tests."""

from __future__ import annotations

from studio.catalog import ModelInfo
from studio.types import Mode, PreparedRequest


def prepared(model: ModelInfo, prompt: str = "a lighthouse at dusk", **changes) -> PreparedRequest:
    """A validated request for ``model`` with the model's defaults, overridden by ``changes``."""
    values = dict(
        provider=model.provider,
        model=model,
        mode=Mode.TEXT_TO_IMAGE,
        prompt=prompt,
        negative_prompt="",
        width=model.default_width,
        height=model.default_height,
        n=1,
        seed=None,
        steps=model.steps.default if model.steps else None,
        guidance=model.guidance.default if model.guidance else None,
        strength=model.strength.default if model.strength else None,
        init_image=None,
        mask=None,
        output_format="png",
        quality=None,
        compression=95,
        user="local",
        extra={},
    )
    values.update(changes)
    values["mode"] = Mode.parse(values["mode"])
    return PreparedRequest(**values)
