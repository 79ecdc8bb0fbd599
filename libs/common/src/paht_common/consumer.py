"""Idempotent event handling shared by the faust agents and the aiokafka consumers.

Records come in batches: what one poll returned, grouped by partition. Each partition's batch
is handled in order in ONE database transaction: the inbox claims of all its events in one
statement, the handler for each event claimed for the first time, one commit. Partitions run
concurrently, each on its own connection. The caller commits a partition's Kafka offset
only after its transaction committed.

A record that cannot be decoded goes to ``<topic>.dlq`` with the reason in its headers,
after the batch's transaction committed. A handler that raises rolls its batch back; the
batch is then handled again record by record (``process``), so only the poison record is
dead-lettered (after ``attempts`` tries) and nothing else is lost or doubled. Losing the
database is not the record's fault, so those errors propagate and the offset stays
uncommitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from paht_common.clock import utcnow
from paht_common.db import Conn
from paht_common.events import Envelope, Payload
from paht_common.inbox import claim, claim_many
from paht_common.kafka import RawRecord, UndecodableRecord, decode, raw_record
from paht_common.logging import bind_event
from paht_common.metrics import (
    CONSUMED,
    CONSUMER_FAILURES,
    DEAD_LETTERS,
    END_TO_END_SECONDS,
    HANDLE_SECONDS,
)
from paht_common.topics import dead_letter

logger = logging.getLogger(__name__)

Handler = Callable[[Conn, Envelope[Payload]], Awaitable[None]]
DeadLetterSink = Callable[[str, RawRecord, list[tuple[str, bytes]]], Awaitable[None]]
Outcome = Literal["handled", "duplicate", "dead_lettered"]

INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


def dead_letter_headers(
    record: RawRecord, *, consumer: str, reason: str
) -> list[tuple[str, bytes]]:
    """Original headers plus where the record came from and why it was rejected."""
    extra = [
        ("dlq_consumer", consumer.encode()),
        ("dlq_reason", reason[:1000].encode()),
        ("dlq_topic", record.topic.encode()),
        ("dlq_partition", str(record.partition).encode()),
        ("dlq_offset", str(record.offset).encode()),
        ("dlq_at", utcnow().isoformat().encode()),
    ]
    return list(record.headers) + extra


class EventProcessor:
    """Runs one handler over records, exactly once in effect per (consumer, event)."""

    def __init__(
        self,
        *,
        consumer: str,
        pool: asyncpg.Pool,
        handler: Handler,
        dead_letters: DeadLetterSink,
        attempts: int = 3,
        retry_delay: float = 0.2,
    ) -> None:
        self.consumer = consumer
        self._pool = pool
        self._handler = handler
        self._dead_letters = dead_letters
        self._attempts = attempts
        self._retry_delay = retry_delay

    async def process(self, record: RawRecord) -> Outcome:
        """Handle one record; returns what happened. Infrastructure errors propagate."""
        started = time.perf_counter()
        try:
            envelope = decode(record)
        except UndecodableRecord as exc:
            await self._to_dead_letters(record, f"undecodable: {exc}")
            return "dead_lettered"
        with bind_event(envelope):
            last_error: Exception | None = None
            for attempt in range(1, self._attempts + 1):
                try:
                    outcome = await self._handle(envelope)
                except INFRASTRUCTURE_ERRORS:
                    raise
                except Exception as exc:
                    last_error = exc
                    CONSUMER_FAILURES.labels(self.consumer, record.topic).inc()
                    logger.warning(
                        "handler failed (attempt %s/%s): %r", attempt, self._attempts, exc
                    )
                    await asyncio.sleep(self._retry_delay * attempt)
                    continue
                CONSUMED.labels(self.consumer, record.topic, outcome).inc()
                HANDLE_SECONDS.labels(self.consumer).observe(time.perf_counter() - started)
                if outcome == "handled":
                    age = (utcnow() - envelope.occurred_at).total_seconds()
                    END_TO_END_SECONDS.labels(self.consumer).observe(max(age, 0.0))
                return outcome
            await self._to_dead_letters(record, f"handler failed: {last_error!r}")
            return "dead_lettered"

    async def process_batch(self, records: Sequence[RawRecord]) -> list[Outcome]:
        """Handle one partition's records, in order, in one transaction; their outcomes.

        Infrastructure errors propagate (nothing of the batch is committed then).
        """
        started = time.perf_counter()
        outcomes: list[Outcome | None] = [None] * len(records)
        decoded: list[tuple[int, Envelope[Payload]]] = []
        poison: list[tuple[int, str]] = []
        for index, record in enumerate(records):
            try:
                decoded.append((index, decode(record)))
            except UndecodableRecord as exc:
                poison.append((index, f"undecodable: {exc}"))
        try:
            handled = await self._handle_together(decoded)
        except INFRASTRUCTURE_ERRORS:
            raise
        except Exception as exc:
            # one handler failed and rolled the whole batch back: go one by one, so only the
            # poison record is retried and dead-lettered
            CONSUMER_FAILURES.labels(self.consumer, records[0].topic).inc()
            logger.warning(
                "batch of %s records from %s[%s] failed (%r); handling them one by one",
                len(records),
                records[0].topic,
                records[0].partition,
                exc,
            )
            for index, _ in decoded:
                outcomes[index] = await self.process(records[index])
        else:
            elapsed = time.perf_counter() - started
            for index, outcome in handled:
                outcomes[index] = outcome
                CONSUMED.labels(self.consumer, records[index].topic, outcome).inc()
                HANDLE_SECONDS.labels(self.consumer).observe(elapsed / max(len(handled), 1))
            now = utcnow()
            for index, envelope in decoded:
                if outcomes[index] == "handled":
                    age = (now - envelope.occurred_at).total_seconds()
                    END_TO_END_SECONDS.labels(self.consumer).observe(max(age, 0.0))
        for index, reason in poison:
            await self._to_dead_letters(records[index], reason)
            outcomes[index] = "dead_lettered"
        return [o if o is not None else "dead_lettered" for o in outcomes]

    async def _handle_together(
        self, decoded: list[tuple[int, Envelope[Payload]]]
    ) -> list[tuple[int, Outcome]]:
        if not decoded:
            return []
        results: list[tuple[int, Outcome]] = []
        async with self._pool.acquire() as conn, conn.transaction():
            fresh = await claim_many(
                conn, consumer=self.consumer, event_ids=[e.event_id for _, e in decoded]
            )
            for index, envelope in decoded:
                if envelope.event_id not in fresh:
                    results.append((index, "duplicate"))
                    continue
                fresh.discard(envelope.event_id)  # a second copy in the batch is a duplicate
                with bind_event(envelope):
                    await self._handler(conn, envelope)
                results.append((index, "handled"))
        return results

    async def _handle(self, envelope: Envelope[Payload]) -> Outcome:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await claim(conn, consumer=self.consumer, event_id=envelope.event_id):
                return "duplicate"
            await self._handler(conn, envelope)
        return "handled"

    async def _to_dead_letters(self, record: RawRecord, reason: str) -> None:
        logger.error(
            "dead-lettering %s[%s]@%s: %s", record.topic, record.partition, record.offset, reason
        )
        headers = dead_letter_headers(record, consumer=self.consumer, reason=reason)
        await self._dead_letters(dead_letter(record.topic), record, headers)
        DEAD_LETTERS.labels(self.consumer, record.topic).inc()
        CONSUMED.labels(self.consumer, record.topic, "dead_lettered").inc()


def producer_dead_letters(producer: AIOKafkaProducer) -> DeadLetterSink:
    """Dead-letter sink that produces with an aiokafka producer and waits for the ack."""

    async def sink(topic: str, record: RawRecord, headers: list[tuple[str, bytes]]) -> None:
        await producer.send_and_wait(topic, value=record.value, key=record.key, headers=headers)

    return sink


async def run_consumer(
    consumer: AIOKafkaConsumer,
    processor: EventProcessor,
    *,
    ready: asyncio.Event | None = None,
    max_records: int = 500,
) -> None:
    """Consume until cancelled: each poll's partitions concurrently, each partition's records
    in one transaction, its offset committed after that transaction committed."""
    while True:
        batches = await consumer.getmany(timeout_ms=500, max_records=max_records)
        if ready is not None:
            ready.set()
        if not batches:
            continue
        await asyncio.gather(
            *(
                _consume_partition(consumer, processor, tp, [raw_record(m) for m in messages])
                for tp, messages in batches.items()
            )
        )


async def _consume_partition(
    consumer: AIOKafkaConsumer,
    processor: EventProcessor,
    tp: TopicPartition,
    records: list[RawRecord],
) -> None:
    try:
        await processor.process_batch(records)
    except INFRASTRUCTURE_ERRORS as exc:
        logger.warning("infrastructure error, re-reading %s from last commit: %r", tp, exc)
        await _rewind(consumer, tp)
        await asyncio.sleep(1.0)
        return
    try:
        await consumer.commit({tp: records[-1].offset + 1})
    except (CommitFailedError, IllegalStateError) as exc:
        # the partition moved to another member mid-batch: it re-reads from the last commit,
        # and the inbox turns what this batch handled into duplicates there
        logger.warning("offset of %s not committed (rebalanced): %r", tp, exc)


async def _rewind(consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
    committed = await consumer.committed(tp)
    if committed is None:
        await consumer.seek_to_beginning(tp)
    else:
        consumer.seek(tp, committed)
