"""Faust glue shared by the faust-streaming services (routing, sla): thin agents over raw records.

Faust acknowledges an event when the stream advances, so each event is fully handled
(database commit included) before the loop moves on; the offset is committed only after.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from typing import Any

import faust
from faust.types import StreamT

from paht_common.consumer import INFRASTRUCTURE_ERRORS, EventProcessor
from paht_common.kafka import RawRecord
from paht_common.settings import BaseServiceSettings

logger = logging.getLogger(__name__)


def raw_record(message: Any) -> RawRecord:
    """RawRecord from a faust Message (headers may be a list or a mapping)."""
    headers = message.headers or ()
    if isinstance(headers, dict):
        headers = list(headers.items())
    return RawRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=tuple(headers),
    )


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


async def process_until_done(processor: EventProcessor, record: RawRecord) -> None:
    """Handle a record; while the database is unreachable, keep retrying the same record."""
    delay = 0.5
    while True:
        try:
            await processor.process(record)
            return
        except INFRASTRUCTURE_ERRORS as exc:
            logger.warning(
                "infrastructure error, retrying %s@%s: %r", record.topic, record.offset, exc
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def attach_agent(
    app: faust.App, topic_names: tuple[str, ...], processor: EventProcessor, *, name: str
) -> None:
    """Declare one agent over raw CloudEvents records of the given topics."""
    topic = app.topic(
        *topic_names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    async def agent(stream: StreamT[Any]) -> None:
        async for event in stream.events():
            await process_until_done(processor, raw_record(event.message))

    agent.__name__ = name
    app.agent(topic, name=name)(agent)
