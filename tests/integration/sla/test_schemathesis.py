"""Schemathesis (every check, with the admin token) and the hostile corpus over the SLA API,
served over real HTTP by the app running its real lifespan (Runtime, worker, scanner)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.specs.openapi.checks import positive_data_acceptance

from paht_common.events import ReportRouted, new_envelope
from paht_common.testing import random_id
from paht_common.topics import ROUTING_EVENTS
from paht_devenv.fuzz import Plan, attack, fuzz_operations, serving
from paht_devenv.kafka import publish_event
from sla.api import build_app
from sla.calendar import TZ
from sla.settings import SlaSettings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

ADMIN = {"Authorization": "Bearer fuzz-sla-admin-token-0123456789"}


@pytest.fixture
async def sla_app(fresh_database: str, kafka_bootstrap: str) -> AsyncIterator[FastAPI]:
    app_id = random_id("sla-fuzz-")
    settings = SlaSettings(
        database_url=fresh_database,
        kafka_bootstrap=kafka_bootstrap,
        faust_app_id=app_id,
        admin_token=ADMIN["Authorization"].removeprefix("Bearer "),
    )
    app = build_app(settings)
    try:
        async with app.router.lifespan_context(app):
            yield app
    finally:
        shutil.rmtree(Path(f"{app_id}-data"), ignore_errors=True)


async def report_with_clocks(base_url: str, kafka_bootstrap: str) -> uuid.UUID:
    """A report routed on Kafka, once its clocks are served (bounded wait)."""
    report_id = uuid.uuid4()
    payload = ReportRouted(
        report_id=report_id,
        number="BN-FUZZ-1",
        agency_id="ubnd-a",
        agency_name="UBND A",
        category="INFRA.ROAD",
        commune_code=None,
        urgency="normal",
        rule_id="r1",
        routed_at=datetime(2026, 11, 27, 16, tzinfo=TZ),
    )
    await publish_event(
        kafka_bootstrap, ROUTING_EVENTS, new_envelope(payload, source="/routing", province="bn")
    )
    async with httpx.AsyncClient(base_url=base_url) as client:
        for _ in range(600):
            if (await client.get(f"/v1/sla/{report_id}")).status_code == 200:
                return report_id
            await asyncio.sleep(0.1)
    raise AssertionError("the routed report got no clocks within 60 s")


def credentials(operation: Any) -> dict[str, str]:
    declared = {p.name.lower() for p in operation.headers}
    return ADMIN if "authorization" in declared else {}


async def test_the_sla_api_passes_every_schemathesis_check(
    sla_app: FastAPI, kafka_bootstrap: str
) -> None:
    async with serving(sla_app) as base_url:
        known = {
            "report_id": str(await report_with_clocks(base_url, kafka_bootstrap)),
            "policy_id": "default-normal",
            "day": "2026-01-02",
        }
        schema = schemathesis.openapi.from_dict(sla_app.openapi()).include(path_regex=r"^/v1/")
        plan = Plan(
            schema,
            base_url,
            headers=credentials,
            known=known,
            # at most 366 days between from and to: a bound JSON Schema cannot state
            relaxed={
                "GET /v1/calendar/days": (positive_data_acceptance,),
                # an opaque cursor is valid only when this API issued it
                "GET /v1/sla/overdue": (positive_data_acceptance,),
            },
        )
        failures = await asyncio.to_thread(fuzz_operations, plan)

    assert not failures, "\n\n".join(failures)


async def test_hostile_inputs_never_get_a_5xx_from_sla(sla_app: FastAPI) -> None:
    async with serving(sla_app) as base_url:
        report = await attack(base_url, sla_app.openapi(), headers=ADMIN)

    assert report.sent > 300
    assert not report.failures, "\n".join(report.failures)
