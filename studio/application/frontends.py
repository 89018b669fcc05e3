"""Small rules every front end needs the same answer to: where an operator's setting is read from,
which visitor policy is in force, and a batch's random base seed.

* ``front_end_setting(name)``: the environment first, then Streamlit's secrets (``secrets.toml`` or a
  Space's secrets) when running inside Streamlit. Gradio, the CLI and the HTTP API read the
  environment (a Space's secrets arrive there), so for them it is the environment alone.
* ``visitor_mode()``: ``studio.identity.visitor_policy`` over that setting: ``"local"`` or
  ``"private"``, with every alias the policy knows (``shared``, ``single``, ``visitors``, ...).
* ``random_base_seed(space)``: one random seed in ``0 .. space - 1`` (``studio.validation.random_seed``,
  which seeds a single request left to chance too), ``space`` being the provider's
  number of seeds (``Provider.seed_space``, at most ``studio.validation.SEED_SPACE`` = 2**32), so
  a batch's scenes (base, base+1, ...) wrap inside the provider's own range.
"""

from __future__ import annotations

import os
from typing import Mapping

from studio.config import _streamlit_secret
from studio.identity import VISITORS_SETTING, visitor_policy
from studio import validation
from studio.validation import SEED_SPACE


def front_end_setting(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The operator's value of ``name``: the environment, else Streamlit's secrets when Streamlit runs
    this process; None when neither has it. ``environ``: a mapping to read instead (nothing else is
    read then: a test's or a caller's own settings)."""
    if environ is not None:
        return environ.get(name) or None
    return os.environ.get(name) or _streamlit_secret((name,))


def visitor_mode(environ: Mapping[str, str] | None = None) -> str:
    """``"local"`` or ``"private"`` from ``STUDIO_VISITORS`` (``front_end_setting``). Raises
    ``studio.config.SettingsError`` for a value the policy does not know."""
    return visitor_policy(front_end_setting(VISITORS_SETTING, environ) or "")


def random_base_seed(space: int = SEED_SPACE) -> int:
    """A random base seed for a batch: ``studio.validation.random_seed``, the rule a single request
    left to chance is seeded by (uniform in ``0 .. space - 1``, ``space`` the provider's
    ``seed_space``). ValueError unless ``space`` is 1 to ``SEED_SPACE``."""
    return validation.random_seed(space)


__all__ = ["front_end_setting", "random_base_seed", "visitor_mode"]
