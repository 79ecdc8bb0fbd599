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
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse
from pydantic import StringConstraints, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from intake import media, repository
from intake.admin import admin_router
from intake.auth import (
    ApiKeyCache,
    App,
    AppAuthenticator,
    AuthError,
    JwtVerifier,
    Staff,
    actor_of,
)
from intake.domain import (
    ACTION_ADAPTER,
    PUBLISHED_STATES,
    STATE_LABELS_VI,
    Action,
    Actor,
    Forbidden,
    IllegalTransition,
    Role,
    RuleViolation,
    State,
    allowed_actions,
    fold_diacritics,
    sees_every_agency,
)
from intake.handlers import (
    InputError,
    IntakeContext,
    NotFound,
    apply_action,
    attach_media,
    handle_external_event,
    readable_media,
    released_media_of,
    reporter_subject,
    set_media_public,
    snapshot_of,
)
from intake.metrics import HTTP_REQUESTS, HTTP_SECONDS
from intake.open311 import boundary_refusal, open311_router
from intake.reference import province_communes
from intake.scanner import run_scanner
from intake.schemas import MediaVisibilityIn, ReportIn
from intake.seed import seed_leader_approval
from intake.settings import IntakeSettings
from intake.submit_api import (
    PATH,
    PROBLEM_TEXT,
    SubmitEndpoint,
    documentation,
    error_response,
)
from paht_common.boundary import Rfc3339DateTime
from paht_common.clock import SystemClock, to_local_iso
from paht_common.db import Conn
from paht_common.docs import install_docs
from paht_common.events import Envelope, Payload
from paht_common.http import DbConn, ops_router
from paht_common.paging import decode_cursor, encode_cursor
from paht_common.problems import (
    Problem,
    document_problems,
    install_problem_handlers,
    problem_responses,
)
from paht_common.runtime import Runtime
from paht_common.staff_auth import staff_verifier
from paht_common.topics import ROUTING_EVENTS, SLA_EVENTS

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
PERSONAL_DATA_FLAGS = frozenset({"phone_number", "id_number", "email"})
CONSUMER = "intake"
NO_NUL = r"^[^\x00]*$"
QueryText = Annotated[str, StringConstraints(max_length=100, pattern=NO_NUL)]
Sha256 = Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$")]
BINARY = {"schema": {"type": "string", "format": "binary"}}
MEDIA_CONTENT = {t: BINARY for t in sorted(media.SUPPORTED_TYPES)}


def problems(*statuses: int, **texts: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for RFC 9457 problem+json answers (``texts`` keyed ``s409``)."""
    return problem_responses(PROBLEM_TEXT, *statuses, **texts)


def iso(value: datetime | None) -> str | None:
    """+07:00 rendering of an optional instant."""
    return to_local_iso(value) if value is not None else None


def media_view(row: dict[str, Any]) -> dict[str, Any]:
    """A stored file as listed and answered to an upload; with ``public`` (released to the
    public on this report) when the row carries it."""
    thumb = row["thumbnail_sha256"]
    view = {
        "sha256": row["sha256"],
        "content_type": row["content_type"],
        "size": row["size"],
        "url": f"/v1/media/{row['sha256']}",
        "thumbnail_url": f"/v1/media/{row['sha256']}/thumbnail" if thumb else None,
    }
    if "public" in row:
        view["public"] = row["public"]
    return view


def report_view(
    report: dict[str, Any],
    *,
    role: Role | None,
    reporter: dict[str, Any] | None = None,
    media_rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A report as the caller may see it: public callers get published content only.

    ``media_rows`` are the files listed; for a public caller they must be the ones released
    to the public (``released_media_of``).
    """
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
    published = state in PUBLISHED_STATES
    if role is None:
        # the public never sees text that may carry personal data or a rejected matter
        shown = (
            report["public"]
            and state is not State.REJECTED
            and not set(report["flags"]) & PERSONAL_DATA_FLAGS
        )
        view["description"] = report["description"] if shown else None
        view["response"] = report["response_text"] if published and report["public"] else None
        view["media"] = [media_view(m) for m in media_rows or ()]
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
            "co_agency_ids": list(report.get("co_agency_ids") or ()),
            "published_at": iso(report.get("published_at")),
            "closes_at": iso(report.get("closes_at")),
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

    def __init__(self, app: ASGIApp, *, settings: IntakeSettings, route: str | None = None) -> None:
        self.app = app
        self.settings = settings
        self.route = route
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

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
        route: str = self.route or str(getattr(scope.get("route"), "path", "unmatched"))
        method: str = scope["method"]
        counter = self._counters.get((method, route, status))
        if counter is None:  # labels() costs as much as a small handler: keep the children
            counter = HTTP_REQUESTS.labels(method, route, str(status))
            self._counters[method, route, status] = counter
        timer = self._timers.get((method, route))
        if timer is None:
            timer = self._timers[method, route] = HTTP_SECONDS.labels(method, route)
        counter.inc()
        timer.observe(time.perf_counter() - started)


class IntakeApp(FastAPI):
    """FastAPI, except that hot routes are plain ASGI apps called before FastAPI's layers."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_routes: dict[tuple[str, str], ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            fast = self.fast_routes.get((scope["method"], scope["path"]))
            if fast is not None:
                await fast(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


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


def build_app(settings: IntakeSettings | None = None) -> IntakeApp:
    """The FastAPI app whose lifespan opens the runtime and the event consumer."""
    settings = settings or IntakeSettings()
    clock = SystemClock()
    ctx = IntakeContext(settings=settings, clock=clock, communes=province_communes(settings))
    verifier: JwtVerifier = staff_verifier(settings)

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
    apps = AppAuthenticator(keys)

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
            rt.spawn(
                "rating-window",
                lambda: run_scanner(
                    rt.pool,
                    ctx=ctx,
                    interval=settings.close_scan_interval_seconds,
                    batch=settings.close_scan_batch,
                ),
            )
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

    app = IntakeApp(
        title="PAHT intake",
        version="1.0.0",
        description="Field reports from upstream apps; staff actions; Open311 GeoReport v2.",
        lifespan=lifespan,
    )
    install_problem_handlers(app, boundary_responders={"/open311/": boundary_refusal})
    install_docs(app, "intake")
    submit = SubmitEndpoint(settings=settings, ctx=ctx, apps=apps)
    app.fast_routes["POST", PATH] = RequestLimits(submit, settings=settings, route=PATH)

    async def on_error(_: Request, exc: Exception) -> Response:
        response = error_response(exc)
        if response is None:
            raise exc
        return response

    for error in (AuthError, media.UploadError, InputError):
        app.add_exception_handler(error, on_error)

    app.add_middleware(RequestLimits, settings=settings)

    async def api_app(x_api_key: Annotated[str | None, Header()] = None) -> App:
        return await apps.authenticate(x_api_key)

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
        """Coordinators and supervisors see every report; agency staff the reports their
        agency leads or co-handles (the same rule as ``readable_media``)."""
        if sees_every_agency(member.role):
            return True
        if member.agency_id is None:
            return False
        return member.agency_id == report["agency_id"] or member.agency_id in (
            report.get("co_agency_ids") or ()
        )

    @app.get("/v1/reports/{report_id}", tags=["reports"], responses=problems(401, 404, 422))
    async def get_report(report_id: uuid.UUID, conn: DbConn, member: MaybeStaff) -> dict[str, Any]:
        """A report: public view without a token, the staff view by role with one."""
        report = await repository.get_report(conn, report_id=report_id)
        if report is None or (member is not None and not can_see(member, report)):
            raise Problem(404, "Not found", f"no report {report_id}", field="report_id")
        if member is None:
            released = await released_media_of(conn, report_id=report_id)
            return report_view(report, role=None, media_rows=released)
        reporter = (
            await repository.reporter(conn, report_id=report_id)
            if member.role is Role.COORDINATOR
            else None
        )
        attached = await repository.media_of(conn, report_id=report_id)
        view = report_view(report, role=member.role, reporter=reporter, media_rows=attached)
        view["allowed_actions"] = [
            a.value for a in allowed_actions(snapshot_of(report), actor_of(member))
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
        member: MaybeStaff,
        payload: Annotated[dict[str, Any], Body()],
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """Perform a lifecycle action (the body's ``type`` selects it).

        Staff act with their token. The app that submitted the report acts as its reporter
        with its API key (scope ``reports:feedback``): ``rate`` once the report is published
        and ``reopen`` within the reopen window; another app's key finds no report (404).
        """
        caller: App | None = None
        if member is None:
            if x_api_key is None:
                raise AuthError(
                    401,
                    "a staff token, or the submitting app's API key, is required",
                    field="Authorization",
                )
            caller = await apps.authenticate(x_api_key)
            caller.require("reports:feedback")
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
        if existing is None:
            raise Problem(404, "Not found", f"no report {report_id}", field="report_id")
        if member is not None:
            actor = actor_of(member)
            hidden = member.role in (Role.OFFICER, Role.LEADER) and not can_see(member, existing)
        else:
            assert caller is not None
            actor = Actor(role=Role.REPORTER, subject=reporter_subject(caller.app_id))
            hidden = existing["source_app"] != caller.app_id
        if hidden:
            raise Problem(404, "Not found", f"no report {report_id}", field="report_id")
        try:
            async with conn.transaction():
                transition = await apply_action(
                    conn, report_id=report_id, action=action, actor=actor, ctx=ctx
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
        if member is not None:
            view = report_view(report, role=member.role)
        else:  # the reporter's app: the public view and its own feedback
            released = await released_media_of(conn, report_id=report_id)
            view = report_view(report, role=None, media_rows=released)
            view.update(rating=report["rating"], reopen_count=report["reopen_count"])
        return {
            "from": transition.from_state.value,
            "to": transition.to_state.value,
            "action": transition.action_type.value,
            "report": view,
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
        since: Rfc3339DateTime | None = None,
        until: Rfc3339DateTime | None = None,
        q: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
    ) -> dict[str, Any]:
        """Reports newest first, filtered; text search ignores Vietnamese diacritics."""
        handled_by: str | None = None
        if member.role in (Role.OFFICER, Role.LEADER):
            if agency is not None and agency != member.agency_id:
                raise AuthError(
                    403, "agency users see only their own agency's reports", field="agency"
                )
            # their agency's reports: those it leads and those it co-handles
            agency, handled_by = None, member.agency_id
        filters: dict[str, Any] = {
            "handled_by": handled_by,
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
        files: Annotated[
            list[UploadFile],
            File(description="photos or videos", json_schema_extra={"minItems": 1}),
        ],
    ) -> dict[str, Any]:
        """Attach photos/videos to a report the caller's app submitted (idempotent per file).

        The files new to the report are recorded on its timeline (``add_media``) and
        announced with a report.media_added event; a replay of attached files records nothing.
        """
        caller.require("reports:write")
        not_found = Problem(404, "Not found", f"no report {report_id}", field="report_id")
        report = await repository.get_report(conn, report_id=report_id)
        if report is None or report["source_app"] != caller.app_id:
            raise not_found  # before the files are checked: 404 whatever they hold
        blobs = await media.read_uploads(
            files,
            field="files",
            max_files=settings.max_media_files,
            max_bytes=settings.max_media_bytes,
        )
        try:
            async with conn.transaction():
                stored = await attach_media(
                    conn, report_id=report_id, app_id=caller.app_id, files=blobs, ctx=ctx
                )
        except LookupError as exc:
            raise not_found from exc
        except InputError as exc:
            raise Problem(exc.status, "Too many files", exc.message, field=exc.field) from exc
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
                "Vary": "Authorization",  # who may read the file depends on the token
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def _readable(conn: Conn, sha256: str, member: Staff | None) -> dict[str, Any] | None:
        return await readable_media(
            conn,
            sha256=sha256,
            role=member.role if member is not None else None,
            agency_id=member.agency_id if member is not None else None,
        )

    media_errors = problems(
        401,
        404,
        422,
        s401="a malformed, invalid or expired token (no token at all is the public's read)",
        s404="no such file, or none the caller may read: staff read the files of the reports"
        " they may see, the public (no token) the files released on a published report",
    )

    @app.get(
        "/v1/media/{sha256}",
        tags=["media"],
        response_class=FileResponse,
        responses={200: {"content": MEDIA_CONTENT}, **media_errors},
    )
    async def get_media(sha256: Sha256, conn: DbConn, member: MaybeStaff) -> FileResponse:
        """An uploaded file, as its sniffed content type (photos show people).

        It follows the reports that carry it: staff read it when they may see one of them
        (coordinators and supervisors any, agency staff those assigned to their agency);
        without a token, only when the coordinator released it on a report that is published
        and public. Any other file is 404, as an unknown one (401 only for a bad token).
        """
        row = await _readable(conn, sha256, member)
        if row is None:
            raise Problem(404, "Not found", f"no media {sha256}", field="sha256")
        return _media_file(sha256, row["content_type"])

    @app.get(
        "/v1/media/{sha256}/thumbnail",
        tags=["media"],
        response_class=FileResponse,
        responses={
            200: {"content": {"image/jpeg": BINARY}},
            **media_errors,
        },
    )
    async def get_media_thumbnail(sha256: Sha256, conn: DbConn, member: MaybeStaff) -> FileResponse:
        """The JPEG thumbnail of an uploaded image, or of a video's first frame; readable
        exactly when its file is (see GET /v1/media/{sha256})."""
        row = await _readable(conn, sha256, member)
        if row is None or row["thumbnail_sha256"] is None:
            raise Problem(404, "Not found", f"no thumbnail of {sha256}", field="sha256")
        return _media_file(row["thumbnail_sha256"], "image/jpeg")

    @app.put(
        "/v1/reports/{report_id}/media/{sha256}",
        tags=["media"],
        responses=problems(
            401,
            403,
            404,
            422,
            s403="only the coordinator releases media",
            s404="no such report, or the report carries no such file",
        ),
    )
    async def put_media_visibility(
        report_id: uuid.UUID,
        sha256: Sha256,
        body: MediaVisibilityIn,
        conn: DbConn,
        member: StaffDep,
    ) -> dict[str, Any]:
        """Release a report's file to the public (``public: true``) or withdraw it
        (coordinator only; idempotent).

        The public reads a released file, and sees it in the report's public view, while the
        report is published (published, rated or closed) and public. A change is recorded on
        the report's timeline as ``set_media_public``.
        """
        try:
            async with conn.transaction():
                row = await set_media_public(
                    conn,
                    report_id=report_id,
                    sha256=sha256,
                    public=body.public,
                    actor=actor_of(member),
                    ctx=ctx,
                )
        except Forbidden as exc:
            raise AuthError(403, exc.reason, field="Authorization") from exc
        except NotFound as exc:
            raise Problem(404, "Not found", exc.message, field=exc.field) from exc
        return media_view(row)

    @app.get("/v1/categories", tags=["catalogue"])
    async def get_categories(conn: DbConn) -> list[dict[str, Any]]:
        """The category catalogue (service codes)."""
        return await repository.categories(conn)

    app.include_router(open311_router(ctx, apps))
    app.include_router(admin_router(settings, keys.invalidate))
    _document_bodies(app, action_path="/v1/reports/{report_id}/actions")
    document_problems(app)  # again: _document_bodies replaced app.openapi
    return app


def _document_bodies(app: FastAPI, *, action_path: str) -> None:
    """Publish what FastAPI cannot see: POST /v1/reports (a plain ASGI endpoint) and the
    bodies the routes parse by hand (the action union and ReportIn)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=[documentation(), *app.routes],
                tags=app.openapi_tags,
                servers=app.servers,
                separate_input_output_schemas=app.separate_input_output_schemas,
            )
            components = schema["components"]["schemas"]
            body = ACTION_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            for ref in body.get("discriminator", {}).get("mapping", {}).values():
                # the tag picks the action: required on the wire, whatever the model's default
                variant = components[ref.rsplit("/", 1)[1]]
                variant["required"] = sorted({*variant.get("required", []), "type"})
                variant["properties"]["type"].pop("default", None)
            content = schema["paths"][action_path]["post"]["requestBody"]["content"]
            content["application/json"]["schema"] = body
            report = ReportIn.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(report.pop("$defs", {}))
            components["ReportIn"] = report
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
