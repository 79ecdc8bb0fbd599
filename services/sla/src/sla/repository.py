"""SQL of the SLA service (raw asyncpg, ``$n`` parameters only)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime, time
from typing import Any

from paht_common.db import Conn
from sla.calendar import (
    DEFAULT_SEASONS,
    SEED_OVERRIDES,
    BusinessCalendar,
    CalendarOverride,
    OfficePeriod,
    OverrideKind,
    Season,
    Unit,
)
from sla.domain import Clock, Fact, FactKind, Policy, Target, ThresholdInstant

# --- calendar ---------------------------------------------------------------------------

REVISION = "SELECT revision FROM calendar_revision"
BUMP_REVISION = "UPDATE calendar_revision SET revision = revision + 1 RETURNING revision"
OVERRIDES = "SELECT day, kind, reason, document FROM calendar_overrides ORDER BY day"
SEASONS = """
SELECT name, start_month, start_day, end_month, end_day, periods, weekdays
FROM calendar_seasons ORDER BY name
"""
UPSERT_OVERRIDE = """
INSERT INTO calendar_overrides (day, kind, reason, document) VALUES ($1, $2, $3, $4)
ON CONFLICT (day) DO UPDATE SET kind = EXCLUDED.kind, reason = EXCLUDED.reason,
                                document = EXCLUDED.document, created_at = now()
"""
DELETE_OVERRIDE = "DELETE FROM calendar_overrides WHERE day = $1"
INSERT_SEASON = """
INSERT INTO calendar_seasons (name, start_month, start_day, end_month, end_day, periods,
                              weekdays)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""


async def calendar_revision(conn: Conn) -> int:
    """Current calendar revision (bumped on every edit)."""
    return int(await conn.fetchval(REVISION))


async def seed_calendar_once(conn: Conn) -> None:
    """On the very first start (revision 0) store the default seasons and seed overrides."""
    async with conn.transaction():
        revision = await conn.fetchval(REVISION + " FOR UPDATE")
        if revision != 0:
            return
        for season in DEFAULT_SEASONS:
            await conn.execute(
                INSERT_SEASON,
                season.name,
                season.start[0],
                season.start[1],
                season.end[0],
                season.end[1],
                [[p.start.strftime("%H:%M"), p.end.strftime("%H:%M")] for p in season.periods],
                sorted(season.weekdays),
            )
        for override in SEED_OVERRIDES:
            await conn.execute(
                UPSERT_OVERRIDE,
                override.day,
                override.kind.value,
                override.reason,
                override.document,
            )
        await conn.execute(BUMP_REVISION)


def _time(text: str) -> time:
    hour, minute = text.split(":")
    return time(int(hour), int(minute))


async def load_calendar(conn: Conn) -> BusinessCalendar:
    """The business calendar as stored now."""
    revision = await calendar_revision(conn)
    seasons = [
        Season(
            name=r["name"],
            start=(r["start_month"], r["start_day"]),
            end=(r["end_month"], r["end_day"]),
            periods=tuple(OfficePeriod(_time(a), _time(b)) for a, b in r["periods"]),
            weekdays=frozenset(r["weekdays"]),
        )
        for r in await conn.fetch(SEASONS)
    ]
    overrides = [
        CalendarOverride(
            day=r["day"], kind=OverrideKind(r["kind"]), reason=r["reason"], document=r["document"]
        )
        for r in await conn.fetch(OVERRIDES)
    ]
    return BusinessCalendar(
        seasons=seasons or DEFAULT_SEASONS, overrides=overrides, revision=revision
    )


async def list_overrides(conn: Conn) -> list[CalendarOverride]:
    """Every stored override, by day."""
    return [
        CalendarOverride(
            day=r["day"], kind=OverrideKind(r["kind"]), reason=r["reason"], document=r["document"]
        )
        for r in await conn.fetch(OVERRIDES)
    ]


async def upsert_override(conn: Conn, *, override: CalendarOverride) -> int:
    """Store an override and bump the revision; returns the new revision."""
    await conn.execute(
        UPSERT_OVERRIDE, override.day, override.kind.value, override.reason, override.document
    )
    return int(await conn.fetchval(BUMP_REVISION))


async def delete_override(conn: Conn, *, day: date) -> bool:
    """Remove an override (bumping the revision); False when there was none."""
    result = await conn.execute(DELETE_OVERRIDE, day)
    if result.endswith(" 0"):
        return False
    await conn.execute(BUMP_REVISION)
    return True


# --- policies ---------------------------------------------------------------------------

POLICIES = """
SELECT id, priority, category, urgency, agency_id, screening_amount, screening_unit,
       acknowledgement_amount, acknowledgement_unit, resolution_amount, resolution_unit,
       resolution_starts, on_reroute, version
FROM policies WHERE active ORDER BY priority, id
"""
UPSERT_POLICY = """
INSERT INTO policies (id, priority, category, urgency, agency_id, screening_amount,
    screening_unit, acknowledgement_amount, acknowledgement_unit, resolution_amount,
    resolution_unit, resolution_starts, on_reroute)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (id) DO UPDATE SET priority = EXCLUDED.priority, category = EXCLUDED.category,
    urgency = EXCLUDED.urgency, agency_id = EXCLUDED.agency_id,
    screening_amount = EXCLUDED.screening_amount, screening_unit = EXCLUDED.screening_unit,
    acknowledgement_amount = EXCLUDED.acknowledgement_amount,
    acknowledgement_unit = EXCLUDED.acknowledgement_unit,
    resolution_amount = EXCLUDED.resolution_amount, resolution_unit = EXCLUDED.resolution_unit,
    resolution_starts = EXCLUDED.resolution_starts, on_reroute = EXCLUDED.on_reroute,
    version = policies.version + 1, active = true, updated_at = now()
RETURNING version
"""


def _policy(r: Any) -> Policy:
    return Policy(
        id=r["id"],
        priority=r["priority"],
        category=r["category"],
        urgency=r["urgency"],
        agency_id=r["agency_id"],
        screening=Target(float(r["screening_amount"]), Unit(r["screening_unit"])),
        acknowledgement=Target(float(r["acknowledgement_amount"]), Unit(r["acknowledgement_unit"])),
        resolution=Target(float(r["resolution_amount"]), Unit(r["resolution_unit"])),
        resolution_starts=r["resolution_starts"],
        on_reroute=r["on_reroute"],
    )


async def load_policies(conn: Conn) -> list[Policy]:
    """Active policies in evaluation order."""
    return [_policy(r) for r in await conn.fetch(POLICIES)]


async def upsert_policy(conn: Conn, *, policy: Policy) -> int:
    """Create or replace a policy; returns its new version."""
    return int(
        await conn.fetchval(
            UPSERT_POLICY,
            policy.id,
            policy.priority,
            policy.category,
            policy.urgency,
            policy.agency_id,
            policy.screening.amount,
            policy.screening.unit.value,
            policy.acknowledgement.amount,
            policy.acknowledgement.unit.value,
            policy.resolution.amount,
            policy.resolution.unit.value,
            policy.resolution_starts,
            policy.on_reroute,
        )
    )


# --- reports, facts, clocks -------------------------------------------------------------

UPSERT_REPORT = """
INSERT INTO sla_reports (report_id, number, category, urgency, agency_id)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (report_id) DO UPDATE SET
    number = EXCLUDED.number, category = EXCLUDED.category, urgency = EXCLUDED.urgency,
    agency_id = coalesce(EXCLUDED.agency_id, sla_reports.agency_id), updated_at = now()
"""
INSERT_REPORT = """
INSERT INTO sla_reports (report_id, number, category, urgency) VALUES ($1, $2, $3, $4)
ON CONFLICT (report_id) DO NOTHING
"""
REPORT = "SELECT * FROM sla_reports WHERE report_id = $1"
LOCK_REPORT = "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))"
SET_REPORT_POLICY = """
UPDATE sla_reports SET policy_id = $2, calendar_version = $3,
    agency_id = coalesce($4, agency_id), updated_at = now()
WHERE report_id = $1
"""
INSERT_FACT = """
INSERT INTO sla_facts (event_id, report_id, kind, at, seq, agency_id, extension_days)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (event_id) DO NOTHING
"""
FACTS = """
SELECT kind, at, seq, agency_id, extension_days FROM sla_facts
WHERE report_id = $1 ORDER BY at, seq
"""
UPSERT_CLOCK = """
INSERT INTO clocks (report_id, kind, generation, status, amount, unit, agency_id, started_at,
                    stopped_at, due_at, consumed_s, breached, calendar_version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (report_id, kind) DO UPDATE SET
    generation = EXCLUDED.generation, status = EXCLUDED.status, amount = EXCLUDED.amount,
    unit = EXCLUDED.unit, agency_id = EXCLUDED.agency_id, started_at = EXCLUDED.started_at,
    stopped_at = EXCLUDED.stopped_at, due_at = EXCLUDED.due_at,
    consumed_s = EXCLUDED.consumed_s,
    breached = EXCLUDED.breached OR (clocks.breached AND clocks.generation = EXCLUDED.generation),
    calendar_version = EXCLUDED.calendar_version
-- A finished clock (same generation, still finished) keeps its due instant, verdict and
-- calendar version: later facts and calendar edits never rewrite past statistics.
WHERE NOT (clocks.status IN ('stopped', 'cancelled') AND clocks.status = EXCLUDED.status
           AND clocks.generation = EXCLUDED.generation)
"""
CLOCKS_OF = """
SELECT kind, generation, status, amount, unit, agency_id, started_at, stopped_at, due_at,
       consumed_s, breached, calendar_version
FROM clocks WHERE report_id = $1
ORDER BY array_position(ARRAY['screening','acknowledgement','resolution'], kind)
"""
DELETE_PENDING_THRESHOLDS = "DELETE FROM thresholds WHERE report_id = $1 AND fired_at IS NULL"
INSERT_THRESHOLD = """
INSERT INTO thresholds (report_id, clock, generation, mark, percent, level, fire_at, due_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (report_id, clock, generation, mark) DO NOTHING
"""
CLAIM_DUE_THRESHOLDS = """
SELECT t.report_id, t.clock, t.generation, t.mark, t.percent, t.level, t.fire_at, t.due_at,
       r.number, c.agency_id
FROM thresholds t
JOIN sla_reports r ON r.report_id = t.report_id
LEFT JOIN clocks c ON c.report_id = t.report_id AND c.kind = t.clock
WHERE t.fired_at IS NULL AND t.fire_at <= $1
ORDER BY t.fire_at
LIMIT $2
FOR UPDATE OF t SKIP LOCKED
"""
MARK_FIRED = """
UPDATE thresholds SET fired_at = $5
WHERE report_id = $1 AND clock = $2 AND generation = $3 AND mark = $4
"""
MARK_BREACHED = """
UPDATE clocks SET breached = true WHERE report_id = $1 AND kind = $2 AND generation = $3
"""
OVERDUE = """
SELECT c.report_id, r.number, r.category, c.kind, c.agency_id, c.due_at, c.started_at
FROM clocks c JOIN sla_reports r ON r.report_id = c.report_id
WHERE c.status = 'running' AND c.due_at < $1
  AND ($2::text IS NULL OR c.agency_id = $2)
  AND ($3::timestamptz IS NULL OR (c.due_at, c.report_id::text, c.kind) > ($3, $4, $5))
ORDER BY c.due_at, c.report_id::text, c.kind
LIMIT $6
"""


async def lock_report(conn: Conn, *, report_id: uuid.UUID) -> None:
    """Serialise recomputation of one report across instances; call inside a transaction."""
    await conn.execute(LOCK_REPORT, str(report_id))


async def upsert_report(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    number: str,
    category: str,
    urgency: str,
    agency_id: str | None,
) -> None:
    """Remember (or update) what the SLA needs of a report."""
    await conn.execute(UPSERT_REPORT, report_id, number, category, urgency, agency_id)


async def insert_report(
    conn: Conn, *, report_id: uuid.UUID, number: str, category: str, urgency: str
) -> None:
    """Remember a report unless already known (never overwrites a routing decision)."""
    await conn.execute(INSERT_REPORT, report_id, number, category, urgency)


async def get_report(conn: Conn, *, report_id: uuid.UUID) -> dict[str, Any] | None:
    """The SLA's record of a report."""
    row = await conn.fetchrow(REPORT, report_id)
    return None if row is None else dict(row)


async def set_report_policy(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    policy_id: str,
    calendar_version: str,
    agency_id: str | None = None,
) -> None:
    """Record the policy, calendar version and (when given) agency the clocks were computed with."""
    await conn.execute(SET_REPORT_POLICY, report_id, policy_id, calendar_version, agency_id)


async def add_fact(conn: Conn, *, event_id: uuid.UUID, report_id: uuid.UUID, fact: Fact) -> None:
    """Store a fact once (keyed by the event that carried it)."""
    await conn.execute(
        INSERT_FACT,
        event_id,
        report_id,
        fact.kind.value,
        fact.at,
        fact.seq,
        fact.agency_id,
        fact.extension_days,
    )


async def facts_of(conn: Conn, *, report_id: uuid.UUID) -> list[Fact]:
    """Every fact of a report in time order."""
    return [
        Fact(
            kind=FactKind(r["kind"]),
            at=r["at"],
            seq=r["seq"],
            agency_id=r["agency_id"],
            extension_days=float(r["extension_days"]),
        )
        for r in await conn.fetch(FACTS, report_id)
    ]


async def save_clocks(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    clocks: Sequence[Clock],
    breached: dict[str, bool],
    calendar_version: str,
) -> None:
    """Write the computed clocks."""
    for c in clocks:
        await conn.execute(
            UPSERT_CLOCK,
            report_id,
            c.kind,
            c.generation,
            c.status,
            c.amount,
            c.unit.value,
            c.agency_id,
            c.started_at,
            c.stopped_at,
            c.due_at,
            c.consumed_s,
            breached.get(c.kind, False),
            calendar_version,
        )


async def replace_pending_thresholds(
    conn: Conn, *, report_id: uuid.UUID, instants: Sequence[ThresholdInstant]
) -> None:
    """Drop unfired thresholds and insert the current ones (fired ones never fire again)."""
    await conn.execute(DELETE_PENDING_THRESHOLDS, report_id)
    await conn.executemany(
        INSERT_THRESHOLD,
        [
            (
                report_id,
                t.clock,
                t.generation,
                t.mark.key,
                t.mark.percent,
                t.mark.level,
                t.fire_at,
                t.due_at,
            )
            for t in instants
        ],
    )


async def clocks_of(conn: Conn, *, report_id: uuid.UUID) -> list[dict[str, Any]]:
    """Stored clocks of a report."""
    return [dict(r) for r in await conn.fetch(CLOCKS_OF, report_id)]


async def claim_due_thresholds(conn: Conn, *, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Lock up to ``limit`` due thresholds no other instance holds; inside a transaction."""
    return [dict(r) for r in await conn.fetch(CLAIM_DUE_THRESHOLDS, now, limit)]


async def mark_fired(conn: Conn, *, row: dict[str, Any], at: datetime) -> None:
    """Record that a threshold fired (and the breach on the clock at 100 %)."""
    await conn.execute(
        MARK_FIRED, row["report_id"], row["clock"], row["generation"], row["mark"], at
    )
    if row["percent"] >= 100:
        await conn.execute(MARK_BREACHED, row["report_id"], row["clock"], row["generation"])


async def overdue(
    conn: Conn,
    *,
    now: datetime,
    agency_id: str | None,
    after: tuple[datetime, str, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Running clocks past due, oldest first, keyset-paged after ``after``."""
    a_due, a_id, a_kind = after if after else (None, None, None)
    return [dict(r) for r in await conn.fetch(OVERDUE, now, agency_id, a_due, a_id, a_kind, limit)]
