"""Routing use cases: react to report events, record the assignment, emit ReportRouted."""

from __future__ import annotations

import logging
import uuid

from paht_common.clock import Clock
from paht_common.db import Conn
from paht_common.events import (
    Envelope,
    Payload,
    ReportRouted,
    ReportSubmitted,
    ReportTransitioned,
    new_envelope,
)
from paht_common.outbox import add_to_outbox
from paht_common.topics import ROUTING_EVENTS
from routing import repository
from routing.domain import NEEDS_SCREENING, choose_rule, is_manual_assignment
from routing.metrics import ASSIGNMENTS

logger = logging.getLogger(__name__)

SOURCE = "/routing"


async def handle_report_event(
    conn: Conn, envelope: Envelope[Payload], *, clock: Clock, province: str
) -> None:
    """Route submitted reports (unless held for the coordinator's triage) and record the
    coordinator's manual assignments; other report events are not routing's concern."""
    payload = envelope.payload
    if isinstance(payload, ReportSubmitted):
        if NEEDS_SCREENING in payload.flags:
            ASSIGNMENTS.labels("none", "held_for_screening").inc()
            return
        await route_submitted(conn, envelope, payload, clock=clock, province=province)
    elif isinstance(payload, ReportTransitioned) and is_manual_assignment(
        action=payload.action, actor_role=payload.actor_role
    ):
        await record_manual_assignment(conn, envelope, payload)


async def record_manual_assignment(
    conn: Conn, envelope: Envelope[Payload], assigned: ReportTransitioned
) -> None:
    """Make the coordinator's (re-)assignment the report's current one, source ``manual``;
    call inside the handling transaction.

    Automatic assignments are recorded when routing decides them (``route_submitted``);
    intake applying one comes back as a system ``assign`` and is not recorded twice. An
    agency routing does not know is skipped with a warning (assignments name known ones).
    """
    agency_id = assigned.agency_id
    if agency_id is None or not await repository.agency_exists(conn, agency_id=agency_id):
        ASSIGNMENTS.labels("none", "manual_unknown_agency").inc()
        logger.warning(
            "manual assignment of report %s to unknown agency %s not recorded",
            envelope.payload.report_id,
            agency_id,
        )
        return
    previous = await repository.current_assignment(conn, report_id=assigned.report_id)
    category = assigned.details.get("category")
    commune = assigned.details.get("commune_code")
    if not isinstance(category, str):
        category = str(previous["category"]) if previous else "unknown"
    if not isinstance(commune, str):
        commune = str(previous["commune_code"]) if previous and previous["commune_code"] else None
    await repository.insert_assignment(
        conn,
        report_id=assigned.report_id,
        event_id=envelope.event_id,
        agency_id=agency_id,
        rule_id=None,
        category=category,
        commune_code=commune,
        source="manual",
        routed_at=assigned.at,
    )
    ASSIGNMENTS.labels(agency_id, "manual").inc()


async def route_submitted(
    conn: Conn,
    envelope: Envelope[Payload],
    report: ReportSubmitted,
    *,
    clock: Clock,
    province: str,
) -> None:
    """Choose the lead agency and emit ReportRouted; call inside the handling transaction."""
    rules = await repository.candidate_rules(
        conn, category=report.category, commune_code=report.commune_code
    )
    decision = choose_rule(rules, category=report.category, commune_code=report.commune_code)
    if decision.rule is None:
        ASSIGNMENTS.labels("none", "unrouted").inc()
        logger.warning(
            "no routing rule for category %s commune %s", report.category, report.commune_code
        )
        return
    rule = decision.rule
    now = clock.now()
    await repository.insert_assignment(
        conn,
        report_id=report.report_id,
        event_id=envelope.event_id,
        agency_id=rule.agency_id,
        rule_id=rule.id,
        category=report.category,
        commune_code=report.commune_code,
        source="auto",
        routed_at=now,
    )
    routed = ReportRouted(
        report_id=report.report_id,
        number=report.number,
        agency_id=rule.agency_id,
        agency_name=await repository.agency_name(conn, agency_id=rule.agency_id),
        category=report.category,
        commune_code=report.commune_code,
        urgency=report.urgency,
        rule_id=rule.id,
        routed_at=now,
    )
    # deterministic id: a redelivered submission can never produce a second routing event
    event_id = uuid.uuid5(envelope.event_id, "routing.routed")
    await add_to_outbox(
        conn,
        ROUTING_EVENTS,
        new_envelope(
            routed,
            source=SOURCE,
            province=province,
            correlation_id=envelope.correlation_id,
            occurred_at=now,
            event_id=event_id,
        ),
    )
    ASSIGNMENTS.labels(rule.agency_id, "routed").inc()
