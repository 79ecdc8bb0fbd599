"""Staff members' own channels: Web Push subscriptions, email, preferences and quiet hours."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from notify import directory, handlers
from notify.access import CallerDep, problems
from notify.alerts import PERSONAL_KINDS
from notify.channels.egress import TargetRefused, check_target
from notify.domain import validate_email_address, validate_push_keys
from notify.settings import NotifySettings
from paht_common.http import DbConn
from paht_common.problems import Problem

PERSONAL_CHANNELS = ("web_push", "email")
BASE64URL = r"^[A-Za-z0-9_-]+={0,2}$"


class PushKeys(BaseModel):
    """``keys`` of a browser's ``PushSubscription.toJSON()``."""

    p256dh: str = Field(min_length=1, max_length=200, pattern=BASE64URL)
    auth: str = Field(min_length=1, max_length=100, pattern=BASE64URL)


class PushSubscriptionIn(BaseModel):
    """Exactly what a browser's ``PushSubscription.toJSON()`` gives."""

    model_config = ConfigDict(extra="ignore")

    endpoint: str = Field(min_length=1, max_length=2048)
    expirationTime: int | None = None  # noqa: N815 (the browser's name)
    keys: PushKeys


class EmailSubscriptionIn(BaseModel):
    """Where email alerts go; the token's ``email`` claim when left out."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=254)


class SubscriptionOut(BaseModel):
    """A subscription as the API shows it: never with its secret or push keys."""

    id: uuid.UUID
    owner_kind: str
    agency_id: str | None
    user_id: str | None
    app_id: str | None
    channel: str
    url: str | None
    email: str | None
    active: bool
    created_at: AwareDatetime
    consecutive_failures: int = 0
    circuit_open_until: AwareDatetime | None = None

    @classmethod
    def of(cls, record: dict[str, Any]) -> SubscriptionOut:
        """The view of a stored subscription."""
        return cls.model_validate(record)


class ChannelChoice(BaseModel):
    """Whether one kind of alert comes by push and by email."""

    model_config = ConfigDict(extra="forbid")

    web_push: bool = True
    email: bool = True


class PreferencesIn(BaseModel):
    """Per event kind, which channels; quiet hours hold non-urgent alerts outside office hours."""

    model_config = ConfigDict(extra="forbid")

    quiet_hours: bool = False
    kinds: dict[str, ChannelChoice] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"enum": list(PERSONAL_KINDS)}}
    )

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: dict[str, ChannelChoice]) -> dict[str, ChannelChoice]:
        unknown = sorted(set(value) - set(PERSONAL_KINDS))
        if unknown:
            raise ValueError(f"unknown event kinds {unknown}; known: {', '.join(PERSONAL_KINDS)}")
        return value


class PreferencesOut(BaseModel):
    """Every event kind with its channels (defaults filled in) and quiet hours."""

    quiet_hours: bool
    kinds: dict[str, ChannelChoice]


class VapidKeyOut(BaseModel):
    """The application server key for ``PushManager.subscribe({applicationServerKey})``."""

    public_key: str


def invalid(field: str, message: str) -> Problem:
    """422 problem naming one field."""
    return Problem(
        422,
        "Invalid request",
        f"{field}: {message}",
        errors=[{"field": field, "message": message, "type": "value_error"}],
    )


def people_router(settings: NotifySettings, public_key: Callable[[], str]) -> APIRouter:
    """Routes of a staff member's own channels and preferences."""
    router = APIRouter(tags=["people"])

    @router.get("/v1/push/vapid-public-key")
    async def get_vapid_public_key() -> VapidKeyOut:
        """The VAPID application server key browsers subscribe with (no token needed)."""
        return VapidKeyOut(public_key=public_key())

    @router.post(
        "/v1/push-subscriptions",
        status_code=status.HTTP_201_CREATED,
        responses=problems(401, 403, 422),
    )
    async def create_push_subscription(
        body: PushSubscriptionIn, conn: DbConn, caller: CallerDep, response: Response
    ) -> SubscriptionOut:
        """Subscribe the caller's browser to Web Push (200 when it already is)."""
        member = caller.person()
        try:
            validate_push_keys(body.keys.p256dh, body.keys.auth)
        except ValueError as exc:
            field = "keys.auth" if "keys.auth" in str(exc) else "keys.p256dh"
            raise invalid(field, str(exc)) from None
        allow_http = settings.push_allow_http and settings.env != "production"
        try:
            await check_target(
                body.endpoint,
                allow_http=allow_http,
                allow_private=settings.webhook_allow_private,
            )
        except TargetRefused as exc:
            raise invalid("endpoint", str(exc)) from None
        record, created = await handlers.subscribe_push(
            conn,
            member=member,
            endpoint=body.endpoint,
            p256dh=body.keys.p256dh,
            auth=body.keys.auth,
        )
        if not created:
            response.status_code = status.HTTP_200_OK
        response.headers["Location"] = f"/v1/subscriptions/{record['id']}"
        return SubscriptionOut.of(record)

    @router.post(
        "/v1/email-subscriptions",
        status_code=status.HTTP_201_CREATED,
        responses=problems(401, 403, 422),
    )
    async def create_email_subscription(
        body: EmailSubscriptionIn, conn: DbConn, caller: CallerDep, response: Response
    ) -> SubscriptionOut:
        """Send the caller's alerts by email too (200 when that address already gets them)."""
        member = caller.person()
        address = body.email if body.email is not None else member.email
        if address is None:
            raise invalid("email", "give an address: your token carries no email claim")
        try:
            address = validate_email_address(address)
        except ValueError as exc:
            raise invalid("email", str(exc)) from None
        record, created = await handlers.subscribe_email(conn, member=member, address=address)
        if not created:
            response.status_code = status.HTTP_200_OK
        response.headers["Location"] = f"/v1/subscriptions/{record['id']}"
        return SubscriptionOut.of(record)

    @router.get("/v1/preferences", responses=problems(401, 403))
    async def get_preferences(conn: DbConn, caller: CallerDep) -> PreferencesOut:
        """The caller's alert preferences, every kind listed."""
        member = caller.person()
        quiet, choices = await directory.preferences(conn, user_id=member.subject)
        return _preferences_view(quiet, choices)

    @router.put("/v1/preferences", responses=problems(401, 403, 422))
    async def put_preferences(
        body: PreferencesIn, conn: DbConn, caller: CallerDep
    ) -> PreferencesOut:
        """Replace the caller's preferences (kinds left out get both channels)."""
        member = caller.person()
        choices = {
            (kind, channel): getattr(choice, channel)
            for kind, choice in body.kinds.items()
            for channel in PERSONAL_CHANNELS
        }
        async with conn.transaction():
            await directory.remember_staff(conn, member)
            await directory.replace_preferences(
                conn, user_id=member.subject, quiet_hours=body.quiet_hours, choices=choices
            )
        return _preferences_view(body.quiet_hours, choices)

    return router


def _preferences_view(quiet: bool, choices: dict[tuple[str, str], bool]) -> PreferencesOut:
    return PreferencesOut(
        quiet_hours=quiet,
        kinds={
            kind: ChannelChoice(
                web_push=choices.get((kind, "web_push"), True),
                email=choices.get((kind, "email"), True),
            )
            for kind in PERSONAL_KINDS
        },
    )
