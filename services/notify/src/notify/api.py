"""HTTP API and composition root of the notify service.

Run: ``python -m notify`` (serves on NOTIFY_HTTP_PORT, consumes SLA events and runs the
delivery dispatcher in-process).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

import httpx
from fastapi import FastAPI, HTTPException, Query, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl, field_validator

from notify import handlers, repository
from notify.channels.webhook import WebhookChannel, private_destination
from notify.dispatcher import Dispatcher
from notify.domain import DeliveryStatus, webhook_secret_bytes
from notify.settings import NotifySettings
from paht_common.clock import SystemClock
from paht_common.db import Conn
from paht_common.events import Envelope, Payload
from paht_common.http import DbConn, ops_router
from paht_common.problems import Problem, install_problem_handlers
from paht_common.runtime import Runtime
from paht_common.topics import SLA_EVENTS

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
SERVICE = "notify"


class SubscriptionIn(BaseModel):
    """A webhook endpoint an agency registers; the secret signs every request to it."""

    model_config = ConfigDict(extra="forbid")

    agency_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    channel: Literal["webhook"]
    url: HttpUrl
    secret: str = Field(repr=False, description="whsec_ + base64 of 24 to 64 random bytes")

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, value: HttpUrl) -> HttpUrl:
        if value.username or value.password:
            raise ValueError("url must not embed credentials")
        return value

    @field_validator("secret")
    @classmethod
    def _standard_webhooks_secret(cls, value: str) -> str:
        webhook_secret_bytes(value)
        return value


class SubscriptionOut(BaseModel):
    """A subscription as the API shows it: never with its secret."""

    id: uuid.UUID
    agency_id: str
    channel: str
    url: str | None
    active: bool
    created_at: AwareDatetime


class DeliveryOut(BaseModel):
    """One notification to one subscription; ``id`` is the webhook-id receivers see."""

    id: uuid.UUID
    subscription_id: uuid.UUID
    agency_id: str
    channel: str
    event_type: str
    report_id: uuid.UUID
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: AwareDatetime | None
    created_at: AwareDatetime
    delivered_at: AwareDatetime | None


def build_app(settings: NotifySettings | None = None) -> FastAPI:
    """The FastAPI app whose lifespan runs the runtime, the consumer and the dispatcher."""
    settings = settings or NotifySettings()
    clock = SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.webhook_allow_private and settings.env == "production":
            logger.warning("NOTIFY_WEBHOOK_ALLOW_PRIVATE is on in production: SSRF exposure")
        # httpx logs every request URL at INFO; subscribers' URLs may carry tokens
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
        # the client outlives the runtime, so sends still draining at shutdown can finish
        async with (
            httpx.AsyncClient(
                timeout=httpx.Timeout(settings.delivery_timeout_seconds),
                limits=httpx.Limits(max_connections=settings.max_in_flight),
                follow_redirects=False,
                trust_env=False,
                proxy=settings.webhook_proxy_url,
            ) as client,
            Runtime(service=SERVICE, settings=settings, migrations=MIGRATIONS) as rt,
        ):
            channel = WebhookChannel(
                client,
                timeout=settings.delivery_timeout_seconds,
                allow_private=settings.webhook_allow_private,
                clock=clock,
            )
            dispatcher = Dispatcher.from_settings(rt.pool, {channel.name: channel}, settings)
            rt.spawn("dispatcher", dispatcher.run)

            async def handle(conn: Conn, envelope: Envelope[Payload]) -> None:
                await handlers.handle_sla_event(conn, envelope)

            await rt.start_consumer(settings.consumer_group, (SLA_EVENTS,), handle)
            app.state.runtime = rt
            app.include_router(ops_router(rt.checks()))
            yield

    app = FastAPI(title="PAHT notify", version="1.0.0", lifespan=lifespan)
    install_problem_handlers(app)

    @app.post(
        "/v1/subscriptions",
        status_code=status.HTTP_201_CREATED,
        tags=["subscriptions"],
    )
    async def create_subscription(
        body: SubscriptionIn, conn: DbConn, response: Response
    ) -> SubscriptionOut:
        """Register a webhook endpoint for an agency's report notifications."""
        url = str(body.url)
        if not settings.webhook_allow_private:
            await _refuse_private_destination(url)
        record = await handlers.create_subscription(
            conn, agency_id=body.agency_id, channel=body.channel, url=url, secret=body.secret
        )
        response.headers["Location"] = f"/v1/subscriptions/{record['id']}"
        return SubscriptionOut.model_validate(record)

    @app.get("/v1/subscriptions", tags=["subscriptions"])
    async def list_subscriptions(
        agency_id: Annotated[str, Query(min_length=1, max_length=64)], conn: DbConn
    ) -> list[SubscriptionOut]:
        """Every subscription of an agency, active or not, oldest first."""
        records = await repository.subscriptions_of(conn, agency_id=agency_id)
        return [SubscriptionOut.model_validate(r) for r in records]

    @app.get("/v1/subscriptions/{subscription_id}", tags=["subscriptions"])
    async def get_subscription(subscription_id: uuid.UUID, conn: DbConn) -> SubscriptionOut:
        """One subscription."""
        record = await repository.get_subscription(conn, subscription_id=subscription_id)
        if record is None:
            raise HTTPException(404, f"no subscription {subscription_id}")
        return SubscriptionOut.model_validate(record)

    @app.delete(
        "/v1/subscriptions/{subscription_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["subscriptions"],
    )
    async def delete_subscription(subscription_id: uuid.UUID, conn: DbConn) -> None:
        """Deactivate a subscription; its pending deliveries are cancelled."""
        found = await handlers.deactivate_subscription(
            conn, subscription_id=subscription_id, reason="deactivated through the API"
        )
        if not found:
            raise HTTPException(404, f"no subscription {subscription_id}")

    @app.get("/v1/deliveries", tags=["deliveries"])
    async def list_deliveries(report_id: uuid.UUID, conn: DbConn) -> list[DeliveryOut]:
        """Every delivery about a report, with its status and last attempt."""
        records = await repository.deliveries_of_report(conn, report_id=report_id)
        return [DeliveryOut.model_validate(r) for r in records]

    return app


async def _refuse_private_destination(url: str) -> None:
    try:
        reason = await private_destination(url)
    except (OSError, TimeoutError):
        reason = "host cannot be resolved"
    if reason is not None:
        raise Problem(
            422,
            "Invalid request",
            f"url: {reason}",
            errors=[{"field": "url", "message": reason, "type": "private_destination"}],
        )
