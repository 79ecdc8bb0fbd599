"""Recording attempts' outcomes in batches: one transaction, still fenced by the attempt number."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from notify import handlers, repository
from notify.dispatcher import Recorder
from notify.domain import ClaimedDelivery, Decision
from paht_common.db import Conn, apply_migrations, create_pool
from paht_common.testing import random_id

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "notify" / "migrations"
BREAKER = handlers.Breaker(threshold=3, probe_seconds=300.0)
DELIVERED = Decision("delivered", 200, None)
RETRY = Decision("retry", 503, "HTTP 503", retry_in=60.0)
FAILED = Decision("failed", 400, "HTTP 400")
GONE = Decision("gone", 410, "HTTP 410")


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


async def claimed(conn: Conn, subscription_id: uuid.UUID, count: int) -> list[ClaimedDelivery]:
    """``count`` deliveries to an endpoint, queued and leased (attempt 1)."""
    for _ in range(count):
        await repository.insert_delivery(
            conn,
            delivery_id=uuid.uuid4(),
            event_id=uuid.uuid4(),
            subscription_id=subscription_id,
            agency_id="ubnd-recording",
            channel="webhook",
            event_type="report.breached",
            report_id=uuid.uuid4(),
            body="{}",
        )
    leased = await repository.claim_due(
        conn, limit=count, in_flight={}, per_subscription=count, lease_seconds=60.0
    )
    assert len(leased) == count
    return leased


async def rows(conn: Conn, deliveries: list[ClaimedDelivery]) -> list[asyncpg.Record]:
    """The deliveries' rows in the given order, with the transaction that last wrote each."""
    found = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT *, xmin::text AS written_by FROM deliveries WHERE id = ANY($1::uuid[])",
            [d.id for d in deliveries],
        )
    }
    return [found[d.id] for d in deliveries]


async def endpoint_state(conn: Conn, subscription_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT consecutive_failures, circuit_open_until IS NOT NULL AS open, active"
        " FROM subscriptions WHERE id = $1",
        subscription_id,
    )
    assert row is not None
    return row


async def test_outcomes_of_several_attempts_are_stored_in_one_transaction(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        subscription = await endpoint(conn)
        a, b, c = await claimed(conn, subscription, 3)

        stored = await handlers.record_attempts(conn, [(a, DELIVERED), (b, RETRY), (c, FAILED)])
        after = await rows(conn, [a, b, c])

    assert stored == [True, True, True]
    assert [r["status"] for r in after] == ["delivered", "pending", "failed"]
    assert [r["last_status_code"] for r in after] == [200, 503, 400]
    assert [r["last_error"] for r in after] == [None, "HTTP 503", "HTTP 400"]
    assert after[0]["delivered_at"] is not None
    assert after[1]["next_attempt_at"] is not None
    assert len({r["written_by"] for r in after}) == 1  # one transaction wrote all three


async def test_a_stale_attempts_outcome_is_not_stored_and_the_rest_of_the_batch_is(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        subscription = await endpoint(conn)
        stale, fresh = await claimed(conn, subscription, 2)
        await conn.execute(  # the lease lapsed and another dispatcher took attempt 2
            "UPDATE deliveries SET attempts = 2 WHERE id = $1", stale.id
        )

        stored = await handlers.record_attempts(
            conn, [(stale, DELIVERED), (fresh, DELIVERED)], BREAKER
        )
        late, on_time = await rows(conn, [stale, fresh])

    assert stored == [False, True]
    assert late["status"] == "pending"
    assert late["attempts"] == 2
    assert late["last_status_code"] is None
    assert on_time["status"] == "delivered"


async def test_a_finished_delivery_is_not_overwritten_by_a_later_batch(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        subscription = await endpoint(conn)
        [delivery] = await claimed(conn, subscription, 1)
        await handlers.record_attempts(conn, [(delivery, DELIVERED)])

        stored = await handlers.record_attempts(conn, [(delivery, FAILED)])
        [row] = await rows(conn, [delivery])

    assert stored == [False]
    assert row["status"] == "delivered"


async def test_failures_in_one_batch_open_the_circuit_at_the_threshold(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        failing, recovering = await endpoint(conn), await endpoint(conn)
        down = await claimed(conn, failing, 3)
        up = await claimed(conn, recovering, 3)

        await handlers.record_attempts(
            conn,
            [(d, RETRY) for d in down] + [(up[0], RETRY), (up[1], RETRY), (up[2], DELIVERED)],
            BREAKER,
        )
        opened = await endpoint_state(conn, failing)
        closed = await endpoint_state(conn, recovering)

    assert (opened["consecutive_failures"], opened["open"]) == (3, True)
    assert (closed["consecutive_failures"], closed["open"]) == (0, False)


async def test_failures_after_a_success_in_the_batch_count_from_zero(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        subscription = await endpoint(conn)
        await conn.execute(
            "UPDATE subscriptions SET consecutive_failures = 2 WHERE id = $1", subscription
        )
        first, second, third = await claimed(conn, subscription, 3)

        await handlers.record_attempts(
            conn, [(first, DELIVERED), (second, RETRY), (third, FAILED)], BREAKER
        )
        state = await endpoint_state(conn, subscription)

    assert (state["consecutive_failures"], state["open"]) == (2, False)


async def test_a_410_in_a_batch_deactivates_its_subscription_and_cancels_the_rest(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        gone, kept = await endpoint(conn), await endpoint(conn)
        [answered, waiting] = await claimed(conn, gone, 2)
        [other] = await claimed(conn, kept, 1)

        stored = await handlers.record_attempts(
            conn, [(answered, GONE), (other, DELIVERED)], BREAKER
        )
        after = await rows(conn, [answered, waiting, other])
        state = await endpoint_state(conn, gone)

    assert stored == [True, True]
    assert [r["status"] for r in after] == ["failed", "failed", "delivered"]
    assert after[0]["last_status_code"] == 410
    assert after[1]["last_error"] == "subscription deactivated: endpoint answered 410 Gone"
    assert state["active"] is False


async def test_the_recorder_writes_outcomes_finishing_together_in_one_transaction(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        subscription = await endpoint(conn)
        deliveries = await claimed(conn, subscription, 5)
    recorder = Recorder(pool, BREAKER)
    try:
        stored = await asyncio.gather(*(recorder.record(d, DELIVERED) for d in deliveries))
    finally:
        await recorder.close()
    async with pool.acquire() as conn:
        after = await rows(conn, deliveries)

    assert stored == [True] * 5
    assert {r["status"] for r in after} == {"delivered"}
    assert len({r["written_by"] for r in after}) == 1


async def test_the_recorder_reports_a_stale_outcome_as_not_stored(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        subscription = await endpoint(conn)
        stale, fresh = await claimed(conn, subscription, 2)
        await conn.execute("UPDATE deliveries SET attempts = 2 WHERE id = $1", stale.id)
    recorder = Recorder(pool, BREAKER)
    try:
        stored = list(
            await asyncio.gather(recorder.record(stale, FAILED), recorder.record(fresh, DELIVERED))
        )
    finally:
        await recorder.close()
    async with pool.acquire() as conn:
        late, on_time = await rows(conn, [stale, fresh])

    assert stored == [False, True]
    assert (late["status"], late["last_error"]) == ("pending", None)
    assert on_time["status"] == "delivered"


async def test_the_recorder_gives_up_on_an_unreachable_database_and_says_so(
    pool: asyncpg.Pool, fresh_database: str
) -> None:
    async with pool.acquire() as conn:
        subscription = await endpoint(conn)
        [delivery] = await claimed(conn, subscription, 1)
    closed = await create_pool(fresh_database, min_size=0, max_size=1)
    await closed.close()  # every acquire fails as with PostgreSQL away
    recorder = Recorder(closed, BREAKER, retry_pause=0.0)
    try:
        stored = await recorder.record(delivery, DELIVERED)
    finally:
        await recorder.close()
    async with pool.acquire() as conn:
        [row] = await rows(conn, [delivery])

    assert stored is None  # lost: the lease lapses and the delivery is sent again
    assert row["status"] == "pending"
    assert row["attempts"] == 1
