"""Transactional outbox: write events with the state change, relay them to Kafka.

``add_to_outbox`` runs inside the caller's transaction and never commits. ``OutboxRelay`` is
the only code that produces to Kafka: it claims unpublished rows with
``FOR UPDATE SKIP LOCKED``, sends them with an idempotent producer, waits for the broker's
acknowledgement and only then marks them published, in the same transaction. A crash in
between re-sends the rows; consumers drop the duplicates through their inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from paht_common.db import PURGE_CHUNK, ChannelListener, Conn, Wakeup, delete_in_chunks
from paht_common.events import Envelope
from paht_common.kafka import encode
from paht_common.metrics import OUTBOX_AGE, OUTBOX_BACKLOG, OUTBOX_FAILURES, OUTBOX_PUBLISHED

logger = logging.getLogger(__name__)

INSERT_OUTBOX = """
INSERT INTO outbox (event_id, topic, key, value, headers)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (event_id) DO NOTHING
"""

CLAIM_BATCH = """
SELECT id, topic, key, value, headers
FROM outbox
WHERE published_at IS NULL
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])"

BACKLOG = """
SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age
FROM outbox WHERE published_at IS NULL
"""

PURGE_PUBLISHED = """
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE published_at < now() - make_interval(secs => $1)
    ORDER BY published_at
    LIMIT $2
)
"""


def outbox_record(envelope: Envelope[Any]) -> tuple[bytes | None, bytes, dict[str, str]]:
    """The Kafka key, value and headers an outbox row stores for an event."""
    message = encode(envelope)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    headers = {name: value.decode() for name, value in message.headers.items()}
    return key, message.value, headers


async def add_to_outbox(conn: Conn, topic: str, envelope: Envelope[Any]) -> None:
    """Queue an event for ``topic``; call inside the caller's transaction."""
    key, value, headers = outbox_record(envelope)
    await conn.execute(INSERT_OUTBOX, envelope.event_id, topic, key, value, headers)


class OutboxRelay:
    """Relays outbox rows to Kafka; run() until cancelled."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        *,
        service: str,
        batch_size: int = 200,
        poll_interval: float = 1.0,
        retention_seconds: float = 3600.0,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._service = service
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._retention = retention_seconds
        self._wake = Wakeup()
        self._listener = ChannelListener(pool, "outbox", self._wake.set)

    async def run(self) -> None:
        """Relay forever: wake on NOTIFY, or every poll interval as a fallback."""
        cycles = 0
        try:
            while True:
                await self._listener.ensure()  # polls until it listens again
                try:
                    sent = await self.relay_once()
                except Exception as exc:  # database or Kafka trouble: keep the rows, retry
                    OUTBOX_FAILURES.labels(self._service, type(exc).__name__).inc()
                    logger.warning("outbox relay failed: %r", exc)
                    sent = 0
                    await asyncio.sleep(self._poll_interval)
                cycles += 1
                if cycles % 50 == 0:
                    with contextlib.suppress(Exception):
                        await self._observe_and_purge()
                if sent >= self._batch_size:
                    continue
                self._wake.clear()
                await self._wake.sleep(self._poll_interval)
        finally:
            await self._listener.stop()

    async def relay_once(self) -> int:
        """Publish one batch; returns how many rows were published."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(CLAIM_BATCH, self._batch_size)
            if not rows:
                return 0
            futures = []
            for row in rows:
                headers = [(k, v.encode()) for k, v in row["headers"].items()]
                futures.append(
                    await self._producer.send(
                        row["topic"], value=row["value"], key=row["key"], headers=headers
                    )
                )
            await asyncio.gather(*futures)
            await conn.execute(MARK_PUBLISHED, [row["id"] for row in rows])
        for row in rows:
            OUTBOX_PUBLISHED.labels(self._service, row["topic"]).inc()
        return len(rows)

    async def _observe_and_purge(self) -> None:
        async with self._pool.acquire() as conn:
            stats = await conn.fetchrow(BACKLOG)
            if stats is not None:
                OUTBOX_BACKLOG.labels(self._service).set(stats["n"])
                OUTBOX_AGE.labels(self._service).set(float(stats["age"]))
        await self.purge_published()

    async def purge_published(self, *, chunk: int = PURGE_CHUNK) -> int:
        """Delete rows published longer ago than the retention, oldest first, in chunks.

        Returns how many went. Unpublished rows are never deleted, however old.
        """
        return await delete_in_chunks(self._pool, PURGE_PUBLISHED, self._retention, chunk=chunk)
