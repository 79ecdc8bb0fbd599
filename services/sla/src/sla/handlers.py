"""SLA use cases: turn lifecycle events into facts, recompute clocks, emit what changed."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from paht_common.clock import Clock as TimeSource
from paht_common.db import Conn
from paht_common.events import (
    ClockView,
    Envelope,
    Payload,
    ReportRouted,
    ReportSubmitted,
    ReportTransitioned,
    SlaClocksChanged,
    SlaThresholdReached,
    new_envelope,
)
from paht_common.outbox import add_to_outbox
from paht_common.topics import SLA_EVENTS

from sla import repository
from sla.calendar import BusinessCalendar
from sla.domain import (
    DEFAULT_MARKS,
    Clock,
    ClockMath,
    Fact,
    FactKind,
    Mark,
    choose_policy,
    compute_clocks,
    threshold_instants,
)
from sla.metrics import DETECTION_LAG, RECOMPUTES, THRESHOLD_EVENTS

logger = logging.getLogger(__name__)

SOURCE = "/sla"

# Tie-break for facts at the same instant: the lifecycle order.
FACT_RANK = {kind: rank for rank, kind in enumerate(FactKind)}

TRANSITION_FACTS: dict[str, FactKind] = {
    "acknowledge": FactKind.ACKNOWLEDGED,
    "return": FactKind.RETURNED,
    "pause_for_reporter": FactKind.PAUSED,
    "resume": FactKind.RESUMED,
    "approve_extension": FactKind.EXTENDED,
    "review_reject": FactKind.REOPENED,
    "reject": FactKind.CANCELLED,
    "merge": FactKind.CANCELLED,
}


class CalendarCache:
    """The business calendar, reloaded when its stored revision changes."""

    def __init__(self) -> None:
        self._calendar: BusinessCalendar | None = None
        self._revision = -1

    async def get(self, conn: Conn) -> BusinessCalendar:
        """Current calendar (one cheap revision query per call)."""
        revision = await repository.calendar_revision(conn)
        if self._calendar is None or revision != self._revision:
            self._calendar = await repository.load_calendar(conn)
            self._revision = revision
        return self._calendar


@dataclass
class SlaContext:
    """What the handlers need besides the connection."""

    clock: TimeSource
    calendars: CalendarCache
    province: str
    marks: tuple[Mark, ...] = DEFAULT_MARKS


def fact_from(envelope: Envelope[Payload]) -> Fact | None:
    """The clock-relevant fact an event carries, if any."""
    p = envelope.payload
    if isinstance(p, ReportSubmitted):
        return Fact(FactKind.SUBMITTED, p.submitted_at, FACT_RANK[FactKind.SUBMITTED])
    if isinstance(p, ReportRouted):
        return Fact(FactKind.ROUTED, p.routed_at, FACT_RANK[FactKind.ROUTED], agency_id=p.agency_id)
    if isinstance(p, ReportTransitioned):
        if p.action == "assign" and p.actor_role != "system":
            # a coordinator's manual (re-)assignment; automatic ones arrive as ReportRouted
            return Fact(FactKind.ROUTED, p.at, FACT_RANK[FactKind.ROUTED], agency_id=p.agency_id)
        if p.to_state == "resolved":
            return Fact(FactKind.RESOLVED, p.at, FACT_RANK[FactKind.RESOLVED])
        kind = TRANSITION_FACTS.get(p.action)
        if kind is None:
            return None
        days = p.details.get("days") if kind is FactKind.EXTENDED else None
        return Fact(
            kind,
            p.at,
            FACT_RANK[kind],
            agency_id=p.agency_id,
            extension_days=float(days) if isinstance(days, int | float) else 0.0,
        )
    return None


async def handle_event(conn: Conn, envelope: Envelope[Payload], *, ctx: SlaContext) -> None:
    """Record the event's fact and recompute the report's clocks; inside the transaction."""
    p = envelope.payload
    fact = fact_from(envelope)
    if fact is None:
        return
    await repository.lock_report(conn, report_id=p.report_id)
    if isinstance(p, ReportSubmitted | ReportRouted):
        await repository.upsert_report(
            conn,
            report_id=p.report_id,
            number=p.number,
            category=p.category,
            urgency=p.urgency,
            agency_id=p.agency_id if isinstance(p, ReportRouted) else None,
        )
    await repository.add_fact(conn, event_id=envelope.event_id, report_id=p.report_id, fact=fact)
    await recompute(conn, report_id=p.report_id, trigger=fact.kind.value, cause=envelope, ctx=ctx)


async def recompute(
    conn: Conn, *, report_id: uuid.UUID, trigger: str, cause: Envelope[Payload], ctx: SlaContext
) -> list[Clock] | None:
    """Recompute, store and announce the clocks of a report."""
    report = await repository.get_report(conn, report_id=report_id)
    if report is None:
        return None  # nothing known yet; the submission or routing event will recompute
    calendar = await ctx.calendars.get(conn)
    math = ClockMath(calendar)
    policy = choose_policy(
        await repository.load_policies(conn),
        category=report["category"],
        urgency=report["urgency"],
        agency_id=report["agency_id"],
    )
    clocks = compute_clocks(await repository.facts_of(conn, report_id=report_id), policy, math)
    now = ctx.clock.now()
    breached: dict[str, bool] = {
        c.kind: c.breached_at(now) for c in clocks if c.status != "running"
    }
    await repository.save_clocks(
        conn,
        report_id=report_id,
        clocks=clocks,
        breached=breached,
        calendar_version=calendar.version,
    )
    await repository.replace_pending_thresholds(
        conn, report_id=report_id, instants=threshold_instants(clocks, ctx.marks, math)
    )
    await repository.set_report_policy(
        conn, report_id=report_id, policy_id=policy.id, calendar_version=calendar.version
    )
    changed = SlaClocksChanged(
        report_id=report_id,
        trigger=trigger,
        number=report["number"],
        agency_id=report["agency_id"],
        category=report["category"],
        policy_id=policy.id,
        calendar_version=calendar.version,
        clocks=[
            ClockView(
                kind=c.kind,
                status=c.status,
                amount=c.amount,
                unit=c.unit.value,
                started_at=c.started_at,
                due_at=c.due_at,
                breached=c.breached_at(now),
            )
            for c in clocks
        ],
    )
    await add_to_outbox(
        conn,
        SLA_EVENTS,
        new_envelope(
            changed,
            source=SOURCE,
            province=ctx.province,
            correlation_id=cause.correlation_id,
            occurred_at=now,
            event_id=uuid.uuid5(cause.event_id, "sla.clocks_changed"),
        ),
    )
    RECOMPUTES.labels(trigger).inc()
    return clocks


async def fire_due_thresholds(conn: Conn, *, ctx: SlaContext, limit: int) -> int:
    """Emit every due threshold exactly once (claimed with SKIP LOCKED); inside a transaction."""
    now = ctx.clock.now()
    rows = await repository.claim_due_thresholds(conn, now=now, limit=limit)
    for row in rows:
        event = SlaThresholdReached(
            report_id=row["report_id"],
            number=row["number"],
            agency_id=row["agency_id"],
            clock=row["clock"],
            percent=row["percent"],
            due_at=row["due_at"],
            escalation_level=row["level"],
        )
        key = f"{row['clock']}:{row['generation']}:{row['mark']}"
        await add_to_outbox(
            conn,
            SLA_EVENTS,
            new_envelope(
                event,
                source=SOURCE,
                province=ctx.province,
                occurred_at=now,
                event_id=uuid.uuid5(row["report_id"], key),
            ),
        )
        await repository.mark_fired(conn, row=row, at=now)
        THRESHOLD_EVENTS.labels(row["clock"], str(row["percent"])).inc()
        DETECTION_LAG.observe(max((now - row["fire_at"]).total_seconds(), 0.0))
    return len(rows)
