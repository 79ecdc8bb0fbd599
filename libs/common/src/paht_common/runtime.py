"""What every service process holds: pool, relay producer, outbox relay, background tasks.

The composition root of each service (its ``api.py`` lifespan) opens one ``Runtime`` and
closes it in ``finally``. Nothing here connects at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from paht_common.consumer import EventProcessor, Handler, producer_dead_letters, run_consumer
from paht_common.db import apply_migrations, create_pool
from paht_common.http import ReadinessCheck, kafka_check, postgres_check
from paht_common.inbox import purge_forever
from paht_common.kafka import make_consumer, make_producer
from paht_common.lag import kafka_lag_monitor
from paht_common.outbox import OutboxRelay
from paht_common.settings import BaseServiceSettings

logger = logging.getLogger(__name__)


async def connect_with_retry(
    settings: BaseServiceSettings, *, attempts: int = 30, delay: float = 1.0
) -> asyncpg.Pool:
    """Pool for the service database, retrying while PostgreSQL starts (bounded)."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return await create_pool(
                settings.database_url,
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            last = exc
            await asyncio.sleep(delay)
    raise RuntimeError(f"database unreachable: {last!r}")


async def migrate(settings: BaseServiceSettings, migrations: Path) -> list[str]:
    """Apply the common and service migrations to the service database."""
    pool = await connect_with_retry(settings)
    try:
        async with pool.acquire() as conn:
            return await apply_migrations(conn, migrations)
    finally:
        await pool.close()


async def run_relay(*, service: str, settings: BaseServiceSettings, migrations: Path) -> None:
    """Relay the service's outbox to Kafka in a process of its own until SIGTERM or SIGINT.

    Any number of relays may run beside the API workers: each claims rows with ``FOR UPDATE
    SKIP LOCKED``, and a relay killed mid-batch leaves its rows for the next claim.
    """
    relaying = settings.model_copy(update={"outbox_relay": True})  # whatever the workers say
    async with Runtime(service=service, settings=relaying, migrations=migrations):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


class Runtime:
    """Resources of one service process; use as ``async with Runtime(...) as rt``."""

    def __init__(self, *, service: str, settings: BaseServiceSettings, migrations: Path) -> None:
        self.service = service
        self.settings = settings
        self._migrations = migrations
        self._pool: asyncpg.Pool | None = None
        self._producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._consumers: list[AIOKafkaConsumer] = []
        self._stopping = False
        self._inbox_purge = False

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "runtime not started"
        return self._pool

    @property
    def producer(self) -> AIOKafkaProducer:
        assert self._producer is not None, "runtime not started"
        return self._producer

    async def __aenter__(self) -> Runtime:
        self._pool = await connect_with_retry(self.settings)
        async with self._pool.acquire() as conn:
            await apply_migrations(conn, self._migrations)
        self._producer = make_producer(
            self.settings.kafka_bootstrap, client_id=f"{self.service}-relay"
        )
        await self._producer.start()
        if self.settings.outbox_relay:
            relay = OutboxRelay(self._pool, self._producer, service=self.service)
            self.spawn("outbox-relay", relay.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for consumer in self._consumers:
            with contextlib.suppress(Exception):
                await consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._pool is not None:
            await self._pool.close()

    def spawn(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a background loop; if it ever dies the process stops, to be restarted clean."""

        async def guarded() -> None:
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except BaseException:
                logger.critical(
                    "background task %s died; stopping the process", name, exc_info=True
                )
                if not self._stopping:
                    os.kill(os.getpid(), signal.SIGTERM)
                raise

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    def processor(self, consumer: str, handler: Handler) -> EventProcessor:
        """Idempotent processor for a handler, dead-lettering through the relay producer.

        The first processor also starts the purge that keeps the inbox bounded.
        """
        if not self._inbox_purge:
            self._inbox_purge = True
            s = self.settings
            retention = s.inbox_retention_days * 86_400
            self.spawn(
                "inbox-purge",
                lambda: purge_forever(
                    self.pool,
                    retention_seconds=retention,
                    interval_seconds=s.inbox_purge_interval_seconds,
                ),
            )
        return EventProcessor(
            consumer=consumer,
            pool=self.pool,
            handler=handler,
            dead_letters=producer_dead_letters(self.producer),
        )

    async def start_consumer(
        self, group_id: str, topics: tuple[str, ...], handler: Handler
    ) -> None:
        """Start an aiokafka consumer loop for ``topics`` feeding ``handler``."""
        s = self.settings
        consumer = make_consumer(
            s.kafka_bootstrap,
            group_id=group_id,
            topics=topics,
            session_timeout_ms=s.consumer_session_timeout_ms,
            heartbeat_interval_ms=s.consumer_heartbeat_interval_ms,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
        )
        await consumer.start()
        self._consumers.append(consumer)
        processor = self.processor(group_id, handler)

        async def loop() -> None:
            await run_consumer(consumer, processor)

        self.spawn(f"consumer-{group_id}", loop)
        self.watch_lag(group_id, topics)

    def watch_lag(self, group_id: str, topics: tuple[str, ...]) -> None:
        """Publish the lag of consumer group ``group_id`` on ``topics`` (any consumer kind)."""
        monitor = kafka_lag_monitor(
            self.settings.kafka_bootstrap,
            group_id=group_id,
            topics=topics,
            interval_seconds=self.settings.consumer_lag_interval_seconds,
        )
        self.spawn(f"lag-{group_id}", monitor.run)

    def checks(self) -> dict[str, ReadinessCheck]:
        """Readiness checks for the service's PostgreSQL and Kafka."""
        return {"postgres": postgres_check(self.pool), "kafka": kafka_check(self.producer)}
