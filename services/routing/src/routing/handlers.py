"""Routing use cases: react to report events, record the assignment, emit ReportRouted."""

from __future__ import annotations

import logging
import uuid

from paht_common.clock import Clock
from paht_common.db import Conn
from paht_common.events import Envelope, Payload, ReportRouted, ReportSubmitted, new_envelope
from paht_common.outbox import add_to_outbox
from paht_common.topics import ROUTING_EVENTS
from routing import repository
from routing.domain import choose_rule
from routing.metrics import ASSIGNMENTS

logger = logging.getLogger(__name__)

SOURCE = "/routing"


async def handle_report_event(
    conn: Conn, envelope: Envelope[Payload], *, clock: Clock, province: str
) -> None:
    """Route submitted reports; other report events are not routing's concern yet."""
    payload = envelope.payload
    if isinstance(payload, ReportSubmitted):
        await route_submitted(conn, envelope, payload, clock=clock, province=province)


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
