"""Consumer lag per group, topic and partition, polled from the broker into Prometheus gauges.

Works for any consumer kind (aiokafka loops and faust agents alike) because it reads only what
the broker holds: the group's committed offsets and the partitions' log start and end offsets.
The consumers themselves are never touched.

Lag of a partition is ``end - committed``. A partition the group has never committed (or whose
committed offset fell below the log start when retention deleted records) counts every retained
record, ``end - beginning``: every PAHT consumer resets to the earliest offset, so that is what
the group still has to read. Lag is never negative.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from paht_common.metrics import CONSUMER_LAG, CONSUMER_LAG_ERRORS

logger = logging.getLogger(__name__)

Partition = tuple[str, int]
"""(topic, partition)."""


@dataclass(frozen=True)
class GroupOffsets:
    """What the broker says about one group's partitions at one moment."""

    beginnings: Mapping[Partition, int]
    ends: Mapping[Partition, int]
    committed: Mapping[Partition, int] = field(default_factory=dict)
    """Committed offsets; a partition the group never committed is absent."""


def partition_lag(*, end: int, beginning: int, committed: int | None) -> int:
    """Records the group has yet to read in one partition (see the module docstring)."""
    start = beginning if committed is None or committed < 0 else max(committed, beginning)
    return max(end - start, 0)


def group_lag(offsets: GroupOffsets) -> dict[Partition, int]:
    """Lag of every partition that has an end offset."""
    return {
        tp: partition_lag(
            end=end, beginning=offsets.beginnings.get(tp, 0), committed=offsets.committed.get(tp)
        )
        for tp, end in offsets.ends.items()
    }


class OffsetSource(Protocol):
    """Where offsets come from: the broker in production, a fake in unit tests."""

    async def offsets(self, group_id: str, topics: tuple[str, ...]) -> GroupOffsets: ...

    async def close(self) -> None: ...


class KafkaOffsets:
    """Offsets read with an admin client (committed) and a group-less consumer (log bounds).

    Connects on first use; after a failure it closes and reconnects on the next call.
    """

    def __init__(self, bootstrap: str, *, client_id: str, request_timeout_ms: int = 10_000):
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._timeout_ms = request_timeout_ms
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def _connect(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            await self.close()
            self._admin = AIOKafkaAdminClient(
                bootstrap_servers=self._bootstrap,
                client_id=self._client_id,
                request_timeout_ms=self._timeout_ms,
            )
            await self._admin.start()
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                client_id=self._client_id,
                group_id=None,
                enable_auto_commit=False,
                isolation_level="read_committed",  # the end a read_committed consumer can reach
                request_timeout_ms=self._timeout_ms,
            )
            await self._consumer.start()
        return self._admin, self._consumer

    async def offsets(self, group_id: str, topics: tuple[str, ...]) -> GroupOffsets:
        """Log start, log end and committed offset of every partition of ``topics``."""
        try:
            admin, consumer = await self._connect()
            described = await admin.describe_topics(list(topics))
            partitions = [
                TopicPartition(t["topic"], p["partition"])
                for t in described
                if t["topic"] in topics and not t["error_code"]
                for p in t["partitions"]
            ]
            if not partitions:
                return GroupOffsets(beginnings={}, ends={})
            committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
            beginnings = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
        except BaseException:
            await self.close()
            raise
        return GroupOffsets(
            beginnings={(tp.topic, tp.partition): int(o) for tp, o in beginnings.items()},
            ends={(tp.topic, tp.partition): int(o) for tp, o in ends.items()},
            committed={
                (tp.topic, tp.partition): int(meta.offset)
                for tp, meta in committed.items()
                if meta.offset >= 0
            },
        )

    async def close(self) -> None:
        """Close both clients (idempotent; a client that fails to close is dropped anyway)."""
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        with contextlib.suppress(Exception):
            if consumer is not None:
                await consumer.stop()
        with contextlib.suppress(Exception):
            if admin is not None:
                await admin.close()


class LagMonitor:
    """Sets ``paht_consumer_lag_records`` for one group every ``interval_seconds``.

    A failed poll is logged, counted in ``paht_consumer_lag_scrape_errors_total`` and retried
    at the next tick; it never ends ``run``. Use ``async with`` or ``run`` (which closes).
    """

    def __init__(
        self,
        *,
        group_id: str,
        topics: tuple[str, ...],
        source: OffsetSource,
        interval_seconds: float = 5.0,
        timeout_seconds: float = 30.0,
    ) -> None:
        self.group_id = group_id
        self.topics = topics
        self._source = source
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._reported: set[Partition] = set()
        self._failing = False

    async def tick(self) -> dict[Partition, int]:
        """Poll once and set the gauges; raises what the poll raised."""
        async with asyncio.timeout(self._timeout):  # end_offsets may wait on a missing partition
            lags = group_lag(await self._source.offsets(self.group_id, self.topics))
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(self.group_id, topic, str(partition)).set(lag)
        for topic, partition in self._reported - lags.keys():
            CONSUMER_LAG.remove(self.group_id, topic, str(partition))
        self._reported = set(lags)
        return lags

    async def run(self) -> None:
        """Poll until cancelled."""
        try:
            while True:
                await self._tick_logging_errors()
                await asyncio.sleep(self._interval)
        finally:
            await self._source.close()

    async def _tick_logging_errors(self) -> None:
        try:
            await self.tick()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            CONSUMER_LAG_ERRORS.labels(self.group_id).inc()
            log = logger.debug if self._failing else logger.warning
            log("lag poll of %s failed, retrying: %r", self.group_id, exc)
            self._failing = True
            return
        if self._failing:
            logger.info("lag poll of %s recovered", self.group_id)
            self._failing = False

    async def __aenter__(self) -> LagMonitor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._source.close()


def kafka_lag_monitor(
    bootstrap: str, *, group_id: str, topics: tuple[str, ...], interval_seconds: float
) -> LagMonitor:
    """LagMonitor reading the broker at ``bootstrap``."""
    source = KafkaOffsets(bootstrap, client_id=f"{group_id}-lag")
    return LagMonitor(
        group_id=group_id, topics=topics, source=source, interval_seconds=interval_seconds
    )
