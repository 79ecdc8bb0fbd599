"""Settings refuse development secrets in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from intake.settings import IntakeSettings
from paht_devenv.kafka import LOG_RETENTION_HOURS
from sla.settings import SlaSettings


def test_production_refuses_the_development_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAHT_ENV", "production")
    monkeypatch.setenv("INTAKE_JWT_PUBLIC_KEYS", "-----BEGIN PUBLIC KEY-----x")
    with pytest.raises(ValidationError, match="INTAKE_DEV_API_KEY"):
        IntakeSettings()


def test_production_requires_staff_token_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAHT_ENV", "production")
    monkeypatch.setenv("INTAKE_DEV_API_KEY", "")
    with pytest.raises(ValidationError, match="INTAKE_JWT_PUBLIC_KEYS"):
        IntakeSettings()


def test_production_accepts_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAHT_ENV", "production")
    monkeypatch.setenv("INTAKE_DEV_API_KEY", "")
    monkeypatch.setenv("INTAKE_JWT_PUBLIC_KEYS", "-----BEGIN PUBLIC KEY-----x")
    monkeypatch.setenv("SLA_ADMIN_TOKEN", "b7c1e0f4a9d24c6e8f3a")
    monkeypatch.setenv("INTAKE_ADMIN_TOKEN", "9f2c4e6a8b0d1f3a5c7e9b1d")
    assert IntakeSettings().env == "production"
    assert SlaSettings().admin_token == "b7c1e0f4a9d24c6e8f3a"


def test_production_refuses_the_development_admin_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAHT_ENV", "production")
    with pytest.raises(ValidationError, match="SLA_ADMIN_TOKEN"):
        SlaSettings()


def test_production_refuses_the_development_intake_admin_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAHT_ENV", "production")
    monkeypatch.setenv("INTAKE_DEV_API_KEY", "")
    monkeypatch.setenv("INTAKE_JWT_PUBLIC_KEYS", "-----BEGIN PUBLIC KEY-----x")
    with pytest.raises(ValidationError, match="INTAKE_ADMIN_TOKEN"):
        IntakeSettings()


def test_development_keeps_working_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAHT_ENV", raising=False)
    assert IntakeSettings().dev_api_key == "dev-only-key"


def test_service_settings_read_their_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLA_HTTP_PORT", "9999")
    monkeypatch.setenv("INTAKE_HTTP_PORT", "7777")
    assert SlaSettings().http_port == 9999
    assert IntakeSettings().http_port == 7777


@pytest.mark.parametrize("days", ["0", "0.5", "-3"])
def test_an_inbox_retention_under_a_day_is_refused(
    monkeypatch: pytest.MonkeyPatch, days: str
) -> None:
    monkeypatch.setenv("SLA_INBOX_RETENTION_DAYS", days)
    with pytest.raises(ValidationError, match="inbox_retention_days"):
        SlaSettings()


def test_inbox_retention_outlasts_the_brokers_record_retention_by_default() -> None:
    assert SlaSettings().inbox_retention_days * 24 > LOG_RETENTION_HOURS
