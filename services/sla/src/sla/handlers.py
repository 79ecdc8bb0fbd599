"""SLA use cases: turn lifecycle events into facts, recompute clocks, emit what changed."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

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
from sla.projection import ClockRow, ThresholdRow, clocks_to_write, threshold_writes
from sla.reference import CalendarCache as CalendarCache  # re-exported: api, tests
from sla.reference import PolicyCache
from sla.repository import ReportIn

logger = logging.getLogger(__name__)

SOURCE = "/sla"

# Tie-break for facts at the same instant: the lifecycle order.
FACT_RANK = {kind: rank for rank, kind in enumerate(FactKind)}

TRANSITION_FACTS: dict[str, FactKind] = {
    "acknowledge": FactKind.ACKNOWLEDGED,
    "request_extension": FactKind.EXTENSION_REQUESTED,
    "return": FactKind.RETURNED,
    # the coordinator taking a report back into screening stops the agency's clocks as a
    # return does (intake: a reason is required when an agency holds it)
    "rescreen": FactKind.RETURNED,
    "pause_for_reporter": FactKind.PAUSED,
    "resume": FactKind.RESUMED,
    "approve_extension": FactKind.EXTENDED,
    "review_reject": FactKind.REOPENED,
    "reject": FactKind.CANCELLED,
    "merge": FactKind.CANCELLED,
}


@dataclass
class SlaContext:
    """What the handlers need besides the connection."""

    clock: TimeSource
    calendars: CalendarCache
    province: str
    marks: tuple[Mark, ...] = DEFAULT_MARKS
    policies: PolicyCache = field(default_factory=PolicyCache)


# Facts after which the resolution clock is not running anyway (no implicit resume needed).
_NOT_RUNNING_AFTER = frozenset(
    {FactKind.PAUSED, FactKind.RESUMED, FactKind.RETURNED, FactKind.RESOLVED, FactKind.CANCELLED}
)


def facts_from(envelope: Envelope[Payload]) -> list[Fact]:
    """The clock-relevant facts an event carries, the main one first (may be empty)."""
    p = envelope.payload
    if isinstance(p, ReportSubmitted):
        return [Fact(FactKind.SUBMITTED, p.submitted_at, FACT_RANK[FactKind.SUBMITTED])]
    if isinstance(p, ReportRouted):
        rank = FACT_RANK[FactKind.ROUTED]
        return [Fact(FactKind.ROUTED, p.routed_at, rank, agency_id=p.agency_id)]
    if not isinstance(p, ReportTransitioned):
        return []
    facts: list[Fact] = []
    if p.action == "assign" and p.actor_role != "system":
        # a coordinator's manual (re-)assignment; automatic ones arrive as ReportRouted
        facts.append(Fact(FactKind.ROUTED, p.at, FACT_RANK[FactKind.ROUTED], agency_id=p.agency_id))
    elif p.to_state == "resolved":
        facts.append(Fact(FactKind.RESOLVED, p.at, FACT_RANK[FactKind.RESOLVED]))
    elif (kind := TRANSITION_FACTS.get(p.action)) is not None:
        days = p.details.get("days")
        wants_days = kind in (FactKind.EXTENDED, FactKind.EXTENSION_REQUESTED)
        facts.append(
            Fact(
                kind,
                p.at,
                FACT_RANK[kind],
                agency_id=p.agency_id,
                extension_days=float(days)
                if wants_days and isinstance(days, int | float) and not isinstance(days, bool)
                else 0.0,
            )
        )
    # intake clears "waiting for the reporter" on any move out of IN_PROGRESS (an extension
    # request, a response for the leader) without a separate resume, and refuses a later
    # resume; without this the paused resolution clock would never run again.
    if p.details.get("waiting_for_reporter") is False and not (
        facts and facts[0].kind in _NOT_RUNNING_AFTER
    ):
        facts.append(Fact(FactKind.RESUMED, p.at, FACT_RANK[FactKind.RESUMED]))
    return facts


def fact_from(envelope: Envelope[Payload]) -> Fact | None:
    """The main clock-relevant fact an event carries, if any."""
    facts = facts_from(envelope)
    return facts[0] if facts else None


def _current_agency(facts: list[Fact]) -> str | None:
    """Agency of the latest routing fact (facts come in time order)."""
    routed = [f.agency_id for f in facts if f.kind is FactKind.ROUTED and f.agency_id]
    return routed[-1] if routed else None


async def handle_event(conn: Conn, envelope: Envelope[Payload], *, ctx: SlaContext) -> None:
    """Record the event's facts and recompute the report's clocks; inside the transaction."""
    p = envelope.payload
    facts = facts_from(envelope)
    if not facts:
        return
    await repository.lock_report(conn, report_id=p.report_id)
    report: ReportIn | None = None
    if isinstance(p, ReportRouted | ReportSubmitted):
        report = ReportIn(
            number=p.number,
            category=p.category,
            urgency=p.urgency,
            agency_id=p.agency_id if isinstance(p, ReportRouted) else None,
        )
    keyed = [
        (envelope.event_id if i == 0 else uuid.uuid5(envelope.event_id, f"fact:{fact.kind}"), fact)
        for i, fact in enumerate(facts)
    ]
    # Routing comes after screening, which may reclassify: a submission that arrives after
    # the routing decision (another topic) must not overwrite it.
    state = await repository.record_and_load(
        conn,
        report_id=p.report_id,
        report=report,
        overwrite=isinstance(p, ReportRouted),
        facts=keyed,
    )
    await _recompute(
        conn, state, report_id=p.report_id, trigger=facts[0].kind.value, cause=envelope, ctx=ctx
    )


async def recompute(
    conn: Conn, *, report_id: uuid.UUID, trigger: str, cause: Envelope[Payload], ctx: SlaContext
) -> list[Clock] | None:
    """Recompute, store and announce the clocks of a report; call after ``lock_report``."""
    state = await repository.record_and_load(conn, report_id=report_id)
    return await _recompute(conn, state, report_id=report_id, trigger=trigger, cause=cause, ctx=ctx)


async def _recompute(
    conn: Conn,
    state: repository.EventState,
    *,
    report_id: uuid.UUID,
    trigger: str,
    cause: Envelope[Payload],
    ctx: SlaContext,
) -> list[Clock] | None:
    report = state.report
    if report is None:
        return None  # nothing known yet; the submission or routing event will recompute
    calendar = await ctx.calendars.at(conn, revision=state.calendar_revision)
    math = ClockMath(calendar)
    # The latest routing decides the agency, whichever event arrived last.
    agency_id: str | None = _current_agency(state.facts) or report.agency_id
    policy = choose_policy(
        await ctx.policies.at(conn, revision=state.policy_revision),
        category=report.category,
        urgency=report.urgency,
        agency_id=agency_id,
    )
    clocks = compute_clocks(state.facts, policy, math)
    now = ctx.clock.now()
    rows = [
        ClockRow.of(
            c,
            breached=c.status != "running" and c.breached_at(now),
            calendar_version=calendar.version,
        )
        for c in clocks
    ]
    wanted = [ThresholdRow.of(t) for t in threshold_instants(clocks, ctx.marks, math)]
    await repository.write_projection(
        conn,
        report_id=report_id,
        thresholds=threshold_writes(state.thresholds, wanted),
        clocks=clocks_to_write(state.clocks, rows),
        calendar_version=calendar.version,
        policy_id=policy.id,
        agency_id=agency_id,
        report_changed=(report.policy_id, report.calendar_version, report.agency_id)
        != (policy.id, calendar.version, agency_id or report.agency_id),
    )
    changed = SlaClocksChanged(
        report_id=report_id,
        trigger=trigger,
        number=report.number,
        agency_id=agency_id,
        category=report.category,
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
    # Breaches lock their clock row: take those locks in one global order (report, clock) so
    # that concurrent scanners, whose batches interleave, cannot deadlock; within a clock
    # keep the fire order, which consumers of the report's partition see.
    rows.sort(key=lambda r: (r["report_id"], r["clock"], r["fire_at"], r["generation"], r["mark"]))
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
