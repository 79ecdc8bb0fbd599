"""Schemathesis (every check) and the hostile corpus over the routing API, served over real
HTTP by the app running its real lifespan (Runtime, relay, faust worker)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI

from paht_common.clock import SystemClock
from paht_common.events import ReportSubmitted, new_envelope
from paht_common.testing import random_id
from paht_devenv.fuzz import Plan, attack, fuzz_operations, serving
from routing import repository
from routing.api import build_app
from routing.handlers import handle_report_event
from routing.settings import RoutingSettings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]


@pytest.fixture
async def routing_app(fresh_database: str, kafka_bootstrap: str) -> AsyncIterator[FastAPI]:
    app_id = random_id("routing-fuzz-")
    settings = RoutingSettings(
        database_url=fresh_database, kafka_bootstrap=kafka_bootstrap, faust_app_id=app_id
    )
    app = build_app(settings)
    try:
        async with app.router.lifespan_context(app):
            yield app
    finally:
        shutil.rmtree(Path(f"{app_id}-data"), ignore_errors=True)


async def routed_report(app: FastAPI) -> uuid.UUID:
    """A report routed through the handler (a rule of its own scope), so reads find it."""
    scope = random_id("F").upper()
    report_id = uuid.uuid4()
    envelope = new_envelope(
        ReportSubmitted(
            report_id=report_id,
            number="BN-2026-000001",
            category=f"{scope}.ROAD",
            commune_code=None,
            lat=None,
            lon=None,
            channel="app",
            urgency="normal",
            source_app="fuzz",
            submitted_at=datetime.now(UTC),
        ),
        source="/intake",
        province="bn",
    )
    async with app.state.runtime.pool.acquire() as conn, conn.transaction():
        await repository.upsert_agency(
            conn, agency_id=f"{scope}-PW", name="PW", kind="department", commune_code=None
        )
        await repository.upsert_rule(
            conn,
            rule_id=f"{scope}-road",
            priority=100,
            category=scope,
            commune_code=None,
            agency_id=f"{scope}-PW",
        )
        await handle_report_event(conn, envelope, clock=SystemClock(), province="bn")
    return report_id


async def test_the_routing_api_passes_every_schemathesis_check(routing_app: FastAPI) -> None:
    known = {"report_id": str(await routed_report(routing_app))}
    async with serving(routing_app) as base_url:
        schema = schemathesis.openapi.from_dict(routing_app.openapi()).include(path_regex=r"^/v1/")
        failures = await asyncio.to_thread(fuzz_operations, Plan(schema, base_url, known=known))

    assert not failures, "\n\n".join(failures)


async def test_hostile_inputs_never_get_a_5xx_from_routing(routing_app: FastAPI) -> None:
    async with serving(routing_app) as base_url:
        report = await attack(base_url, routing_app.openapi())

    assert report.sent > 20
    assert not report.failures, "\n".join(report.failures)
