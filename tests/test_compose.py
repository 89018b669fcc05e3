"""docker-compose.yml, checked statically (Docker cannot run where the tests run): every studio
service's command is a real entry point, every STUDIO_* variable is one the studio reads, every
long-running service has a health check, and the services the README promises are there."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: docker-compose.yml is not checked")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
CELERY_COMMANDS = {"worker", "beat", "flower", "inspect"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _studio_services(compose: dict) -> dict[str, dict]:
    """The services that run the studio's own image (built from the Dockerfile)."""
    return {name: spec for name, spec in compose["services"].items() if spec.get("build")}


def _variables_the_studio_reads() -> set[str]:
    """STUDIO_* names the code reads: every setting's variable, and those read directly (STUDIO_HOME...)."""
    from studio.config import _SOURCES

    names = {env for env, _, _ in _SOURCES.values() if env}
    for path in [*ROOT.glob("studio/**/*.py"), *ROOT.glob("ui/*.py"), *ROOT.glob("gradio_ui/*.py"),
                 ROOT / "app.py", ROOT / "gradio_app.py"]:
        names |= set(re.findall(r"[\"'](STUDIO_[A-Z0-9_]+)[\"']", path.read_text(encoding="utf-8")))
    return names


def test_the_promised_services_are_there(compose):
    services = compose["services"]
    assert {"streamlit", "api", "worker-cloud", "worker-local", "beat", "flower", "redis", "postgres", "minio",
            "minio-init"} <= set(services)
    assert set(_studio_services(compose)) == {"streamlit", "api", "worker-cloud", "worker-local", "beat", "flower"}
    assert set(compose["volumes"]) >= {"studio-data", "postgres-data", "redis-data", "minio-data"}


def test_every_studio_command_is_a_real_entry_point(compose, monkeypatch):
    from studio.cli import build_parser

    monkeypatch.setenv("STUDIO_BROKER_URL", "redis://127.0.0.1:1/0")  # studio.worker needs one to import
    queues = {}
    for name, spec in _studio_services(compose).items():
        command = spec["command"]
        if command[:2] == ["python", "-m"]:
            module, arguments = command[2], command[3:]
            importlib.import_module(module)
            assert module == "studio"
            build_parser().parse_args(arguments)  # a subcommand and options the CLI has
        elif command[0] == "celery":
            assert command[1] == "-A"
            app = importlib.import_module(command[2]).app
            assert command[3] in CELERY_COMMANDS, name
            if command[3] == "worker":
                queues[name] = command[command.index("-Q") + 1]
            if command[3] == "beat":
                app.loader.import_default_modules()
                assert app.conf.beat_schedule and all(e["task"] in app.tasks for e in app.conf.beat_schedule.values())
        elif command[0] == "streamlit":
            assert command[1] == "run" and (ROOT / command[2]).is_file()
        else:
            pytest.fail(f"service {name}: unknown command {command[0]}")
    from studio.jobs.celery_runner import CLOUD_QUEUE, LOCAL_QUEUE

    assert sorted(queues.values()) == sorted([CLOUD_QUEUE, LOCAL_QUEUE])


def test_every_studio_variable_is_one_the_studio_reads_and_all_services_share_them(compose):
    known = _variables_the_studio_reads()
    environments = [spec["environment"] for spec in _studio_services(compose).values()]
    assert all(env == environments[0] for env in environments)  # one set of settings everywhere
    studio_names = {name for name in environments[0] if name.startswith("STUDIO_")}
    assert studio_names >= {"STUDIO_DATABASE_URL", "STUDIO_STORAGE_URL", "STUDIO_BROKER_URL", "STUDIO_HOME"}
    assert studio_names <= known, f"not read by the studio: {sorted(studio_names - known)}"
    env = environments[0]
    assert env["STUDIO_DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["STUDIO_DATABASE_URL"]
    assert env["STUDIO_STORAGE_URL"].startswith("s3://") and env["STUDIO_BROKER_URL"].startswith("redis://redis:")
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"


def test_the_settings_in_compose_are_valid_settings(compose, tmp_path, monkeypatch):
    from studio.config import Settings
    from studio.storage.s3 import parse_s3_url

    env = _studio_services(compose)["api"]["environment"]
    for name, value in env.items():
        if name.startswith("STUDIO_") and name != "STUDIO_HOME":
            monkeypatch.setenv(name, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value)))  # compose's defaults
    settings = Settings.load(tmp_path)
    assert settings.broker_url and settings.database_url and settings.storage_url
    bucket = parse_s3_url(settings.storage_url).bucket
    init = " ".join(compose["services"]["minio-init"]["command"])
    assert f"mc mb --ignore-existing store/{bucket}" in init  # the bucket the studio uses is made


def test_long_running_services_have_health_checks_and_wait_for_their_back_ends(compose):
    for name, spec in compose["services"].items():
        if name == "minio-init":
            assert spec.get("restart") == "no"
            continue
        check = spec.get("healthcheck", {}).get("test")
        assert check and check[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
    for name, spec in _studio_services(compose).items():
        waits = spec["depends_on"]
        assert waits["postgres"]["condition"] == waits["redis"]["condition"] == "service_healthy", name
        assert waits["minio-init"]["condition"] == "service_completed_successfully", name
        assert "studio-data:/data" in spec["volumes"]
    assert compose["services"]["api"]["healthcheck"]["test"][-1].count("/health") == 1
