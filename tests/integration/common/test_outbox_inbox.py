"""Outbox relay, inbox and consumer loop against the harness's real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from paht_common.consumer import EventProcessor, producer_dead_letters, run_consumer
from paht_common.db import COMMON_MIGRATIONS, Conn, apply_migrations
from paht_common.events import Envelope, Payload, ReportSubmitted, new_envelope
from paht_common.inbox import claim, purge_handled
from paht_common.kafka import RawRecord, decode, encode, make_consumer, make_producer
from paht_common.outbox import PURGE_PUBLISHED, OutboxRelay, add_to_outbox
from paht_common.runtime import Runtime
from paht_common.settings import BaseServiceSettings
from paht_common.testing import cancel_as_woken, random_id
from paht_devenv.kafka import create_topics

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(fresh_pool: asyncpg.Pool, tmp_path: Path) -> asyncpg.Pool:
    async with fresh_pool.acquire() as conn:
        await apply_migrations(conn, tmp_path)  # the common migrations only
    return fresh_pool


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = make_producer(kafka_bootstrap, client_id=random_id("p"))
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    name = random_id("topic-")
    await create_topics(kafka_bootstrap, [name, name + ".dlq"], wait_seconds=30)
    return name


def _submitted(n: int = 1) -> ReportSubmitted:
    return ReportSubmitted(
        report_id=uuid.uuid4(),
        number=f"BN-2026-{n:06d}",
        category="INFRA.ROAD",
        commune_code=None,
        lat=None,
        lon=None,
        channel="app",
        urgency="normal",
        source_app="t",
        submitted_at=datetime(2026, 11, 28, tzinfo=UTC),
    )


async def _read_all(
    bootstrap: str, topic: str, expected: int, within: float = 30.0
) -> list[RawRecord]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[RawRecord] = []
    try:
        async with asyncio.timeout(within):
            while len(records) < expected:
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    records += [
                        RawRecord(
                            m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers or ())
                        )
                        for m in messages
                    ]
    finally:
        await consumer.stop()
    return records


async def _records_held(bootstrap: str, topic: str) -> int:
    """How many records the topic holds (sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(3)])
    finally:
        await consumer.stop()
    return sum(ends.values())


async def test_outbox_rows_reach_kafka_once_and_are_marked_published(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, kafka_bootstrap: str
) -> None:
    envelopes = [new_envelope(_submitted(i), source="/intake", province="bn") for i in range(25)]
    async with pool.acquire() as conn, conn.transaction():
        for env in envelopes:
            await add_to_outbox(conn, topic, env)
            await add_to_outbox(conn, topic, env)  # same event twice: stored once
    relay = OutboxRelay(pool, producer, service="test", batch_size=10)

    sent = [await relay.relay_once() for _ in range(4)]

    assert sent == [10, 10, 5, 0]
    records = await _read_all(kafka_bootstrap, topic, 25)
    assert sorted(decode(r).event_id for r in records) == sorted(e.event_id for e in envelopes)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def test_rolled_back_transaction_leaves_no_event(pool: asyncpg.Pool) -> None:
    env = new_envelope(_submitted(), source="/intake", province="bn")

    async def change_that_fails() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await add_to_outbox(conn, "any", env)
            raise RuntimeError("state change failed")

    with pytest.raises(RuntimeError):
        await change_that_fails()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0


async def test_relay_running_in_background_wakes_on_notify(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, kafka_bootstrap: str
) -> None:
    relay = OutboxRelay(pool, producer, service="test", poll_interval=30.0)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.5)
        env = new_envelope(_submitted(), source="/intake", province="bn")
        async with pool.acquire() as conn, conn.transaction():
            await add_to_outbox(conn, topic, env)
        # with a 30 s poll interval only the NOTIFY can deliver it inside this wait
        (record,) = await _read_all(kafka_bootstrap, topic, 1, within=10.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert decode(record).event_id == env.event_id


async def test_consumer_handles_each_event_once_and_dead_letters_poison(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, kafka_bootstrap: str
) -> None:
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE seen (event_id uuid, n int)")
    handled: list[uuid.UUID] = []

    async def handler(conn: Conn, envelope: Envelope[Payload]) -> None:
        await conn.execute("INSERT INTO seen VALUES ($1, 1)", envelope.event_id)
        handled.append(envelope.event_id)

    env = new_envelope(_submitted(), source="/intake", province="bn")
    message = encode(env)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    for _ in range(2):  # a redelivery of the same event
        await producer.send_and_wait(
            topic, value=message.value, key=key, headers=list(message.headers.items())
        )
    await producer.send_and_wait(topic, value=b"\x00poison", key=b"x", headers=[])
    group = random_id("g")
    processor = EventProcessor(
        consumer=group, pool=pool, handler=handler, dead_letters=producer_dead_letters(producer)
    )
    consumer = make_consumer(kafka_bootstrap, group_id=group, topics=[topic])
    await consumer.start()
    task = asyncio.create_task(run_consumer(consumer, processor))
    try:
        (dead,) = await _read_all(kafka_bootstrap, topic + ".dlq", 1)
        async with asyncio.timeout(20):
            while True:
                committed = [await consumer.committed(TopicPartition(topic, p)) for p in range(3)]
                if sum(c or 0 for c in committed) == 3:
                    break
                await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()
    assert handled == [env.event_id]  # the redelivery was a duplicate: no second effect
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM seen") == 1
        assert await conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = $1", group) == 1
    # every offset is committed, so the dead letter was acknowledged before: exactly one
    assert await _records_held(kafka_bootstrap, topic + ".dlq") == 1
    reasons = dict(dead.headers)
    assert reasons["dlq_reason"].startswith(b"undecodable")
    assert dead.value == b"\x00poison"


async def test_failing_handler_commits_nothing_and_goes_to_the_dead_letter_topic(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, kafka_bootstrap: str
) -> None:
    async def handler(conn: Conn, envelope: Envelope[Payload]) -> None:
        await conn.execute("CREATE TABLE half_written (x int)")
        raise ValueError("bug in handler")

    dead: list[str] = []

    async def sink(t: str, record: RawRecord, headers: list[tuple[str, bytes]]) -> None:
        dead.append(t)

    processor = EventProcessor(
        consumer="c", pool=pool, handler=handler, dead_letters=sink, attempts=2, retry_delay=0.01
    )
    env = new_envelope(_submitted(), source="/intake", province="bn")
    message = encode(env)
    record = RawRecord(
        topic,
        0,
        0,
        str(env.payload.report_id).encode(),
        message.value,
        tuple(message.headers.items()),
    )

    outcome = await processor.process(record)

    assert outcome == "dead_lettered"
    assert dead == [topic + ".dlq"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT to_regclass('half_written')") is None
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 0


def test_common_migrations_ship_with_the_package() -> None:
    assert (Path(str(COMMON_MIGRATIONS)) / "0001_outbox_inbox.sql").exists()


async def test_relay_stops_when_cancelled_at_the_moment_it_is_woken(
    pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    relay = OutboxRelay(pool, producer, service="test", poll_interval=30.0)

    task = await cancel_as_woken(relay.run, relay._wake)

    assert task.done()  # on Python 3.11, wait_for would return the wake-up and loop on
    assert task.cancelled()


async def _outbox_row(conn: Conn, *, published_ago: timedelta | None) -> int:
    """An outbox row published that long ago (None: never), created three hours ago."""
    row_id: int = await conn.fetchval(
        "INSERT INTO outbox (event_id, topic, key, value, headers, created_at, published_at)"
        " VALUES ($1, 't', NULL, 'v', '{}', now() - interval '3 hours', now() - $2::interval)"
        " RETURNING id",
        uuid.uuid4(),
        published_ago,
    )
    return row_id


async def test_purge_deletes_only_rows_published_before_the_retention(
    pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    relay = OutboxRelay(pool, producer, service="t", retention_seconds=3600)
    async with pool.acquire() as conn:
        await _outbox_row(conn, published_ago=timedelta(hours=2))
        recent = await _outbox_row(conn, published_ago=timedelta(minutes=10))
        never = await _outbox_row(conn, published_ago=None)

    purged = await relay.purge_published()

    async with pool.acquire() as conn:
        left = {r["id"] for r in await conn.fetch("SELECT id FROM outbox")}
    assert purged == 1
    assert left == {recent, never}


async def test_purge_works_through_a_backlog_in_chunks(
    pool: asyncpg.Pool, producer: AIOKafkaProducer
) -> None:
    relay = OutboxRelay(pool, producer, service="t", retention_seconds=60)
    async with pool.acquire() as conn:
        for _ in range(5):
            await _outbox_row(conn, published_ago=timedelta(minutes=30))
        kept = await _outbox_row(conn, published_ago=timedelta(seconds=10))

    purged = await relay.purge_published(chunk=2)

    async with pool.acquire() as conn:
        left = [r["id"] for r in await conn.fetch("SELECT id FROM outbox")]
    assert purged == 5
    assert left == [kept]


async def test_purge_reads_the_published_index_not_the_whole_outbox(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbox (event_id, topic, value, headers, published_at)"
            " SELECT gen_random_uuid(), 't', 'v', '{}', now() FROM generate_series(1, 20000)"
        )
        await conn.execute("ANALYZE outbox")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN (COSTS OFF) " + PURGE_PUBLISHED.replace("$1", "3600").replace("$2", "5000")
            )
        )
    assert "outbox_published" in plan
    assert "Seq Scan" not in plan


async def _inbox_row(conn: Conn, consumer: str, handled_ago: timedelta) -> uuid.UUID:
    event_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO inbox (consumer, event_id, handled_at) VALUES ($1, $2, now() - $3::interval)",
        consumer,
        event_id,
        handled_ago,
    )
    return event_id


async def _inbox(pool: asyncpg.Pool) -> set[tuple[str, uuid.UUID]]:
    async with pool.acquire() as conn:
        return {(r["consumer"], r["event_id"]) for r in await conn.fetch("SELECT * FROM inbox")}


async def test_inbox_purge_forgets_only_events_handled_before_the_retention(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        for consumer in ("routing", "sla"):
            for _ in range(3):
                await _inbox_row(conn, consumer, timedelta(days=20))
        recent = await _inbox_row(conn, "routing", timedelta(days=13))
        old_event = await _inbox_row(conn, "sla", timedelta(days=15))
        # the same event handled recently by another consumer stays remembered for it
        await conn.execute(
            "INSERT INTO inbox (consumer, event_id) VALUES ('routing', $1)", old_event
        )

    purged = await purge_handled(pool, retention_seconds=14 * 86_400, chunk=2)

    assert purged == 7
    assert await _inbox(pool) == {("routing", recent), ("routing", old_event)}
    async with pool.acquire() as conn:  # a forgotten event is new again, a remembered one not
        assert await claim(conn, consumer="sla", event_id=old_event)
        assert not await claim(conn, consumer="routing", event_id=recent)


async def test_a_consuming_runtime_purges_its_inbox(
    fresh_database: str, kafka_bootstrap: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        old = await _inbox_row(conn, "t", timedelta(days=2))
        recent = await _inbox_row(conn, "t", timedelta(hours=1))
    settings = BaseServiceSettings(
        database_url=fresh_database,
        kafka_bootstrap=kafka_bootstrap,
        outbox_relay=False,
        inbox_retention_days=1,
    )

    async with Runtime(service="t", settings=settings, migrations=tmp_path) as rt:
        assert ("t", old) in await _inbox(pool)  # nothing purges before a consumer exists

        async def ignore(conn: Conn, envelope: Envelope[Payload]) -> None:
            return None

        rt.processor("t", ignore)
        for _ in range(200):
            if ("t", old) not in await _inbox(pool):
                break
            await asyncio.sleep(0.05)

    assert await _inbox(pool) == {("t", recent)}
