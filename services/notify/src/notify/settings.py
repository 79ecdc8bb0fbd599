"""Settings of the notify service (env prefix NOTIFY_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from paht_common.settings import env_setting
from paht_common.staff_auth import StaffTokenSettings


class NotifySettings(StaffTokenSettings):
    """Consumer, dispatcher and API settings.

    ``NOTIFY_RETRY_SCHEDULE_SECONDS`` is JSON, e.g. ``[5, 30, 120]``.
    """

    model_config = env_setting("NOTIFY_")

    http_port: int = 8083
    database_url: str = "postgresql://postgres@127.0.0.1:5433/paht_notify"
    consumer_group: str = "notify"
    """Kafka consumer group, also the inbox consumer name."""

    delivery_timeout_seconds: float = Field(15.0, gt=0)
    """Whole-attempt limit for one HTTP POST (connect, send, response headers)."""
    retry_schedule_seconds: tuple[float, ...] = (5, 30, 120, 600, 1800, 7200)
    """Delay before retry n after failed attempt n; after the last one the delivery fails."""
    retry_jitter: float = Field(0.1, ge=0, le=1)
    """Each delay is stretched by a random fraction in [0, retry_jitter]."""
    max_retry_after_seconds: float = Field(86_400.0, gt=0)
    """Ceiling on a receiver's Retry-After."""
    lease_seconds: float = Field(60.0, gt=0)
    """How long a claimed delivery is reserved for the dispatcher that claimed it."""
    dispatcher_poll_interval_seconds: float = Field(1.0, gt=0)
    """Fallback wake-up when no NOTIFY arrives; new deliveries wake the dispatcher at once."""
    dispatcher_batch_size: int = Field(100, ge=1)
    max_in_flight: int = Field(64, ge=1)
    """Concurrent sends per dispatcher."""
    max_in_flight_per_subscription: int = Field(8, ge=1)
    """Concurrent sends to one endpoint, so a slow endpoint cannot take every slot."""
    shutdown_grace_seconds: float = Field(5.0, ge=0)
    webhook_allow_private: bool = False
    """Allow webhook and push targets on loopback and private ranges (local development and
    tests only; production refuses to start with it). Link-local, multicast, unspecified and
    cloud-metadata addresses are refused whatever this says."""
    webhook_allow_http: bool = False
    """Allow plain ``http`` webhook URLs (``https`` is always allowed)."""
    webhook_proxy_url: str | None = None
    """Egress proxy every webhook goes through (the SSRF control production should rely on)."""

    admin_token: str = "dev-only-notify-admin-token"
    """Bearer token that registers upstream apps' webhooks (and may manage any subscription)."""

    vapid_private_key: str = ""
    """VAPID (RFC 8292) P-256 private key, PEM; empty: the key in ``vapid_key_file``."""
    vapid_key_file: Path = Path(".paht/vapid/private.pem")
    """Development VAPID key, generated on first start when ``vapid_private_key`` is empty."""
    vapid_subject: str = "mailto:paht-ops@localhost"
    """VAPID ``sub`` claim: a contact for the push services (mailto: or https:)."""
    push_ttl_seconds: int = Field(86_400, ge=0, le=2_419_200)
    """Web Push ``TTL``: how long a push service keeps a message for an offline device."""
    push_allow_http: bool = False
    """Accept ``http`` push endpoints (a local push service in development and tests)."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(1025, ge=1, le=65_535)
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    """none (local relay), starttls (submission port 587) or tls (implicit, port 465)."""
    smtp_username: str = ""
    smtp_password: str = Field("", repr=False)
    smtp_timeout_seconds: float = Field(15.0, gt=0)
    mail_from: str = "PAHT <no-reply@paht.localhost>"

    sla_url: str = "http://127.0.0.1:8082"
    """The SLA service, whose calendar tells when quiet hours end."""
    workspace_url: str = "http://127.0.0.1:8084"
    """Base URL of the agency workspace; pushes and emails link to reports there."""

    breaker_threshold: int = Field(5, ge=1)
    """Consecutive failed attempts after which an endpoint's circuit opens."""
    breaker_probe_seconds: float = Field(300.0, gt=0)
    """How long an open circuit waits before one probe attempt."""

    def secret_fields(self) -> dict[str, str]:
        """Secrets refused when they keep a development default in production."""
        return {
            "NOTIFY_ADMIN_TOKEN": self.admin_token,
            "NOTIFY_VAPID_PRIVATE_KEY": (self.vapid_private_key),
        }

    @model_validator(mode="after")
    def _no_private_targets_in_production(self) -> NotifySettings:
        if self.env == "production" and self.webhook_allow_private:
            raise ValueError(
                "NOTIFY_WEBHOOK_ALLOW_PRIVATE must be off in production (server-side request "
                "forgery); send through NOTIFY_WEBHOOK_PROXY_URL instead"
            )
        return self

    @model_validator(mode="after")
    def _check_delivery_timing(self) -> NotifySettings:
        if not self.retry_schedule_seconds or min(self.retry_schedule_seconds) <= 0:
            raise ValueError("retry_schedule_seconds needs at least one positive delay")
        if self.lease_seconds <= self.delivery_timeout_seconds:
            # a lease shorter than an attempt would let a second dispatcher send concurrently
            raise ValueError("lease_seconds must exceed delivery_timeout_seconds")
        if self.max_in_flight_per_subscription > self.max_in_flight:
            raise ValueError("max_in_flight_per_subscription must not exceed max_in_flight")
        return self
