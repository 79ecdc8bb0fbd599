"""Delivery dispatcher: leases due deliveries and sends them, each on its own task.

Invariants:
- A delivery is leased (``next_attempt_at = now() + lease``, ``attempts + 1``) and the lease
  is committed before anything is sent, so two dispatchers never send it concurrently and a
  dispatcher that dies mid-send leaves it to be retried once the lease lapses.
- Outcomes are stored fenced by the attempt number, so a late answer cannot overwrite a
  newer attempt.
- Sends run concurrently, at most ``max_in_flight`` overall and
  ``max_in_flight_per_subscription`` per endpoint: a slow endpoint holds only its own slots.
- New deliveries wake the dispatcher through LISTEN/NOTIFY; polling is only the fallback.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Mapping

import asyncpg

from notify import repository
from notify.channels.base import Channel
from notify.domain import AttemptResult, ClaimedDelivery, Decision, RetryPolicy, decide
from notify.handlers import Breaker, record_attempt
from notify.metrics import DELIVERIES, DELIVERY_SECONDS, PENDING
from notify.settings import NotifySettings
from paht_common.consumer import INFRASTRUCTURE_ERRORS
from paht_common.db import ChannelListener, Wakeup

logger = logging.getLogger(__name__)

DATABASE_ERRORS: tuple[type[BaseException], ...] = (*INFRASTRUCTURE_ERRORS, asyncpg.PostgresError)
MIN_WAIT_SECONDS = 0.05
RECORD_ATTEMPTS = 3


class Dispatcher:
    """Sends pending deliveries through their channels until cancelled (``run``)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        channels: Mapping[str, Channel],
        *,
        policy: RetryPolicy,
        lease_seconds: float,
        poll_interval: float = 1.0,
        batch_size: int = 100,
        max_in_flight: int = 64,
        max_in_flight_per_subscription: int = 4,
        shutdown_grace: float = 5.0,
        breaker: Breaker | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._pool = pool
        self._channels = dict(channels)
        self._policy = policy
        self._lease = lease_seconds
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._max_in_flight = max_in_flight
        self._per_subscription_limit = max_in_flight_per_subscription
        self._grace = shutdown_grace
        self._breaker = breaker
        self._rng = rng or random.Random()
        self._wake = Wakeup()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: Counter[uuid.UUID] = Counter()
        # a lost listener wakes the loop, which listens again on a fresh connection
        self._listener = ChannelListener(pool, repository.WAKE_CHANNEL, self._wake.set)

    @classmethod
    def from_settings(
        cls, pool: asyncpg.Pool, channels: Mapping[str, Channel], settings: NotifySettings
    ) -> Dispatcher:
        """Dispatcher configured from the service settings."""
        return cls(
            pool,
            channels,
            policy=RetryPolicy(
                schedule=settings.retry_schedule_seconds,
                max_retry_after=settings.max_retry_after_seconds,
                jitter=settings.retry_jitter,
            ),
            lease_seconds=settings.lease_seconds,
            poll_interval=settings.dispatcher_poll_interval_seconds,
            batch_size=settings.dispatcher_batch_size,
            max_in_flight=settings.max_in_flight,
            max_in_flight_per_subscription=settings.max_in_flight_per_subscription,
            shutdown_grace=settings.shutdown_grace_seconds,
            breaker=Breaker(settings.breaker_threshold, settings.breaker_probe_seconds),
        )

    async def run(self) -> None:
        """Dispatch until cancelled; on cancellation, let running sends finish (bounded)."""
        try:
            while True:
                await self._listener.ensure()  # polls while PostgreSQL is away
                # cleared before claiming: a NOTIFY that arrives during the claim is not lost
                self._wake.clear()
                wait = await self.dispatch_once()
                if wait > 0:
                    await self._wake.sleep(wait)
        finally:
            await self._drain()
            await self._listener.stop()

    async def dispatch_once(self) -> float:
        """Lease what is due and start sending it; returns seconds to wait before the next call."""
        capacity = self._max_in_flight - len(self._tasks)
        if capacity <= 0:
            return self._poll_interval  # a finishing send wakes the loop
        limit = min(self._batch_size, capacity)
        try:
            async with self._pool.acquire() as conn:
                claimed = await repository.claim_due(
                    conn,
                    limit=limit,
                    in_flight=self._in_flight,
                    per_subscription=self._per_subscription_limit,
                    lease_seconds=self._lease,
                    breaker_threshold=(
                        self._breaker.threshold if self._breaker is not None else 1_000_000
                    ),
                )
                for delivery in claimed:
                    self._start(delivery)
                if len(claimed) == limit:
                    return 0.0
                saturated = [
                    s for s, n in self._in_flight.items() if n >= self._per_subscription_limit
                ]
                pending, next_due_in = await repository.pending_stats(conn, excluding=saturated)
        except DATABASE_ERRORS as exc:
            logger.warning("dispatcher cannot reach the database: %r", exc)
            return self._poll_interval
        PENDING.set(pending)
        if next_due_in is None:
            return self._poll_interval
        return min(self._poll_interval, max(next_due_in, MIN_WAIT_SECONDS))

    def _start(self, delivery: ClaimedDelivery) -> None:
        self._in_flight[delivery.subscription_id] += 1
        task = asyncio.create_task(self._deliver(delivery), name=f"deliver-{delivery.id}")
        self._tasks.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            self._in_flight[delivery.subscription_id] -= 1
            if self._in_flight[delivery.subscription_id] <= 0:
                del self._in_flight[delivery.subscription_id]
            if not done.cancelled() and done.exception() is not None:
                logger.error("delivery %s task crashed", delivery.id, exc_info=done.exception())
            self._wake.set()

        task.add_done_callback(finished)

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        channel = self._channels.get(delivery.channel)
        started = time.perf_counter()
        if channel is None:
            result = AttemptResult("failed", error=f"no channel {delivery.channel!r} configured")
        else:
            try:
                result = await channel.send(delivery)
            except Exception as exc:  # a channel bug fails this attempt, never the dispatcher
                logger.exception("channel %s raised on delivery %s", delivery.channel, delivery.id)
                result = AttemptResult("retry", error=f"channel error: {exc!r}")
        elapsed = time.perf_counter() - started
        DELIVERY_SECONDS.labels(delivery.channel).observe(elapsed)
        decision = decide(
            result, attempts=delivery.attempts, policy=self._policy, jitter=self._rng.random()
        )
        DELIVERIES.labels(delivery.channel, decision.outcome).inc()
        logger.info(
            "delivery %s attempt %s: %s",
            delivery.id,
            delivery.attempts,
            decision.outcome,
            extra={
                "delivery_id": str(delivery.id),
                "subscription_id": str(delivery.subscription_id),
                "status_code": decision.status_code,
                "error": decision.error,
                "retry_in": decision.retry_in,
                "elapsed": round(elapsed, 4),
            },
        )
        await self._record(delivery, decision)

    async def _record(self, delivery: ClaimedDelivery, decision: Decision) -> None:
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                async with self._pool.acquire() as conn:
                    await record_attempt(conn, delivery, decision, self._breaker)
                return
            except DATABASE_ERRORS as exc:
                logger.warning(
                    "cannot record delivery %s (try %s/%s): %r",
                    delivery.id,
                    attempt,
                    RECORD_ATTEMPTS,
                    exc,
                )
                await asyncio.sleep(0.5 * attempt)
        # the lease lapses and the delivery is attempted again: at-least-once, never lost
        logger.error("outcome of delivery %s lost; it will be retried after its lease", delivery.id)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _, unfinished = await asyncio.wait(set(self._tasks), timeout=self._grace)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
