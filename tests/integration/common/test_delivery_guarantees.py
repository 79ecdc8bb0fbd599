"""The delivery guarantees, each pinned by a fault the test triggers itself.

Fault points, no sleeps and luck: a pool whose transactions fail to commit on demand, a
consumer that records what it fetched, committed and sought (and can "crash" on the offset
commit), a producer whose acknowledgements fail on demand. Each test names the guarantee it
holds; each would fail if the guarantee broke (offsets committed before the database commit,
no rewind after an infrastructure error, rows marked published before the broker's ack, an
inbox that forgets, a poison record dead-lettered more than once).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from paht_common.consumer import EventProcessor, Outcome, producer_dead_letters, run_consumer
from paht_common.db import Conn, apply_migrations
from paht_common.events import Envelope, Payload, ReportSubmitted, new_envelope
from paht_common.faust_worker import process_events
from paht_common.kafka import (
    RawRecord,
    decode,
    encode,
    header_list,
    key_bytes,
    make_consumer,
    make_producer,
)
from paht_common.outbox import OutboxRelay, add_to_outbox
from paht_common.testing import random_id
from paht_devenv.kafka import create_topics

pytestmark = pytest.mark.integration

WAIT = 60.0  # generous: a loaded two-core machine is slow, never wrong


# --- fault points ----------------------------------------------------------------------------


class Faults:
    """Shared switchboard: how many commits still fail, and a log of what happened, in order."""

    def __init__(self, *, commit_failures: int = 0) -> None:
        self.commit_failures = commit_failures
        self.failed_commits = 0
        self.log: list[tuple[str, object]] = []
        self._changed = asyncio.Condition()

    async def note(self, what: str, detail: object = None) -> None:
        async with self._changed:
            self.log.append((what, detail))
            self._changed.notify_all()

    async def wait_for(self, what: str, count: int = 1) -> None:
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: self.count(what) >= count)

    def count(self, what: str) -> int:
        return sum(1 for w, _ in self.log if w == what)


class FailingTransaction:
    """A real transaction whose successful end fails (rolled back) while faults are armed."""

    def __init__(self, inner: Any, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    async def __aenter__(self) -> None:
        await self._inner.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._faults.commit_failures > 0:
            self._faults.commit_failures -= 1
            lost = ConnectionResetError("connection lost during COMMIT")
            await self._inner.__aexit__(ConnectionResetError, lost, None)  # rolls back
            await self._faults.note("db commit failed")
            raise lost
        await self._inner.__aexit__(exc_type, exc, tb)
        if exc_type is None:
            await self._faults.note("db commit")


class FaultyConnection:
    """A real connection whose transactions can fail to commit."""

    def __init__(self, conn: Conn, faults: Faults) -> None:
        self._conn = conn
        self._faults = faults

    def transaction(self) -> FailingTransaction:
        return FailingTransaction(self._conn.transaction(), self._faults)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class FaultyPool:
    """A real pool handing out connections whose commits fail on demand."""

    def __init__(self, pool: asyncpg.Pool, faults: Faults) -> None:
        self._pool = pool
        self._faults = faults

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FaultyConnection]:
        async with self._pool.acquire() as conn:
            yield FaultyConnection(conn, self._faults)


class Crash(Exception):
    """The process dies here (raised from a fault point; nothing catches it)."""


class SpyConsumer:
    """A real consumer that logs fetches, offset commits and seeks; can crash on commit."""

    def __init__(self, consumer: AIOKafkaConsumer, faults: Faults) -> None:
        self._consumer = consumer
        self._faults = faults
        self.crash_on_commit = False

    async def getmany(self, *args: Any, **kwargs: Any) -> Any:
        batches = await self._consumer.getmany(*args, **kwargs)
        for tp, messages in batches.items():
            await self._faults.note("fetch", (tp.partition, [m.offset for m in messages]))
        return batches

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.crash_on_commit:
            raise Crash("killed between the database commit and the offset commit")
        await self._consumer.commit(offsets)
        for tp, offset in offsets.items():
            await self._faults.note("offset commit", (tp.partition, offset))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(tp, offset)
        self._faults.log.append(("seek", (tp.partition, offset)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


class FlakyProducer:
    """A real producer whose next sends fail: at once (broker down) or at the ack."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self.refuse_sends = 0
        self.fail_acks_at: set[int] = set()
        self.sends = 0

    async def send(self, topic: str, **kwargs: Any) -> asyncio.Future[Any]:
        self.sends += 1
        if self.refuse_sends > 0:
            self.refuse_sends -= 1
            raise KafkaConnectionError("broker unavailable")
        if self.sends in self.fail_acks_at:
            unacknowledged: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            unacknowledged.set_exception(KafkaConnectionError("no acknowledgement"))
            return unacknowledged
        future: asyncio.Future[Any] = await self._producer.send(topic, **kwargs)
        return future

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
async def pool(fresh_pool: asyncpg.Pool, tmp_path: Path) -> asyncpg.Pool:
    async with fresh_pool.acquire() as conn:
        await apply_migrations(conn, tmp_path)  # the common migrations only
        await conn.execute("CREATE TABLE effects (event_id uuid NOT NULL, seq serial)")
    return fresh_pool


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = make_producer(kafka_bootstrap, client_id=random_id("p"))
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    name = random_id("guarantee-")
    await create_topics(kafka_bootstrap, [name, name + ".dlq"], wait_seconds=30)
    return name


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


async def publish(producer: AIOKafkaProducer, topic: str, envs: list[Envelope[Payload]]) -> None:
    """Produce the events to partition 0, in order."""
    for env in envs:
        message = encode(env)
        await producer.send_and_wait(
            topic,
            value=message.value,
            key=key_bytes(message),
            headers=header_list(message),
            partition=0,
        )


async def record_effect(conn: Conn, env: Envelope[Payload]) -> None:
    await conn.execute("INSERT INTO effects (event_id) VALUES ($1)", env.event_id)


async def effects(pool: asyncpg.Pool) -> list[uuid.UUID]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT event_id FROM effects ORDER BY seq")
    return [r["event_id"] for r in rows]


async def ignore_dead_letters(topic: str, record: RawRecord, headers: list[tuple[str, bytes]]):  # type: ignore[no-untyped-def]
    raise AssertionError(f"nothing should be dead-lettered here, got {record}")


class RecordingProcessor(EventProcessor):
    """The real processor, remembering every batch's outcomes."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outcomes: list[Outcome] = []

    async def process_batch(self, records: Any) -> list[Outcome]:
        outcomes = await super().process_batch(records)
        self.outcomes += outcomes
        return outcomes


def processor(
    pool: Any,
    group: str,
    handler: Callable[[Conn, Envelope[Payload]], Awaitable[None]] = record_effect,
    dead_letters: Any = ignore_dead_letters,
) -> RecordingProcessor:
    return RecordingProcessor(
        consumer=group, pool=pool, handler=handler, dead_letters=dead_letters, retry_delay=0.0
    )


@asynccontextmanager
async def consuming(consumer: Any, proc: EventProcessor) -> AsyncIterator[asyncio.Task[None]]:
    """run_consumer in the background; stopped (and the consumer closed) on the way out."""
    task = asyncio.create_task(run_consumer(consumer, proc))
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()


async def committed(consumer: Any, topic: str) -> int | None:
    offset: int | None = await consumer.committed(TopicPartition(topic, 0))
    return offset


async def until_committed(consumer: Any, topic: str, offset: int) -> None:
    async with asyncio.timeout(WAIT):
        while await committed(consumer, topic) != offset:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # offsets are polled: the broker sends no signal


async def started(bootstrap: str, group: str, topic: str) -> AIOKafkaConsumer:
    consumer = make_consumer(bootstrap, group_id=group, topics=[topic], fetch_max_wait_ms=50)
    await consumer.start()
    return consumer


# --- aiokafka loop ----------------------------------------------------------------------------


async def test_an_offset_is_committed_only_after_its_database_commit(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, kafka_bootstrap: str
) -> None:
    envs = [envelope(i) for i in range(5)]
    await publish(producer, topic, envs)
    faults = Faults(commit_failures=1_000)  # the database refuses every commit until disarmed
    group = random_id("g")
    spy = SpyConsumer(await started(kafka_bootstrap, group, topic), faults)

    async with consuming(spy, processor(FaultyPool(pool, faults), group)):
        await faults.wait_for("db commit failed", 2)  # failed, rewound, read again, failed
        offset_while_failing = await committed(spy, topic)
        faults.commit_failures = 0
        await until_committed(spy, topic, len(envs))

    assert offset_while_failing is None
    assert await effects(pool) == [e.event_id for e in envs]
    first_offset_commit = next(i for i, (w, _) in enumerate(faults.log) if w == "offset commit")
    assert ("db commit", None) in faults.log[:first_offset_commit]


async def test_a_crash_between_database_and_offset_commit_redelivers_as_a_no_op(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, kafka_bootstrap: str
) -> None:
    envs = [envelope(i) for i in range(5)]
    await publish(producer, topic, envs)
    group = random_id("g")
    faults = Faults()
    spy = SpyConsumer(await started(kafka_bootstrap, group, topic), faults)
    spy.crash_on_commit = True

    async with consuming(spy, processor(pool, group)) as task:
        with pytest.raises(Crash):
            await asyncio.wait_for(task, WAIT)
        left_by_the_crash = await committed(spy, topic)
    handled_before_the_crash = await effects(pool)

    calls: list[uuid.UUID] = []

    async def counting(conn: Conn, env: Envelope[Payload]) -> None:
        calls.append(env.event_id)
        await record_effect(conn, env)

    restarted = processor(pool, group, counting)
    consumer = await started(kafka_bootstrap, group, topic)
    async with consuming(consumer, restarted):
        await until_committed(consumer, topic, len(envs))

    assert left_by_the_crash is None
    assert handled_before_the_crash == [e.event_id for e in envs]
    assert restarted.outcomes == ["duplicate"] * len(envs)  # redelivered, every one
    assert calls == []
    assert await effects(pool) == handled_before_the_crash


async def test_an_infrastructure_error_rewinds_to_the_last_committed_offset(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, kafka_bootstrap: str
) -> None:
    first, second = [envelope(i) for i in range(3)], [envelope(i) for i in range(3, 6)]
    marker = envelope(99)
    faults = Faults()
    armed = {"on": True}

    async def loses_the_database_once(conn: Conn, env: Envelope[Payload]) -> None:
        if env.event_id == second[1].event_id and armed["on"]:
            armed["on"] = False
            await faults.note("database lost")
            raise ConnectionResetError("database went away mid-batch")
        await record_effect(conn, env)

    group = random_id("g")
    spy = SpyConsumer(await started(kafka_bootstrap, group, topic), faults)
    await publish(producer, topic, first)
    async with consuming(spy, processor(pool, group, loses_the_database_once)):
        await until_committed(spy, topic, 3)
        await publish(producer, topic, second)
        await faults.wait_for("database lost")
        await publish(producer, topic, [marker])  # a later record: proof the loop moved on
        await until_committed(spy, topic, 7)

    failure = faults.log.index(("database lost", None))
    last_commit = [d for w, d in faults.log[:failure] if w == "offset commit"][-1]
    fetches_after = [d for w, d in faults.log[failure:] if w == "fetch"]
    assert isinstance(last_commit, tuple)
    assert isinstance(fetches_after[0], tuple)
    assert fetches_after[0][1][0] == last_commit[1]  # the next poll re-read from the last commit
    assert ("seek", last_commit) in faults.log[failure:]
    assert await effects(pool) == [e.event_id for e in [*first, *second, marker]]


# --- faust glue -------------------------------------------------------------------------------


def raw(env: Envelope[Payload], offset: int, partition: int) -> RawRecord:
    message = encode(env)
    return RawRecord(
        "reports",
        partition,
        offset,
        key_bytes(message),
        message.value,
        tuple(header_list(message)),
    )


async def test_a_faust_batch_returns_only_after_its_commit_retrying_infrastructure_errors(
    pool: asyncpg.Pool,
) -> None:
    envs = [envelope(i) for i in range(4)]
    records = [raw(e, i // 2, partition=i % 2) for i, e in enumerate(envs)]
    faults = Faults(commit_failures=1)
    proc = processor(FaultyPool(pool, faults), "faust-g")

    await process_events(proc, records)  # faust acks the events once this returns

    assert faults.count("db commit failed") == 1
    assert faults.count("db commit") == 2  # both partitions committed, one after a retry
    assert sorted(await effects(pool)) == sorted(e.event_id for e in envs)
    assert sorted(proc.outcomes) == ["handled"] * 4


async def test_a_faust_batch_seen_again_after_a_crash_is_a_no_op(pool: asyncpg.Pool) -> None:
    envs = [envelope(i) for i in range(3)]
    records = [raw(e, i, partition=0) for i, e in enumerate(envs)]
    await process_events(processor(pool, "faust-g"), records)  # committed; then the ack is lost

    again = processor(pool, "faust-g")
    await process_events(again, records)

    assert again.outcomes == ["duplicate"] * 3
    assert await effects(pool) == [e.event_id for e in envs]


# --- outbox relay -----------------------------------------------------------------------------


async def pending(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        n: int = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    return n


async def read_topic(bootstrap: str, topic: str) -> list[RawRecord]:
    """Every record the topic holds now (up to its end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            partitions = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[RawRecord] = []
        async with asyncio.timeout(WAIT):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batch = await consumer.getmany(timeout_ms=200)
                records += [
                    RawRecord(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers))
                    for messages in batch.values()
                    for m in messages
                ]
    finally:
        await consumer.stop()
    return records


async def queue(pool: asyncpg.Pool, topic: str, n: int) -> list[Envelope[Payload]]:
    envs = [envelope(i) for i in range(n)]
    async with pool.acquire() as conn, conn.transaction():
        for env in envs:
            await add_to_outbox(conn, topic, env)
    return envs


async def test_rows_are_marked_published_only_after_the_broker_acknowledged_them(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, kafka_bootstrap: str
) -> None:
    envs = await queue(pool, topic, 5)
    flaky = FlakyProducer(producer)
    flaky.fail_acks_at = {3}  # the third send is never acknowledged
    relay = OutboxRelay(pool, flaky, service="test")

    with pytest.raises(KafkaConnectionError):
        await relay.relay_once()
    marked_early = 5 - await pending(pool)
    sent_next_cycle = await relay.relay_once()

    assert marked_early == 0
    assert sent_next_cycle == 5
    assert await pending(pool) == 0
    delivered = [decode(r).event_id for r in await read_topic(kafka_bootstrap, topic)]
    assert set(delivered) == {e.event_id for e in envs}  # none lost (the acked ones twice)


async def test_rows_stay_pending_while_the_broker_is_unavailable_and_go_later(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, kafka_bootstrap: str
) -> None:
    envs = await queue(pool, topic, 4)
    flaky = FlakyProducer(producer)
    flaky.refuse_sends = 3  # three cycles find the broker down
    relay = OutboxRelay(pool, flaky, service="test", poll_interval=0.01)
    outcomes: list[object] = []
    for _ in range(3):
        try:
            outcomes.append(await relay.relay_once())
        except KafkaConnectionError as exc:
            outcomes.append(type(exc))
            outcomes.append(await pending(pool))

    task = asyncio.create_task(relay.run())
    try:
        async with asyncio.timeout(WAIT):
            while await pending(pool):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert outcomes == [KafkaConnectionError, 4] * 3
    delivered = [decode(r).event_id for r in await read_topic(kafka_bootstrap, topic)]
    assert sorted(delivered) == sorted(e.event_id for e in envs)  # each exactly once


# --- dead letters -----------------------------------------------------------------------------


async def test_a_poison_event_is_dead_lettered_exactly_once_and_its_batch_handled(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, kafka_bootstrap: str
) -> None:
    envs = [envelope(i) for i in range(4)]
    poison = envs[2]
    await publish(producer, topic, [*envs, envs[0]])  # and a redelivery of the first

    async def fails_on_poison(conn: Conn, env: Envelope[Payload]) -> None:
        if env.event_id == poison.event_id:
            raise ValueError("bug for this one event")
        await record_effect(conn, env)

    group = random_id("g")
    consumer = await started(kafka_bootstrap, group, topic)
    proc = processor(pool, group, fails_on_poison, producer_dead_letters(producer))
    async with consuming(consumer, proc):
        await until_committed(consumer, topic, 5)

    dead = await read_topic(kafka_bootstrap, topic + ".dlq")
    assert [(r.value, dict(r.headers)["dlq_offset"]) for r in dead] == [
        (encode(poison).value, b"2")
    ]
    assert decode(dead[0]).event_id == poison.event_id
    assert proc.outcomes.count("dead_lettered") == 1
    assert proc.outcomes.count("duplicate") == 1  # the redelivery of the first event
    assert await effects(pool) == [envs[0].event_id, envs[1].event_id, envs[3].event_id]
