"""Idempotent event handling shared by the faust agents and the aiokafka consumers.

For each record: decode it, then in one database transaction claim it in the inbox and run
the handler. The caller commits the Kafka offset only after this returns. A record that
cannot be decoded, or whose handler keeps failing, goes to ``<topic>.dlq`` with the reason
in its headers; losing the database is not the record's fault, so those errors propagate
and the offset stays uncommitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from paht_common.clock import utcnow
from paht_common.db import Conn
from paht_common.events import Envelope, Payload
from paht_common.inbox import claim
from paht_common.kafka import RawRecord, UndecodableRecord, decode
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
    max_records: int = 200,
) -> None:
    """Consume until cancelled, committing each partition's offset after its records commit."""
    while True:
        batches = await consumer.getmany(timeout_ms=500, max_records=max_records)
        if ready is not None:
            ready.set()
        for tp, messages in batches.items():
            done: int | None = None
            for message in messages:
                record = RawRecord(
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    key=message.key,
                    value=message.value,
                    headers=tuple(message.headers or ()),
                )
                try:
                    await processor.process(record)
                except INFRASTRUCTURE_ERRORS as exc:
                    logger.warning("infrastructure error, re-reading from last commit: %r", exc)
                    await _rewind(consumer, tp)
                    await asyncio.sleep(1.0)
                    break
                done = message.offset
            if done is not None:
                await consumer.commit({tp: done + 1})


async def _rewind(consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
    committed = await consumer.committed(tp)
    if committed is None:
        await consumer.seek_to_beginning(tp)
    else:
        consumer.seek(tp, committed)
