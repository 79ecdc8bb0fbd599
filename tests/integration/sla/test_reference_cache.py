"""Policies and calendar are cached by the handler, yet every edit reaches the next event.

Events go through ``handle_event`` in one transaction with the inbox claim, as the consumer
runs them, on the real PostgreSQL of the test harness; the handler's context (and so its
caches) lives across the events, as in a running instance.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from paht_common.db import apply_migrations
from paht_common.events import ReportRouted, new_envelope
from paht_common.inbox import claim
from paht_common.testing import FakeClock
from sla import repository
from sla.calendar import TZ, CalendarOverride, OverrideKind, Unit
from sla.domain import Policy, Target
from sla.handlers import CalendarCache, SlaContext, handle_event

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "sla" / "migrations"
ROUTED_AT = datetime(2026, 11, 27, 16, tzinfo=TZ)  # Fri; 8 WH later is Mon 30/11 16:00


@pytest.fixture
async def pool(fresh_pool: asyncpg.Pool) -> asyncpg.Pool:
    async with fresh_pool.acquire() as conn:
        await apply_migrations(conn, MIGRATIONS)
        await repository.seed_calendar_once(conn)
    return fresh_pool


@pytest.fixture
def ctx() -> SlaContext:
    return SlaContext(clock=FakeClock(ROUTED_AT), calendars=CalendarCache(), province="bn")


async def route(pool: asyncpg.Pool, ctx: SlaContext) -> dict[str, Any]:
    """Route a new INFRA.ROAD report; its report row and acknowledgement clock."""
    rid = uuid.uuid4()
    payload = ReportRouted(
        report_id=rid,
        number=f"BN-{rid.hex[:6]}",
        agency_id="ubnd-a",
        agency_name="UBND A",
        category="INFRA.ROAD",
        commune_code=None,
        urgency="normal",
        rule_id="r1",
        routed_at=ROUTED_AT,
    )
    envelope = new_envelope(payload, source="/routing", province="bn", occurred_at=ROUTED_AT)
    async with pool.acquire() as conn:
        async with conn.transaction():
            assert await claim(conn, consumer="sla", event_id=envelope.event_id)
            await handle_event(conn, envelope, ctx=ctx)
        report = await repository.get_report(conn, report_id=rid)
        [ack] = [
            c
            for c in await repository.clocks_of(conn, report_id=rid)
            if c["kind"] == "acknowledgement"
        ]
    assert report is not None
    return {**report, "ack": ack}


def fast_road_policy(hours: float) -> Policy:
    target = Target(hours, Unit.WORKING_HOURS)
    return Policy(
        id="road-fast",
        priority=1,
        category="INFRA.ROAD",
        screening=target,
        acknowledgement=target,
        resolution=target,
    )


async def test_a_policy_put_after_an_event_governs_the_next_event(
    pool: asyncpg.Pool, ctx: SlaContext
) -> None:
    assert (await route(pool, ctx))["policy_id"] == "default-normal"
    async with pool.acquire() as conn:
        await repository.upsert_policy(conn, policy=fast_road_policy(2))

    report = await route(pool, ctx)

    assert report["policy_id"] == "road-fast"
    assert report["ack"]["due_at"] == datetime(2026, 11, 30, 9, tzinfo=TZ)  # Fri 1 h + Mon 1 h


async def test_a_policy_edited_in_sql_is_seen_by_the_next_event(
    pool: asyncpg.Pool, ctx: SlaContext
) -> None:
    async with pool.acquire() as conn:
        await repository.upsert_policy(conn, policy=fast_road_policy(2))
    assert (await route(pool, ctx))["policy_id"] == "road-fast"
    async with pool.acquire() as conn:
        await conn.execute("UPDATE policies SET active = false WHERE id = 'road-fast'")

    assert (await route(pool, ctx))["policy_id"] == "default-normal"


async def test_a_day_off_added_after_an_event_moves_the_next_events_deadline(
    pool: asyncpg.Pool, ctx: SlaContext
) -> None:
    before = await route(pool, ctx)
    assert before["ack"]["due_at"] == datetime(2026, 11, 30, 16, tzinfo=TZ)
    day_off = CalendarOverride(datetime(2026, 11, 30).date(), OverrideKind.DAY_OFF, "test")
    async with pool.acquire() as conn:
        await repository.upsert_override(conn, override=day_off)

    after = await route(pool, ctx)

    assert after["ack"]["due_at"] == datetime(2026, 12, 1, 16, tzinfo=TZ)
    assert after["calendar_version"] != before["calendar_version"]
