"""HTTP API and composition root of the SLA service.

Run: ``python -m sla`` (serves on SLA_HTTP_PORT; runs the faust worker and the scanner).
"""

import hmac
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from faust.contrib.asgi import faust_app_running
from pydantic import BaseModel, Field

from paht_common.boundary import FREE_TEXT_PATTERN, IsoDate, Rfc3339DateTime
from paht_common.clock import SystemClock, to_local_iso
from paht_common.db import Conn
from paht_common.docs import install_docs
from paht_common.events import Envelope, Payload
from paht_common.faust_worker import attach_agent, make_faust_app
from paht_common.http import DbConn, ops_router
from paht_common.paging import decode_cursor, encode_cursor
from paht_common.problems import Problem, install_problem_handlers, problem_responses
from paht_common.runtime import Runtime
from paht_common.topics import REPORT_EVENTS, ROUTING_EVENTS
from sla import repository
from sla.calendar import BusinessCalendar, CalendarError, CalendarOverride, OverrideKind, Unit
from sla.domain import Policy, Target, build_marks, target_seconds
from sla.handlers import CalendarCache, SlaContext, handle_event
from sla.scanner import run_scanner
from sla.settings import SlaSettings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
CONSUMER = "sla"
PROBLEM_TEXT = {
    400: "cursor is not one this API issued",
    401: "the admin token is missing or wrong (Authorization: Bearer)",
    404: "no such report clocks or calendar override",
    422: "a parameter or the body is invalid (the problem names it)",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of the SLA service's problem+json answers."""
    return problem_responses(PROBLEM_TEXT, *statuses)


class DueAnswer(BaseModel):
    """A computed deadline."""

    due_at: str = Field(description="ISO 8601 with the +07:00 offset")
    calendar_version: str


class NextWorkingAnswer(BaseModel):
    """The first office-hours instant at or after the asked one."""

    at: str = Field(description="ISO 8601 with the +07:00 offset")
    working_now: bool = Field(description="whether the asked instant is itself office time")
    calendar_version: str


class DayView(BaseModel):
    """One local day of the business calendar."""

    date: date
    working: bool
    name: str | None


class OverrideIn(BaseModel):
    """A day off or make-up working day, with the document that announced it."""

    kind: OverrideKind
    reason: str = Field(min_length=1, max_length=500, pattern=FREE_TEXT_PATTERN)
    document: str = Field(default="", max_length=500, pattern=FREE_TEXT_PATTERN)


class TargetIn(BaseModel):
    """Amount and unit of one clock."""

    amount: float = Field(gt=0, le=10_000)
    unit: Unit


class PolicyIn(BaseModel):
    """An SLA policy: conditions (None = any) and the three clocks."""

    priority: int = Field(ge=0, le=100_000)
    category: str | None = Field(
        default=None, max_length=100, pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$"
    )
    urgency: Literal["urgent", "normal", "complex"] | None = None
    agency_id: str | None = Field(
        default=None, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )
    screening: TargetIn
    acknowledgement: TargetIn
    resolution: TargetIn
    resolution_starts: Literal["assigned", "acknowledged"] = "acknowledged"
    on_reroute: Literal["restart", "continue"] = "restart"


def _office(unit: str) -> bool:
    return unit in ("working_hours", "working_days")


def _clock_view(
    row: dict[str, Any], *, now: datetime, calendar: BusinessCalendar
) -> dict[str, Any]:
    unit = row["unit"]
    total = target_seconds(Target(float(row["amount"]), Unit(unit)))
    elapsed = float(row["consumed_s"])
    due: datetime | None = row["due_at"]
    if row["status"] == "running" and due is not None:

        def span(a: datetime, b: datetime) -> float:
            if b <= a:
                return 0.0
            return (
                calendar.working_seconds_between(a, b)
                if _office(unit)
                else ((b - a).total_seconds())
            )

        elapsed = total - span(now, due) if now < due else total + span(due, now)
    return {
        "kind": row["kind"],
        "status": row["status"],
        "generation": row["generation"],
        "amount": float(row["amount"]),
        "unit": unit,
        "agency_id": row["agency_id"],
        "started_at": to_local_iso(row["started_at"]) if row["started_at"] else None,
        "due_at": to_local_iso(due) if due else None,
        "stopped_at": to_local_iso(row["stopped_at"]) if row["stopped_at"] else None,
        "elapsed_seconds": round(max(elapsed, 0.0), 3),
        "remaining_seconds": round(max(total - elapsed, 0.0), 3),
        "overdue": bool(row["breached"])
        or (row["status"] == "running" and due is not None and now > due),
        "calendar_version": row["calendar_version"],
    }


def _cursor(row: dict[str, Any]) -> str:
    return encode_cursor(row["due_at"], str(row["report_id"]), row["kind"])


def _parse_cursor(cursor: str) -> tuple[datetime, str, str]:
    due, (rid, kind) = decode_cursor(cursor, keys=2)
    return due, rid, kind


def build_app(settings: SlaSettings | None = None) -> FastAPI:
    """The FastAPI app whose lifespan runs the runtime, faust worker and scanner."""
    settings = settings or SlaSettings()
    clock = SystemClock()
    ctx = SlaContext(
        clock=clock,
        calendars=CalendarCache(),
        province=settings.province_code,
        marks=build_marks(settings.warning_percents, settings.escalations),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Runtime(service="sla", settings=settings, migrations=MIGRATIONS) as rt:
            async with rt.pool.acquire() as conn:
                await repository.seed_calendar_once(conn)

            async def handle(conn: Conn, envelope: Envelope[Payload]) -> None:
                await handle_event(conn, envelope, ctx=ctx)

            worker = make_faust_app(settings.faust_app_id, settings)
            attach_agent(
                worker,
                (REPORT_EVENTS, ROUTING_EVENTS),
                rt.processor(CONSUMER, handle),
                name="sla_clocks",
            )
            rt.watch_lag(settings.faust_app_id, (REPORT_EVENTS, ROUTING_EVENTS))  # group = app id
            rt.spawn(
                "threshold-scanner",
                lambda: run_scanner(
                    rt.pool,
                    ctx=ctx,
                    interval=settings.scan_interval_seconds,
                    batch=settings.scan_batch,
                ),
            )
            app.state.runtime = rt
            app.include_router(ops_router(rt.checks()))
            async with faust_app_running(worker, stop_timeout=15):
                yield

    app = FastAPI(title="PAHT SLA", version="1.0.0", lifespan=lifespan)
    install_problem_handlers(app)
    install_docs(app, "sla")

    async def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        expected = f"Bearer {settings.admin_token}".encode()
        # bytes: compare_digest refuses str with non-ASCII characters (a 500, before)
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
            raise Problem(
                401,
                "Unauthorized",
                "calendar and policy edits need the admin token",
                field="Authorization",
            )

    Admin = Annotated[None, Depends(require_admin)]

    @app.get("/v1/sla/overdue", tags=["sla"], responses=problems(400, 422))
    async def get_overdue(
        conn: DbConn,
        agency: str | None = Query(default=None, max_length=100),
        limit: int = Query(default=50, ge=1, le=500),
        cursor: str | None = Query(default=None, max_length=500),
    ) -> dict[str, Any]:
        """Running clocks past their due instant, oldest first, cursor-paged."""
        after = _parse_cursor(cursor) if cursor else None
        rows = await repository.overdue(
            conn, now=clock.now(), agency_id=agency, after=after, limit=limit + 1
        )
        page, more = rows[:limit], len(rows) > limit
        items = [
            {
                "report_id": str(r["report_id"]),
                "number": r["number"],
                "category": r["category"],
                "clock": r["kind"],
                "agency_id": r["agency_id"],
                "due_at": to_local_iso(r["due_at"]),
                "overdue_seconds": round((clock.now() - r["due_at"]).total_seconds(), 3),
            }
            for r in page
        ]
        return {"items": items, "next_cursor": _cursor(page[-1]) if more and page else None}

    @app.get("/v1/sla/{report_id}", tags=["sla"], responses=problems(404, 422))
    async def get_sla(report_id: uuid.UUID, conn: DbConn) -> dict[str, Any]:
        """Clocks of a report: due instants, elapsed and remaining time, status."""
        report = await repository.get_report(conn, report_id=report_id)
        rows = await repository.clocks_of(conn, report_id=report_id)
        if report is None or not rows:
            raise Problem(
                404, "Not found", f"no SLA clocks for report {report_id}", field="report_id"
            )
        calendar = await ctx.calendars.get(conn)
        now = clock.now()
        return {
            "report_id": str(report_id),
            "number": report["number"],
            "agency_id": report["agency_id"],
            "policy_id": report["policy_id"],
            "calendar_version": report["calendar_version"],
            "clocks": [_clock_view(r, now=now, calendar=calendar) for r in rows],
        }

    @app.get(
        "/v1/calendar/due", tags=["calendar"], response_model=DueAnswer, responses=problems(422)
    )
    async def get_due(
        conn: DbConn,
        start: Rfc3339DateTime,
        amount: Annotated[float, Query(ge=0, le=10_000)],
        unit: Unit,
    ) -> DueAnswer:
        """Deadline ``amount`` units after ``start`` on the province's business calendar."""
        calendar = await ctx.calendars.get(conn)
        try:
            due = calendar.add(start, amount, unit)
        except CalendarError as exc:
            raise Problem(422, "Invalid deadline request", str(exc), field="start") from exc
        return DueAnswer(due_at=to_local_iso(due), calendar_version=calendar.version)

    @app.get(
        "/v1/calendar/next-working",
        tags=["calendar"],
        response_model=NextWorkingAnswer,
        responses=problems(422),
    )
    async def get_next_working(conn: DbConn, at: Rfc3339DateTime) -> NextWorkingAnswer:
        """The first instant at or after ``at`` in office hours (notify's quiet hours end)."""
        calendar = await ctx.calendars.get(conn)
        try:
            start = calendar.next_office_instant(at)
        except CalendarError as exc:
            raise Problem(422, "Invalid instant", str(exc), field="at") from exc
        return NextWorkingAnswer(
            at=to_local_iso(start),
            working_now=start == at,
            calendar_version=calendar.version,
        )

    @app.get(
        "/v1/calendar/days",
        tags=["calendar"],
        response_model=list[DayView],
        responses=problems(422),
    )
    async def get_days(
        conn: DbConn,
        from_: Annotated[IsoDate, Query(alias="from")],
        to: Annotated[IsoDate, Query()],
    ) -> list[DayView]:
        """Each local day in [from, to] (at most 366), working or not, with its name."""
        calendar = await ctx.calendars.get(conn)
        try:
            days = calendar.days(from_, to)
        except CalendarError as exc:
            raise Problem(422, "Invalid range", str(exc), field="to") from exc
        return [DayView(date=d.day, working=d.working, name=d.name) for d in days]

    @app.get("/v1/calendar/overrides", tags=["calendar"])
    async def get_overrides(conn: DbConn) -> list[dict[str, Any]]:
        """Stored days off and make-up working days."""
        return [
            {
                "date": o.day.isoformat(),
                "kind": o.kind.value,
                "reason": o.reason,
                "document": o.document,
            }
            for o in await repository.list_overrides(conn)
        ]

    @app.put("/v1/calendar/overrides/{day}", tags=["calendar"], responses=problems(401, 422))
    async def put_override(
        day: IsoDate, body: OverrideIn, conn: DbConn, _: Admin, request: Request
    ) -> dict[str, Any]:
        """Create or replace the override of one day (new calendar version)."""
        override = CalendarOverride(
            day=day, kind=body.kind, reason=body.reason, document=body.document
        )
        async with conn.transaction():
            revision = await repository.upsert_override(conn, override=override)
            try:
                await repository.load_calendar(conn)
            except CalendarError as exc:
                raise Problem(422, "Invalid calendar override", str(exc), field="day") from exc
        calendar = await ctx.calendars.get(conn)
        return {"date": day.isoformat(), "revision": revision, "calendar_version": calendar.version}

    @app.delete(
        "/v1/calendar/overrides/{day}",
        tags=["calendar"],
        status_code=204,
        responses=problems(401, 404, 422),
    )
    async def delete_override(day: IsoDate, conn: DbConn, _: Admin) -> None:
        """Remove the override of one day."""
        if not await repository.delete_override(conn, day=day):
            raise Problem(404, "Not found", f"no override on {day}", field="day")

    @app.get("/v1/policies", tags=["policies"])
    async def get_policies(conn: DbConn) -> list[dict[str, Any]]:
        """Active policies in evaluation order."""
        return [_policy_view(p) for p in await repository.load_policies(conn)]

    @app.put("/v1/policies/{policy_id}", tags=["policies"], responses=problems(401, 422))
    async def put_policy(
        policy_id: Annotated[str, Field(max_length=100)], body: PolicyIn, conn: DbConn, _: Admin
    ) -> dict[str, Any]:
        """Create or replace a policy (its version increases)."""
        policy = Policy(
            id=policy_id,
            priority=body.priority,
            category=body.category,
            urgency=body.urgency,
            agency_id=body.agency_id,
            screening=Target(body.screening.amount, body.screening.unit),
            acknowledgement=Target(body.acknowledgement.amount, body.acknowledgement.unit),
            resolution=Target(body.resolution.amount, body.resolution.unit),
            resolution_starts=body.resolution_starts,
            on_reroute=body.on_reroute,
        )
        version = await repository.upsert_policy(conn, policy=policy)
        return {**_policy_view(policy), "version": version}

    return app


def _policy_view(p: Policy) -> dict[str, Any]:
    def target(t: Target) -> dict[str, Any]:
        return {"amount": t.amount, "unit": t.unit.value}

    return {
        "id": p.id,
        "priority": p.priority,
        "category": p.category,
        "urgency": p.urgency,
        "agency_id": p.agency_id,
        "screening": target(p.screening),
        "acknowledgement": target(p.acknowledgement),
        "resolution": target(p.resolution),
        "resolution_starts": p.resolution_starts,
        "on_reroute": p.on_reroute,
    }
