"""Fixes of issue 13's Celery faults (helper F13a): the broker URL checked with the settings, the
cluster's runner id kept in Redis, and more (the attacks themselves: tests/test_attack_issue13.py)."""

from __future__ import annotations

import pytest

from studio.config import Settings, SettingsError


@pytest.mark.parametrize("url, why", [
    ("amqp://guest:s3cretpw@rabbit//", "not a redis:// or rediss:// URL"),
    ("redis://:s3cretpw@redis:63790000/0", "the port"),
    ("redis://:s3cretpw@:6379/0", "no host"),
    ("redis//:s3cretpw@redis:6379/0", "not a redis://"),
    ("rediss://:s3cretpw@redis:6380/0?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
])
def test_a_bad_broker_url_is_a_settings_error_without_its_password(url, why, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_BROKER_URL", url)
    with pytest.raises(SettingsError) as refused:
        Settings.load(tmp_path)
    message = str(refused.value)
    assert message.startswith("STUDIO_BROKER_URL=") and why in message
    assert "s3cretpw" not in message and "***" in message


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "redis://:pw@redis", "redis://redis:6379/",
                                 "rediss://:pw@redis:6380/1?ssl_cert_reqs=required",
                                 "rediss://redis:6380/0?ssl_cert_reqs=CERT_NONE"])
def test_a_good_broker_url_is_kept_as_given(url, tmp_path):
    assert Settings.load(tmp_path, broker_url=url).broker_url == url
