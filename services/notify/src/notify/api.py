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
from typing import Annotated, Any, Literal

import httpx
from fastapi import FastAPI, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    field_validator,
    model_validator,
)

from notify import handlers, repository
from notify.access import (
    Authenticator,
    Caller,
    CallerDep,
    check_webhook_owner,
    forbidden,
    listing_filter,
    may_read_subscription,
    may_remove_subscription,
    may_retry,
    problems,
)
from notify.api_people import SubscriptionOut, people_router
from notify.channels.base import Channel
from notify.channels.egress import TargetRefused, check_target, guarded_client
from notify.channels.email import EmailChannel, SmtpConfig
from notify.channels.webhook import WebhookChannel
from notify.channels.webpush import WebPushChannel
from notify.dispatcher import Dispatcher
from notify.domain import DeliveryStatus, webhook_secret_bytes
from notify.settings import NotifySettings
from notify.vapid import vapid_signer
from notify.working_time import SlaCalendar
from paht_common.clock import SystemClock
from paht_common.db import Conn
from paht_common.docs import install_docs
from paht_common.events import Envelope, Payload
from paht_common.http import DbConn, ops_router
from paht_common.problems import Problem, install_problem_handlers
from paht_common.runtime import Runtime
from paht_common.staff_auth import AuthError, staff_verifier
from paht_common.topics import REPORT_EVENTS, ROUTING_EVENTS, SLA_EVENTS

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
SERVICE = "notify"


class SubscriptionIn(BaseModel):
    """A webhook endpoint of an agency (or, with the admin token, of an upstream app); the
    secret signs every request to it."""

    model_config = ConfigDict(extra="forbid")

    agency_id: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )
    app_id: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )
    channel: Literal["webhook"]
    url: HttpUrl
    secret: str = Field(
        repr=False,
        pattern=r"^whsec_",
        max_length=200,
        description="whsec_ + base64 of 24 to 64 random bytes",
    )

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

    @model_validator(mode="after")
    def _one_owner(self) -> SubscriptionIn:
        if (self.agency_id is None) == (self.app_id is None):
            raise ValueError("give exactly one of agency_id and app_id")
        return self


class DeliveryOut(BaseModel):
    """One notification to one subscription; ``id`` is the webhook-id receivers see."""

    id: uuid.UUID
    subscription_id: uuid.UUID
    agency_id: str | None
    recipient: str | None
    channel: str
    event_type: str
    report_id: uuid.UUID
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: AwareDatetime | None
    held_until: AwareDatetime | None
    created_at: AwareDatetime
    delivered_at: AwareDatetime | None


AgencyQuery = Annotated[str | None, Query(min_length=1, max_length=64)]


def build_app(settings: NotifySettings | None = None) -> FastAPI:
    """The FastAPI app whose lifespan runs the runtime, the consumer and the dispatcher."""
    settings = settings or NotifySettings()
    clock = SystemClock()
    verifier = staff_verifier(settings)
    authenticator = Authenticator(verifier, settings.admin_token)
    signer = vapid_signer(settings, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # httpx logs every request URL at INFO; subscribers' URLs may carry tokens
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
        # the client outlives the runtime, so sends still draining at shutdown can finish
        async with (
            guarded_client(settings) as client,
            httpx.AsyncClient(trust_env=False) as internal,
            Runtime(service=SERVICE, settings=settings, migrations=MIGRATIONS) as rt,
        ):
            await verifier.start()
            timeout = settings.delivery_timeout_seconds
            channels: list[Channel] = [
                WebhookChannel(
                    client,
                    timeout=timeout,
                    allow_private=settings.webhook_allow_private,
                    allow_http=settings.webhook_allow_http,
                    clock=clock,
                ),
                WebPushChannel(
                    client,
                    signer,
                    clock=clock,
                    timeout=timeout,
                    allow_http=settings.push_allow_http and settings.env != "production",
                ),
                EmailChannel(SmtpConfig.from_settings(settings), clock=clock),
            ]
            dispatcher = Dispatcher.from_settings(rt.pool, {c.name: c for c in channels}, settings)
            rt.spawn("dispatcher", dispatcher.run)
            ctx = handlers.FanOutContext(
                workspace_url=settings.workspace_url,
                push_ttl_seconds=settings.push_ttl_seconds,
                working_time=SlaCalendar(internal, settings.sla_url),
            )

            async def handle(conn: Conn, envelope: Envelope[Payload]) -> None:
                await handlers.handle_event(conn, envelope, ctx)

            await rt.start_consumer(
                settings.consumer_group, (REPORT_EVENTS, ROUTING_EVENTS, SLA_EVENTS), handle
            )
            app.state.runtime = rt
            app.include_router(ops_router({**rt.checks(), "staff_keys": verifier.ready}))
            try:
                yield
            finally:
                await verifier.stop()

    app = FastAPI(
        title="PAHT notify",
        version="1.1.0",
        description=(
            "Alerts to agency staff (Web Push, email) and signed Standard Webhooks to agencies "
            "and upstream apps. Every route but the VAPID key needs `Authorization: Bearer` "
            "with a staff JWT or the admin token."
        ),
        lifespan=lifespan,
    )
    app.state.authenticator = authenticator
    install_problem_handlers(app)
    install_docs(app, "notify")
    install_auth_errors(app)
    app.include_router(people_router(settings, lambda: signer.application_server_key))

    @app.post(
        "/v1/subscriptions",
        status_code=status.HTTP_201_CREATED,
        tags=["subscriptions"],
        responses=problems(401, 403, 422),
    )
    async def create_subscription(
        body: SubscriptionIn, conn: DbConn, response: Response, who: CallerDep
    ) -> SubscriptionOut:
        """Register a webhook for an agency (its leader, the coordinator) or an upstream app
        (the admin token)."""
        check_webhook_owner(who, agency_id=body.agency_id, app_id=body.app_id)
        url = str(body.url)
        await _refuse_private_destination(url, settings)
        record = await handlers.create_subscription(
            conn,
            agency_id=body.agency_id,
            app_id=body.app_id,
            url=url,
            secret=body.secret,
            created_by=who.subject,
        )
        response.headers["Location"] = f"/v1/subscriptions/{record['id']}"
        return SubscriptionOut.of(record)

    @app.get("/v1/subscriptions", tags=["subscriptions"], responses=problems(401, 403, 422))
    async def list_subscriptions(
        conn: DbConn,
        who: CallerDep,
        agency_id: AgencyQuery = None,
        user_id: AgencyQuery = None,
        app_id: AgencyQuery = None,
    ) -> list[SubscriptionOut]:
        """Subscriptions the caller may see (active or not), oldest first: officers their
        own, leaders their agency's, province-wide roles any (filtered by the parameters)."""
        agency, user, app_ = listing_filter(
            who, agency_id=agency_id, user_id=user_id, app_id=app_id
        )
        records = await repository.subscriptions_matching(
            conn, agency_id=agency, user_id=user, app_id=app_
        )
        return [SubscriptionOut.of(r) for r in records]

    async def visible_subscription(
        conn: DbConn, subscription_id: uuid.UUID, who: Caller
    ) -> dict[str, Any]:
        record = await repository.get_subscription(conn, subscription_id=subscription_id)
        if record is None:
            raise Problem(404, "Not found", f"no subscription {subscription_id}", field="id")
        if not may_read_subscription(who, record):
            raise forbidden("this subscription belongs to another agency or person")
        return record

    @app.get(
        "/v1/subscriptions/{subscription_id}",
        tags=["subscriptions"],
        responses=problems(401, 403, 404, 422),
    )
    async def get_subscription(
        subscription_id: uuid.UUID, conn: DbConn, who: CallerDep
    ) -> SubscriptionOut:
        """One subscription."""
        return SubscriptionOut.of(await visible_subscription(conn, subscription_id, who))

    @app.delete(
        "/v1/subscriptions/{subscription_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["subscriptions"],
        responses=problems(401, 403, 404, 422),
    )
    async def delete_subscription(subscription_id: uuid.UUID, conn: DbConn, who: CallerDep) -> None:
        """Deactivate a subscription; its pending deliveries are cancelled."""
        record = await visible_subscription(conn, subscription_id, who)
        if not may_remove_subscription(who, record):
            raise forbidden("only its owner, the agency's leader or the coordinator removes it")
        await handlers.deactivate_subscription(
            conn, subscription_id=subscription_id, reason=f"deactivated by {who.subject}"
        )

    @app.get("/v1/deliveries", tags=["deliveries"], responses=problems(401, 403, 422))
    async def list_deliveries(
        report_id: uuid.UUID, conn: DbConn, who: CallerDep
    ) -> list[DeliveryOut]:
        """Deliveries about a report with their status and last attempt: all of them for
        province-wide roles, the agency's and the caller's own for agency staff."""
        if who.reads_any:
            records = await repository.deliveries_of_report(conn, report_id=report_id)
        else:
            member = who.person()
            records = await repository.deliveries_of_report(
                conn,
                report_id=report_id,
                agency_id=member.agency_id or "",
                recipient=member.subject,
            )
        return [DeliveryOut.model_validate(r) for r in records]

    @app.post(
        "/v1/deliveries/{delivery_id}/retry",
        tags=["deliveries"],
        responses=problems(401, 403, 404, 409, 422),
    )
    async def retry_delivery(delivery_id: uuid.UUID, conn: DbConn, who: CallerDep) -> DeliveryOut:
        """Send a failed delivery again with the same id (webhook-id), on a fresh schedule."""
        record = await repository.get_delivery(conn, delivery_id=delivery_id)
        if record is None:
            raise Problem(404, "Not found", f"no delivery {delivery_id}", field="delivery_id")
        if not may_retry(who, record):
            raise forbidden("only the agency's leader or the coordinator retries a delivery")
        retried = await handlers.retry_delivery(conn, delivery_id=delivery_id, by=who.subject)
        if retried is None:
            raise Problem(
                409,
                "Conflict",
                f"delivery {delivery_id} is {record['status']}, or its subscription is "
                "no longer active: only a failed delivery on an active subscription is retried",
                field="delivery_id",
            )
        return DeliveryOut.model_validate(retried)

    return app


def install_auth_errors(app: FastAPI) -> None:
    """Answer AuthError as problem+json (401 with a Bearer challenge, or 403)."""

    async def on_auth_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AuthError)
        problem = Problem(
            exc.status,
            "Unauthorized" if exc.status == 401 else "Forbidden",
            exc.detail,
            field=exc.field,
            headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None,
        )
        return problem.response()

    app.add_exception_handler(AuthError, on_auth_error)


async def _refuse_private_destination(url: str, settings: NotifySettings) -> None:
    """422 naming ``url`` when the target policy (``channels.egress``) refuses it."""
    try:
        await check_target(
            url,
            allow_http=settings.webhook_allow_http,
            allow_private=settings.webhook_allow_private,
        )
    except TargetRefused as exc:
        raise Problem(
            422,
            "Invalid request",
            f"url: {exc.reason}",
            errors=[{"field": "url", "message": exc.reason, "type": "private_destination"}],
        ) from None
