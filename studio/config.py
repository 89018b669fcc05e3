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
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic.dataclasses import dataclass

from studio.errors import InvalidRequest


# Every secret the studio may read; used to scrub them from any text that leaves the process.
SECRET_NAMES = ("OPENAI_API_KEY", "REPLICATE_API_TOKEN", "STABILITY_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                "STUDIO_WEBHOOK_SECRET", "STUDIO_IDENTITY_KEY", "STUDIO_WEBHOOK_SHARED_SECRET",
                "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def default_home() -> Path:
    if os.environ.get("STUDIO_HOME"):
        return Path(os.environ["STUDIO_HOME"]).expanduser()
    # Hugging Face Spaces mount a persistent storage volume at /data when one is attached.
    if os.environ.get("SPACE_ID") and Path("/data").is_dir() and os.access("/data", os.W_OK):
        return Path("/data/image-studio")
    return Path.home() / ".image-studio"


class SettingsError(InvalidRequest, ValueError):
    """A setting's value cannot be used. The message names where it came from (the environment
    variable, the studio.toml key or the argument), the value and what the setting takes, e.g.
    ``STUDIO_DAILY_BUDGET='abc' is not valid: it takes US dollars per day, 0 or more (unset: no cap)``.
    An ``InvalidRequest`` (the CLI exits 2) and a ``ValueError`` (what callers caught before)."""

    kind = "invalid_settings"


def api_version(value: Any) -> str:
    """A provider API version as it appears in a URL path ("v1", "v1beta", "v1alpha2"), or ValueError."""
    text = str(value).strip()
    if not re.fullmatch(r"v\d+(?:(?:alpha|beta)\d*)?", text):
        raise ValueError(f"an API version looks like v1 or v1beta, not {text[:40]!r}")
    return text


def _http_url(value: str | None) -> str | None:
    """A URL setting: http(s) with a host (the address itself is checked where it is used)."""
    if value is None:
        return None
    text = value.strip()
    if not re.fullmatch(r"https?://[^/\s?#]+\S*", text, flags=re.IGNORECASE):
        raise ValueError(f"not an http(s) URL: {text[:60]!r}")
    return text


REDIS_TLS_CHECKS = ("required", "optional", "none", "cert_required", "cert_optional", "cert_none")


def _broker_url(value: str | None) -> str | None:
    """The Celery broker: ``redis://[user:password@]host[:port][/db]``, or ``rediss://...`` (TLS) with
    ``?ssl_cert_reqs=required`` (optional or none), as kombu demands. Only Redis: the workers keep
    their leases, gates and cancels in the broker's Redis. Checked here so a typo is one clear line
    before any job is made, not Celery's error after."""
    if value is None:
        return None
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("redis", "rediss") or not text.lower().startswith(f"{parts.scheme.lower()}://"):
        raise ValueError("not a redis:// or rediss:// URL")
    try:
        port = parts.port  # a port that is no number raises ValueError
    except ValueError:
        raise ValueError("the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError("no host")
    if port == 0:
        raise ValueError("the port is not a number from 1 to 65535")
    if not re.fullmatch(r"/?|/\d+", parts.path):
        raise ValueError(f"the database is not a number: {parts.path[:20]!r}")
    if parts.scheme.lower() == "rediss":
        checks = [v for k, v in parse_qsl(parts.query) if k == "ssl_cert_reqs"]
        if not checks or checks[-1].lower() not in REDIS_TLS_CHECKS:
            raise ValueError("a rediss:// URL needs ?ssl_cert_reqs=required (or optional, none)")
    return text


def masked_url(text: Any) -> str:
    """A URL setting as it may be shown: any password as ``***`` and no query (it may hold keys)."""
    value = str(text)
    try:
        parts = urlsplit(value)
    except ValueError:
        return "(a value that is not a URL)"
    if "@" in value and "@" not in parts.netloc:  # mistyped (no '//'): whatever precedes '@' may be a password
        return "***@" + value.rpartition("@")[2]
    if parts.password is None and "@" not in parts.netloc:
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return urlunsplit((parts.scheme, f"{name}:***@{host}", parts.path, "", ""))


def _names(value: Any) -> Any:
    """A list setting: comma-separated in the environment (or a string in studio.toml), else a list."""
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, (list, tuple)):
        return tuple(dict.fromkeys(str(item).strip() for item in value if str(item).strip()))
    return value  # anything else is refused by the field's type


def _counts(value: Any) -> Any:
    """A table setting of whole numbers: "openai=8,replicate=2" in the environment, a table in studio.toml."""
    if not isinstance(value, str):
        return value  # a studio.toml table; anything else is refused by the field's type
    pairs: dict[str, str] = {}
    for entry in value.split(","):
        if entry.strip():
            name, sep, number = entry.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"{entry.strip()[:40]!r} is not name=number")
            pairs[name.strip()] = number.strip()
    return pairs


@dataclass
class Settings:
    """Every setting, validated by pydantic when built (``Settings.load`` names the source of a bad
    value); assigning an attribute later is not checked (tests and front ends adjust them)."""

    home: Path
    # Each description says what the setting takes; a refused value's error quotes it.
    daily_budget: float | None = Field(  # across the whole studio
        None, ge=0, allow_inf_nan=False, description="US dollars per day, 0 or more (unset: no cap)")
    default_provider: str = Field("local", min_length=1, description="a provider name such as local or openai")
    local_model: str = Field("stabilityai/sd-turbo", min_length=1,
                             description="a Hugging Face model id or a model path")
    # None = pick automatically (the local provider checks that the machine has the one named)
    local_device: str | None = Field(None, description="cuda, cuda:N, mps or cpu (unset: automatic)")
    local_dtype: str | None = Field(None, description="float16, bfloat16 or float32 (unset: for the device)")
    local_cache_size: int = Field(2, ge=1, description="a whole number of models kept loaded, 1 or more")
    user_models: dict[str, str] = Field(  # user -> local model id or path
        default_factory=dict, description="a table of user = local model id or path")
    # Local models a visitor may pick besides the catalog's (Hub ids or paths the operator vouches
    # for); "name=/models/x.safetensors" offers the file as "name", keeping the path on the server.
    local_models: Annotated[tuple[str, ...], BeforeValidator(_names)] = Field(
        (), description="model ids or name=path entries, comma-separated (a list in studio.toml)")
    # Whether a request may name any local model id or server path (a local model, or an image in a
    # provider option such as reference_images). True for the CLI and the library;
    # the web front ends set it False unless STUDIO_VISITORS=local (a remote visitor must not make the
    # server open files of its choosing).
    local_free_paths: bool = True
    request_timeout: float = Field(300.0, gt=0, allow_inf_nan=False, description="seconds, more than 0")
    # The longest a provider's Retry-After is honoured: it holds every request to it in this process
    # that long at most; a longer ask is read as this long (and fails only the request that got it).
    rate_limit_max_hold: float = Field(3600.0, gt=0, allow_inf_nan=False, description="seconds, more than 0")
    # a batch runner whose heartbeat is older than this is presumed dead
    job_stale_seconds: float = Field(15.0, gt=0, allow_inf_nan=False, description="seconds, more than 0")
    # The Gemini API version requests go to. v1beta is the version whose published reference defines
    # every field the studio sends (responseModalities, imageConfig with imageSize); google-genai
    # 3.x alone would pick v1, which does not. STUDIO_GEMINI_API_VERSION or [gemini] api_version.
    gemini_api_version: Annotated[str, AfterValidator(api_version)] = Field(
        "v1beta", description="an API version such as v1beta or v1")
    # Requests a batch runs at once against a provider, by provider name; a provider not named keeps its
    # own limit (Provider.max_concurrency: 4 for a cloud API, 1 for the local model).
    provider_concurrency: Annotated[dict[str, Annotated[int, Field(ge=1)]], BeforeValidator(_counts)] = Field(
        default_factory=dict, description="provider=number pairs, each 1 or more, comma-separated (a table in "
                                          "studio.toml), e.g. openai=8,replicate=2")
    # --- Scale-out back ends (issue 13). Unset: the embedded default (SQLite in home, files in home,
    # threads in the process). Each is a URL so one variable moves one part to a shared engine.
    # SQLAlchemy URL of the database: sqlite:///path or postgresql://user:pass@host/db (unset:
    # home/index.sqlite3). It may hold a password: left out of the settings' repr (studio.db shows it masked).
    database_url: str | None = Field(None, repr=False, description="a database URL such as postgresql://user@host/db "
                                                                   "(unset: SQLite in the data directory)")
    # Where images and thumbnails live: s3://bucket/prefix (endpoint, region, credentials from the usual
    # AWS_* variables), or unset for files under home.
    storage_url: str | None = Field(None, description="s3://bucket/prefix (unset: files in the data directory)")
    # Celery broker for generations and batch scenes: redis://host:port/db (unset: threads in this process)
    broker_url: Annotated[str | None, AfterValidator(_broker_url)] = Field(
        None, repr=False, description="a broker URL such as redis://localhost:6379/0 (rediss:// with "
                                      "?ssl_cert_reqs=required; unset: threads in this process)")
    # Seconds after which Redis hands a scene task that no worker acknowledged to another worker (its
    # worker died). Unset: an hour, or twice the request timeout plus ten minutes if that is longer.
    broker_visibility_timeout: float | None = Field(None, gt=0, allow_inf_nan=False,
                                                    description="seconds, more than 0 (unset: an hour or more)")
    # Who fires scheduled batches (studio.scheduler): auto = a thread in the web servers without a
    # broker, Celery beat with one; thread = a thread in the web servers always; off = not this process.
    scheduler: str = Field("auto", pattern="^(auto|thread|off)$", description="auto, thread or off")
    # --- The HTTP API (issue 12).
    # Origins a browser page may call the HTTP API from (CORS); empty: none besides the API's own.
    api_cors_origins: Annotated[tuple[str, ...], BeforeValidator(_names)] = Field(
        (), description="origins such as https://app.example.com, comma-separated (a list in studio.toml)")
    # Requests one API token (or the local visitor) may make per minute; 0: no limit.
    api_rate_limit: int = Field(60, ge=0, description="a whole number of requests per minute, 0 or more (0: no limit)")
    # Largest upload the HTTP API accepts (an image, a mask or a batch script), in bytes.
    api_max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024,
                                      description="a whole number of bytes, 1024 or more")
    # The deployment's name in webhook payloads of the job API (document 3's "environment" field).
    environment: str = Field("development", min_length=1, description="a deployment name such as production")
    # Where the job API's webhooks go (document 3: the operator's receiver, which alone is given the
    # shared secret STUDIO_WEBHOOK_SHARED_SECRET); unset: that API sends none.
    job_api_webhook_url: Annotated[str | None, AfterValidator(_http_url)] = Field(
        None, description="an http(s) URL such as https://hooks.example.com/jobs (unset: no webhooks from the job API)")
    session_keys: dict[str, str] = field(default_factory=dict, repr=False)  # pasted by a user, never stored

    @classmethod
    def load(cls, home: str | Path | None = None, **overrides: Any) -> "Settings":
        """Settings for ``home`` (default ``default_home()``): each from ``overrides`` (field names),
        else the environment (``STUDIO_...``; empty counts as unset), else ``home/studio.toml``, else
        the default. Raises ``SettingsError`` naming every value that cannot be used, and where it came
        from; an unknown override name is a TypeError (a programming error)."""
        home_path = Path(home).expanduser() if home else default_home()
        config_file = home_path / "studio.toml"
        file_values: dict[str, Any] = {}
        if config_file.is_file():
            try:
                with config_file.open("rb") as fh:
                    file_values = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"studio.toml in the data directory is not valid TOML: {exc}") from None
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"Settings has no field {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, (env_name, section, key) in _SOURCES.items():
            table = file_values.get(section, {}) if section else file_values
            if env_name and os.environ.get(env_name, "").strip():
                values[name], sources[name] = os.environ[env_name], env_name
            elif isinstance(table, dict) and table.get(key) not in (None, ""):
                values[name] = table[key]
                sources[name] = f"studio.toml {f'[{section}] ' if section else ''}{key}"
        for name, value in overrides.items():
            values[name], sources[name] = value, f"the argument {name}"
        try:
            return cls(home=home_path, **values)
        except ValidationError as exc:
            raise SettingsError(_explain(exc, values, sources)) from None

    def secret(self, *names: str) -> str | None:
        """The first of ``names`` that is set, from the session, the environment or st.secrets."""
        for name in names:
            if self.session_keys.get(name):
                return self.session_keys[name]
        for name in names:
            if os.environ.get(name):
                return os.environ[name]
        return _streamlit_secret(names)

    def concurrency_limit(self, provider: Any) -> int:
        """Requests a batch may run at once against ``provider`` (a ``Provider``): this studio's
        ``provider_concurrency`` figure for its name, else the provider's own ``max_concurrency``; 1 or more."""
        configured = self.provider_concurrency.get(provider.name)
        return max(1, int(configured if configured is not None else getattr(provider, "max_concurrency", 1) or 1))

    def model_for_user(self, user: str) -> str:
        return self.user_models.get(user, self.local_model)


# Where each setting is read from: (environment variable, studio.toml section or None, key).
_SOURCES: dict[str, tuple[str | None, str | None, str]] = {
    "daily_budget": ("STUDIO_DAILY_BUDGET", None, "daily_budget"),
    "default_provider": ("STUDIO_DEFAULT_PROVIDER", None, "default_provider"),
    "local_model": ("STUDIO_LOCAL_MODEL", "local", "model"),
    "local_device": ("STUDIO_LOCAL_DEVICE", "local", "device"),
    "local_dtype": ("STUDIO_LOCAL_DTYPE", "local", "dtype"),
    "local_cache_size": ("STUDIO_LOCAL_CACHE_SIZE", "local", "cache_size"),
    "user_models": (None, "local", "user_models"),  # studio.toml only
    "local_models": ("STUDIO_LOCAL_MODELS", "local", "allowed_models"),
    "request_timeout": ("STUDIO_REQUEST_TIMEOUT", None, "request_timeout"),
    "rate_limit_max_hold": ("STUDIO_RATE_LIMIT_MAX_HOLD", None, "rate_limit_max_hold"),
    "job_stale_seconds": ("STUDIO_JOB_STALE_SECONDS", None, "job_stale_seconds"),
    "gemini_api_version": ("STUDIO_GEMINI_API_VERSION", "gemini", "api_version"),
    "provider_concurrency": ("STUDIO_PROVIDER_CONCURRENCY", None, "provider_concurrency"),
    "database_url": ("STUDIO_DATABASE_URL", None, "database_url"),
    "storage_url": ("STUDIO_STORAGE_URL", None, "storage_url"),
    "broker_url": ("STUDIO_BROKER_URL", None, "broker_url"),
    "broker_visibility_timeout": ("STUDIO_BROKER_VISIBILITY_TIMEOUT", None, "broker_visibility_timeout"),
    "scheduler": ("STUDIO_SCHEDULER", None, "scheduler"),
    "api_cors_origins": ("STUDIO_API_CORS_ORIGINS", "api", "cors_origins"),
    "api_rate_limit": ("STUDIO_API_RATE_LIMIT", "api", "rate_limit"),
    "api_max_upload_bytes": ("STUDIO_API_MAX_UPLOAD_BYTES", "api", "max_upload_bytes"),
    "environment": ("STUDIO_ENVIRONMENT", None, "environment"),
    "job_api_webhook_url": ("STUDIO_JOB_API_WEBHOOK_URL", "api", "job_webhook_url"),
}


def _explain(error: ValidationError, values: dict[str, Any], sources: dict[str, str]) -> str:
    """One line per setting pydantic refused: where it came from, the value, what it takes, and why."""
    lines: dict[str, str] = {}
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else "settings"
        if name in lines:
            continue
        field_info = Settings.__pydantic_fields__.get(name)
        takes = field_info.description if field_info is not None and field_info.description else "another value"
        why = str(item["msg"]).removeprefix("Value error, ")
        value = values.get(name, item.get("input"))
        if field_info is not None and not field_info.repr and value is not None:
            value = masked_url(value)  # a URL that may hold a password (the broker's, the database's)
        lines[name] = _refused(sources.get(name, name), value, takes, why)
    return "; ".join(lines.values())


def _refused(source: str, value: Any, takes: str, why: str) -> str:
    """The one wording of a refused setting: ``SOURCE=VALUE is not valid: it takes WHAT (WHY)``."""
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{source}={shown} is not valid: it takes {takes} ({why})"


def env_int(name: str, default: int, *, minimum: int = 1) -> int:
    """A whole-number setting read from environment variable ``name`` (unset or empty: ``default``)
    for front-end settings outside ``Settings`` (e.g. Gradio's queue limits). Raises SettingsError for
    anything but a whole number of at least ``minimum`` (a bad value was silently replaced before)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        number = int(text)
    except ValueError:
        raise SettingsError(_refused(name, text, f"a whole number, {minimum} or more", "not a whole number")) from None
    if number < minimum:
        raise SettingsError(_refused(name, text, f"a whole number, {minimum} or more", f"less than {minimum}"))
    return number


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
