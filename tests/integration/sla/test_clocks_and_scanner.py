"""SLA clocks and the threshold scanner on the real PostgreSQL of the test harness.

Events enter through ``paht_common.consumer.EventProcessor`` (real inbox, one transaction
per event) exactly as the faust agent feeds them; time is a ``FakeClock`` moved by hand.
Expected instants are worked out by hand from the default office hours (Mon-Fri 08-12,
13-17, Asia/Ho_Chi_Minh) as in tests/unit/sla/test_domain.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from paht_common.consumer import EventProcessor, Outcome
from paht_common.db import Conn, apply_migrations, create_pool
from paht_common.events import (
    Envelope,
    Payload,
    ReportRouted,
    ReportSubmitted,
    ReportTransitioned,
    Urgency,
    new_envelope,
)
from paht_common.kafka import RawRecord, encode, header_list, key_bytes
from paht_common.testing import FakeClock
from paht_common.topics import REPORT_EVENTS, ROUTING_EVENTS
from sla import repository
from sla.calendar import TZ, CalendarOverride, OverrideKind
from sla.handlers import CalendarCache, SlaContext, handle_event
from sla.scanner import scan_once

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "sla" / "migrations"
THRESHOLD_TYPE = "vn.bn.fieldreport.sla.threshold_reached.v1"
CHANGED_TYPE = "vn.bn.fieldreport.sla.clocks_changed.v1"


def vn(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=TZ)


# Routed Fri 27/11/2026 16:00: acknowledgement (8 WH) due Mon 30/11 16:00 (Fri 16-17 1 h,
# Mon 08-12 4 h, 13-16 3 h); 50 % (4 WH) Mon 11:00; 75 % (6 WH) Mon 14:00; +8 WH Tue 1/12
# 16:00; +3 WD (24 WH) Thu 3/12 16:00.
ROUTED_AT = vn(2026, 11, 27, 16)
MARKS_AT = {
    "50": vn(2026, 11, 30, 11),
    "75": vn(2026, 11, 30, 14),
    "100": vn(2026, 11, 30, 16),
    "100+8wh": vn(2026, 12, 1, 16),
    "100+3wd": vn(2026, 12, 3, 16),
}


async def migrate(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await apply_migrations(conn, MIGRATIONS)
        await repository.seed_calendar_once(conn)


@pytest.fixture
async def pool(fresh_pool: asyncpg.Pool) -> asyncpg.Pool:
    """A fresh database with the SLA schema and the seeded calendar."""
    await migrate(fresh_pool)
    return fresh_pool


class Sla:
    """One SLA instance: its context, an event processor with a recording dead-letter sink."""

    def __init__(self, pool: asyncpg.Pool, clock: FakeClock, *, attempts: int = 3) -> None:
        self.pool = pool
        self.clock = clock
        self.ctx = SlaContext(clock=clock, calendars=CalendarCache(), province="bn")
        self.dead_letters: list[tuple[str, RawRecord, dict[str, bytes]]] = []
        self.processor = EventProcessor(
            consumer="sla",
            pool=pool,
            handler=self._handle,
            dead_letters=self._sink,
            attempts=attempts,
            retry_delay=0.0,
        )
        self._offset = 0

    async def _handle(self, conn: Conn, envelope: Envelope[Payload]) -> None:
        await handle_event(conn, envelope, ctx=self.ctx)

    async def _sink(self, topic: str, record: RawRecord, headers: list[tuple[str, bytes]]) -> None:
        self.dead_letters.append((topic, record, dict(headers)))

    def record(self, envelope: Envelope[Any], topic: str = REPORT_EVENTS) -> RawRecord:
        message = encode(envelope)
        self._offset += 1
        return RawRecord(
            topic=topic,
            partition=0,
            offset=self._offset,
            key=key_bytes(message),
            value=message.value,
            headers=tuple(header_list(message)),
        )

    async def deliver(self, envelope: Envelope[Any], topic: str | None = None) -> Outcome:
        if topic is None:
            routed = isinstance(envelope.payload, ReportRouted)
            topic = ROUTING_EVENTS if routed else REPORT_EVENTS
        return await self.processor.process(self.record(envelope, topic))

    async def scan(self, *, batch: int = 100) -> int:
        return await scan_once(self.pool, ctx=self.ctx, batch=batch)


def submitted(
    rid: uuid.UUID, at: datetime, *, urgency: Urgency = "normal", category: str = "INFRA.ROAD"
) -> Envelope[ReportSubmitted]:
    payload = ReportSubmitted(
        report_id=rid,
        number=f"BN-{rid.hex[:6]}",
        category=category,
        commune_code="09394",
        lat=21.18,
        lon=106.07,
        channel="app",
        urgency=urgency,
        source_app="test",
        submitted_at=at,
    )
    return new_envelope(payload, source="/intake", province="bn", occurred_at=at)


def routed(
    rid: uuid.UUID,
    at: datetime,
    *,
    agency: str = "ubnd-a",
    urgency: Urgency = "normal",
    category: str = "INFRA.ROAD",
) -> Envelope[ReportRouted]:
    payload = ReportRouted(
        report_id=rid,
        number=f"BN-{rid.hex[:6]}",
        agency_id=agency,
        agency_name=agency.upper(),
        category=category,
        commune_code="09394",
        urgency=urgency,
        rule_id="rule-1",
        routed_at=at,
    )
    return new_envelope(payload, source="/routing", province="bn", occurred_at=at)


def transitioned(
    rid: uuid.UUID,
    action: str,
    at: datetime,
    *,
    to_state: str,
    from_state: str = "assigned",
    actor_role: str = "officer",
    agency: str | None = "ubnd-a",
    details: dict[str, str | int | float | bool | None] | None = None,
) -> Envelope[ReportTransitioned]:
    payload = ReportTransitioned(
        report_id=rid,
        action=action,
        from_state=from_state,
        to_state=to_state,
        actor_role=actor_role,
        agency_id=agency,
        details=details or {},
        at=at,
    )
    return new_envelope(payload, source="/intake", province="bn", occurred_at=at)


CLOCK_COLUMNS = (
    "kind, generation, status, amount, unit, agency_id, started_at, stopped_at, due_at, "
    "consumed_s, breached, calendar_version"
)


async def clocks(pool: asyncpg.Pool, rid: uuid.UUID) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return await repository.clocks_of(conn, report_id=rid)


async def clock(pool: asyncpg.Pool, rid: uuid.UUID, kind: str) -> dict[str, Any]:
    [row] = [c for c in await clocks(pool, rid) if c["kind"] == kind]
    return row


async def thresholds(pool: asyncpg.Pool, rid: uuid.UUID) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT clock, generation, mark, percent, level, fire_at, due_at, fired_at "
        "FROM thresholds WHERE report_id = $1 ORDER BY clock, generation, fire_at, mark",
        rid,
    )
    return [dict(r) for r in rows]


async def outbox(pool: asyncpg.Pool, ce_type: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT event_id, value FROM outbox WHERE headers->>'ce_type' = $1 ORDER BY id", ce_type
    )
    return [{"event_id": r["event_id"], **json.loads(r["value"])} for r in rows]


# --- (a) redelivery -----------------------------------------------------------------------


async def test_redelivered_event_changes_nothing_and_adds_no_outbox_row(
    pool: asyncpg.Pool,
) -> None:
    sla = Sla(pool, FakeClock(ROUTED_AT))
    rid = uuid.uuid4()
    event = routed(rid, ROUTED_AT)
    assert await sla.deliver(event) == "handled"
    before = (
        await clocks(pool, rid),
        await thresholds(pool, rid),
        await outbox(pool, CHANGED_TYPE),
    )
    assert len(before[2]) == 1

    sla.clock.advance(timedelta(hours=1))
    assert await sla.deliver(event) == "duplicate"
    after = (await clocks(pool, rid), await thresholds(pool, rid), await outbox(pool, CHANGED_TYPE))
    assert after == before
    assert (await clock(pool, rid, "acknowledgement"))["due_at"] == vn(2026, 11, 30, 16)


async def test_same_event_handled_twice_past_the_inbox_still_gives_one_outbox_row(
    pool: asyncpg.Pool,
) -> None:
    # The inbox is the first guard; the fact table and the derived outbox event id are the
    # second (e.g. the event replayed from the dead-letter topic by an operator).
    sla = Sla(pool, FakeClock(ROUTED_AT))
    rid = uuid.uuid4()
    event: Envelope[Any] = routed(rid, ROUTED_AT)
    for _ in range(2):
        async with pool.acquire() as conn, conn.transaction():
            await handle_event(conn, event, ctx=sla.ctx)
    assert len(await outbox(pool, CHANGED_TYPE)) == 1
    assert await pool.fetchval("SELECT count(*) FROM sla_facts WHERE report_id = $1", rid) == 1


# --- (b) order ----------------------------------------------------------------------------


def _without_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "report_id"} for r in rows]


async def test_acknowledgement_before_routing_gives_the_same_clocks_as_in_order(
    pool: asyncpg.Pool,
) -> None:
    sla = Sla(pool, FakeClock(vn(2026, 11, 30, 10)))
    in_order, out_of_order = uuid.uuid4(), uuid.uuid4()

    def history(rid: uuid.UUID) -> list[Envelope[Any]]:
        return [
            submitted(rid, vn(2026, 11, 27, 14)),
            routed(rid, ROUTED_AT),
            transitioned(rid, "acknowledge", vn(2026, 11, 30, 9, 30), to_state="in_progress"),
        ]

    for event in history(in_order):
        assert await sla.deliver(event) == "handled"
    submit, route, ack = history(out_of_order)
    for event in (ack, submit, route):  # the routing topic lags behind the report topic
        assert await sla.deliver(event) == "handled"

    expected = await clocks(pool, in_order)
    assert _without_ids(await clocks(pool, out_of_order)) == _without_ids(expected)
    assert await thresholds(pool, out_of_order) == await thresholds(pool, in_order)
    # and the hand-computed result: 5 WD from Mon 30/11 09:30 => Mon 7/12 09:30
    resolution = await clock(pool, out_of_order, "resolution")
    assert (resolution["status"], resolution["due_at"]) == ("running", vn(2026, 12, 7, 9, 30))
    assert resolution["agency_id"] == "ubnd-a"


async def test_late_submission_does_not_undo_the_urgency_routing_decided(
    pool: asyncpg.Pool,
) -> None:
    # Screening reclassified the report as urgent; the submission (normal) arrives last.
    sla = Sla(pool, FakeClock(vn(2026, 11, 30, 10)))
    in_order, late = uuid.uuid4(), uuid.uuid4()
    for rid, order in ((in_order, (0, 1, 2)), (late, (1, 2, 0))):
        events: list[Envelope[Any]] = [
            submitted(rid, vn(2026, 11, 30, 8), urgency="normal"),
            routed(rid, vn(2026, 11, 30, 8, 30), urgency="urgent"),
            transitioned(rid, "acknowledge", vn(2026, 11, 30, 9, 30), to_state="in_progress"),
        ]
        for i in order:
            await sla.deliver(events[i])
    for rid in (in_order, late):
        report = await pool.fetchrow(
            "SELECT urgency, policy_id FROM sla_reports WHERE report_id = $1", rid
        )
        assert report is not None
        assert (report["urgency"], report["policy_id"]) == ("urgent", "default-urgent")
        # urgent resolution: 4 WH from Mon 09:30 => 09:30-12 (2.5 h) + 13:00-14:30 => 14:30
        assert (await clock(pool, rid, "resolution"))["due_at"] == vn(2026, 11, 30, 14, 30)


async def test_manual_reassignment_moves_the_report_to_the_new_agency(pool: asyncpg.Pool) -> None:
    sla = Sla(pool, FakeClock(vn(2026, 11, 30, 12)))
    rid = uuid.uuid4()
    await sla.deliver(routed(rid, vn(2026, 11, 30, 8), agency="ubnd-a"))
    await sla.deliver(
        transitioned(rid, "return", vn(2026, 11, 30, 9), to_state="returned", agency="ubnd-a")
    )
    await sla.deliver(
        transitioned(
            rid,
            "assign",
            vn(2026, 11, 30, 10),
            from_state="returned",
            to_state="assigned",
            actor_role="coordinator",
            agency="ubnd-b",
        )
    )
    assert await pool.fetchval("SELECT agency_id FROM sla_reports WHERE report_id = $1", rid) == (
        "ubnd-b"
    )
    ack = await clock(pool, rid, "acknowledgement")
    # restart: 8 WH from Mon 10:00 => 10-12 (2), 13-17 (6), Tue 08-10 (8) => Tue 1/12 10:00
    assert (ack["agency_id"], ack["generation"], ack["due_at"]) == (
        "ubnd-b",
        2,
        vn(2026, 12, 1, 10),
    )
    last = (await outbox(pool, CHANGED_TYPE))[-1]
    assert last["agency_id"] == "ubnd-b"


# --- (c) thresholds fire exactly once -----------------------------------------------------


async def test_thresholds_fire_once_each_as_time_passes_and_not_again_after_restart(
    pool: asyncpg.Pool, fresh_database: str
) -> None:
    clock_ = FakeClock(ROUTED_AT)
    sla = Sla(pool, clock_)
    rid = uuid.uuid4()
    await sla.deliver(routed(rid, ROUTED_AT))
    assert {t["mark"]: t["fire_at"] for t in await thresholds(pool, rid)} == MARKS_AT

    async def fired_marks() -> list[tuple[int, str | None]]:
        return [(e["percent"], e["escalation_level"]) for e in await outbox(pool, THRESHOLD_TYPE)]

    assert await sla.scan() == 0
    clock_.set(MARKS_AT["50"] - timedelta(seconds=1))
    assert await sla.scan() == 0
    clock_.set(MARKS_AT["50"])
    assert await sla.scan() == 1
    assert await sla.scan() == 0
    assert await fired_marks() == [(50, "officer")]

    clock_.set(MARKS_AT["75"])
    assert [await sla.scan() for _ in range(3)] == [1, 0, 0]
    clock_.set(MARKS_AT["100"])
    assert [await sla.scan() for _ in range(3)] == [1, 0, 0]
    assert await fired_marks() == [(50, "officer"), (75, "officer"), (100, "agency_leader")]
    ack = await clock(pool, rid, "acknowledgement")
    assert ack["breached"] is True

    # A restart: new calendar cache, context and pool on the same database.
    restarted_pool = await create_pool(fresh_database, min_size=1, max_size=2)
    try:
        again = Sla(restarted_pool, clock_)
        assert await again.scan() == 0
        clock_.set(MARKS_AT["100+8wh"] - timedelta(seconds=1))
        assert await again.scan() == 0
        clock_.set(MARKS_AT["100+3wd"] + timedelta(days=30))
        assert [await again.scan() for _ in range(3)] == [2, 0, 0]
    finally:
        await restarted_pool.close()

    events = await outbox(pool, THRESHOLD_TYPE)
    assert [(e["percent"], e["escalation_level"]) for e in events] == [
        (50, "officer"),
        (75, "officer"),
        (100, "agency_leader"),
        (100, "coordinator"),
        (100, "province_leadership"),
    ]
    assert len({e["event_id"] for e in events}) == 5
    assert all(e["clock"] == "acknowledgement" for e in events)
    assert {datetime.fromisoformat(e["due_at"]) for e in events} == {MARKS_AT["100"]}
    unfired = await pool.fetchval("SELECT count(*) FROM thresholds WHERE fired_at IS NULL")
    assert unfired == 0


async def test_acknowledging_in_time_withdraws_the_pending_thresholds(pool: asyncpg.Pool) -> None:
    clock_ = FakeClock(ROUTED_AT)
    sla = Sla(pool, clock_)
    rid = uuid.uuid4()
    await sla.deliver(routed(rid, ROUTED_AT))
    clock_.set(MARKS_AT["50"])
    assert await sla.scan() == 1
    await sla.deliver(
        transitioned(rid, "acknowledge", vn(2026, 11, 30, 12), to_state="in_progress")
    )
    # Wed 2/12 16:59: the acknowledgement's 75 %, 100 % and +8 WH marks would all be due by
    # now; the resolution clock (from Mon 13:00) reaches 50 % (20 WH) only at Wed 17:00.
    clock_.set(vn(2026, 12, 2, 16, 59))
    assert await sla.scan() == 0
    events = await outbox(pool, THRESHOLD_TYPE)
    assert [(e["clock"], e["percent"]) for e in events] == [("acknowledgement", 50)]
    ack = await clock(pool, rid, "acknowledgement")
    assert (ack["status"], ack["breached"]) == ("stopped", False)


async def test_resolving_after_the_due_outside_office_hours_counts_as_a_breach(
    pool: asyncpg.Pool,
) -> None:
    # Urgent resolution acknowledged Mon 30/11 13:00 is due 17:00; resolved at 18:00 that
    # evening: late by domain.md §4.4 even though no office time passed after 17:00.
    sla = Sla(pool, FakeClock(vn(2026, 11, 30, 18)))
    rid = uuid.uuid4()
    await sla.deliver(routed(rid, vn(2026, 11, 30, 8), urgency="urgent"))
    await sla.deliver(
        transitioned(rid, "acknowledge", vn(2026, 11, 30, 13), to_state="in_progress")
    )
    await sla.deliver(
        transitioned(
            rid, "respond", vn(2026, 11, 30, 18), from_state="in_progress", to_state="resolved"
        )
    )
    res = await clock(pool, rid, "resolution")
    assert (res["status"], res["due_at"], res["breached"]) == (
        "stopped",
        vn(2026, 11, 30, 17),
        True,
    )


# --- (d) concurrent scanners --------------------------------------------------------------


async def test_two_scanners_on_separate_pools_emit_each_of_2000_thresholds_once(
    pool: asyncpg.Pool, fresh_database: str
) -> None:
    clock_ = FakeClock(ROUTED_AT)
    feeder = Sla(pool, clock_)
    reports = [uuid.uuid4() for _ in range(400)]
    for rid in reports:  # 400 acknowledgement clocks x 5 marks = 2,000 thresholds
        assert await feeder.deliver(routed(rid, ROUTED_AT)) == "handled"
    assert await pool.fetchval("SELECT count(*) FROM thresholds WHERE fired_at IS NULL") == 2000

    clock_.set(vn(2027, 1, 4, 9))  # every mark is due
    other_pool = await create_pool(fresh_database, min_size=4, max_size=4)
    try:
        first, second = Sla(pool, clock_), Sla(other_pool, clock_)

        async def drain(instance: Sla) -> int:
            total = 0
            while (fired := await instance.scan(batch=37)) > 0:
                total += fired
            return total

        counts = await asyncio.gather(*(drain(s) for s in [first, second] * 4))
    finally:
        await other_pool.close()

    assert sum(counts) == 2000  # a threshold fired twice would push this above 2,000
    per_event = await pool.fetch(
        "SELECT event_id, count(*) AS n FROM outbox WHERE headers->>'ce_type' = $1 "
        "GROUP BY event_id",
        THRESHOLD_TYPE,
    )
    assert len(per_event) == 2000
    assert {r["n"] for r in per_event} == {1}
    assert await pool.fetchval("SELECT count(*) FROM thresholds WHERE fired_at IS NULL") == 0
    per_report = await pool.fetch(
        "SELECT payload->>'report_id' AS rid, count(*) AS n FROM "
        "(SELECT convert_from(value, 'UTF8')::jsonb AS payload FROM outbox "
        " WHERE headers->>'ce_type' = $1) e GROUP BY 1",
        THRESHOLD_TYPE,
    )
    assert len(per_report) == 400
    assert {r["n"] for r in per_report} == {5}


async def test_scanners_and_event_handling_running_together_do_not_deadlock(
    pool: asyncpg.Pool, fresh_database: str
) -> None:
    clock_ = FakeClock(ROUTED_AT)
    feeder = Sla(pool, clock_)
    reports = [uuid.uuid4() for _ in range(300)]
    for rid in reports:
        await feeder.deliver(routed(rid, ROUTED_AT))
    # Mon 30/11 16:30: the 50 %, 75 % and 100 % marks of every acknowledgement clock are due
    # while the agencies acknowledge (late, at 16:10), which recomputes the same clocks.
    clock_.set(vn(2026, 11, 30, 16, 30))
    acks = [
        transitioned(rid, "acknowledge", vn(2026, 11, 30, 16, 10), to_state="in_progress")
        for rid in reports
    ]
    other_pool = await create_pool(fresh_database, min_size=4, max_size=4)
    try:
        scanners = [Sla(pool, clock_), Sla(other_pool, clock_)]
        handler = Sla(other_pool, clock_)

        async def drain(instance: Sla) -> int:
            total = 0
            for _ in range(200):
                fired = await instance.scan(batch=20)
                total += fired
                if fired == 0:
                    await asyncio.sleep(0)
            return total

        async def handle(part: list[Envelope[Any]]) -> list[Outcome]:
            return [await handler.deliver(event) for event in part]

        scanned, handled = await asyncio.gather(
            asyncio.gather(*(drain(s) for s in scanners * 2)),
            asyncio.gather(*(handle(acks[i::3]) for i in range(3))),
        )
    finally:
        await other_pool.close()

    outcomes = [o for part in handled for o in part]
    assert outcomes == ["handled"] * 300
    assert handler.dead_letters == []
    ack_states = await pool.fetch(
        "SELECT status, breached FROM clocks WHERE kind = 'acknowledgement'"
    )
    # acknowledged at 16:10, after the 16:00 due: every clock is stopped and breached
    assert {(r["status"], r["breached"]) for r in ack_states} == {("stopped", True)}
    pending_ack = await pool.fetchval(
        "SELECT count(*) FROM thresholds WHERE clock = 'acknowledgement' AND fired_at IS NULL"
    )
    assert pending_ack == 0
    fired = await pool.fetchval("SELECT count(*) FROM thresholds WHERE fired_at IS NOT NULL")
    assert sum(scanned) == fired
    assert len(await outbox(pool, THRESHOLD_TYPE)) == fired


async def _wait_until_blocked_on_a_lock(pool: asyncpg.Pool) -> None:
    """Bounded wait until another session of this database waits for a row lock."""
    for _ in range(1000):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the recomputation never waited for the scanner's lock")


async def test_recompute_waits_for_a_scanner_holding_its_threshold_instead_of_deadlocking(
    pool: asyncpg.Pool,
) -> None:
    # The scanner has claimed the 100 % mark of a report (row lock on the threshold) when the
    # report's acknowledgement arrives; the scanner then records the breach on the clock row.
    # Both must finish: the recomputation takes its locks in the scanner's order.
    clock_ = FakeClock(vn(2026, 11, 30, 16, 30))
    sla = Sla(pool, clock_, attempts=1)  # no retry to hide an aborted transaction
    rid = uuid.uuid4()
    await sla.deliver(routed(rid, ROUTED_AT))
    async with pool.acquire() as conn, conn.transaction():  # 50 % and 75 % out of the way
        for row in await repository.claim_due_thresholds(conn, now=MARKS_AT["75"], limit=10):
            await repository.mark_fired(conn, row=row, at=MARKS_AT["75"])

    ack = transitioned(rid, "acknowledge", vn(2026, 11, 30, 16, 10), to_state="in_progress")
    async with pool.acquire() as scanner, scanner.transaction():
        [row] = await repository.claim_due_thresholds(scanner, now=clock_.now(), limit=10)
        assert row["mark"] == "100"
        handling = asyncio.create_task(sla.deliver(ack))
        await _wait_until_blocked_on_a_lock(pool)
        await repository.mark_fired(scanner, row=row, at=clock_.now())
    assert await handling == "handled"
    assert sla.dead_letters == []
    acknowledgement = await clock(pool, rid, "acknowledgement")
    assert (acknowledgement["status"], acknowledgement["breached"]) == ("stopped", True)


# --- (e) the scan uses the partial index ---------------------------------------------------


async def _seed_open_clocks(conn: Conn, n: int, *, first_fire: datetime) -> None:
    """n reports, each with a running resolution clock and one not-yet-due threshold."""
    await conn.execute(
        """
        INSERT INTO sla_reports (report_id, number, category, urgency, agency_id)
        SELECT md5('r' || i)::uuid, 'BN-' || i, 'INFRA.ROAD', 'normal', 'ubnd-' || (i % 50)
        FROM generate_series(1, $1) AS i
        """,
        n,
    )
    await conn.execute(
        """
        INSERT INTO clocks (report_id, kind, generation, status, amount, unit, agency_id,
                            started_at, due_at, calendar_version)
        SELECT md5('r' || i)::uuid, 'resolution', 1, 'running', 5, 'working_days',
               'ubnd-' || (i % 50), $2::timestamptz,
               $2::timestamptz + i * interval '1 minute', 'v-test'
        FROM generate_series(1, $1) AS i
        """,
        n,
        first_fire,
    )
    await conn.execute(
        """
        INSERT INTO thresholds (report_id, clock, generation, mark, percent, level, fire_at,
                                due_at)
        SELECT md5('r' || i)::uuid, 'resolution', 1, '100', 100, 'agency_leader',
               $2::timestamptz + i * interval '1 minute', $2::timestamptz + i * interval '1 minute'
        FROM generate_series(1, $1) AS i
        """,
        n,
        first_fire,
    )
    await conn.execute("ANALYZE sla_reports; ANALYZE clocks; ANALYZE thresholds")


# A plain or a bitmap index scan, both on the partial index of unfired thresholds.
USES_PARTIAL_INDEX = re.compile(r"(Index Scan using|Bitmap Index Scan on) thresholds_due\b")


def _shared_buffers(plan: str) -> int:
    """Shared buffers the whole statement touched (first Buffers line of the plan)."""
    match = re.search(r"Buffers: shared((?: \w+=\d+)+)", plan)
    assert match is not None, plan
    return sum(int(v) for v in re.findall(r"=(\d+)", match.group(1)))


async def test_claim_query_reads_the_partial_index_not_the_open_clocks(
    pool: asyncpg.Pool,
) -> None:
    now = vn(2026, 11, 30, 10)
    async with pool.acquire() as conn:
        await _seed_open_clocks(conn, 200_000, first_fire=now)
        async with conn.transaction():
            rows = await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS) " + repository.CLAIM_DUE_THRESHOLDS, now, 500
            )
            plan = "\n".join(r[0] for r in rows)
            assert USES_PARTIAL_INDEX.search(plan), plan
            assert "Seq Scan on thresholds" not in plan, plan
            assert "Seq Scan on sla_reports" not in plan, plan
            # 0 due among 200,000: a handful of index pages, not the table.
            assert _shared_buffers(plan) < 20, plan

            # The same once PostgreSQL switches the prepared statement to a generic plan
            # (asyncpg prepares statements; $1 and $2 are then unknown to the planner).
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            await conn.execute(
                "PREPARE claim(timestamptz, int) AS " + repository.CLAIM_DUE_THRESHOLDS
            )
            # EXECUTE takes no bind parameters; the instant is a literal of our own making.
            rows = await conn.fetch(
                f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE claim('{now.isoformat()}', 500)"
            )
            generic = "\n".join(r[0] for r in rows)
            await conn.execute("DEALLOCATE claim")
            assert USES_PARTIAL_INDEX.search(generic), generic
            assert "Seq Scan on thresholds" not in generic, generic
            assert _shared_buffers(generic) < 20, generic

    # and a scan at that instant fires nothing
    sla = Sla(pool, FakeClock(now))
    assert await sla.scan() == 0


# --- (f) calendar versions ----------------------------------------------------------------


async def test_calendar_override_changes_new_computations_but_not_recorded_clocks(
    pool: asyncpg.Pool,
) -> None:
    sla = Sla(pool, FakeClock(vn(2026, 11, 27, 17)))
    old, new = uuid.uuid4(), uuid.uuid4()
    await sla.deliver(submitted(old, vn(2026, 11, 27, 14)))
    await sla.deliver(routed(old, ROUTED_AT))
    before = await clocks(pool, old)
    v1 = before[0]["calendar_version"]
    # screening: 4 WH from Fri 14:00 => Fri 14-17 (3) + Mon 08-09 (1) => Mon 30/11 09:00
    assert [(c["kind"], c["due_at"]) for c in before[:2]] == [
        ("screening", vn(2026, 11, 30, 9)),
        ("acknowledgement", vn(2026, 11, 30, 16)),
    ]

    override = CalendarOverride(
        day=date(2026, 11, 30),
        kind=OverrideKind.DAY_OFF,
        reason="Nghỉ bù (thử nghiệm)",
        document="QĐ thử nghiệm",
    )
    async with pool.acquire() as conn, conn.transaction():
        await repository.upsert_override(conn, override=override)

    await sla.deliver(submitted(new, vn(2026, 11, 27, 14)))
    await sla.deliver(routed(new, ROUTED_AT))
    fresh = await clocks(pool, new)
    v2 = fresh[0]["calendar_version"]
    assert v2 != v1
    assert {c["calendar_version"] for c in fresh} == {v2}
    # Monday is now off: acknowledgement Fri 16-17 (1) + Tue 1/12 08-12 (5) + 13-16 (8)
    assert (await clock(pool, new, "acknowledgement"))["due_at"] == vn(2026, 12, 1, 16)

    # The older report is untouched…
    assert await clocks(pool, old) == before
    # …and stays so for its finished screening clock when a later fact recomputes it.
    await sla.deliver(transitioned(old, "acknowledge", vn(2026, 12, 1, 9), to_state="in_progress"))
    screening = await clock(pool, old, "screening")
    assert (screening["calendar_version"], screening["due_at"]) == (v1, vn(2026, 11, 30, 9))
    ack = await clock(pool, old, "acknowledgement")
    assert (ack["status"], ack["calendar_version"]) == ("stopped", v2)


# --- (g) dead letters ---------------------------------------------------------------------


async def test_malformed_events_go_to_the_dead_letter_sink_with_the_reason(
    pool: asyncpg.Pool,
) -> None:
    sla = Sla(pool, FakeClock(ROUTED_AT))
    good = sla.record(routed(uuid.uuid4(), ROUTED_AT), ROUTING_EVENTS)
    bad_json = RawRecord(good.topic, 0, 100, good.key, b'{"report_id": "x", not json', good.headers)
    unknown_headers = tuple(
        (k, b"vn.bn.fieldreport.report.exploded.v1" if k == "ce_type" else v)
        for k, v in good.headers
    )
    unknown = RawRecord(good.topic, 0, 101, good.key, good.value, unknown_headers)
    missing_field = RawRecord(good.topic, 0, 102, good.key, b'{"report_id": "1"}', good.headers)

    for record in (bad_json, unknown, missing_field):
        assert await sla.processor.process(record) == "dead_lettered"

    assert [topic for topic, _, _ in sla.dead_letters] == [f"{ROUTING_EVENTS}.dlq"] * 3
    reasons = [headers["dlq_reason"].decode() for _, _, headers in sla.dead_letters]
    assert reasons[0].startswith("undecodable:")
    assert "JSON" in reasons[0] or "json" in reasons[0]
    assert "unknown event type 'vn.bn.fieldreport.report.exploded.v1'" in reasons[1]
    assert "invalid vn.bn.fieldreport.report.routed.v1" in reasons[2]
    assert "agency_id" in reasons[2]  # names the missing field
    assert [h["dlq_offset"] for _, _, h in sla.dead_letters] == [b"100", b"101", b"102"]
    assert sla.dead_letters[1][1].value == good.value  # the original record, untouched
    assert await pool.fetchval("SELECT count(*) FROM sla_facts") == 0


async def test_event_without_a_matching_policy_is_dead_lettered_after_retries(
    pool: asyncpg.Pool,
) -> None:
    await pool.execute("UPDATE policies SET active = false WHERE urgency = 'complex'")
    sla = Sla(pool, FakeClock(ROUTED_AT))
    rid = uuid.uuid4()
    assert await sla.deliver(routed(rid, ROUTED_AT, urgency="complex")) == "dead_lettered"
    [(_, _, headers)] = sla.dead_letters
    assert "LookupError" in headers["dlq_reason"].decode()
    assert "no SLA policy" in headers["dlq_reason"].decode()
    # the failed transaction left nothing behind, not even the inbox row
    assert await pool.fetchval("SELECT count(*) FROM sla_facts") == 0
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 0
