"""Queuing deliveries from SLA events, against a real PostgreSQL."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from notify import handlers
from notify.domain import delivery_id
from paht_common.consumer import EventProcessor
from paht_common.db import apply_migrations, create_pool
from paht_common.events import (
    ClockView,
    Envelope,
    Payload,
    SlaClocksChanged,
    SlaThresholdReached,
    new_envelope,
)
from paht_common.kafka import RawRecord, encode, header_list, key_bytes
from paht_common.testing import random_id

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "notify" / "migrations"


@pytest.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(fresh_database, min_size=1, max_size=5)
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, MIGRATIONS)
        yield pool
    finally:
        await pool.close()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


async def subscribe(
    pool: asyncpg.Pool, agency_id: str, url: str = "https://h.example.vn/x"
) -> uuid.UUID:
    async with pool.acquire() as conn:
        record = await handlers.create_subscription(
            conn, agency_id=agency_id, url=url, secret=new_secret()
        )
    subscription_id: uuid.UUID = record["id"]
    return subscription_id


def routed_event(agency_id: str, *, trigger: str = "routed") -> Envelope[Payload]:
    now = datetime.now(UTC)
    payload = SlaClocksChanged(
        report_id=uuid.uuid4(),
        trigger=trigger,
        number="BN-2025-000042",
        agency_id=agency_id,
        category="ENVIRONMENT",
        policy_id="bn-default",
        calendar_version="2025.1",
        clocks=[
            ClockView(
                kind="acknowledgement",
                status="running",
                amount=8,
                unit="working_hours",
                started_at=now,
                due_at=now + timedelta(hours=20),
            )
        ],
    )
    return new_envelope(payload, source="/sla", province="bn")


def breach_event(agency_id: str) -> Envelope[Payload]:
    payload = SlaThresholdReached(
        report_id=uuid.uuid4(),
        number="BN-2025-000043",
        agency_id=agency_id,
        clock="resolution",
        percent=100,
        due_at=datetime.now(UTC),
        escalation_level="Chủ tịch UBND xã",
    )
    return new_envelope(payload, source="/sla", province="bn")


async def handle(pool: asyncpg.Pool, envelope: Envelope[Payload]) -> int:
    async with pool.acquire() as conn, conn.transaction():
        return await handlers.handle_event(conn, envelope)


async def deliveries(pool: asyncpg.Pool, report_id: uuid.UUID) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT * FROM deliveries WHERE report_id = $1 ORDER BY subscription_id", report_id
        )


async def test_queues_one_delivery_per_active_subscription_of_the_agency(
    pool: asyncpg.Pool,
) -> None:
    agency, other_agency = random_id("ubnd-"), random_id("so-")
    first = await subscribe(pool, agency, "https://a.example.vn/hook")
    second = await subscribe(pool, agency, "https://b.example.vn/hook")
    retired = await subscribe(pool, agency)
    await subscribe(pool, other_agency)
    async with pool.acquire() as conn:
        await handlers.deactivate_subscription(conn, subscription_id=retired, reason="test")
    event = routed_event(agency)

    queued = await handle(pool, event)

    rows = await deliveries(pool, event.payload.report_id)
    assert queued == 2
    assert {r["subscription_id"] for r in rows} == {first, second}
    for row in rows:
        assert row["id"] == delivery_id(event.event_id, row["subscription_id"])
        assert row["status"] == "pending"
        assert row["attempts"] == 0
        assert row["event_type"] == "report.assigned"
        assert row["agency_id"] == agency
        assert row["next_attempt_at"] <= datetime.now(UTC)
    assert rows[0]["body"] == rows[1]["body"]


async def test_handling_the_same_event_again_queues_nothing(pool: asyncpg.Pool) -> None:
    agency = random_id("ubnd-")
    await subscribe(pool, agency)
    await subscribe(pool, agency)
    event = routed_event(agency)

    assert await handle(pool, event) == 2
    assert await handle(pool, event) == 0

    assert len(await deliveries(pool, event.payload.report_id)) == 2


async def test_a_redelivered_kafka_record_is_a_duplicate(pool: asyncpg.Pool) -> None:
    agency = random_id("ubnd-")
    await subscribe(pool, agency)
    event = breach_event(agency)
    message = encode(event)
    record = RawRecord(
        topic="paht.sla.events.v1",
        partition=0,
        offset=7,
        key=key_bytes(message),
        value=message.value,
        headers=tuple(header_list(message)),
    )
    sent: list[str] = []

    async def dead_letters(topic: str, _: RawRecord, __: list[tuple[str, bytes]]) -> None:
        sent.append(topic)

    async def handler(conn: asyncpg.Connection, envelope: Envelope[Payload]) -> None:  # type: ignore[type-arg]
        await handlers.handle_event(conn, envelope)

    processor = EventProcessor(
        consumer="notify", pool=pool, handler=handler, dead_letters=dead_letters
    )

    assert await processor.process(record) == "handled"
    assert await processor.process(record) == "duplicate"

    rows = await deliveries(pool, event.payload.report_id)
    assert [r["event_type"] for r in rows] == ["sla.breached"]
    assert "Chủ tịch UBND xã" in rows[0]["body"]
    assert sent == []


async def test_events_that_notify_nobody_queue_nothing(pool: asyncpg.Pool) -> None:
    agency = random_id("ubnd-")
    await subscribe(pool, agency)
    acknowledged = routed_event(agency, trigger="acknowledged")
    unsubscribed = routed_event(random_id("ubnd-"))

    assert await handle(pool, acknowledged) == 0
    assert await handle(pool, unsubscribed) == 0

    assert await deliveries(pool, acknowledged.payload.report_id) == []


async def test_deactivating_a_subscription_cancels_its_pending_deliveries(
    pool: asyncpg.Pool,
) -> None:
    agency = random_id("ubnd-")
    subscription = await subscribe(pool, agency)
    event = routed_event(agency)
    await handle(pool, event)

    async with pool.acquire() as conn:
        found = await handlers.deactivate_subscription(
            conn, subscription_id=subscription, reason="agency asked"
        )
        again = await handlers.deactivate_subscription(
            conn, subscription_id=subscription, reason="twice"
        )
        unknown = await handlers.deactivate_subscription(
            conn, subscription_id=uuid.uuid4(), reason="nobody"
        )

    assert (found, again, unknown) == (True, True, False)
    [row] = await deliveries(pool, event.payload.report_id)
    assert row["status"] == "failed"
    assert row["next_attempt_at"] is None
    assert row["last_error"] == "subscription deactivated: agency asked"
