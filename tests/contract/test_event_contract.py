"""The event contract: the AsyncAPI document, the models, the wire format and old fixtures."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from paht_common.asyncapi import document, payload_models
from paht_common.events import PAYLOAD_TYPES, ReportRouted, new_envelope, payload_class
from paht_common.kafka import RawRecord, UndecodableRecord, decode, encode
from paht_common.topics import ALL_TOPICS, MAIN_TOPICS

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.json"))


def _record(fixture: dict[str, Any]) -> RawRecord:
    return RawRecord(
        topic="t",
        partition=0,
        offset=0,
        key=fixture["key"].encode(),
        value=json.dumps(fixture["value"], ensure_ascii=False).encode(),
        headers=tuple((k, v.encode()) for k, v in fixture["headers"].items()),
    )


def _validator(schema_name: str) -> jsonschema.Draft202012Validator:
    doc = document()
    schema = {"$ref": f"#/components/schemas/{schema_name}", **{"components": doc["components"]}}
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_committed_asyncapi_document_matches_the_event_models() -> None:
    committed = json.loads((ROOT / "docs" / "asyncapi.json").read_text(encoding="utf-8"))
    assert committed == json.loads(json.dumps(document())), (
        "docs/asyncapi.json is stale: run `uv run python -m paht_common.asyncapi "
        "> docs/asyncapi.json`"
    )


def test_every_topic_and_event_type_is_described() -> None:
    doc = document()
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == set(ALL_TOPICS)
    described = {m["name"] for m in doc["components"]["messages"].values()}
    assert described == set(PAYLOAD_TYPES)
    for topic in MAIN_TOPICS:
        channel = next(c for c in doc["channels"].values() if c["address"] == topic)
        assert channel["bindings"]["kafka"]["partitions"] >= 1


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_v1_fixture_still_parses_into_its_model(path: Path) -> None:
    fixture = json.loads(path.read_text(encoding="utf-8"))
    envelope = decode(_record(fixture))
    assert type(envelope.payload) is payload_class(fixture["headers"]["ce_type"])
    assert str(envelope.payload.report_id) == fixture["key"]
    assert envelope.correlation_id == fixture["headers"]["ce_correlationid"]


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_conforms_to_the_asyncapi_schemas(path: Path) -> None:
    fixture = json.loads(path.read_text(encoding="utf-8"))
    model = payload_class(fixture["headers"]["ce_type"])
    _validator("CloudEventHeaders").validate(fixture["headers"])
    _validator(model.__name__).validate(fixture["value"])


@pytest.mark.parametrize("name", sorted(payload_models()))
def test_every_fixture_type_has_a_frozen_v1_sample(name: str) -> None:
    stems = {p.stem.replace(".", "_") for p in FIXTURES}
    assert name in stems, f"add tests/contract/fixtures/{name} so future versions stay readable"


def test_produced_record_is_binary_mode_cloudevent_keyed_by_report() -> None:
    report_id = uuid.uuid4()
    payload = ReportRouted(
        report_id=report_id,
        number="BN-2026-000001",
        agency_id="so-xd",
        agency_name="Sở Xây dựng tỉnh Bắc Ninh",
        category="INFRA.ROAD",
        commune_code=None,
        urgency="urgent",
        rule_id="bn-infra",
        routed_at="2026-11-28T01:00:00Z",  # type: ignore[arg-type]
    )
    message = encode(new_envelope(payload, source="/routing", province="bn", correlation_id="c-1"))
    headers = {k: v.decode() for k, v in message.headers.items()}
    assert message.key == str(report_id)
    assert headers["ce_type"] == "vn.bn.fieldreport.report.routed.v1"
    assert headers["ce_subject"] == str(report_id)
    assert headers["ce_correlationid"] == "c-1"
    assert headers["content-type"] == "application/json"
    _validator("CloudEventHeaders").validate(headers)
    data = json.loads(message.value)
    assert data["agency_name"] == "Sở Xây dựng tỉnh Bắc Ninh"  # UTF-8, diacritics kept
    _validator("ReportRouted").validate(data)


def test_unknown_event_type_is_undecodable() -> None:
    fixture = json.loads(FIXTURES[0].read_text(encoding="utf-8"))
    fixture["headers"]["ce_type"] = "vn.bn.fieldreport.report.exploded.v1"
    with pytest.raises(UndecodableRecord, match="unknown event type"):
        decode(_record(fixture))


def test_payload_with_an_unknown_field_is_undecodable() -> None:
    fixture = json.loads(FIXTURES[0].read_text(encoding="utf-8"))
    fixture["value"]["reporter_phone"] = "0912345678"
    with pytest.raises(UndecodableRecord):
        decode(_record(fixture))
