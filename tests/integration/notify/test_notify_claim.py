"""Claiming due deliveries from a big backlog: per-subscription slots and open circuits hold.

The claim ranks only the oldest due rows; these tests put thousands of rows of one endpoint
ahead of the others and check that the rules still decide what is leased.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from notify import handlers, repository
from notify.domain import ClaimedDelivery
from paht_common.db import Conn, apply_migrations, create_pool
from paht_common.testing import random_id

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "notify" / "migrations"
BACKLOG = 3_000
SLOTS = 2
THRESHOLD = 3


@pytest.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(fresh_database, min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, MIGRATIONS)
        yield pool
    finally:
        await pool.close()


async def endpoint(conn: Conn) -> uuid.UUID:
    record = await handlers.create_subscription(
        conn,
        agency_id=random_id("ubnd-"),
        url=f"https://hooks.example.vn/{uuid.uuid4().hex}",
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    subscription_id: uuid.UUID = record["id"]
    return subscription_id


async def queue(
    conn: Conn, subscription_id: uuid.UUID, count: int, *, due_seconds_ago: int
) -> None:
    """``count`` deliveries due since ``due_seconds_ago`` (older first), in one statement."""
    await conn.execute(
        """
        INSERT INTO deliveries (id, event_id, subscription_id, agency_id, channel, event_type,
                                report_id, body, next_attempt_at)
        SELECT gen_random_uuid(), gen_random_uuid(), $1, 'ubnd-backlog', 'webhook',
               'report.breached', gen_random_uuid(), '{}',
               now() - make_interval(secs => $3) + n * interval '1 millisecond'
        FROM generate_series(1, $2) AS n
        """,
        subscription_id,
        count,
        due_seconds_ago,
    )


async def claim(
    conn: Conn, *, limit: int = 20, in_flight: dict[uuid.UUID, int] | None = None
) -> list[ClaimedDelivery]:
    return await repository.claim_due(
        conn,
        limit=limit,
        in_flight=in_flight or {},
        per_subscription=SLOTS,
        lease_seconds=60.0,
        breaker_threshold=THRESHOLD,
    )


def per_subscription(claimed: list[ClaimedDelivery]) -> Counter[uuid.UUID]:
    return Counter(d.subscription_id for d in claimed)


async def test_a_big_backlog_of_one_endpoint_gets_only_its_slots(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        crowded, other = await endpoint(conn), await endpoint(conn)
        await queue(conn, crowded, BACKLOG, due_seconds_ago=600)
        await queue(conn, other, 5, due_seconds_ago=60)

        claimed = await claim(conn)

    assert per_subscription(claimed) == {crowded: SLOTS}
    assert all(d.attempts == 1 for d in claimed)


async def test_a_full_endpoint_does_not_crowd_out_the_others(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        crowded, first, second = await endpoint(conn), await endpoint(conn), await endpoint(conn)
        await queue(conn, crowded, BACKLOG, due_seconds_ago=600)
        await queue(conn, first, 5, due_seconds_ago=60)
        await queue(conn, second, 5, due_seconds_ago=30)

        claimed = await claim(conn, in_flight={crowded: SLOTS, first: 1})

    assert per_subscription(claimed) == {first: SLOTS - 1, second: SLOTS}


async def test_an_open_circuit_with_a_backlog_is_skipped(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        dead, healthy = await endpoint(conn), await endpoint(conn)
        await queue(conn, dead, BACKLOG, due_seconds_ago=600)
        await queue(conn, healthy, 5, due_seconds_ago=60)
        await conn.execute(
            "UPDATE subscriptions SET consecutive_failures = $2,"
            " circuit_open_until = now() + interval '5 minutes' WHERE id = $1",
            dead,
            THRESHOLD,
        )

        claimed = await claim(conn)
        dead_attempts = await conn.fetchval(
            "SELECT sum(attempts) FROM deliveries WHERE subscription_id = $1", dead
        )

    assert per_subscription(claimed) == {healthy: SLOTS}
    assert dead_attempts == 0


async def test_a_half_open_circuit_gets_one_probe_at_a_time(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        probing, healthy = await endpoint(conn), await endpoint(conn)
        await queue(conn, probing, BACKLOG, due_seconds_ago=600)
        await queue(conn, healthy, 5, due_seconds_ago=60)
        await conn.execute(
            "UPDATE subscriptions SET consecutive_failures = $2,"
            " circuit_open_until = now() - interval '1 second' WHERE id = $1",
            probing,
            THRESHOLD,
        )

        first = await claim(conn)
        again = await claim(conn, in_flight=dict(per_subscription(first)))

    assert per_subscription(first) == {probing: 1}
    assert per_subscription(again) == {healthy: SLOTS}


async def test_successive_claims_drain_every_endpoint_within_its_slots(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        endpoints = [await endpoint(conn) for _ in range(5)]
        for age, subscription_id in enumerate(endpoints):
            await queue(conn, subscription_id, 400, due_seconds_ago=600 - age)
        in_flight: Counter[uuid.UUID] = Counter()
        for _ in range(len(endpoints)):
            for delivery in await claim(conn, limit=4, in_flight=dict(in_flight)):
                in_flight[delivery.subscription_id] += 1

    assert in_flight == dict.fromkeys(endpoints, SLOTS)
