"""HTTP admin API of upstream-app API keys: create, list, rotate with a grace period, revoke;
and of the agency directory: list, create or update (name, leader approval).

Mounted by ``intake.api.build_app`` under ``/v1/admin``; every route needs
``Authorization: Bearer <INTAKE_ADMIN_TOKEN>``. A plaintext key is answered once, when it is
made; the database keeps only its SHA-256.
"""

from __future__ import annotations

import hmac
import unicodedata
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
)

from intake import repository
from intake.auth import hash_key, new_api_key
from intake.settings import IntakeSettings
from paht_common.clock import to_local_iso, utcnow
from paht_common.db import Conn
from paht_common.http import DbConn
from paht_common.problems import Problem, problem_responses

Scope = Literal["reports:write", "reports:read", "reports:feedback"]
"""The scopes the intake routes check (``App.require``); ``reports:feedback`` lets the
submitting app rate and reopen its own reports as their reporter."""
MAX_GRACE_SECONDS = 30 * 86400
AppId = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]
NO_NUL = r"^[^\x00]*$"
Label = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
AgencyName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300, pattern=NO_CONTROL)
]
AgencyIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=100,
        pattern=r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$",
        description="the agency id routing and assignments use (no surrounding whitespace)",
    ),
]

_PROBLEM_TEXT = {
    401: "missing or wrong admin token (field Authorization)",
    404: "no such API key",
    409: "the key is revoked or expired",
    413: "body larger than the limit",
    422: "invalid field (the problem names it)",
}


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for RFC 9457 problem+json answers."""
    return problem_responses(_PROBLEM_TEXT, *statuses)


def _utc(value: datetime | None) -> datetime | None:
    """The instant in UTC (ValueError when it cannot be: year 1 or 9999 at an offset)."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("out of range") from exc


class ApiKeyCreate(BaseModel):
    """A new key for an upstream app."""

    model_config = ConfigDict(extra="forbid")

    app_id: AppId
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=10)]
    rate_per_minute: Annotated[int, Field(ge=1, le=1_000_000)]
    label: Label | None = None
    expires_at: AwareDatetime | None = Field(None, description="omitted or null: never expires")

    @field_validator("expires_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)


class ApiKeyRotate(BaseModel):
    """How long the old key keeps working after the new one is issued."""

    model_config = ConfigDict(extra="forbid")

    grace_seconds: Annotated[int, Field(ge=0, le=MAX_GRACE_SECONDS)] = 86400
    expires_at: AwareDatetime | None = Field(
        None, description="expiry of the new key; omitted or null: never expires"
    )

    @field_validator("expires_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)


class ApiKeyView(BaseModel):
    """A key as listed: never its hash or plaintext."""

    id: uuid.UUID
    app_id: str
    scopes: list[str]
    rate_per_minute: int
    label: str | None
    status: Literal["active", "expired", "revoked"]
    created_at: str
    expires_at: str | None
    revoked_at: str | None


class ApiKeyIssued(ApiKeyView):
    """A key just made: the plaintext ``api_key`` is shown this once."""

    api_key: str


class ApiKeyRotated(ApiKeyIssued):
    """The new key of a rotation, and the old key with its expiry."""

    replaces: ApiKeyView


class ApiKeyList(BaseModel):
    """Keys ordered by app, then age."""

    items: list[ApiKeyView]


class AgencyPut(BaseModel):
    """An agency of the directory as an admin sets it."""

    model_config = ConfigDict(extra="forbid")

    name: AgencyName | None = Field(
        None,
        description="display name (stored in NFC); required when the agency is new, "
        "omitted or null keeps the current one. A name set here is kept: report.routed "
        "events no longer rename the agency.",
    )
    requires_leader_approval: StrictBool = Field(
        description="responses of the agency's officers wait for its leader's approval "
        "(PENDING_APPROVAL); applies to reports assigned from now on"
    )

    @field_validator("name", mode="before")
    @classmethod
    def _nfc(cls, value: object) -> object:
        return unicodedata.normalize("NFC", value) if isinstance(value, str) else value


class AgencyView(BaseModel):
    """An agency of the directory."""

    id: str
    name: str
    name_source: Literal["routing", "admin"] = Field(
        description="who set the name: routing (learned from report.routed, which may rename "
        "the agency) or admin (set here, kept over routing's)"
    )
    requires_leader_approval: bool
    updated_at: str


class AgencyList(BaseModel):
    """The agency directory, ordered by id."""

    items: list[AgencyView]


def agency_view(row: dict[str, Any]) -> AgencyView:
    """The answered form of an agency row."""
    return AgencyView(
        id=row["id"],
        name=row["name"],
        name_source=row["name_source"],
        requires_leader_approval=row["requires_leader_approval"],
        updated_at=to_local_iso(row["updated_at"]),
    )


def key_view(row: dict[str, Any]) -> ApiKeyView:
    """The listed form of a key row."""
    return ApiKeyView(
        id=row["id"],
        app_id=row["app_id"],
        scopes=list(row["scopes"]),
        rate_per_minute=row["rate_per_minute"],
        label=row["label"],
        status=row["status"],
        created_at=to_local_iso(row["created_at"]),
        expires_at=to_local_iso(row["expires_at"]) if row["expires_at"] else None,
        revoked_at=to_local_iso(row["revoked_at"]) if row["revoked_at"] else None,
    )


def _future(value: datetime | None) -> datetime | None:
    if value is not None and value <= utcnow():
        raise Problem(
            422, "Invalid request", "expires_at: must be in the future", field="expires_at"
        )
    return value


async def issue_key(
    conn: Conn,
    *,
    app_id: str,
    scopes: list[str],
    rate_per_minute: int,
    label: str | None,
    expires_at: datetime | None,
) -> tuple[dict[str, Any], str]:
    """Store a fresh random key; its row and the plaintext (which is stored nowhere)."""
    key_id, key = uuid.uuid4(), new_api_key()
    await repository.insert_key(
        conn,
        key_id=key_id,
        app_id=app_id,
        key_hash=hash_key(key),
        scopes=scopes,
        rate_per_minute=rate_per_minute,
        label=label,
        expires_at=expires_at,
    )
    row = await repository.key_by_id(conn, key_id=key_id)
    assert row is not None
    return row, key


def admin_router(settings: IntakeSettings, on_keys_changed: Callable[[], None]) -> APIRouter:
    """Routes under /v1/admin; ``on_keys_changed`` runs after every committed change."""
    expected = settings.admin_token.encode()

    async def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if (
            not expected
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(token.strip().encode(), expected)
        ):
            raise Problem(
                401,
                "Unauthorized",
                "the key admin API needs 'Authorization: Bearer <admin token>'",
                field="Authorization",
                headers={"WWW-Authenticate": "Bearer"},
            )

    router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])

    @router.post(
        "/api-keys",
        status_code=201,
        response_model=ApiKeyIssued,
        responses=_problems(401, 413, 422),
    )
    async def create_api_key(body: ApiKeyCreate, conn: DbConn) -> ApiKeyIssued:
        """Make a key for an upstream app; its plaintext is in this answer only."""
        expires_at = _future(body.expires_at)
        row, key = await issue_key(
            conn,
            app_id=body.app_id,
            scopes=sorted(set(body.scopes)),
            rate_per_minute=body.rate_per_minute,
            label=body.label,
            expires_at=expires_at,
        )
        on_keys_changed()
        return ApiKeyIssued(**key_view(row).model_dump(), api_key=key)

    @router.get("/api-keys", response_model=ApiKeyList, responses=_problems(401, 422))
    async def list_api_keys(
        conn: DbConn,
        app_id: Annotated[str | None, Query(min_length=1, max_length=100, pattern=NO_NUL)] = None,
    ) -> ApiKeyList:
        """Keys of one app (or of every app) with their status; never a hash or plaintext."""
        rows = await repository.keys_of(conn, app_id=app_id)
        return ApiKeyList(items=[key_view(r) for r in rows])

    @router.post(
        "/api-keys/{key_id}/rotate",
        status_code=201,
        response_model=ApiKeyRotated,
        responses=_problems(401, 404, 409, 413, 422),
    )
    async def rotate_api_key(
        key_id: uuid.UUID,
        conn: DbConn,
        body: Annotated[ApiKeyRotate | None, Body()] = None,
    ) -> ApiKeyRotated:
        """A new key for the same app, scopes, rate and label; the old one expires after
        ``grace_seconds`` so the app can switch without downtime."""
        body = body or ApiKeyRotate()
        expires_at = _future(body.expires_at)
        async with conn.transaction():
            old = await repository.key_by_id(conn, key_id=key_id, for_update=True)
            if old is None:
                raise Problem(404, "Not found", f"no API key {key_id}", field="key_id")
            if old["status"] != "active":
                raise Problem(
                    409,
                    "Key not active",
                    f"API key {key_id} is {old['status']}; make a new key instead",
                    field="key_id",
                    key_status=old["status"],
                )
            row, key = await issue_key(
                conn,
                app_id=old["app_id"],
                scopes=list(old["scopes"]),
                rate_per_minute=old["rate_per_minute"],
                label=old["label"],
                expires_at=expires_at,
            )
            await repository.expire_key(conn, key_id=key_id, within_seconds=body.grace_seconds)
            replaced = await repository.key_by_id(conn, key_id=key_id)
            assert replaced is not None
        on_keys_changed()
        return ApiKeyRotated(**key_view(row).model_dump(), api_key=key, replaces=key_view(replaced))

    @router.delete(
        "/api-keys/{key_id}",
        status_code=204,
        response_class=Response,
        responses=_problems(401, 404, 422),
    )
    async def revoke_api_key(key_id: uuid.UUID, conn: DbConn) -> Response:
        """Revoke a key at once (revoking a revoked key changes nothing)."""
        if not await repository.revoke_key(conn, key_id=key_id):
            if await repository.key_by_id(conn, key_id=key_id) is None:
                raise Problem(404, "Not found", f"no API key {key_id}", field="key_id")
        on_keys_changed()
        return Response(status_code=204)

    @router.get("/agencies", response_model=AgencyList, responses=_problems(401, 422))
    async def list_agencies(conn: DbConn) -> AgencyList:
        """The agency directory: names (learned from routing or set here) and approval rules."""
        rows = await repository.agencies(conn)
        return AgencyList(items=[agency_view(r) for r in rows])

    @router.put(
        "/agencies/{agency_id}",
        response_model=AgencyView,
        responses=_problems(401, 413, 422),
    )
    async def put_agency(agency_id: AgencyIdPath, body: AgencyPut, conn: DbConn) -> AgencyView:
        """Create or update an agency (``name`` is required to create one).

        The flag is taken when the agency is assigned: a report assigned from now on takes
        the new ``requires_leader_approval``; reports the agency already holds keep theirs.
        """
        row = await repository.put_agency(
            conn,
            agency_id=agency_id,
            name=body.name,
            requires_leader_approval=body.requires_leader_approval,
        )
        if row is None:
            raise Problem(
                422,
                "Invalid request",
                f"name: required to create agency '{agency_id}', which is not known yet",
                field="name",
            )
        return agency_view(row)

    return router
