"""Settings base shared by every service: each service subclasses it with its own env_prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET_MARKERS = ("dev-only", "changeme", "change-me", "insecure")


class BaseServiceSettings(BaseSettings):
    """Connection and runtime settings every service needs.

    Values are read from environment variables with the subclass's prefix, e.g.
    ``ROUTING_DATABASE_URL``. ``PAHT_ENV`` (no prefix) selects the environment.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    env: Literal["development", "test", "production"] = Field(
        "development", validation_alias=AliasChoices("PAHT_ENV")
    )
    database_url: str = "postgresql://postgres@127.0.0.1:5433/postgres"
    kafka_bootstrap: str = "127.0.0.1:9092"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    log_level: str = "INFO"
    province_code: str = "bn"
    """Short code of the province (tenant) used in CloudEvents types and report numbers."""
    db_pool_min: int = 1
    db_pool_max: int = 10
    consumer_session_timeout_ms: int = 10_000
    consumer_heartbeat_interval_ms: int = 1_000
    fetch_max_wait_ms: int = 500
    """How long the broker holds a fetch that finds nothing new (Kafka's default). A record
    that arrives answers the waiting fetch at once, so this costs no delivery latency; a
    short wait only makes an idle consumer poll: at 50 ms one idle consumer kept the broker
    at 11 % of a core, at 500 ms at 1.4 %."""
    inbox_retention_days: float = Field(14.0, ge=1)
    """How long a consumer remembers the events it handled (its duplicate filter). Keep it
    above the retention of the topics it consumes (7 days here): a duplicate can only come
    from a record Kafka still holds."""
    inbox_purge_interval_seconds: float = Field(600.0, gt=0)
    consumer_lag_interval_seconds: float = Field(5.0, gt=0)
    """How often each consumer group's lag is read from the broker into
    ``paht_consumer_lag_records`` (one admin and one group-less client per group)."""
    outbox_relay: bool = True
    """Relay the outbox to Kafka inside this process; false when ``python -m <service>
    relay`` runs as a process of its own (several API workers, one relay)."""
    faust_datadir: str = ""
    """Where faust keeps its (memory-store) bookkeeping; empty: a fresh temporary directory."""

    def secret_fields(self) -> dict[str, str]:
        """Secrets to check for development placeholders; subclasses extend it."""
        return {}

    @model_validator(mode="after")
    def _refuse_dev_secrets_in_production(self) -> BaseServiceSettings:
        if self.env != "production":
            return self
        for name, value in self.secret_fields().items():
            if not value or any(marker in value.lower() for marker in DEV_SECRET_MARKERS):
                raise ValueError(f"{name} uses a development default; set a real secret")
        return self


def env_setting(prefix: str) -> SettingsConfigDict:
    """Config dict for a service settings class reading ``<PREFIX>_*`` variables."""
    return SettingsConfigDict(env_prefix=prefix, extra="ignore", frozen=True)
