"""Settings of the notify service (env prefix NOTIFY_)."""

from __future__ import annotations

from pydantic import Field, model_validator

from paht_common.settings import BaseServiceSettings, env_setting


class NotifySettings(BaseServiceSettings):
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
    max_in_flight_per_subscription: int = Field(4, ge=1)
    """Concurrent sends to one endpoint, so a slow endpoint cannot take every slot."""
    shutdown_grace_seconds: float = Field(5.0, ge=0)
    webhook_allow_private: bool = True
    """Allow webhook URLs on loopback/private/link-local addresses (development only: SSRF)."""
    webhook_proxy_url: str | None = None
    """Egress proxy every webhook goes through (the SSRF control production should rely on)."""

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
