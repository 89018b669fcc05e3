"""Settings: where data lives, the budget, local-model choices, and how secrets are found.

Order of precedence for every setting: explicit argument > environment > ``$STUDIO_HOME/studio.toml``
> default. Secrets (API keys) are looked up, in order, in the keys a user pasted for this session
only, the environment, then Streamlit secrets when Streamlit is already running. They are never
written anywhere by the studio.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


# Every secret the studio may read; used to scrub them from any text that leaves the process.
SECRET_NAMES = ("OPENAI_API_KEY", "REPLICATE_API_TOKEN", "STABILITY_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                "STUDIO_WEBHOOK_SECRET", "STUDIO_IDENTITY_KEY")


def default_home() -> Path:
    if os.environ.get("STUDIO_HOME"):
        return Path(os.environ["STUDIO_HOME"]).expanduser()
    # Hugging Face Spaces mount a persistent storage volume at /data when one is attached.
    if os.environ.get("SPACE_ID") and Path("/data").is_dir() and os.access("/data", os.W_OK):
        return Path("/data/image-studio")
    return Path.home() / ".image-studio"


def _float_or_none(value: Any) -> float | None:
    if value in (None, ""):
        return None
    return float(value)


def _names(env_value: str | None, file_value: Any) -> tuple[str, ...]:
    """A list setting: comma-separated in the environment, a list in studio.toml."""
    if env_value:
        items = env_value.split(",")
    elif isinstance(file_value, str):
        items = file_value.split(",")
    else:
        items = list(file_value or [])
    return tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))


@dataclass
class Settings:
    home: Path
    daily_budget: float | None = None  # USD per day across the whole studio; None = no cap
    default_provider: str = "local"
    local_model: str = "stabilityai/sd-turbo"
    local_device: str | None = None  # cuda | mps | cpu; None = pick automatically
    local_dtype: str | None = None  # float16 | bfloat16 | float32; None = pick for the device
    local_cache_size: int = 2  # loaded pipelines kept in memory
    user_models: dict[str, str] = field(default_factory=dict)  # user -> local model id or path
    # Local models a visitor may pick besides the catalog's (Hub ids or paths the operator vouches
    # for); "name=/models/x.safetensors" offers the file as "name", keeping the path on the server.
    local_models: tuple[str, ...] = ()
    # Whether a request may name any local model id or server path (a local model, or an image in a
    # provider option such as reference_images). True for the CLI and the library;
    # the web front ends set it False unless STUDIO_VISITORS=local (a remote visitor must not make the
    # server open files of its choosing).
    local_free_paths: bool = True
    request_timeout: float = 300.0
    job_stale_seconds: float = 15.0  # a batch runner whose heartbeat is older than this is presumed dead
    # The Gemini API version requests go to. v1beta is the version whose published reference defines
    # every field the studio sends (responseModalities, imageConfig with imageSize); google-genai
    # 3.x alone would pick v1, which does not. STUDIO_GEMINI_API_VERSION or [gemini] api_version.
    gemini_api_version: str = "v1beta"
    session_keys: dict[str, str] = field(default_factory=dict, repr=False)  # pasted by a user, never stored

    @classmethod
    def load(cls, home: str | Path | None = None, **overrides: Any) -> "Settings":
        home_path = Path(home).expanduser() if home else default_home()
        file_values: dict[str, Any] = {}
        config_file = home_path / "studio.toml"
        if config_file.is_file():
            with config_file.open("rb") as fh:
                file_values = tomllib.load(fh)
        local = file_values.get("local", {})
        env = os.environ
        settings = cls(
            home=home_path,
            daily_budget=_float_or_none(env.get("STUDIO_DAILY_BUDGET", file_values.get("daily_budget"))),
            default_provider=env.get("STUDIO_DEFAULT_PROVIDER") or file_values.get("default_provider") or "local",
            local_model=env.get("STUDIO_LOCAL_MODEL") or local.get("model") or cls.local_model,
            local_device=env.get("STUDIO_LOCAL_DEVICE") or local.get("device"),
            local_dtype=env.get("STUDIO_LOCAL_DTYPE") or local.get("dtype"),
            local_cache_size=int(env.get("STUDIO_LOCAL_CACHE_SIZE") or local.get("cache_size") or 2),
            user_models=dict(local.get("user_models", {})),
            local_models=_names(env.get("STUDIO_LOCAL_MODELS"), local.get("allowed_models")),
            request_timeout=float(env.get("STUDIO_REQUEST_TIMEOUT") or file_values.get("request_timeout") or 300),
            job_stale_seconds=float(env.get("STUDIO_JOB_STALE_SECONDS") or file_values.get("job_stale_seconds")
                                    or 15),
            gemini_api_version=api_version(env.get("STUDIO_GEMINI_API_VERSION")
                                           or file_values.get("gemini", {}).get("api_version")
                                           or cls.gemini_api_version),
        )
        for name, value in overrides.items():
            setattr(settings, name, value)
        return settings

    def secret(self, *names: str) -> str | None:
        """The first of ``names`` that is set, from the session, the environment or st.secrets."""
        for name in names:
            if self.session_keys.get(name):
                return self.session_keys[name]
        for name in names:
            if os.environ.get(name):
                return os.environ[name]
        return _streamlit_secret(names)

    def model_for_user(self, user: str) -> str:
        return self.user_models.get(user, self.local_model)


def api_version(value: Any) -> str:
    """A provider API version as it appears in a URL path ("v1", "v1beta", "v1alpha2"), or ValueError."""
    text = str(value).strip()
    if not re.fullmatch(r"v\d+(?:(?:alpha|beta)\d*)?", text):
        raise ValueError(f"an API version looks like v1 or v1beta, not {text[:40]!r}")
    return text


def _streamlit_secret(names: tuple[str, ...]) -> str | None:
    # Only consult st.secrets inside a running Streamlit app: importing Streamlit from the CLI
    # would be slow, and without a secrets file st.secrets raises even on .get().
    if "streamlit" not in sys.modules:
        return None
    try:
        import streamlit as st

        for name in names:
            value = st.secrets.get(name)
            if value:
                return str(value)
    except Exception:  # no secrets.toml, or not inside a script run
        return None
    return None
