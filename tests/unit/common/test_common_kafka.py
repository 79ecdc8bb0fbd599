"""Envelope <-> CloudEvents binary record, and dead-letter headers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from paht_common.consumer import dead_letter_headers
from paht_common.events import ReportSubmitted, new_envelope
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
