"""Envelope <-> CloudEvents binary-mode Kafka record, and Kafka client factories."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from pydantic import ValidationError

from paht_common.events import Envelope, Payload, payload_class

JSON_FORMAT = JSONFormat()
CONTENT_TYPE = "application/json"
CONTENT_TYPE_BYTES = CONTENT_TYPE.encode()


class UndecodableRecord(ValueError):
    """A Kafka record that is not a valid PAHT CloudEvent; it belongs in the dead-letter topic."""


@dataclass(frozen=True)
class RawRecord:
    """A Kafka record as bytes, independent of the client library that read it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def encode(envelope: Envelope[Any]) -> KafkaMessage:
    """CloudEvents binary-mode record for an envelope; the key is the report id.

    Built directly rather than through the SDK's ``CloudEvent`` + ``to_binary``, which cost
    four times as much on the submit path; ``tests/unit/common`` checks that both give the
    same headers, key and data, and ``decode`` reads records with the SDK.
    """
    subject = envelope.subject
    event_id = str(envelope.event_id)
    headers = {
        "ce_id": event_id.encode(),
        "ce_source": envelope.source.encode(),
        "ce_specversion": b"1.0",
        "ce_type": envelope.event_type.encode(),
        "ce_subject": subject.encode(),
        "ce_time": _timestamp(envelope.occurred_at),
        "content-type": CONTENT_TYPE_BYTES,
        "ce_partitionkey": subject.encode(),
        "ce_correlationid": envelope.correlation_id.encode(),
    }
    return KafkaMessage(
        headers=headers, key=subject, value=envelope.payload.model_dump_json().encode()
    )


def _timestamp(at: datetime) -> bytes:
    """RFC 3339 as the CloudEvents SDK writes it: ISO 8601, ``Z`` for UTC."""
    text = at.isoformat()
    return (text[:-6] + "Z" if text.endswith("+00:00") else text).encode()


def decode(record: RawRecord) -> Envelope[Payload]:
    """Envelope from a binary-mode record; UndecodableRecord says what is wrong."""
    if record.value is None:
        raise UndecodableRecord("record has no value")
    headers = {name: value for name, value in record.headers}
    try:
        event = from_binary(
            KafkaMessage(headers=headers, key=record.key, value=record.value), JSON_FORMAT
        )
    except Exception as exc:  # the SDK raises several types for malformed input
        raise UndecodableRecord(f"not a CloudEvent: {exc}") from exc
    event_type = event.get_type()
    try:
        model = payload_class(event_type)
    except KeyError as exc:
        raise UndecodableRecord(f"unknown event type {event_type!r}") from exc
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise UndecodableRecord("data is not JSON") from exc
    try:
        payload = model.model_validate(data)
        return Envelope[Payload](
            event_id=uuid.UUID(event.get_id()),
            event_type=event_type,
            version=model.VERSION,
            source=event.get_source(),
            occurred_at=event.get_time(),
            correlation_id=str(event.get_extension("correlationid") or event.get_id()),
            payload=payload,
        )
    except (ValidationError, ValueError, TypeError) as exc:
        raise UndecodableRecord(f"invalid {event_type}: {exc}") from exc


def header_list(message: KafkaMessage) -> list[tuple[str, bytes]]:
    """Headers in the list form aiokafka and faust send."""
    return list(message.headers.items())


def key_bytes(message: KafkaMessage) -> bytes | None:
    """Record key as bytes."""
    key = message.key
    return key.encode() if isinstance(key, str) else key


def make_producer(bootstrap: str, *, client_id: str) -> AIOKafkaProducer:
    """Idempotent producer (acks=all); start() and stop() are the caller's."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        request_timeout_ms=15_000,
    )


def make_consumer(
    bootstrap: str,
    *,
    group_id: str,
    topics: Sequence[str],
    session_timeout_ms: int = 10_000,
    heartbeat_interval_ms: int = 1_000,
    fetch_max_wait_ms: int = 500,
) -> AIOKafkaConsumer:
    """Consumer that never auto-commits: offsets are committed after the database commit."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )


def raw_record(message: Any) -> RawRecord:
    """RawRecord from an aiokafka ConsumerRecord or a faust Message (headers a list or a
    mapping)."""
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
