"""Intake use cases: submit a report, act on it, keep the view current from other services.

Every state change and its event commit in one transaction (outbox); nothing here talks
to Kafka.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from intake import repository
from intake.domain import (
    TERMINAL_STATES,
    Action,
    Actor,
    AssignAction,
    MergeAction,
    ReportSnapshot,
    Role,
    RuleViolation,
    State,
    Transition,
    content_warnings,
    decide,
    fold_diacritics,
    haversine_m,
    human_number,
)
from intake.metrics import SUBMISSIONS, TRANSITIONS
from intake.schemas import ReportIn
from intake.settings import IntakeSettings
from paht_common.clock import LOCAL_TZ, Clock
from paht_common.db import Conn
from paht_common.events import (
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
from paht_common.topics import REPORT_EVENTS

logger = logging.getLogger(__name__)

SOURCE = "/intake"


class InputError(Exception):
    """Bad input discovered after schema validation; answered 4xx naming the field."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = message


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different request body."""

    def __init__(self, report_id: uuid.UUID) -> None:
        super().__init__(str(report_id))
        self.report_id = report_id


@dataclass(frozen=True)
class SubmitResult:
    """The stored report and whether this call created it."""

    report: dict[str, Any]
    created: bool


@dataclass
class IntakeContext:
    """What the handlers need besides the connection."""

    settings: IntakeSettings
    clock: Clock
    communes: frozenset[str]


def request_hash(body: ReportIn) -> bytes:
    """Fingerprint of a submission, to tell an idempotent replay from a conflicting reuse."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).digest()


def check_location(body: ReportIn, ctx: IntakeContext) -> None:
    """InputError 422 when the location is outside the province or the commune unknown."""
    loc = body.location
    if loc.lat is not None and loc.lon is not None:
        lat_min, lon_min, lat_max, lon_max = ctx.settings.bbox
        if not (lat_min <= loc.lat <= lat_max and lon_min <= loc.lon <= lon_max):
            raise InputError(422, "location", f"the point is outside {ctx.settings.province_name}")
    if loc.commune_code is not None and loc.commune_code not in ctx.communes:
        raise InputError(
            422, "location.commune_code", f"not a commune or ward of {ctx.settings.province_name}"
        )


async def find_duplicates(
    conn: Conn, body: ReportIn, *, now: datetime, ctx: IntakeContext
) -> list[uuid.UUID]:
    """Open reports of the same category within the radius and window."""
    loc = body.location
    if loc.lat is None or loc.lon is None:
        return []
    radius = ctx.settings.duplicate_radius_m
    dlat = radius / 111_320.0
    dlon = radius / (111_320.0 * max(math.cos(math.radians(loc.lat)), 0.01))
    rows = await repository.nearby(
        conn,
        category=body.category,
        since=now - timedelta(days=ctx.settings.duplicate_window_days),
        lat_min=loc.lat - dlat,
        lat_max=loc.lat + dlat,
        lon_min=loc.lon - dlon,
        lon_max=loc.lon + dlon,
    )
    return [r["id"] for r in rows if haversine_m(loc.lat, loc.lon, r["lat"], r["lon"]) <= radius]


async def submit_report(
    conn: Conn, body: ReportIn, *, app_id: str, idempotency_key: str | None, ctx: IntakeContext
) -> SubmitResult:
    """Store a report with its ReportSubmitted event, or return the original on a replay."""
    fingerprint = request_hash(body)
    replay = await repository.find_replay(
        conn,
        source_app=app_id,
        client_report_id=body.client_report_id,
        idempotency_key=idempotency_key,
    )
    if replay is not None:
        return _replayed(replay, fingerprint)
    if await repository.category(conn, code=body.category) is None:
        raise InputError(422, "category", f"unknown category {body.category!r}")
    check_location(body, ctx)
    now = ctx.clock.now()
    report_id = uuid.uuid4()
    flags = content_warnings(body.description)
    duplicates = await find_duplicates(conn, body, now=now, ctx=ctx)
    if duplicates:
        flags.append("possible_duplicate")
    try:
        async with conn.transaction():
            number = human_number(
                ctx.settings.number_prefix,
                now.astimezone(LOCAL_TZ).year,
                await repository.next_number(conn),
            )
            values = {
                "id": report_id,
                "number": number,
                "source_app": app_id,
                "client_report_id": body.client_report_id,
                "idempotency_key": idempotency_key,
                "request_hash": fingerprint,
                "category": body.category,
                "description": body.description,
                "search_text": fold_diacritics(
                    body.description + " " + (body.location.address or "")
                ),
                "commune_code": body.location.commune_code,
                "lat": body.location.lat,
                "lon": body.location.lon,
                "address": body.location.address,
                "channel": body.channel,
                "urgency": body.urgency,
                "media_urls": [str(u) for u in body.media_urls],
                "state": State.SUBMITTED.value,
                "flags": flags,
                "possible_duplicates": duplicates,
                "submitted_at": now,
            }
            await repository.insert_report(conn, values=values)
            r = body.reporter
            await repository.insert_reporter(
                conn,
                report_id=report_id,
                name=r.name,
                phone=r.phone,
                email=r.email,
                anonymous=r.anonymous,
            )
            envelope = new_envelope(
                ReportSubmitted(
                    report_id=report_id,
                    number=number,
                    category=body.category,
                    commune_code=body.location.commune_code,
                    lat=body.location.lat,
                    lon=body.location.lon,
                    channel=body.channel,
                    urgency=body.urgency,
                    source_app=app_id,
                    submitted_at=now,
                    flags=flags,
                    possible_duplicates=duplicates,
                ),
                source=SOURCE,
                province=ctx.settings.province_code,
                occurred_at=now,
            )
            await repository.append_timeline(
                conn,
                report_id=report_id,
                event_id=envelope.event_id,
                at=now,
                actor_role=Role.REPORTER.value,
                actor_subject=f"app:{app_id}",
                actor_agency_id=None,
                action="submit",
                from_state="",
                to_state="submitted",
                reason=None,
                details={"channel": body.channel},
            )
            await add_to_outbox(conn, REPORT_EVENTS, envelope)
    except asyncpg.UniqueViolationError:
        # a concurrent retry with the same key won the race: answer with its report
        replay = await repository.find_replay(
            conn,
            source_app=app_id,
            client_report_id=body.client_report_id,
            idempotency_key=idempotency_key,
        )
        if replay is None:
            raise
        return _replayed(replay, fingerprint)
    SUBMISSIONS.labels(body.channel, "created").inc()
    stored = await repository.get_report(conn, report_id=report_id)
    assert stored is not None
    return SubmitResult(report=stored, created=True)


def _replayed(report: dict[str, Any], fingerprint: bytes) -> SubmitResult:
    if bytes(report["request_hash"]) != fingerprint:
        SUBMISSIONS.labels(report["channel"], "conflict").inc()
        raise IdempotencyConflict(report["id"])
    SUBMISSIONS.labels(report["channel"], "replayed").inc()
    return SubmitResult(report=report, created=False)


def snapshot_of(report: dict[str, Any]) -> ReportSnapshot:
    """The state machine's view of a stored report."""
    return ReportSnapshot(
        state=State(report["state"]),
        agency_id=report["agency_id"],
        requires_leader_approval=report["requires_leader_approval"],
        reopen_count=report["reopen_count"],
        extension_count=report["extension_count"],
        closed_at=report["closed_at"],
        waiting_for_reporter=report["waiting_for_reporter"],
    )


def _fields_after(
    report: dict[str, Any], t: Transition, *, agency_name: str | None, now: datetime
) -> dict[str, Any]:
    d = t.details
    fields = {
        k: report[k]
        for k in (
            "agency_id",
            "agency_name",
            "reopen_count",
            "extension_count",
            "waiting_for_reporter",
            "duplicate_of",
            "rating",
            "response_text",
            "closed_at",
            "public",
            "urgency",
        )
    }
    fields["state"] = t.to_state.value
    if "agency_id" in d and t.action_type.value == "assign":
        fields["agency_id"] = d["agency_id"]
        fields["agency_name"] = agency_name or d["agency_id"]
        if d.get("urgency"):
            fields["urgency"] = d["urgency"]
    for key in ("reopen_count", "extension_count", "waiting_for_reporter", "rating", "public"):
        if key in d and d[key] is not None:
            fields[key] = d[key]
    if "duplicate_of" in d:
        fields["duplicate_of"] = uuid.UUID(str(d["duplicate_of"]))
    if "text" in d and t.action_type.value == "respond":
        fields["response_text"] = d["text"]
    if t.to_state is State.CLOSED:
        fields["closed_at"] = now
    elif t.to_state is State.REOPENED:
        fields["closed_at"] = None
    return fields


def _event_details(
    details: dict[str, object],
) -> dict[str, str | int | float | bool | None | list[str]]:
    out: dict[str, str | int | float | bool | None | list[str]] = {}
    for key, value in details.items():
        if isinstance(value, list | tuple):
            out[key] = [str(v) for v in value]
        elif value is None or isinstance(value, str | int | float | bool):
            out[key] = value
        else:
            out[key] = str(value)
    return out


async def _check_master(conn: Conn, *, report_id: uuid.UUID, duplicate_of: str) -> None:
    """RuleViolation unless ``duplicate_of`` names another report that is still open."""
    try:
        master_id = uuid.UUID(duplicate_of)
    except ValueError as exc:
        raise RuleViolation("duplicate_of", "not a report id") from exc
    master = await repository.get_report(conn, report_id=master_id)
    if master is None or master_id == report_id:
        raise RuleViolation("duplicate_of", f"no other report {master_id}")
    if State(master["state"]) in TERMINAL_STATES:
        raise RuleViolation("duplicate_of", f"report {master_id} is {master['state']}, not open")


async def apply_action(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    action: Action,
    actor: Actor,
    ctx: IntakeContext,
    agency_name: str | None = None,
    event_id: uuid.UUID | None = None,
    correlation_id: str | None = None,
) -> Transition:
    """Decide and persist one transition with its event; call inside a transaction.

    Raises LookupError for an unknown report and the domain's IllegalTransition, Forbidden
    and RuleViolation.
    """
    report = await repository.get_report(conn, report_id=report_id, for_update=True)
    if report is None:
        raise LookupError(str(report_id))
    s = ctx.settings
    now = ctx.clock.now()
    transition = decide(
        snapshot_of(report),
        action,
        actor,
        now=now,
        max_reopens=s.max_reopens,
        reopen_window_days=s.reopen_window_days,
        max_extensions=s.max_extensions,
        max_extension_days=s.max_extension_days,
    )
    if isinstance(action, MergeAction):
        await _check_master(conn, report_id=report_id, duplicate_of=action.duplicate_of)
    fields = _fields_after(report, transition, agency_name=agency_name, now=now)
    await repository.update_after_transition(conn, report_id=report_id, fields=fields, at=now)
    details = _event_details(transition.details)
    envelope = new_envelope(
        ReportTransitioned(
            report_id=report_id,
            action=transition.action_type.value,
            from_state=transition.from_state.value,
            to_state=transition.to_state.value,
            actor_role=actor.role.value,
            agency_id=fields["agency_id"],
            reason=transition.reason,
            details=details,
            at=now,
        ),
        source=SOURCE,
        province=s.province_code,
        occurred_at=now,
        event_id=event_id,
        correlation_id=correlation_id,
    )
    await repository.append_timeline(
        conn,
        report_id=report_id,
        event_id=envelope.event_id,
        at=now,
        actor_role=actor.role.value,
        actor_subject=actor.subject,
        actor_agency_id=actor.agency_id,
        action=transition.action_type.value,
        from_state=transition.from_state.value,
        to_state=transition.to_state.value,
        reason=transition.reason,
        details=details,
    )
    await add_to_outbox(conn, REPORT_EVENTS, envelope)
    TRANSITIONS.labels(transition.action_type.value).inc()
    return transition


SYSTEM = Actor(role=Role.SYSTEM, subject="service:routing")


async def handle_external_event(
    conn: Conn, envelope: Envelope[Payload], *, ctx: IntakeContext
) -> None:
    """Keep the report view current from routing and SLA events (inside the transaction)."""
    p = envelope.payload
    if isinstance(p, ReportRouted):
        await _on_routed(conn, envelope, p, ctx=ctx)
    elif isinstance(p, SlaClocksChanged):
        due = {c.kind: c.due_at for c in p.clocks}
        overdue = any(c.breached for c in p.clocks)
        await repository.update_sla(
            conn,
            report_id=p.report_id,
            screening=due.get("screening"),
            acknowledgement=due.get("acknowledgement"),
            resolution=due.get("resolution"),
            overdue=overdue,
            version=int(envelope.occurred_at.timestamp() * 1_000_000),
            at=ctx.clock.now(),
        )
    elif isinstance(p, SlaThresholdReached) and p.percent >= 100:
        await repository.set_overdue(conn, report_id=p.report_id, at=ctx.clock.now())


async def _on_routed(
    conn: Conn, envelope: Envelope[Payload], routed: ReportRouted, *, ctx: IntakeContext
) -> None:
    from intake.domain import DomainError

    action = AssignAction(agency_id=routed.agency_id)
    try:
        async with conn.transaction():
            await apply_action(
                conn,
                report_id=routed.report_id,
                action=action,
                actor=SYSTEM,
                ctx=ctx,
                agency_name=routed.agency_name,
                event_id=uuid.uuid5(envelope.event_id, "intake.assign"),
                correlation_id=envelope.correlation_id,
            )
    except LookupError:
        logger.warning("routed event for unknown report %s", routed.report_id)
    except DomainError as exc:
        # the coordinator acted first (rejected, merged, assigned by hand): keep their decision
        logger.info("automatic assignment not applied: %s", exc)
