"""Batched consumption against the harness's real PostgreSQL and Kafka.

A partition's records are handled in one transaction (one inbox statement, one commit);
partitions run concurrently; a poison record does not sink its batch; a crash mid-batch
commits nothing of it, and the redelivery is handled exactly once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from paht_common.consumer import EventProcessor, run_consumer
from paht_common.db import Conn, apply_migrations
from paht_common.events import Envelope, Payload, ReportSubmitted, new_envelope
from paht_common.faust_worker import by_partition
from paht_common.kafka import (
    RawRecord,
    encode,
    header_list,
    key_bytes,
    make_consumer,
    make_producer,
)
from paht_common.testing import random_id
from paht_devenv.kafka import create_topics

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(fresh_pool: asyncpg.Pool, tmp_path: Path) -> asyncpg.Pool:
    async with fresh_pool.acquire() as conn:
        await apply_migrations(conn, tmp_path)  # the common migrations only
        await conn.execute("CREATE TABLE effects (event_id uuid NOT NULL, seq serial)")
    return fresh_pool


class DeadLetters:
    """A dead-letter sink that remembers what it was given."""

    def __init__(self) -> None:
        self.records: list[tuple[str, RawRecord, dict[str, bytes]]] = []

    async def __call__(self, topic: str, record: RawRecord, headers: list[tuple[str, bytes]]):
        self.records.append((topic, record, dict(headers)))


def envelope(n: int = 1) -> Envelope[Payload]:
    payload = ReportSubmitted(
        report_id=uuid.uuid4(),
        number=f"BN-2026-{n:06d}",
        category="INFRA.ROAD",
        commune_code=None,
        lat=None,
        lon=None,
        channel="app",
        urgency="normal",
        source_app="t",
        submitted_at=datetime(2026, 12, 2, tzinfo=UTC),
    )
    return new_envelope(payload, source="/intake", province="bn")


def record(env: Envelope[Payload], offset: int, partition: int = 0) -> RawRecord:
    message = encode(env)
    return RawRecord(
        "reports", partition, offset, key_bytes(message), message.value, header_list(message)
    )


def poison(offset: int, partition: int = 0) -> RawRecord:
    return RawRecord("reports", partition, offset, b"k", b"\x00not a cloudevent", ())


async def effects(pool: asyncpg.Pool) -> list[uuid.UUID]:
    async with pool.acquire() as conn:
        return [
            r["event_id"] for r in await conn.fetch("SELECT event_id FROM effects ORDER BY seq")
        ]


async def record_effect(conn: Conn, env: Envelope[Payload]) -> None:
    await conn.execute("INSERT INTO effects (event_id) VALUES ($1)", env.event_id)


def processor(pool: asyncpg.Pool, handler, sink: DeadLetters, group: str = "g") -> EventProcessor:  # type: ignore[no-untyped-def]
    return EventProcessor(
        consumer=group, pool=pool, handler=handler, dead_letters=sink, retry_delay=0.0
    )


async def test_a_batch_is_handled_in_order_in_one_transaction(pool: asyncpg.Pool) -> None:
    envs = [envelope(i) for i in range(5)]
    transactions: set[int] = set()

    async def handler(conn: Conn, env: Envelope[Payload]) -> None:
        transactions.add(await conn.fetchval("SELECT txid_current()"))
        await record_effect(conn, env)

    outcomes = await processor(pool, handler, DeadLetters()).process_batch(
        [record(e, i) for i, e in enumerate(envs)]
    )

    assert outcomes == ["handled"] * 5
    assert await effects(pool) == [e.event_id for e in envs]
    assert len(transactions) == 1


async def test_duplicates_inside_and_across_batches_take_effect_once(pool: asyncpg.Pool):
    a, b = envelope(1), envelope(2)
    proc = processor(pool, record_effect, DeadLetters())

    first = await proc.process_batch([record(a, 0), record(a, 1), record(b, 2)])
    second = await proc.process_batch([record(b, 3), record(a, 4)])

    assert first == ["handled", "duplicate", "handled"]
    assert second == ["duplicate", "duplicate"]
    assert await effects(pool) == [a.event_id, b.event_id]


async def test_an_undecodable_record_is_dead_lettered_once_and_the_rest_handled(
    pool: asyncpg.Pool,
) -> None:
    a, b = envelope(1), envelope(2)
    sink = DeadLetters()

    outcomes = await processor(pool, record_effect, sink).process_batch(
        [record(a, 0), poison(1), record(b, 2)]
    )

    assert outcomes == ["handled", "dead_lettered", "handled"]
    assert await effects(pool) == [a.event_id, b.event_id]
    assert [(t, r.offset) for t, r, _ in sink.records] == [("reports.dlq", 1)]
    assert sink.records[0][2]["dlq_reason"].startswith(b"undecodable")


async def test_a_failing_handler_does_not_sink_its_batch(pool: asyncpg.Pool) -> None:
    envs = [envelope(i) for i in range(4)]
    bad = envs[2].event_id
    sink = DeadLetters()

    async def handler(conn: Conn, env: Envelope[Payload]) -> None:
        await record_effect(conn, env)
        if env.event_id == bad:
            raise ValueError("bug for this one event")

    outcomes = await processor(pool, handler, sink).process_batch(
        [record(e, i) for i, e in enumerate(envs)]
    )

    assert outcomes == ["handled", "handled", "dead_lettered", "handled"]
    # the batch's transaction rolled back whole: every good event took effect exactly once
    assert await effects(pool) == [envs[0].event_id, envs[1].event_id, envs[3].event_id]
    assert [r.offset for _, r, _ in sink.records] == [2]
    async with pool.acquire() as conn:
        claimed = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM inbox")}
    assert claimed == {envs[0].event_id, envs[1].event_id, envs[3].event_id}


async def test_an_infrastructure_error_mid_batch_commits_nothing(pool: asyncpg.Pool) -> None:
    envs = [envelope(i) for i in range(3)]
    failing = {"on": True}

    async def handler(conn: Conn, env: Envelope[Payload]) -> None:
        await record_effect(conn, env)
        if env.event_id == envs[1].event_id and failing["on"]:
            raise ConnectionResetError("database went away")

    proc = processor(pool, handler, DeadLetters())
    batch = [record(e, i) for i, e in enumerate(envs)]

    with pytest.raises(ConnectionResetError):
        await proc.process_batch(batch)
    left = await effects(pool)
    failing["on"] = False
    again = await proc.process_batch(batch)

    assert left == []
    assert again == ["handled"] * 3
    assert await effects(pool) == [e.event_id for e in envs]


def test_a_stream_batch_is_grouped_by_partition_in_order() -> None:
    envs = [envelope(i) for i in range(5)]
    mixed = [
        record(envs[0], 10, partition=1),
        record(envs[1], 20, partition=0),
        record(envs[2], 11, partition=1),
        record(envs[3], 21, partition=0),
        record(envs[4], 12, partition=1),
    ]

    groups = by_partition(mixed)

    assert [[r.offset for r in g] for g in groups] == [[10, 11, 12], [20, 21]]


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    name = random_id("batch-")
    await create_topics(kafka_bootstrap, [name, name + ".dlq"], wait_seconds=30)
    return name


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = make_producer(kafka_bootstrap, client_id=random_id("p"))
    await p.start()
    yield p
    await p.stop()


async def committed_total(consumer, topic: str) -> int:  # type: ignore[no-untyped-def]
    offsets = [await consumer.committed(TopicPartition(topic, p)) for p in range(3)]
    return sum(o or 0 for o in offsets)


async def test_a_consumer_killed_mid_batch_loses_and_doubles_nothing(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, kafka_bootstrap: str
) -> None:
    envs = [envelope(i) for i in range(30)]
    for env in envs:
        message = encode(env)
        await producer.send_and_wait(
            topic, value=message.value, key=key_bytes(message), headers=header_list(message)
        )
    group = random_id("g")
    entered = asyncio.Event()
    hold = asyncio.Event()
    victim = envs[17].event_id

    async def stalls_on_one_event(conn: Conn, env: Envelope[Payload]) -> None:
        await record_effect(conn, env)
        if env.event_id == victim:
            entered.set()
            await hold.wait()  # the process dies here, mid-batch, inside the transaction

    consumer = make_consumer(kafka_bootstrap, group_id=group, topics=[topic])
    await consumer.start()
    task = asyncio.create_task(
        run_consumer(consumer, processor(pool, stalls_on_one_event, DeadLetters(), group))
    )
    async with asyncio.timeout(60):
        await entered.wait()
    task.cancel()  # as abrupt as a kill for this process: the open transaction rolls back
    await asyncio.gather(task, return_exceptions=True)
    await consumer.stop()
    before_restart = await effects(pool)

    consumer = make_consumer(kafka_bootstrap, group_id=group, topics=[topic])
    await consumer.start()
    task = asyncio.create_task(
        run_consumer(consumer, processor(pool, record_effect, DeadLetters(), group))
    )
    try:
        async with asyncio.timeout(60):
            while await committed_total(consumer, topic) < len(envs):  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # offsets are polled: the broker sends no signal
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()

    assert victim not in before_restart  # its batch committed nothing
    after = await effects(pool)
    assert sorted(after) == sorted(e.event_id for e in envs)  # each exactly once
