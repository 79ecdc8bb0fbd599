"""Faust glue shared by the faust-streaming services (routing, sla): thin agents over raw records.

An agent takes what the stream has buffered (at most ``BATCH_MAX`` events, waiting at most
``BATCH_WITHIN`` seconds for more), groups it by partition and hands each partition's
records to ``EventProcessor.process_batch`` (one transaction each, partitions concurrently).
``take_events`` acknowledges the events only when the agent asks for the next batch, that
is after every transaction of this one committed, so the offset is committed only after.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Sequence
from typing import Any, cast

import faust
from faust.streams import Stream
from faust.types import StreamT

from paht_common.consumer import INFRASTRUCTURE_ERRORS, EventProcessor
from paht_common.kafka import RawRecord, raw_record
from paht_common.settings import BaseServiceSettings

logger = logging.getLogger(__name__)

BATCH_MAX = 500
BATCH_WITHIN = 0.02
"""Seconds an agent waits for a batch to fill: the latency it may add to one hop."""


def _datadir(app_id: str, settings: BaseServiceSettings) -> str:
    if settings.faust_datadir:
        os.makedirs(settings.faust_datadir, exist_ok=True)
        return settings.faust_datadir
    return tempfile.mkdtemp(prefix=f"{app_id}-")


def make_faust_app(app_id: str, settings: BaseServiceSettings) -> faust.App:
    """Faust app tuned for fast group joins on a single-node broker; no web server."""
    return faust.App(
        app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=_datadir(app_id, settings),
        web_enabled=False,
        autodiscover=False,
        topic_partitions=3,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.consumer_session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.consumer_heartbeat_interval_ms / 1000,
        broker_commit_every=1,
        broker_commit_interval=0.5,
        consumer_max_fetch_size=1024 * 1024,
        producer_acks=-1,
        stream_wait_empty=True,
    )


async def process_until_done(processor: EventProcessor, records: Sequence[RawRecord]) -> None:
    """Handle one partition's records; while the database is unreachable, retry the batch."""
    delay = 0.5
    while True:
        try:
            await processor.process_batch(records)
            return
        except INFRASTRUCTURE_ERRORS as exc:
            first = records[0]
            logger.warning(
                "infrastructure error, retrying %s[%s]@%s: %r",
                first.topic,
                first.partition,
                first.offset,
                exc,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def by_partition(records: Sequence[RawRecord]) -> list[list[RawRecord]]:
    """Records grouped by (topic, partition), each group in its original order."""
    groups: dict[tuple[str, int], list[RawRecord]] = {}
    for record in records:
        groups.setdefault((record.topic, record.partition), []).append(record)
    return list(groups.values())


async def process_events(processor: EventProcessor, records: Sequence[RawRecord]) -> None:
    """Handle a batch from the stream: partitions concurrently, each in order."""
    await asyncio.gather(*(process_until_done(processor, g) for g in by_partition(records)))


def attach_agent(
    app: faust.App, topic_names: tuple[str, ...], processor: EventProcessor, *, name: str
) -> None:
    """Declare one agent over raw CloudEvents records of the given topics."""
    topic = app.topic(
        *topic_names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    async def agent(stream: StreamT[Any]) -> None:
        batches = cast(Stream[Any], stream).take_events(BATCH_MAX, within=BATCH_WITHIN)
        async for events in batches:
            await process_events(processor, [raw_record(e.message) for e in events])

    agent.__name__ = name
    app.agent(topic, name=name)(agent)
