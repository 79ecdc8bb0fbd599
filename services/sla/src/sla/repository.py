"""SQL of the SLA service (raw asyncpg, ``$n`` parameters only)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
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
from sla.domain import Fact, FactKind, Policy, Target
from sla.projection import ClockRow, StoredThreshold, ThresholdRow, ThresholdWrites

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

# One statement records what an event says (the report, its facts) and loads all that its
# recomputation needs. It runs after the report's advisory lock, so its snapshot holds every
# earlier event of the report; the rows it writes itself it reads from RETURNING, because a
# statement does not see its own writes. The submission (overwrite false) never replaces a
# routing decision; a transition ($2 null) writes no report.
RECORD_AND_LOAD = """
WITH report_write AS (
    INSERT INTO sla_reports AS r (report_id, number, category, urgency, agency_id)
    SELECT $1, $2, $3, $4, $5 WHERE $2::text IS NOT NULL
    ON CONFLICT (report_id) DO UPDATE SET
        number = EXCLUDED.number, category = EXCLUDED.category, urgency = EXCLUDED.urgency,
        agency_id = coalesce(EXCLUDED.agency_id, r.agency_id), updated_at = now()
    WHERE $6::boolean
    RETURNING number, category, urgency, agency_id, policy_id, calendar_version
), fact_write AS (
    INSERT INTO sla_facts (event_id, report_id, kind, at, seq, agency_id, extension_days)
    SELECT f.event_id, $1, f.kind, f.at, f.seq, f.agency_id, f.extension_days
    FROM unnest($7::uuid[], $8::text[], $9::timestamptz[], $10::bigint[], $11::text[],
                $12::numeric[]) AS f(event_id, kind, at, seq, agency_id, extension_days)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING kind, at, seq, agency_id, extension_days
), report AS (
    SELECT number, category, urgency, agency_id, policy_id, calendar_version FROM report_write
    UNION ALL
    SELECT number, category, urgency, agency_id, policy_id, calendar_version
    FROM sla_reports WHERE report_id = $1 AND NOT EXISTS (SELECT FROM report_write)
)
SELECT (SELECT revision FROM calendar_revision) AS calendar_revision,
       (SELECT revision FROM policy_revision) AS policy_revision,
       r.number, r.category, r.urgency, r.agency_id, r.policy_id, r.calendar_version,
       ARRAY(SELECT f FROM (SELECT kind, at, seq, agency_id, extension_days
                            FROM sla_facts WHERE report_id = $1
                            UNION ALL
                            SELECT kind, at, seq, agency_id, extension_days FROM fact_write) f
             ORDER BY f.at, f.seq) AS facts,
       ARRAY(SELECT c FROM (SELECT kind, generation, status, amount, unit, agency_id,
                                   started_at, stopped_at, due_at, consumed_s, breached,
                                   calendar_version
                            FROM clocks WHERE report_id = $1) c) AS clocks,
       ARRAY(SELECT t FROM (SELECT clock, generation, mark, percent, level, fire_at, due_at,
                                   fired_at IS NOT NULL
                            FROM thresholds WHERE report_id = $1) t) AS thresholds
FROM (SELECT) AS one LEFT JOIN report r ON true
"""
# One statement writes what a recomputation changed. Thresholds before clocks, the
# scanner's lock order (it holds a threshold, then marks the breach on the clock), so the
# two cannot deadlock: the clock upsert reads from the threshold writes' counts, which
# makes them run to completion first. Fired thresholds are never rewritten, and a finished
# clock (same generation, still finished) keeps its due instant, verdict and calendar
# version: later facts and calendar edits never rewrite past statistics.
WRITE_PROJECTION = """
WITH stale AS (
    DELETE FROM thresholds t
    USING unnest($2::text[], $3::int[], $4::text[]) AS s(clock, generation, mark)
    WHERE t.report_id = $1 AND t.clock = s.clock AND t.generation = s.generation
      AND t.mark = s.mark AND t.fired_at IS NULL
    RETURNING 1
), fresh AS (
    INSERT INTO thresholds AS t (report_id, clock, generation, mark, percent, level, fire_at,
                                 due_at)
    SELECT $1, u.* FROM unnest($5::text[], $6::int[], $7::text[], $8::int[], $9::text[],
                               $10::timestamptz[], $11::timestamptz[]) AS u
    ON CONFLICT (report_id, clock, generation, mark) DO UPDATE SET
        percent = EXCLUDED.percent, level = EXCLUDED.level, fire_at = EXCLUDED.fire_at,
        due_at = EXCLUDED.due_at
    WHERE t.fired_at IS NULL
    RETURNING 1
), clock_write AS (
    INSERT INTO clocks AS c (report_id, kind, generation, status, amount, unit, agency_id,
                             started_at, stopped_at, due_at, consumed_s, breached,
                             calendar_version)
    SELECT $1, u.*, $23 FROM unnest($12::text[], $13::int[], $14::text[], $15::numeric[],
                                    $16::text[], $17::text[], $18::timestamptz[],
                                    $19::timestamptz[], $20::timestamptz[], $21::float8[],
                                    $22::boolean[]) AS u
    WHERE (SELECT count(*) FROM stale) + (SELECT count(*) FROM fresh) >= 0
    ON CONFLICT (report_id, kind) DO UPDATE SET
        generation = EXCLUDED.generation, status = EXCLUDED.status, amount = EXCLUDED.amount,
        unit = EXCLUDED.unit, agency_id = EXCLUDED.agency_id,
        started_at = EXCLUDED.started_at, stopped_at = EXCLUDED.stopped_at,
        due_at = EXCLUDED.due_at, consumed_s = EXCLUDED.consumed_s,
        breached = EXCLUDED.breached OR (c.breached AND c.generation = EXCLUDED.generation),
        calendar_version = EXCLUDED.calendar_version
    WHERE NOT (c.status IN ('stopped', 'cancelled') AND c.status = EXCLUDED.status
               AND c.generation = EXCLUDED.generation)
    RETURNING 1
)
UPDATE sla_reports SET policy_id = $24, calendar_version = $23,
    agency_id = coalesce($25, agency_id), updated_at = now()
WHERE report_id = $1 AND $26::boolean
"""
REPORT = "SELECT * FROM sla_reports WHERE report_id = $1"
LOCK_REPORT = "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))"
CLOCKS_OF = """
SELECT kind, generation, status, amount, unit, agency_id, started_at, stopped_at, due_at,
       consumed_s, breached, calendar_version
FROM clocks WHERE report_id = $1
ORDER BY array_position(ARRAY['screening','acknowledgement','resolution'], kind)
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


@dataclass(frozen=True)
class ReportIn:
    """What an event says of its report."""

    number: str
    category: str
    urgency: str
    agency_id: str | None = None


@dataclass(frozen=True)
class ReportState:
    """The SLA's record of a report."""

    number: str
    category: str
    urgency: str
    agency_id: str | None
    policy_id: str | None
    calendar_version: str | None


@dataclass(frozen=True)
class EventState:
    """A report as its recomputation needs it, with the reference data revisions."""

    calendar_revision: int
    policy_revision: int
    report: ReportState | None
    facts: list[Fact]
    clocks: dict[str, ClockRow]
    thresholds: list[StoredThreshold]


def _clock_row(r: Any) -> ClockRow:
    (kind, generation, status, amount, unit, agency_id, started, stopped, due, consumed,
     breached, calendar_version) = r  # fmt: skip
    return ClockRow(
        kind=kind,
        generation=generation,
        status=status,
        amount=float(amount),
        unit=unit,
        agency_id=agency_id,
        started_at=started,
        stopped_at=stopped,
        due_at=due,
        consumed_s=float(consumed),
        breached=breached,
        calendar_version=calendar_version,
    )


async def record_and_load(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    report: ReportIn | None = None,
    overwrite: bool = False,
    facts: Sequence[tuple[uuid.UUID, Fact]] = (),
) -> EventState:
    """Store the report (``overwrite``: replace what is known) and the facts keyed by event
    id, once each, then everything known of the report; call after ``lock_report``."""
    row = await conn.fetchrow(
        RECORD_AND_LOAD,
        report_id,
        report.number if report else None,
        report.category if report else None,
        report.urgency if report else None,
        report.agency_id if report else None,
        overwrite,
        [event_id for event_id, _ in facts],
        [f.kind.value for _, f in facts],
        [f.at for _, f in facts],
        [f.seq for _, f in facts],
        [f.agency_id for _, f in facts],
        [f.extension_days for _, f in facts],
    )
    assert row is not None
    state = None
    if row["number"] is not None:
        state = ReportState(
            number=row["number"],
            category=row["category"],
            urgency=row["urgency"],
            agency_id=row["agency_id"],
            policy_id=row["policy_id"],
            calendar_version=row["calendar_version"],
        )
    return EventState(
        calendar_revision=int(row["calendar_revision"]),
        policy_revision=int(row["policy_revision"]),
        report=state,
        facts=[
            Fact(
                kind=FactKind(kind),
                at=at,
                seq=seq,
                agency_id=agency_id,
                extension_days=float(days),
            )
            for kind, at, seq, agency_id, days in row["facts"]
        ],
        clocks={c.kind: c for c in map(_clock_row, row["clocks"])},
        thresholds=[
            StoredThreshold(ThresholdRow(clock, gen, mark, percent, level, fire_at, due_at), fired)
            for clock, gen, mark, percent, level, fire_at, due_at, fired in row["thresholds"]
        ],
    )


async def write_projection(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    thresholds: ThresholdWrites,
    clocks: Sequence[ClockRow],
    calendar_version: str,
    policy_id: str,
    agency_id: str | None,
    report_changed: bool,
) -> bool:
    """Apply what a recomputation changed in one statement (none when nothing did);
    inside the transaction that holds the report's lock. True when it wrote."""
    if not (thresholds or clocks or report_changed):
        return False
    stale, fresh = thresholds.stale, thresholds.upserts
    await conn.execute(
        WRITE_PROJECTION,
        report_id,
        [k[0] for k in stale],
        [k[1] for k in stale],
        [k[2] for k in stale],
        [t.clock for t in fresh],
        [t.generation for t in fresh],
        [t.mark for t in fresh],
        [t.percent for t in fresh],
        [t.level for t in fresh],
        [t.fire_at for t in fresh],
        [t.due_at for t in fresh],
        [c.kind for c in clocks],
        [c.generation for c in clocks],
        [c.status for c in clocks],
        [c.amount for c in clocks],
        [c.unit for c in clocks],
        [c.agency_id for c in clocks],
        [c.started_at for c in clocks],
        [c.stopped_at for c in clocks],
        [c.due_at for c in clocks],
        [c.consumed_s for c in clocks],
        [c.breached for c in clocks],
        calendar_version,
        policy_id,
        agency_id,
        report_changed,
    )
    return True


async def get_report(conn: Conn, *, report_id: uuid.UUID) -> dict[str, Any] | None:
    """The SLA's record of a report."""
    row = await conn.fetchrow(REPORT, report_id)
    return None if row is None else dict(row)


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
