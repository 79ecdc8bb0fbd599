"""Settings of the SLA service (env prefix SLA_)."""

from __future__ import annotations

from paht_common.settings import BaseServiceSettings, env_setting


class SlaSettings(BaseServiceSettings):
    """SLA worker, scanner and API settings."""

    model_config = env_setting("SLA_")

    http_port: int = 8082
    database_url: str = "postgresql://postgres@127.0.0.1:5433/paht_sla"
    faust_app_id: str = "paht-sla"
    scan_interval_seconds: float = 0.5
    scan_batch: int = 500
    admin_token: str = "dev-only-admin-token"
    """Bearer token for calendar and policy edits (staff SSO comes with the intake issue)."""

    def secret_fields(self) -> dict[str, str]:
        """Secrets refused when they keep a development default in production."""
        return {"SLA_ADMIN_TOKEN": self.admin_token}
