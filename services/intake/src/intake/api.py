"""HTTP API and composition root of the intake service.

Run: ``python -m intake`` (serves on INTAKE_HTTP_PORT). Upstream apps authenticate with
``X-API-Key``; staff with ``Authorization: Bearer <JWT>``.
"""

import gc
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import (
    Body,
    Depends,
    FastAPI,
    File,
    Header,
    Query,
    Request,
    Response,
    UploadFile,
)
from fastapi import (
    Path as PathParam,
)
from fastapi.responses import FileResponse, JSONResponse
from pydantic import AwareDatetime, StringConstraints, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from intake import media, repository
from intake.admin import admin_router
from intake.auth import ApiKeyCache, App, AuthError, JwtVerifier, RateLimiter, Staff
from intake.domain import (
    ACTION_ADAPTER,
    STATE_LABELS_VI,
    Action,
    Forbidden,
    IllegalTransition,
    Role,
    RuleViolation,
    State,
    allowed_actions,
    fold_diacritics,
)
from intake.handlers import (
    IdempotencyConflict,
    InputError,
    IntakeContext,
    apply_action,
    handle_external_event,
    snapshot_of,
    submit_report,
)
from intake.media import multipart_form
from intake.metrics import HTTP_REQUESTS, HTTP_SECONDS
from intake.open311 import open311_router
from intake.reference import province_communes, staff_verifier
from intake.schemas import Accepted, ReportIn
from intake.seed import seed_leader_approval
from intake.settings import IntakeSettings
from paht_common.clock import SystemClock, to_local_iso
from paht_common.db import Conn
from paht_common.events import Envelope, Payload
from paht_common.http import DbConn, ops_router
from paht_common.paging import decode_cursor, encode_cursor
from paht_common.problems import (
    Problem,
    install_problem_handlers,
    problem_response,
    problem_responses,
)
from paht_common.runtime import Runtime
from paht_common.topics import ROUTING_EVENTS, SLA_EVENTS

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
PERSONAL_DATA_FLAGS = frozenset({"phone_number", "id_number", "email"})
CONSUMER = "intake"
NO_NUL = r"^[^\x00]*$"
QueryText = Annotated[str, StringConstraints(max_length=100, pattern=NO_NUL)]
Sha256 = Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$")]
BINARY = {"schema": {"type": "string", "format": "binary"}}
MEDIA_CONTENT = {t: BINARY for t in sorted(media.SUPPORTED_TYPES)}
REPORT_HEADERS: list[dict[str, Any]] = [
    {
        "name": "X-API-Key",
        "in": "header",
        "required": True,
        "description": "the upstream app's API key (scope reports:write)",
        "schema": {"type": "string"},
    },
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "a retry with the same key returns the original report",
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    },
]
FORM_PART_BYTES = 1_000_000
"""Largest non-file part of a multipart submission (the report JSON)."""
REPORT_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ReportIn"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["report"],
                "properties": {
                    "report": {
                        "type": "string",
                        "description": "the report as JSON, exactly the application/json body",
                    },
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "photos or videos: JPEG, PNG, WebP, MP4, QuickTime",
                    },
                },
            },
            "encoding": {"report": {"contentType": "application/json"}},
        },
    },
}


_PROBLEM_TEXT = {
    400: "malformed parameter",
    401: "missing or invalid credentials",
    403: "the credentials do not allow this",
    404: "no such report (or not visible to the caller)",
    409: "conflicts with the current state",
    413: "body larger than the limit",
    415: "unsupported media type (the problem names the field)",
    422: "invalid field (the problem names it)",
    429: "rate limit exceeded; see Retry-After",
}


def problems(*statuses: int, **texts: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for RFC 9457 problem+json answers (``texts`` keyed ``s409``)."""
    return problem_responses(_PROBLEM_TEXT, *statuses, **texts)


def iso(value: datetime | None) -> str | None:
    """+07:00 rendering of an optional instant."""
    return to_local_iso(value) if value is not None else None


def media_view(row: dict[str, Any]) -> dict[str, Any]:
    """A stored file as listed to staff and answered to an upload."""
    thumb = row["thumbnail_sha256"]
    return {
        "sha256": row["sha256"],
        "content_type": row["content_type"],
        "size": row["size"],
        "url": f"/v1/media/{row['sha256']}",
        "thumbnail_url": f"/v1/media/{row['sha256']}/thumbnail" if thumb else None,
    }


def report_view(
    report: dict[str, Any],
    *,
    role: Role | None,
    reporter: dict[str, Any] | None = None,
    media_rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A report as the caller may see it: public callers get published content only."""
    state = State(report["state"])
    view: dict[str, Any] = {
        "id": str(report["id"]),
        "number": report["number"],
        "category": report["category"],
        "status": state.value,
        "status_label": STATE_LABELS_VI[state],
        "location": {
            "commune_code": report["commune_code"],
            "lat": report["lat"],
            "lon": report["lon"],
            "address": report["address"],
        },
        "channel": report["channel"],
        "urgency": report["urgency"],
        "agency": (
            {"id": report["agency_id"], "name": report["agency_name"]}
            if report["agency_id"]
            else None
        ),
        "deadlines": {
            "screening_due_at": iso(report["screening_due_at"]),
            "acknowledgement_due_at": iso(report["acknowledgement_due_at"]),
            "resolution_due_at": iso(report["resolution_due_at"]),
        },
        "overdue": report["overdue"],
        "submitted_at": iso(report["submitted_at"]),
        "updated_at": iso(report["updated_at"]),
    }
    published = state in (State.PUBLISHED, State.RATED, State.CLOSED)
    if role is None:
        # the public never sees text that may carry personal data or a rejected matter
        shown = (
            report["public"]
            and state is not State.REJECTED
            and not set(report["flags"]) & PERSONAL_DATA_FLAGS
        )
        view["description"] = report["description"] if shown else None
        view["response"] = report["response_text"] if published and report["public"] else None
        return view
    view.update(
        {
            "description": report["description"],
            "response": report["response_text"],
            "media_urls": list(report["media_urls"]),
            "flags": list(report["flags"]),
            "possible_duplicates": [str(d) for d in report["possible_duplicates"]],
            "duplicate_of": str(report["duplicate_of"]) if report["duplicate_of"] else None,
            "rating": report["rating"],
            "reopen_count": report["reopen_count"],
            "extension_count": report["extension_count"],
            "waiting_for_reporter": report["waiting_for_reporter"],
            "client_report_id": report["client_report_id"],
            "source_app": report["source_app"],
        }
    )
    if media_rows is not None:
        view["media"] = [media_view(m) for m in media_rows]
    if role is Role.COORDINATOR and reporter is not None:
        view["reporter"] = reporter
    return view


def _accepted(report: dict[str, Any]) -> dict[str, Any]:
    """The ``Accepted`` answer as a plain dict (the route returns it without re-validation)."""
    state = State(report["state"])
    rid = str(report["id"])
    return {
        "id": rid,
        "number": report["number"],
        "status": state.value,
        "status_label": STATE_LABELS_VI[state],
        "submitted_at": to_local_iso(report["submitted_at"]),
        "links": {"self": f"/v1/reports/{rid}", "timeline": f"/v1/reports/{rid}/timeline"},
    }


def _encode_cursor(report: dict[str, Any]) -> str:
    return encode_cursor(report["submitted_at"], str(report["id"]))


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    instant, (rid,) = decode_cursor(cursor, keys=1)
    try:
        return instant, uuid.UUID(rid)
    except ValueError as exc:
        raise Problem(
            400, "Invalid cursor", "cursor is not one this API issued", field="cursor"
        ) from exc


class RequestLimits:
    """Pure ASGI middleware: body size limits (413) and the HTTP RED metrics.

    A declared Content-Length over the limit is refused before the app runs; a chunked body
    is counted as the app reads it, and the read fails with 413 once it passes the limit.
    """

    def __init__(self, app: ASGIApp, *, settings: IntakeSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        limit = self.settings.max_body_bytes
        length: str | None = None
        multipart = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value.decode("latin-1")
            elif name == b"content-type":
                multipart = value[:19].lower() == b"multipart/form-data"
        if multipart and _takes_media(scope["path"]):
            limit = self.settings.max_multipart_bytes
        status = 500

        async def send_and_observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        if length is not None and (not length.isdigit() or int(length) > limit):
            await _too_large(limit).response()(scope, receive, send_and_observe)
        else:
            await self.app(scope, receive_within_limit, send_and_observe)
        # the router records the matched route in the scope; its template keeps labels few
        route = getattr(scope.get("route"), "path", "unmatched")
        method = scope["method"]
        HTTP_REQUESTS.labels(method, route, str(status)).inc()
        HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)


def _too_large(limit: int) -> Problem:
    return Problem(413, "Payload too large", f"the body may be at most {limit} bytes", field="body")


def _takes_media(path: str) -> bool:
    """Whether the path accepts multipart media: POST /v1/reports, its /media upload and
    the Open311 POST requests."""
    parts = path.strip("/").split("/")
    return (
        parts == ["v1", "reports"]
        or (len(parts) == 4 and parts[:2] == ["v1", "reports"] and parts[3] == "media")
        or parts in (["open311", "v2", "requests.json"], ["open311", "v2", "requests.xml"])
    )


def _utc(value: datetime, *, field: str) -> datetime:
    """The instant in UTC; 422 when it cannot be (year 1 or 9999 at an offset)."""
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise Problem(422, "Invalid request", f"{field}: out of range", field=field) from exc


def _nul_field(value: object, path: str = "") -> str | None:
    """Path of the first string containing NUL (PostgreSQL text refuses it)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        items: list[tuple[str, object]] = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        return None
    for key, item in items:
        found = _nul_field(item, f"{path}.{key}" if path else key)
        if found is not None:
            return found
    return None


def build_app(settings: IntakeSettings | None = None) -> FastAPI:
    """The FastAPI app whose lifespan opens the runtime and the event consumer."""
    settings = settings or IntakeSettings()
    clock = SystemClock()
    ctx = IntakeContext(settings=settings, clock=clock, communes=province_communes(settings))
    verifier: JwtVerifier = staff_verifier(settings)
    limiter = RateLimiter()

    async def load_key(key_hash: bytes) -> App | None:
        async with ctx.database().acquire() as conn:
            row = await repository.key_by_hash(conn, key_hash=key_hash)
        if row is None:
            return None
        return App(
            key_id=row["id"],
            app_id=row["app_id"],
            scopes=frozenset(row["scopes"]),
            rate_per_minute=row["rate_per_minute"],
            expires_at=row["expires_at"],
        )

    keys = ApiKeyCache(settings.api_key_cache_seconds, load_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Runtime(service="intake", settings=settings, migrations=MIGRATIONS) as rt:

            async def handle(conn: Conn, envelope: Envelope[Payload]) -> None:
                await handle_external_event(conn, envelope, ctx=ctx)

            async with rt.pool.acquire() as conn, conn.transaction():
                await seed_leader_approval(conn, settings)  # the setting applies at start
            await keys.listen(rt.pool)
            writer = ctx.bind(rt.pool)
            for index in range(settings.submit_writers):
                rt.spawn(f"submit-writer-{index}", writer.run)
            await rt.start_consumer(CONSUMER, (ROUTING_EVENTS, SLA_EVENTS), handle)
            app.state.runtime = rt
            await verifier.start()
            app.include_router(ops_router({**rt.checks(), "staff_keys": verifier.ready}))
            # Everything built so far lives as long as the process: keep it out of the
            # collector's scans (shorter full collections, fewer latency spikes).
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                await verifier.stop()
                await keys.stop()

    app = FastAPI(
        title="PAHT intake",
        version="1.0.0",
        description="Field reports from upstream apps; staff actions; Open311 GeoReport v2.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)

    @app.exception_handler(AuthError)
    async def on_auth(_: Request, exc: AuthError) -> JSONResponse:
        title = "Unauthorized" if exc.status == 401 else "Forbidden"
        return problem_response(exc.status, title, exc.detail, field=exc.field)

    @app.exception_handler(media.UploadError)
    async def on_upload(_: Request, exc: media.UploadError) -> JSONResponse:
        titles = {413: "File too large", 415: "Unsupported media type", 422: "Invalid files"}
        return problem_response(
            exc.status, titles.get(exc.status, "Invalid files"), exc.message, field=exc.field
        )

    @app.exception_handler(InputError)
    async def on_input(_: Request, exc: InputError) -> JSONResponse:
        return problem_response(
            exc.status,
            "Invalid report",
            f"{exc.field}: {exc.message}",
            errors=[{"field": exc.field, "message": exc.message}],
        )

    app.add_middleware(RequestLimits, settings=settings)

    async def authenticate_app(x_api_key: str | None) -> App:
        if not x_api_key:
            raise AuthError(401, "X-API-Key header is required", field="X-API-Key")
        caller = await keys.get(x_api_key)
        if caller is None:
            raise AuthError(401, "unknown, revoked or expired API key", field="X-API-Key")
        wait = limiter.check(caller.key_id, caller.rate_per_minute)
        if wait:
            raise Problem(
                429,
                "Too many requests",
                f"rate limit of {caller.rate_per_minute} requests per minute",
                headers={"Retry-After": str(int(wait))},
                field="X-API-Key",
            )
        return caller

    async def api_app(x_api_key: Annotated[str | None, Header()] = None) -> App:
        return await authenticate_app(x_api_key)

    async def optional_staff(
        authorization: Annotated[str | None, Header()] = None,
    ) -> Staff | None:
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "use 'Authorization: Bearer <token>'", field="Authorization")
        return await verifier.verify_fresh(token)

    async def staff(member: Annotated[Staff | None, Depends(optional_staff)]) -> Staff:
        if member is None:
            raise AuthError(401, "a staff token is required", field="Authorization")
        return member

    AppDep = Annotated[App, Depends(api_app)]
    StaffDep = Annotated[Staff, Depends(staff)]
    MaybeStaff = Annotated[Staff | None, Depends(optional_staff)]

    def can_see(member: Staff, report: dict[str, Any]) -> bool:
        if member.role in (Role.COORDINATOR, Role.SUPERVISOR):
            return True
        return report["agency_id"] is not None and report["agency_id"] == member.agency_id

    async def report_from_form(request: Request) -> tuple[ReportIn, dict[str, bytes]]:
        """The ``report`` JSON part and the ``files`` parts of a multipart submission."""
        async with multipart_form(
            request,
            max_files=settings.max_media_files + 1,
            max_fields=20,
            max_part_size=FORM_PART_BYTES,
        ) as form:
            parts = form.getlist("report")
            if len(parts) != 1 or not isinstance(parts[0], str):
                raise Problem(
                    422,
                    "Invalid request",
                    "report: exactly one part holding the report as JSON",
                    field="report",
                )
            body = parse_report(parts[0].encode(), prefix="report")
            blobs = await media.read_uploads(
                form.getlist("files"),
                field="files",
                max_files=settings.max_media_files,
                max_bytes=settings.max_media_bytes,
            )
        return body, blobs

    @app.post(
        "/v1/reports",
        status_code=202,
        response_model=Accepted,
        tags=["reports"],
        responses={
            200: {"model": Accepted, "description": "idempotent replay of an accepted report"},
            **problems(
                401,
                403,
                409,
                413,
                415,
                422,
                429,
                s409="idempotency key reused with another body",
                s415="a body that is neither JSON nor multipart, or an unsupported file",
            ),
        },
        openapi_extra={"requestBody": REPORT_REQUEST_BODY, "parameters": REPORT_HEADERS},
    )
    async def post_report(request: Request) -> Response:
        """Accept a report (JSON, or multipart with photos/videos); a replay returns it.

        A replay is a request with the same Idempotency-Key or client_report_id: answered
        200 with the original report, or 409 when its body differs.
        """
        # headers are read here rather than declared: FastAPI's parameter machinery costs
        # more CPU than the rest of the request (they are documented in REPORT_HEADERS)
        headers = request.headers
        caller = await authenticate_app(headers.get("x-api-key"))
        caller.require("reports:write")
        idempotency_key = headers.get("idempotency-key")
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
            raise Problem(
                422,
                "Invalid request",
                "Idempotency-Key: 1 to 200 characters",
                field="Idempotency-Key",
            )
        content_type = headers.get("content-type", "application/json").lower()
        mime = content_type.split(";", 1)[0].strip()
        blobs: dict[str, bytes] = {}
        if mime == "multipart/form-data":
            body, blobs = await report_from_form(request)
        elif mime == "application/json" or mime.endswith("+json"):
            body = parse_report(await request.body())
        else:
            raise Problem(
                415,
                "Unsupported media type",
                "send application/json, or multipart/form-data with a report part",
                field="Content-Type",
            )
        try:
            result = await submit_report(
                body,
                app_id=caller.app_id,
                idempotency_key=idempotency_key,
                ctx=ctx,
                files=blobs,
            )
        except IdempotencyConflict as exc:
            raise Problem(
                409,
                "Idempotency conflict",
                "this idempotency key or client_report_id was used with a different body",
                field="Idempotency-Key",
                report_id=str(exc.report_id),
            ) from exc
        report_id = result.report["id"]
        answer_headers = {"Location": f"/v1/reports/{report_id}"}
        if not result.created:
            answer_headers["Idempotent-Replayed"] = "true"
        return JSONResponse(
            _accepted(result.report),
            status_code=202 if result.created else 200,
            headers=answer_headers,
        )

    @app.get("/v1/reports/{report_id}", tags=["reports"], responses=problems(401, 404, 422))
    async def get_report(report_id: uuid.UUID, conn: DbConn, member: MaybeStaff) -> dict[str, Any]:
        """A report: public view without a token, the staff view by role with one."""
        report = await repository.get_report(conn, report_id=report_id)
        if report is None or (member is not None and not can_see(member, report)):
            raise Problem(404, "Not found", f"no report {report_id}", field="report_id")
        if member is None:
            return report_view(report, role=None)
        reporter = (
            await repository.reporter(conn, report_id=report_id)
            if member.role is Role.COORDINATOR
            else None
        )
        attached = await repository.media_of(conn, report_id=report_id)
        view = report_view(report, role=member.role, reporter=reporter, media_rows=attached)
        view["allowed_actions"] = [
            a.value for a in allowed_actions(snapshot_of(report), member.actor())
        ]
        return view

    @app.get(
        "/v1/reports/{report_id}/timeline",
        tags=["reports"],
        responses=problems(401, 404, 422),
    )
    async def get_timeline(
        report_id: uuid.UUID, conn: DbConn, member: StaffDep
    ) -> list[dict[str, Any]]:
        """Every transition: who, role, agency, when, from → to, why."""
        report = await repository.get_report(conn, report_id=report_id)
        if report is None or not can_see(member, report):
            raise Problem(404, "Not found", f"no report {report_id}", field="report_id")
        rows = await repository.timeline(conn, report_id=report_id)
        for row in rows:
            row["at"] = to_local_iso(row["at"])
            if member.role is not Role.COORDINATOR and row["actor_role"] == "reporter":
                row["actor_subject"] = "reporter"
        return rows

    @app.post(
        "/v1/reports/{report_id}/actions",
        tags=["reports"],
        responses=problems(401, 403, 404, 409, 413, 422, s409="not allowed in the current state"),
    )
    async def post_action(
        report_id: uuid.UUID,
        conn: DbConn,
        member: StaffDep,
        payload: Annotated[dict[str, Any], Body()],
    ) -> dict[str, Any]:
        """Perform a lifecycle action (the body's ``type`` selects it)."""
        nul = _nul_field(payload)
        if nul is not None:
            raise Problem(422, "Invalid action", f"{nul}: contains NUL", field=nul)
        try:
            action: Action = ACTION_ADAPTER.validate_python(payload)
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]) or "type", "message": e["msg"]}
                for e in exc.errors()
            ]
            raise Problem(
                422,
                "Invalid action",
                "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                errors=errors,
            ) from exc
        existing = await repository.get_report(conn, report_id=report_id)
        if existing is None or (
            member.role in (Role.OFFICER, Role.LEADER) and not can_see(member, existing)
        ):
            raise Problem(404, "Not found", f"no report {report_id}", field="report_id")
        try:
            async with conn.transaction():
                transition = await apply_action(
                    conn, report_id=report_id, action=action, actor=member.actor(), ctx=ctx
                )
        except IllegalTransition as exc:
            raise Problem(
                409,
                "Illegal transition",
                str(exc),
                field="type",
                current_state=exc.current.value,
                allowed_actions=[a.value for a in exc.allowed],
            ) from exc
        except Forbidden as exc:
            raise Problem(403, "Forbidden", exc.reason, field="type") from exc
        except RuleViolation as exc:
            raise Problem(
                422, "Rule violated", f"{exc.field}: {exc.message}", field=exc.field
            ) from exc
        report = await repository.get_report(conn, report_id=report_id)
        assert report is not None
        return {
            "from": transition.from_state.value,
            "to": transition.to_state.value,
            "action": transition.action_type.value,
            "report": report_view(report, role=member.role),
        }

    @app.get("/v1/reports", tags=["reports"], responses=problems(400, 401, 403, 422))
    async def list_reports(
        conn: DbConn,
        member: StaffDep,
        status: Annotated[list[State] | None, Query()] = None,
        category: Annotated[list[QueryText] | None, Query(max_length=50)] = None,
        agency: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
        commune: Annotated[str | None, Query(pattern=r"^\d{5}$")] = None,
        overdue: bool | None = None,
        since: AwareDatetime | None = None,
        until: AwareDatetime | None = None,
        q: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
    ) -> dict[str, Any]:
        """Reports newest first, filtered; text search ignores Vietnamese diacritics."""
        if member.role in (Role.OFFICER, Role.LEADER):
            if agency is not None and agency != member.agency_id:
                raise AuthError(
                    403, "agency users see only their own agency's reports", field="agency"
                )
            agency = member.agency_id
        filters: dict[str, Any] = {
            "status": [s.value for s in status] if status else None,
            "category": category,
            "agency_id": agency,
            "commune_code": commune,
            "overdue": overdue,
            "since": _utc(since, field="since") if since else None,
            "until": _utc(until, field="until") if until else None,
            "text": fold_diacritics(q) if q else None,
            "after": _decode_cursor(cursor) if cursor else None,
        }
        rows = await repository.list_reports(conn, filters=filters, limit=limit + 1)
        page, more = rows[:limit], len(rows) > limit
        return {
            "items": [report_view(r, role=member.role) for r in page],
            "next_cursor": _encode_cursor(page[-1]) if more and page else None,
        }

    @app.post(
        "/v1/reports/{report_id}/media",
        status_code=201,
        tags=["media"],
        responses=problems(
            401,
            403,
            404,
            413,
            415,
            422,
            429,
            s413="a file (or the body) larger than the limit",
            s415="a file that is not JPEG, PNG, WebP, MP4 or QuickTime (sniffed from its bytes)",
        ),
    )
    async def post_media(
        report_id: uuid.UUID,
        caller: AppDep,
        conn: DbConn,
        files: Annotated[list[UploadFile], File(description="photos or videos")],
    ) -> dict[str, Any]:
        """Attach photos/videos to a report the caller's app submitted (idempotent per file)."""
        caller.require("reports:write")
        report = await repository.get_report(conn, report_id=report_id)
        if report is None or report["source_app"] != caller.app_id:
            raise Problem(404, "Not found", f"no report {report_id}", field="report_id")
        blobs = await media.read_uploads(
            files,
            field="files",
            max_files=settings.max_media_files,
            max_bytes=settings.max_media_bytes,
        )
        async with conn.transaction():
            await repository.get_report(conn, report_id=report_id, for_update=True)
            attached = await repository.media_shas_of(conn, report_id=report_id)
            new = set(blobs) - attached
            if len(attached) + len(new) > settings.max_media_files:
                raise Problem(
                    422,
                    "Too many files",
                    f"a report carries at most {settings.max_media_files} files "
                    f"({len(attached)} already attached)",
                    field="files",
                )
            stored = await media.store_all(blobs.values(), root=settings.media_dir, field="files")
            for item in stored:
                await repository.attach_media(
                    conn,
                    report_id=report_id,
                    sha256=item.sha256,
                    content_type=item.content_type,
                    size=item.size,
                    thumbnail_sha256=item.thumbnail_sha256,
                )
        return {
            "media": [
                media_view(
                    {
                        "sha256": s.sha256,
                        "content_type": s.content_type,
                        "size": s.size,
                        "thumbnail_sha256": s.thumbnail_sha256,
                    }
                )
                for s in stored
            ]
        }

    def _media_file(sha256: str, content_type: str) -> FileResponse:
        path = media.path_of(settings.media_dir, sha256)
        if not path.is_file():
            raise Problem(404, "Not found", f"no media {sha256}", field="sha256")
        return FileResponse(
            path,
            media_type=content_type,
            headers={
                "Cache-Control": "private, max-age=86400",
                "X-Content-Type-Options": "nosniff",
            },
        )

    @app.get(
        "/v1/media/{sha256}",
        tags=["media"],
        response_class=FileResponse,
        responses={200: {"content": MEDIA_CONTENT}, **problems(401, 404, 422)},
    )
    async def get_media(sha256: Sha256, conn: DbConn, member: StaffDep) -> FileResponse:
        """An uploaded file, as its sniffed content type (staff only: photos show people)."""
        row = await repository.media(conn, sha256=sha256)
        if row is None:
            raise Problem(404, "Not found", f"no media {sha256}", field="sha256")
        return _media_file(sha256, row["content_type"])

    @app.get(
        "/v1/media/{sha256}/thumbnail",
        tags=["media"],
        response_class=FileResponse,
        responses={
            200: {"content": {"image/jpeg": BINARY}},
            **problems(401, 404, 422),
        },
    )
    async def get_media_thumbnail(sha256: Sha256, conn: DbConn, member: StaffDep) -> FileResponse:
        """The JPEG thumbnail of an uploaded image, or of a video's first frame."""
        row = await repository.media(conn, sha256=sha256)
        if row is None or row["thumbnail_sha256"] is None:
            raise Problem(404, "Not found", f"no thumbnail of {sha256}", field="sha256")
        return _media_file(row["thumbnail_sha256"], "image/jpeg")

    @app.get("/v1/categories", tags=["catalogue"])
    async def get_categories(conn: DbConn) -> list[dict[str, Any]]:
        """The category catalogue (service codes)."""
        return await repository.categories(conn)

    app.include_router(open311_router(ctx, keys))
    app.include_router(admin_router(settings, keys.invalidate))
    _document_bodies(app, action_path="/v1/reports/{report_id}/actions")
    return app


def parse_report(raw: bytes, *, prefix: str = "") -> ReportIn:
    """A submission from JSON bytes; 422 problem+json naming every field at fault."""
    try:
        return ReportIn.model_validate_json(raw)
    except ValidationError as exc:
        errors = []
        for e in exc.errors():
            path = ".".join(str(p) for p in e["loc"]) if e["type"] != "json_invalid" else ""
            field = ".".join(p for p in (prefix, path) if p) or "body"
            errors.append({"field": field, "message": e["msg"], "type": e["type"]})
        raise Problem(
            422,
            "Invalid request",
            "; ".join(f"{e['field']}: {e['message']}" for e in errors),
            field=errors[0]["field"],
            errors=errors,
        ) from exc


def _document_bodies(app: FastAPI, *, action_path: str) -> None:
    """Publish the bodies the routes parse by hand: the action union and ReportIn."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema["components"]["schemas"]
            body = ACTION_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            content = schema["paths"][action_path]["post"]["requestBody"]["content"]
            content["application/json"]["schema"] = body
            report = ReportIn.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(report.pop("$defs", {}))
            components["ReportIn"] = report
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
