"""Envelope <-> CloudEvents binary record, and dead-letter headers."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from paht_common.consumer import dead_letter_headers
from paht_common.events import Envelope, ReportSubmitted, new_envelope
from paht_common.kafka import RawRecord, UndecodableRecord, decode, encode
from paht_common.topics import dead_letter


def _submitted() -> ReportSubmitted:
    return ReportSubmitted(
        report_id=uuid.uuid4(),
        number="BN-2026-000007",
        category="ENVIRONMENT.WASTE",
        commune_code="07627",
        lat=21.1,
        lon=106.1,
        channel="zalo",
        urgency="urgent",
        source_app="zalo-mini",
        submitted_at=datetime(2026, 11, 28, 1, 0, tzinfo=UTC),
        flags=["profanity"],
    )


def _raw(message_key: str | bytes | None, value: bytes, headers: dict[str, bytes]) -> RawRecord:
    key = message_key.encode() if isinstance(message_key, str) else message_key
    return RawRecord("paht.report.events.v1", 2, 41, key, value, tuple(headers.items()))


def test_envelope_survives_a_round_trip_through_a_binary_record() -> None:
    envelope = new_envelope(_submitted(), source="/intake", province="bn", correlation_id="x1")
    message = encode(envelope)
    back = decode(_raw(message.key, message.value, message.headers))
    assert back == envelope


def test_record_key_and_subject_are_the_report_id() -> None:
    payload = _submitted()
    message = encode(new_envelope(payload, source="/intake", province="bn"))
    assert message.key == str(payload.report_id)
    assert message.headers["ce_subject"] == str(payload.report_id).encode()


FIXTURES = sorted((Path(__file__).parents[2] / "contract" / "fixtures").glob("*.json"))


def _sdk_encode(envelope: Envelope[Any]) -> KafkaMessage:
    """The record the CloudEvents SDK builds for an envelope (the reference for encode)."""
    event = CloudEvent(
        attributes={
            "id": str(envelope.event_id),
            "source": envelope.source,
            "specversion": "1.0",
            "type": envelope.event_type,
            "subject": envelope.subject,
            "time": envelope.occurred_at,
            "datacontenttype": "application/json",
            "partitionkey": envelope.subject,
            "correlationid": envelope.correlation_id,
        },
        data=envelope.payload.model_dump(mode="json"),
    )
    return to_binary(event, JSONFormat())


def _fixture_envelopes() -> list[Envelope[Any]]:
    envelopes = []
    for path in FIXTURES:
        fixture = json.loads(path.read_text(encoding="utf-8"))
        headers = {k: v.encode() for k, v in fixture["headers"].items()}
        value = json.dumps(fixture["value"], ensure_ascii=False).encode()
        envelopes.append(decode(_raw(fixture["key"], value, headers)))
    hanoi = timezone(timedelta(hours=7))
    envelopes.append(  # an offset other than UTC, and Vietnamese text in the payload
        new_envelope(
            _submitted().model_copy(update={"number": "BN-2026-000008", "flags": ["tục tĩu"]}),
            source="/intake",
            province="bn",
            occurred_at=datetime(2026, 11, 28, 8, 30, 0, 120, tzinfo=hanoi),
        )
    )
    return envelopes


@pytest.mark.parametrize("envelope", _fixture_envelopes(), ids=lambda e: e.event_type)
def test_encode_gives_the_record_the_cloudevents_sdk_gives(envelope: Envelope[Any]) -> None:
    ours, sdk = encode(envelope), _sdk_encode(envelope)
    assert ours.key == sdk.key
    assert ours.headers == sdk.headers
    assert json.loads(ours.value) == json.loads(sdk.value)
    assert decode(_raw(ours.key, ours.value, ours.headers)) == envelope


def test_structured_garbage_is_undecodable() -> None:
    with pytest.raises(UndecodableRecord):
        decode(_raw(b"k", b"{not json", {"ce_type": b"x"}))


def test_record_without_value_is_undecodable() -> None:
    record = RawRecord("t", 0, 0, b"k", None, ())
    with pytest.raises(UndecodableRecord, match="no value"):
        decode(record)


def test_dead_letter_headers_keep_the_original_and_say_why() -> None:
    record = _raw(b"k", b"v", {"ce_id": b"1"})
    headers = dict(dead_letter_headers(record, consumer="routing", reason="boom"))
    assert headers["ce_id"] == b"1"
    assert headers["dlq_reason"] == b"boom"
    assert headers["dlq_consumer"] == b"routing"
    assert headers["dlq_topic"] == b"paht.report.events.v1"
    assert headers["dlq_partition"] == b"2"
    assert headers["dlq_offset"] == b"41"
    assert dead_letter("paht.report.events.v1") == "paht.report.events.v1.dlq"
