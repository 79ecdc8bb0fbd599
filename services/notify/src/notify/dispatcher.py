"""Delivery dispatcher: leases due deliveries and sends them, each on its own task.

Invariants:
- A delivery is leased (``next_attempt_at = now() + lease``, ``attempts + 1``) and the lease
  is committed before anything is sent, so two dispatchers never send it concurrently and a
  dispatcher that dies mid-send leaves it to be retried once the lease lapses.
- Outcomes are stored fenced by the attempt number, so a late answer cannot overwrite a
  newer attempt. They are stored in batches (``Recorder``: one transaction for the outcomes
  that finished within a few ms); a send keeps its slot until its outcome is stored, and an
  outcome lost (crash, database away) only means the lease lapses and the delivery is sent
  again, with the same id.
- Sends run concurrently, at most ``max_in_flight`` overall and
  ``max_in_flight_per_subscription`` per endpoint: a slow endpoint holds only its own slots.
- New deliveries wake the dispatcher through LISTEN/NOTIFY; polling is only the fallback.
  After a claim that took something the loop claims again at once; only an empty claim asks
  when the next delivery is due (and refreshes the pending gauge, else every few seconds).
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
from notify.handlers import Breaker, record_attempts
from notify.metrics import DELIVERIES, DELIVERY_SECONDS, PENDING
from notify.settings import NotifySettings
from paht_common.consumer import INFRASTRUCTURE_ERRORS
from paht_common.db import ChannelListener, Wakeup

logger = logging.getLogger(__name__)

DATABASE_ERRORS: tuple[type[BaseException], ...] = (*INFRASTRUCTURE_ERRORS, asyncpg.PostgresError)
MIN_WAIT_SECONDS = 0.05
RECORD_ATTEMPTS = 3
RECORD_BATCH = 200
"""Most outcomes written in one transaction."""
RECORD_GATHER_SECONDS = 0.005
"""How long the recorder waits after a first outcome for others to share its transaction."""
GAUGE_SECONDS = 5.0
CLAIM_SPACING_SECONDS = 0.005
"""Least time between a short claim and the next one."""
"""Refresh of the pending gauge while claims keep finding work."""


Outcome = tuple[ClaimedDelivery, Decision, "asyncio.Future[bool | None]"]
"""An attempt's outcome waiting for its batch, and the future its send awaits."""


class Recorder:
    """Stores attempts' outcomes in batches, one transaction per batch (``record``).

    The first outcome starts a batch; those finishing within ``gather_seconds`` (or while the
    previous batch is written) join it, up to ``max_batch``. A batch that cannot be written
    after ``RECORD_ATTEMPTS`` tries is dropped: its deliveries are sent again once their
    leases lapse (at-least-once, same id).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        breaker: Breaker | None,
        *,
        max_batch: int = RECORD_BATCH,
        gather_seconds: float = RECORD_GATHER_SECONDS,
        retry_pause: float = 0.5,
    ) -> None:
        self._pool = pool
        self._breaker = breaker
        self._max_batch = max_batch
        self._gather = gather_seconds
        self._retry_pause = retry_pause
        self._queue: list[Outcome] = []
        self._arrived = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    async def record(self, delivery: ClaimedDelivery, decision: Decision) -> bool | None:
        """Store an outcome with the next batch; True stored, False the row moved on, None lost."""
        stored: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._queue.append((delivery, decision, stored))
        self._arrived.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_batches(), name="notify-recorder")
        return await asyncio.shield(stored)  # a cancelled send still gets its outcome stored

    async def close(self, *, within: float = 10.0) -> None:
        """Write what is queued (waiting at most ``within`` seconds), then stop."""
        self._closing = True
        self._arrived.set()
        writer, self._writer = self._writer, None
        if writer is None:
            return
        _, unfinished = await asyncio.wait({writer}, timeout=within)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        for _, _, stored in self._queue:  # not written: retried after their leases
            if not stored.done():
                stored.set_result(None)
        self._queue = []
        self._closing = False
        self._arrived.clear()

    async def _write_batches(self) -> None:
        while True:
            await self._arrived.wait()
            if not self._queue:  # woken to close
                return
            if len(self._queue) < self._max_batch and not self._closing:
                await asyncio.sleep(self._gather)
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            if not self._queue and not self._closing:
                self._arrived.clear()
            await self._write(batch)

    async def _write(self, batch: list[Outcome]) -> None:
        outcomes = [(delivery, decision) for delivery, decision, _ in batch]
        results: list[bool] | None = None
        try:
            for attempt in range(1, RECORD_ATTEMPTS + 1):
                try:
                    async with self._pool.acquire() as conn:
                        results = await record_attempts(conn, outcomes, self._breaker)
                    break
                except DATABASE_ERRORS as exc:
                    logger.warning(
                        "cannot record %s outcomes (try %s/%s): %r",
                        len(batch),
                        attempt,
                        RECORD_ATTEMPTS,
                        exc,
                    )
                    if attempt < RECORD_ATTEMPTS:
                        await asyncio.sleep(self._retry_pause * attempt)
        except Exception:  # a bug must not leave the sends waiting for their outcomes
            logger.exception("recording %s outcomes failed", len(batch))
        finally:
            for index, (delivery, _, stored) in enumerate(batch):
                if results is None:
                    # the lease lapses and the delivery is attempted again: at-least-once
                    logger.error(
                        "outcome of delivery %s lost; it will be retried after its lease",
                        delivery.id,
                    )
                if not stored.done():
                    stored.set_result(None if results is None else results[index])


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
        self._recorder = Recorder(pool, breaker)
        self._gauge_at = -GAUGE_SECONDS
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
                    # let the sends finishing and the deliveries arriving together wake one
                    # claim, not one each: claims stay few however busy an endpoint is
                    await asyncio.sleep(CLAIM_SPACING_SECONDS)
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
                    return 0.0  # a full claim: more may be due at once
                # A claim that came back short found everything due, or only endpoints whose
                # slots are full: claiming again now would scan their backlog for nothing.
                # A finishing send or a new delivery wakes the loop; a retry falling due is
                # found within the poll interval, or sooner when the gauge query says so.
                next_due_in: float | None = None
                if time.monotonic() - self._gauge_at >= GAUGE_SECONDS:
                    saturated = [
                        s for s, n in self._in_flight.items() if n >= self._per_subscription_limit
                    ]
                    pending, next_due_in = await repository.pending_stats(conn, excluding=saturated)
                    self._gauge_at = time.monotonic()
                    PENDING.set(pending)
        except DATABASE_ERRORS as exc:
            logger.warning("dispatcher cannot reach the database: %r", exc)
            return self._poll_interval
        if claimed or next_due_in is None:
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
        await self._recorder.record(delivery, decision)

    async def _drain(self) -> None:
        if self._tasks:
            _, unfinished = await asyncio.wait(set(self._tasks), timeout=self._grace)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        await self._recorder.close()
