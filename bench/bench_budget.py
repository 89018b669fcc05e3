"""Booked vs budget: 8 OpenAI requests start at once against the loopback fake, whose token usage
(prompt text, input images, output by quality) puts their actual cost above the per-image price.
Every admitted request is held at the fake until each of the 8 has either reached it or been
refused, so all admitted requests hold their budget reservations at the same time.

    python bench/bench_budget.py

Prints, per case, the budget, how many requests ran, what was booked, and the estimate vs the
actual of one request. Run it on an older checkout to compare (it uses only the Studio API).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from studio.service import Studio  # noqa: E402
from studio.types import GenerationRequest  # noqa: E402
from tests.fakes.http import FakeServer  # noqa: E402
from tests.fakes.openai_fake import OpenAIFake  # noqa: E402
from tests.test_budget import LONG_PROMPT, run_concurrently  # noqa: E402

CASES = [  # (what, model, budget in USD)
    ("8 x 4,000-character prompts", "gpt-image-2.5-flare", 0.05),
    ("8 x 4,000-character prompts", "gpt-image-2.5-flare", 0.10),
    ("8 x edits, 1 input image + 4,000 characters", "gpt-image-2.5-flare", 0.05),
    ("8 x edits, 1 input image + 4,000 characters", "gpt-image-2.5-flare", 0.15),
    ("8 x edits, 1 input image + 4,000 characters", "gpt-image-1-mini", 0.045),
]


def run_case(what: str, model: str, budget: float, server: FakeServer, source: str) -> str:
    fake = server.serve(OpenAIFake())
    os.environ["OPENAI_API_KEY"] = fake.api_key
    with tempfile.TemporaryDirectory() as home:
        studio = Studio(home)
        studio.settings.daily_budget = budget

        def call(index: int):
            prompt = f"{index} {LONG_PROMPT}"[:4000]
            if "edits" in what:
                studio.edit(source, prompt, provider="openai", model=model, quality="low")
            else:
                studio.generate(GenerationRequest(prompt=prompt, provider="openai", model=model, quality="low"))

        outcomes = run_concurrently(studio, fake, call)
        rows = [r for r in studio.storage.index.generations() if r["status"] == "completed"]
        booked = studio.spent_today()
        one = rows[0] if rows else {"estimated_cost": 0.0, "cost": 0.0}
        studio.close()
    verdict = "OVER" if booked > budget + 1e-9 else "within"
    return (f"{what:<46} {model:<20} budget ${budget:.3f}  ran {outcomes.count('ok')}/8  booked ${booked:.4f} "
            f"({verdict})  one request: estimated ${one['estimated_cost']:.4f}, actual ${one['cost']:.4f}")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch, FakeServer(OpenAIFake()) as server:
        os.environ["OPENAI_BASE_URL"] = server.url + "/v1"
        source = str(Path(scratch) / "source.png")
        Image.new("RGB", (1024, 1024), (90, 120, 160)).save(source)
        for case in CASES:
            print(run_case(*case, server, source))


if __name__ == "__main__":
    main()
