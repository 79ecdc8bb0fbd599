"""The event contract, checked on records the services really produced.

Intake, routing and sla run in-process with their real lifespans on the harness's
PostgreSQL and Kafka (each on a database of its own). One report is submitted over HTTP;
routing routes it and sla starts its clocks. Every record the three services put on their
topics for that report is then read back and checked against the AsyncAPI document
(``paht_common.asyncapi``: the channel declares the message, headers and payload match their
schemas) and parsed by the CloudEvents SDK's Kafka binding.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from aiokafka import AIOKafkaConsumer
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event

from intake import seed as intake_seed
from intake.api import MIGRATIONS as INTAKE_MIGRATIONS
from intake.api import build_app as intake_app
from intake.settings import IntakeSettings
from paht_common.asyncapi import document
from paht_common.db import ensure_database, with_database
from paht_common.runtime import migrate
from paht_common.testing import random_id
from paht_common.topics import REPORT_EVENTS, ROUTING_EVENTS, SLA_EVENTS
from routing import seed as routing_seed
from routing.api import MIGRATIONS as ROUTING_MIGRATIONS
from routing.api import build_app as routing_app
from routing.settings import RoutingSettings
from sla.api import build_app as sla_app
from sla.settings import SlaSettings

pytestmark = pytest.mark.integration

WAIT = 90.0
EXPECTED = {
    REPORT_EVENTS: {"vn.bn.fieldreport.report.submitted.v1"},
    ROUTING_EVENTS: {"vn.bn.fieldreport.report.routed.v1"},
    SLA_EVENTS: {"vn.bn.fieldreport.sla.clocks_changed.v1"},
}


async def database(postgres_dsn: str) -> str:
    name = random_id("db_")
    await ensure_database(postgres_dsn, name)
    return with_database(postgres_dsn, name)


@pytest.fixture
async def intake_client(
    postgres_dsn: str, kafka_bootstrap: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """Intake, routing and sla running; a client of intake and its API key."""
    faust_ids = [random_id("routing-contract-"), random_id("sla-contract-")]
    key = random_id("contract-key-")
    intake_settings = IntakeSettings(
        database_url=await database(postgres_dsn),
        kafka_bootstrap=kafka_bootstrap,
        jwt_dev_key_dir=tmp_path / "jwt",
        dev_api_key=key,
        media_dir=tmp_path / "media",
    )
    routing_settings = RoutingSettings(
        database_url=await database(postgres_dsn),
        kafka_bootstrap=kafka_bootstrap,
        faust_app_id=faust_ids[0],
    )
    sla_settings = SlaSettings(
        database_url=await database(postgres_dsn),
        kafka_bootstrap=kafka_bootstrap,
        faust_app_id=faust_ids[1],
    )
    await migrate(intake_settings, INTAKE_MIGRATIONS)
    await intake_seed.seed(intake_settings)
    await migrate(routing_settings, ROUTING_MIGRATIONS)
    await routing_seed.seed(routing_settings)
    apps = [intake_app(intake_settings), routing_app(routing_settings), sla_app(sla_settings)]
    try:
        async with AsyncExitStack() as stack:
            for app in apps:
                await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=apps[0])
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://intake")
            )
            yield client, key
    finally:
        for app_id in faust_ids:
            shutil.rmtree(Path(f"{app_id}-data"), ignore_errors=True)


async def records_of(bootstrap: str, report_id: str) -> list[Any]:
    """Every record keyed by ``report_id`` on the three topics, once each expected type came
    (bounded wait)."""
    consumer = AIOKafkaConsumer(
        REPORT_EVENTS,
        ROUTING_EVENTS,
        SLA_EVENTS,
        bootstrap_servers=bootstrap,
        group_id=random_id("contract-"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                found += [r for r in records if r.key is not None and r.key.decode() == report_id]
            seen = {(r.topic, dict(r.headers)["ce_type"].decode()) for r in found}
            if all((t, ty) in seen for t, types in EXPECTED.items() for ty in types):
                return found
    finally:
        await consumer.stop()
    raise AssertionError(f"expected records missing after {WAIT} s; got {seen}")


def validator(doc: dict[str, Any], ref: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": ref, "components": doc["components"]}
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


async def test_records_the_services_produce_match_asyncapi_and_cloudevents(
    intake_client: tuple[httpx.AsyncClient, str], kafka_bootstrap: str
) -> None:
    client, key = intake_client
    response = await client.post(
        "/v1/reports",
        headers={"X-API-Key": key},
        json={
            "category": "INFRA.ROAD",
            "description": "Ổ gà lớn giữa đường, xe máy dễ ngã.",
            "location": {"lat": 21.1861, "lon": 106.0763, "commune_code": "09187"},
            "client_report_id": random_id("c-"),
        },
    )
    assert response.status_code == 202, response.text
    report_id = response.json()["id"]

    records = await records_of(kafka_bootstrap, report_id)

    doc = json.loads(json.dumps(document()))
    messages = {m["name"]: name for name, m in doc["components"]["messages"].items()}
    channels = {c["address"]: c for c in doc["channels"].values()}
    headers_schema = validator(doc, "#/components/schemas/CloudEventHeaders")
    for record in records:
        headers = {k: v.decode() for k, v in record.headers}
        ce_type = headers["ce_type"]
        name = messages[ce_type.removeprefix("vn.bn.fieldreport.")]
        assert name in channels[record.topic]["messages"], (record.topic, ce_type)
        headers_schema.validate(headers)
        payload_ref = doc["components"]["messages"][name]["payload"]["$ref"]
        validator(doc, payload_ref).validate(json.loads(record.value))
        event = from_binary_event(
            KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
        )
        assert event.get_id() == headers["ce_id"]
        assert event.get_type() == ce_type
        assert event.get_subject() == report_id
        assert event.get_data()["report_id"] == report_id  # type: ignore[index]
