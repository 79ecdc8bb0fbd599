"""Settings of the SLA service (env prefix SLA_)."""

from __future__ import annotations

from pydantic import field_validator

from paht_common.settings import BaseServiceSettings, env_setting
from sla.domain import build_marks


class SlaSettings(BaseServiceSettings):
    """SLA worker, scanner and API settings."""

    model_config = env_setting("SLA_")

    http_port: int = 8082
    database_url: str = "postgresql://postgres@127.0.0.1:5433/paht_sla"
    faust_app_id: str = "paht-sla"
    scan_interval_seconds: float = 0.5
    scan_batch: int = 500
    warning_percents: list[int] = [50, 75]
    """Warnings to the assigned officer at these percentages of each clock."""
    escalations: list[str] = ["8wh:coordinator", "3wd:province_leadership"]
    """Escalation ladder after the breach: '<span after due>:<level>' (wh, wd, cd, min)."""
    admin_token: str = "dev-only-admin-token"
    """Bearer token for calendar and policy edits (staff SSO comes with the intake issue)."""

    @field_validator("escalations")
    @classmethod
    def _valid_ladder(cls, value: list[str]) -> list[str]:
        build_marks([], value)
        return value

    @field_validator("warning_percents")
    @classmethod
    def _valid_warnings(cls, value: list[int]) -> list[int]:
        build_marks(value, [])
        return value

    def secret_fields(self) -> dict[str, str]:
        """Secrets refused when they keep a development default in production."""
        return {"SLA_ADMIN_TOKEN": self.admin_token}
