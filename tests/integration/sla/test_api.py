"""The SLA HTTP API, served in-process with its real lifespan.

The lifespan runs what ``python -m sla`` runs: the Runtime (pool, migrations, outbox relay),
the faust worker on the session's Kafka broker and the threshold scanner, on a fresh
database. Expected deadlines are worked out by hand (Mon-Fri 08-12, 13-17, +07:00).
"""

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

from paht_common.events import ReportRouted, new_envelope
from paht_common.testing import random_id
from paht_common.topics import ROUTING_EVENTS
from paht_devenv.kafka import publish_event
from sla.api import build_app
from sla.calendar import TZ
from sla.settings import SlaSettings

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer dev-only-admin-token"}
PROBLEM = "application/problem+json"


@pytest.fixture
async def api(fresh_database: str, kafka_bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app whose lifespan is running (worker, scanner, relay)."""
    app_id = random_id("sla-test-")
    settings = SlaSettings(
        database_url=fresh_database,
        kafka_bootstrap=kafka_bootstrap,
        faust_app_id=app_id,
        scan_interval_seconds=0.2,
    )
    app = build_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sla") as client:
                yield client
    finally:
        # faust keeps its (memory-store) data directory at <app id>-data in the cwd
        shutil.rmtree(Path(f"{app_id}-data"), ignore_errors=True)


async def due(client: httpx.AsyncClient, start: str, amount: float, unit: str) -> httpx.Response:
    return await client.get(
        "/v1/calendar/due", params={"start": start, "amount": amount, "unit": unit}
    )


def assert_problem(response: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    fields = {e["field"] for e in body.get("errors", [])} | {body.get("field")}
    assert field in fields, body
    return body


async def test_service_is_ready_with_database_and_kafka(api: httpx.AsyncClient) -> None:
    response = await api.get("/readyz")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("start", "amount", "unit", "expected"),
    [
        # Tết 2026: Fri 13/2 16-17 (1 h); Sat 14/2 - Sun 22/2 off; Mon 23/2 08-12 (5 h),
        # 13-16 (8 h).
        ("2026-02-13T16:00:00+07:00", 8, "working_hours", "2026-02-23T16:00:00+07:00"),
        # Across lunch: Mon 30/11 10-12 (2 h), 13-15 (4 h).
        ("2026-11-30T10:00:00+07:00", 4, "working_hours", "2026-11-30T15:00:00+07:00"),
        # 8 WH across lunch and the night: 10-12 (2), 13-17 (6), Tue 1/12 08-10 (8).
        ("2026-11-30T10:00:00+07:00", 8, "working_hours", "2026-12-01T10:00:00+07:00"),
        # Saturday evening: counting starts Monday 08:00.
        ("2026-11-28T20:00:00+07:00", 1, "working_hours", "2026-11-30T09:00:00+07:00"),
        # A UTC start is the same instant: 01:00Z = 08:00 +07:00 on Mon 30/11.
        ("2026-11-30T01:00:00Z", 2, "working_hours", "2026-11-30T10:00:00+07:00"),
        # 5 WD skipping Tue 24/11 (Ngày Văn hóa Việt Nam): Mon 23/11 10:00 -> Tue 1/12 10:00.
        ("2026-11-23T10:00:00+07:00", 5, "working_days", "2026-12-01T10:00:00+07:00"),
        # 24/7 units ignore office hours.
        ("2026-11-28T20:00:00+07:00", 2, "calendar_days", "2026-11-30T20:00:00+07:00"),
    ],
    ids=[
        "tet-2026",
        "across-lunch",
        "8wh-overnight",
        "start-outside-hours",
        "utc-start",
        "5wd-culture-day",
        "calendar-days",
    ],
)
async def test_due_answers_the_hand_computed_deadline_with_the_offset(
    api: httpx.AsyncClient, start: str, amount: float, unit: str, expected: str
) -> None:
    response = await due(api, start, amount, unit)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["due_at"] == expected
    assert body["calendar_version"].startswith("vn-holidays-")


async def test_due_rejects_an_unknown_unit_naming_the_field(api: httpx.AsyncClient) -> None:
    response = await due(api, "2026-11-30T10:00:00+07:00", 1, "fortnights")
    assert_problem(response, 422, "unit")


async def test_due_rejects_a_negative_amount_naming_the_field(api: httpx.AsyncClient) -> None:
    response = await due(api, "2026-11-30T10:00:00+07:00", -1, "working_hours")
    assert_problem(response, 422, "amount")


async def test_due_rejects_a_start_without_offset_naming_the_field(
    api: httpx.AsyncClient,
) -> None:
    response = await due(api, "2026-11-30T10:00:00", 1, "working_hours")
    assert_problem(response, 422, "start")


async def test_days_lists_working_days_and_vietnamese_holiday_names(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/v1/calendar/days", params={"from": "2026-02-13", "to": "2026-02-23"})
    assert response.status_code == 200, response.text
    days = {d["date"]: (d["working"], d["name"]) for d in response.json()}
    assert len(days) == 11
    assert days["2026-02-13"] == (True, None)
    assert days["2026-02-16"] == (False, "Giao thừa Tết Nguyên Đán")
    assert days["2026-02-17"] == (False, "Tết Nguyên Đán")
    assert days["2026-02-21"] == (False, None)  # a plain Saturday
    assert days["2026-02-23"] == (True, None)
    assert [d for d, (working, _) in days.items() if working] == ["2026-02-13", "2026-02-23"]


async def test_days_shows_the_seeded_2026_new_year_swap(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/calendar/days", params={"from": "2026-01-01", "to": "2026-01-10"})
    days = {d["date"]: (d["working"], d["name"]) for d in response.json()}
    assert days["2026-01-01"] == (False, "Tết Dương lịch")
    assert days["2026-01-02"] == (False, "Ngày nghỉ (thay cho ngày 10/01/2026)")
    assert days["2026-01-10"] == (True, "Ngày làm việc bù (cho ngày nghỉ 02/01/2026)")


async def test_days_rejects_a_reversed_range(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/calendar/days", params={"from": "2026-02-23", "to": "2026-02-13"})
    assert_problem(response, 422, "to")


OVERRIDE = {"kind": "day_off", "reason": "Nghỉ đột xuất do bão", "document": "CĐ 12/CĐ-UBND"}


async def test_override_without_the_admin_token_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.put("/v1/calendar/overrides/2026-11-30", json=OVERRIDE)
    assert_problem(response, 401, "Authorization")
    wrong = await api.put(
        "/v1/calendar/overrides/2026-11-30",
        json=OVERRIDE,
        headers={"Authorization": "Bearer not-the-token"},
    )
    assert wrong.status_code == 401
    after = await due(api, "2026-11-28T20:00:00+07:00", 1, "working_hours")
    assert after.json()["due_at"] == "2026-11-30T09:00:00+07:00"


async def test_override_with_the_admin_token_changes_the_version_and_the_deadlines(
    api: httpx.AsyncClient,
) -> None:
    before = (await due(api, "2026-11-28T20:00:00+07:00", 1, "working_hours")).json()
    response = await api.put("/v1/calendar/overrides/2026-11-30", json=OVERRIDE, headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["date"] == "2026-11-30"
    assert body["calendar_version"] != before["calendar_version"]

    after = (await due(api, "2026-11-28T20:00:00+07:00", 1, "working_hours")).json()
    # Monday 30/11 is now a day off: Saturday evening + 1 WH => Tuesday 1/12 09:00.
    assert after == {
        "due_at": "2026-12-01T09:00:00+07:00",
        "calendar_version": body["calendar_version"],
    }
    days = (
        await api.get("/v1/calendar/days", params={"from": "2026-11-30", "to": "2026-11-30"})
    ).json()
    assert days == [{"date": "2026-11-30", "working": False, "name": "Nghỉ đột xuất do bão"}]
    listed = (await api.get("/v1/calendar/overrides")).json()
    assert {"date": "2026-11-30", "kind": "day_off", **OVERRIDE} in listed


async def test_unknown_report_has_no_sla(api: httpx.AsyncClient) -> None:
    response = await api.get(f"/v1/sla/{uuid.uuid4()}")
    assert_problem(response, 404, "report_id")


async def test_policies_lists_the_defaults_in_evaluation_order(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/policies")
    assert response.status_code == 200, response.text
    policies = response.json()
    assert [p["id"] for p in policies] == ["default-complex", "default-normal", "default-urgent"]
    by_id = {p["id"]: p for p in policies}
    assert by_id["default-normal"]["acknowledgement"] == {"amount": 8.0, "unit": "working_hours"}
    assert by_id["default-normal"]["resolution"] == {"amount": 5.0, "unit": "working_days"}
    assert by_id["default-urgent"]["resolution"] == {"amount": 4.0, "unit": "working_hours"}
    assert by_id["default-complex"]["resolution"] == {"amount": 10.0, "unit": "working_days"}
    assert {p["resolution_starts"] for p in policies} == {"acknowledged"}


async def test_routed_event_on_kafka_becomes_clocks_served_by_the_api(
    api: httpx.AsyncClient, kafka_bootstrap: str
) -> None:
    rid = uuid.uuid4()
    routed_at = datetime(2026, 11, 27, 16, tzinfo=TZ)
    event = new_envelope(
        ReportRouted(
            report_id=rid,
            number="BN-API-1",
            agency_id="ubnd-a",
            agency_name="UBND A",
            category="INFRA.ROAD",
            commune_code=None,
            urgency="normal",
            rule_id="r1",
            routed_at=routed_at,
        ),
        source="/routing",
        province="bn",
    )
    await publish_event(kafka_bootstrap, ROUTING_EVENTS, event)

    response = await api.get(f"/v1/sla/{rid}")
    for _ in range(600):  # bounded wait for the worker to join its group and handle the event
        if response.status_code == 200:
            break
        await asyncio.sleep(0.1)
        response = await api.get(f"/v1/sla/{rid}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["number"], body["agency_id"], body["policy_id"]) == (
        "BN-API-1",
        "ubnd-a",
        "default-normal",
    )
    ack = next(c for c in body["clocks"] if c["kind"] == "acknowledgement")
    # Fri 27/11 16:00 + 8 WH => Mon 30/11 16:00 (Fri 1 h, Mon 08-12 4 h, 13-16 3 h).
    assert ack["due_at"] == "2026-11-30T16:00:00+07:00"
    assert ack["started_at"] == "2026-11-27T16:00:00+07:00"
    assert ack["status"] == "running"


async def wait_for_clocks(api: httpx.AsyncClient, rid: uuid.UUID) -> dict[str, Any]:
    response = await api.get(f"/v1/sla/{rid}")
    for _ in range(600):  # bounded wait for the worker to join its group and handle the event
        if response.status_code == 200:
            break
        await asyncio.sleep(0.1)
        response = await api.get(f"/v1/sla/{rid}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def road_routed(rid: uuid.UUID, at: datetime) -> Any:
    payload = ReportRouted(
        report_id=rid,
        number=f"BN-{rid.hex[:6]}",
        agency_id="ubnd-a",
        agency_name="UBND A",
        category="INFRA.ROAD",
        commune_code=None,
        urgency="normal",
        rule_id="r1",
        routed_at=at,
    )
    return new_envelope(payload, source="/routing", province="bn")


async def test_policy_and_calendar_edits_through_the_api_apply_to_the_next_event(
    api: httpx.AsyncClient, kafka_bootstrap: str
) -> None:
    routed_at = datetime(2026, 11, 27, 16, tzinfo=TZ)
    first = uuid.uuid4()
    await publish_event(kafka_bootstrap, ROUTING_EVENTS, road_routed(first, routed_at))
    assert (await wait_for_clocks(api, first))["policy_id"] == "default-normal"

    target = {"amount": 2, "unit": "working_hours"}
    policy = {"priority": 1, "category": "INFRA.ROAD", "screening": target}
    policy |= {"acknowledgement": target, "resolution": target}
    response = await api.put("/v1/policies/road-fast", json=policy, headers=ADMIN)
    assert response.status_code == 200, response.text
    response = await api.put(
        "/v1/calendar/overrides/2026-11-30",
        json={"kind": "day_off", "reason": "test day off"},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text

    second = uuid.uuid4()
    await publish_event(kafka_bootstrap, ROUTING_EVENTS, road_routed(second, routed_at))
    body = await wait_for_clocks(api, second)
    assert body["policy_id"] == "road-fast"
    assert body["calendar_version"] == response.json()["calendar_version"]
    ack = next(c for c in body["clocks"] if c["kind"] == "acknowledgement")
    # Fri 27/11 16:00 + 2 WH: Fri 16-17 1 h, Mon 30/11 off, Tue 1/12 08-09 1 h.
    assert ack["due_at"] == "2026-12-01T09:00:00+07:00"
