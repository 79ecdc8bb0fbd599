"""Routing against the harness's real PostgreSQL and Kafka: repository, handler, API.

The API test runs the service's real lifespan (Runtime, outbox relay, faust worker): a
submitted report published to Kafka comes out as ``report.routed`` and is served by
``GET /v1/assignments/{id}``.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from paht_common.consumer import EventProcessor
from paht_common.db import Conn, apply_migrations, create_pool
from paht_common.events import Envelope, Payload, ReportRouted, ReportSubmitted, new_envelope
from paht_common.kafka import RawRecord, decode, encode, header_list, key_bytes
from paht_common.testing import FakeClock, random_id
from paht_common.topics import REPORT_EVENTS, ROUTING_EVENTS
from paht_devenv.kafka import publish_event
from routing import repository
from routing.api import MIGRATIONS, build_app
from routing.handlers import handle_report_event
from routing.settings import RoutingSettings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
WAIT = 60.0


async def migrate(conn: Conn) -> None:
    await apply_migrations(conn, MIGRATIONS)  # the common ones, then routing's


@pytest.fixture
async def pool(fresh_pool: asyncpg.Pool) -> asyncpg.Pool:
    async with fresh_pool.acquire() as conn:
        await migrate(conn)
    return fresh_pool


async def rulebook(conn: Conn, scope: str) -> None:
    """Agencies and rules under a category scope of this test's own."""
    for agency, kind in (("PW", "department"), ("C1-PEOPLE", "commune"), ("COORD", "coordinator")):
        await repository.upsert_agency(
            conn,
            agency_id=f"{scope}-{agency}",
            name=f"Agency {agency}",
            kind=kind,
            commune_code=None,
        )
    await repository.upsert_rule(
        conn,
        rule_id=f"{scope}-any",
        priority=100,
        category=scope,
        commune_code=None,
        agency_id=f"{scope}-COORD",
    )
    await repository.upsert_rule(
        conn,
        rule_id=f"{scope}-road",
        priority=100,
        category=f"{scope}.ROAD",
        commune_code=None,
        agency_id=f"{scope}-PW",
    )
    await repository.upsert_rule(
        conn,
        rule_id=f"{scope}-c1",
        priority=100,
        category=scope,
        commune_code="C1",
        agency_id=f"{scope}-C1-PEOPLE",
    )


def submitted(category: str, commune: str | None = None) -> Envelope[Payload]:
    payload = ReportSubmitted(
        report_id=uuid.uuid4(),
        number="BN-2026-000001",
        category=category,
        commune_code=commune,
        lat=None,
        lon=None,
        channel="app",
        urgency="urgent",
        source_app="t",
        submitted_at=NOW,
    )
    return new_envelope(payload, source="/intake", province="bn")


async def test_candidate_rules_are_the_active_rules_of_the_category_tree_and_commune(
    pool: asyncpg.Pool,
) -> None:
    scope = random_id("T").upper()
    async with pool.acquire() as conn:
        await rulebook(conn, scope)
        await repository.upsert_rule(
            conn,
            rule_id=f"{scope}-lookalike",
            priority=1,
            category=f"{scope}.ROADWORKS",
            commune_code=None,
            agency_id=f"{scope}-PW",
        )
        await repository.upsert_rule(
            conn,
            rule_id=f"{scope}-retired",
            priority=1,
            category=scope,
            commune_code=None,
            agency_id=f"{scope}-PW",
        )
        await conn.execute(
            "UPDATE routing_rules SET active = false WHERE id = $1", f"{scope}-retired"
        )

        in_c1 = await repository.candidate_rules(
            conn, category=f"{scope}.ROAD.HOLE", commune_code="C1"
        )
        in_c2 = await repository.candidate_rules(conn, category=f"{scope}.ROAD", commune_code="C2")
        nowhere = await repository.candidate_rules(conn, category=f"{scope}", commune_code=None)

    assert {r.id for r in in_c1} == {f"{scope}-any", f"{scope}-road", f"{scope}-c1"}
    assert {r.id for r in in_c2} == {f"{scope}-any", f"{scope}-road"}
    assert {r.id for r in nowhere} == {f"{scope}-any"}


async def test_a_new_assignment_retires_the_current_one(pool: asyncpg.Pool) -> None:
    scope = random_id("T").upper()
    report_id = uuid.uuid4()
    async with pool.acquire() as conn:
        await rulebook(conn, scope)
        for agency, minute in ((f"{scope}-COORD", 0), (f"{scope}-PW", 5)):
            async with conn.transaction():
                await repository.insert_assignment(
                    conn,
                    report_id=report_id,
                    event_id=uuid.uuid4(),
                    agency_id=agency,
                    rule_id=None,
                    category=scope,
                    commune_code=None,
                    source="manual",
                    routed_at=NOW.replace(minute=minute),
                )
        history = await repository.assignments_of(conn, report_id=report_id)
        unknown = await repository.assignments_of(conn, report_id=uuid.uuid4())

    assert [(h["agency_id"], h["is_current"]) for h in history] == [
        (f"{scope}-COORD", False),
        (f"{scope}-PW", True),
    ]
    assert history[1]["agency_name"] == "Agency PW"
    assert unknown == []


async def outbox_events(conn: Conn) -> list[Envelope[Payload]]:
    rows = await conn.fetch("SELECT topic, key, value, headers FROM outbox ORDER BY id")
    return [
        decode(
            RawRecord(
                r["topic"],
                0,
                0,
                r["key"],
                r["value"],
                tuple((k, v.encode()) for k, v in r["headers"].items()),
            )
        )
        for r in rows
    ]


async def test_a_submitted_report_is_assigned_and_report_routed_goes_to_the_outbox_once(
    pool: asyncpg.Pool,
) -> None:
    scope = random_id("T").upper()
    async with pool.acquire() as conn:
        await rulebook(conn, scope)

    async def handle(conn: Conn, env: Envelope[Payload]) -> None:
        await handle_report_event(conn, env, clock=FakeClock(NOW), province="bn")

    async def no_dead_letters(topic: str, record: RawRecord, headers: object) -> None:
        raise AssertionError(record)

    processor = EventProcessor(
        consumer="routing", pool=pool, handler=handle, dead_letters=no_dead_letters
    )
    env = submitted(f"{scope}.ROAD.HOLE", commune="C1")
    message = encode(env)
    record = RawRecord(
        REPORT_EVENTS, 0, 0, key_bytes(message), message.value, tuple(header_list(message))
    )

    outcomes = await processor.process_batch([record, record])  # and a redelivery
    again = await processor.process_batch([record])

    assert outcomes == ["handled", "duplicate"]
    assert again == ["duplicate"]
    async with pool.acquire() as conn:
        (routed,) = await outbox_events(conn)
        topics = [r["topic"] for r in await conn.fetch("SELECT topic FROM outbox")]
        (assignment,) = await repository.assignments_of(conn, report_id=env.payload.report_id)
    assert topics == [ROUTING_EVENTS]
    assert isinstance(routed.payload, ReportRouted)
    assert routed.payload.report_id == env.payload.report_id
    assert routed.payload.agency_id == f"{scope}-C1-PEOPLE"  # the commune rule
    assert routed.payload.rule_id == f"{scope}-c1"
    assert routed.payload.urgency == "urgent"
    assert routed.payload.routed_at == NOW
    assert routed.correlation_id == env.correlation_id
    assert assignment["agency_id"] == f"{scope}-C1-PEOPLE"
    assert assignment["is_current"] is True


async def test_a_report_no_rule_covers_is_not_assigned_and_emits_nothing(
    pool: asyncpg.Pool,
) -> None:
    scope = random_id("T").upper()
    env = submitted(f"{scope}.NOTHING")
    async with pool.acquire() as conn, conn.transaction():
        await rulebook(conn, random_id("T").upper())  # someone else's rules
        await handle_report_event(conn, env, clock=FakeClock(NOW), province="bn")

    async with pool.acquire() as conn:
        assert await repository.assignments_of(conn, report_id=env.payload.report_id) == []
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0


@pytest.fixture
async def running(fresh_database: str, kafka_bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the routing app whose lifespan runs (Runtime, relay, faust worker)."""
    app_id = random_id("routing-test-")
    settings = RoutingSettings(
        database_url=fresh_database, kafka_bootstrap=kafka_bootstrap, faust_app_id=app_id
    )
    app = build_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://routing") as client:
                yield client
    finally:
        shutil.rmtree(Path(f"{app_id}-data"), ignore_errors=True)


async def routed_on_kafka(bootstrap: str, report_id: uuid.UUID) -> list[Envelope[Payload]]:
    """report.routed events of the report on the routing topic, once the first arrived."""
    consumer = AIOKafkaConsumer(
        ROUTING_EVENTS, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[Envelope[Payload]] = []
    try:
        async with asyncio.timeout(WAIT):
            while not found:
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    for m in messages:
                        env = decode(
                            RawRecord(
                                m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers)
                            )
                        )
                        if getattr(env.payload, "report_id", None) == report_id:
                            found.append(env)
    finally:
        await consumer.stop()
    return found


async def test_the_running_service_routes_a_submitted_report_and_serves_its_assignment(
    running: httpx.AsyncClient, fresh_database: str, kafka_bootstrap: str
) -> None:
    scope = random_id("T").upper()
    pool = await create_pool(fresh_database, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await rulebook(conn, scope)
    finally:
        await pool.close()
    env = submitted(f"{scope}.ROAD")
    report_id: uuid.UUID = env.payload.report_id
    missing = await running.get(f"/v1/assignments/{report_id}")

    await publish_event(kafka_bootstrap, REPORT_EVENTS, env)
    (routed,) = await routed_on_kafka(kafka_bootstrap, report_id)
    response = await running.get(f"/v1/assignments/{report_id}")

    assert missing.status_code == 404
    assert isinstance(routed.payload, ReportRouted)
    assert routed.payload.agency_id == f"{scope}-PW"  # the narrower category rule
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["report_id"] == str(report_id)
    assert body["current"]["agency_id"] == f"{scope}-PW"
    assert body["current"]["rule_id"] == f"{scope}-road"
    assert [h["agency_id"] for h in body["history"]] == [f"{scope}-PW"]


async def test_an_invalid_report_id_is_a_problem(running: httpx.AsyncClient) -> None:
    response = await running.get("/v1/assignments/not-a-uuid")

    assert response.status_code in (400, 422)
    assert response.headers["content-type"].startswith("application/problem+json")
