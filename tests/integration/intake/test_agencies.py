"""The agency directory: names learned from routing, the leader-approval rule per agency (admin
API and INTAKE_LEADER_APPROVAL_AGENCIES), against a running intake app (real PostgreSQL + Kafka).
"""

from __future__ import annotations

import asyncio
import unicodedata
import uuid
from typing import Any

import httpx
import pytest

from intake import seed
from intake.handlers import IntakeContext, handle_external_event
from paht_common.clock import SystemClock, utcnow
from paht_common.events import ReportRouted, new_envelope
from paht_common.testing import random_id
from paht_common.topics import ROUTING_EVENTS
from paht_devenv.kafka import publish_event

pytestmark = pytest.mark.integration

AGENCIES = "/v1/admin/agencies"
KINH_BAC = "UBND phường Kinh Bắc"


def admin_headers(intake: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {intake.settings.admin_token}"}


async def put_agency(intake: Any, agency_id: str, **body: Any) -> httpx.Response:
    return await intake.client.put(
        f"{AGENCIES}/{agency_id}", json=body, headers=admin_headers(intake)
    )


async def directory(intake: Any) -> dict[str, dict[str, Any]]:
    response = await intake.client.get(AGENCIES, headers=admin_headers(intake))
    assert response.status_code == 200, response.text
    return {a["id"]: a for a in response.json()["items"]}


def routed(report: dict[str, Any], *, agency_id: str, agency_name: str) -> Any:
    """The ReportRouted routing would publish for a submitted report."""
    return new_envelope(
        ReportRouted(
            report_id=uuid.UUID(report["id"]),
            number=report["number"],
            agency_id=agency_id,
            agency_name=agency_name,
            category="INFRA.ROAD",
            commune_code="09187",
            urgency="normal",
            rule_id=random_id("rule-"),
            routed_at=utcnow(),
        ),
        source="/routing",
        province="bn",
    )


async def route(intake: Any, report: dict[str, Any], *, agency_id: str, agency_name: str) -> None:
    """Hand a routing event to intake as its consumer does (one transaction per event)."""
    ctx = IntakeContext(settings=intake.settings, clock=SystemClock(), communes=frozenset())
    envelope = routed(report, agency_id=agency_id, agency_name=agency_name)
    async with intake.pool.acquire() as conn, conn.transaction():
        await handle_external_event(conn, envelope, ctx=ctx)


async def staff_view(intake: Any, report_id: str) -> dict[str, Any]:
    response = await intake.client.get(
        f"/v1/reports/{report_id}", headers=intake.staff("supervisor")
    )
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


async def assigned(intake: Any, agency_id: str) -> dict[str, Any]:
    """A new report screened and assigned by hand to ``agency_id``; the assign answer."""
    report_id = (await intake.submit())["id"]
    coordinator = intake.staff("coordinator")
    screened = await intake.act(report_id, coordinator, "screen")
    assert screened.status_code == 200, screened.text
    response = await intake.act(report_id, coordinator, "assign", agency_id=agency_id)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def respond(intake: Any, report_id: str, agency_id: str) -> httpx.Response:
    """The agency's officer acknowledges the report and answers it."""
    officer = intake.staff("officer", agency=agency_id)
    acknowledged = await intake.act(report_id, officer, "acknowledge")
    assert acknowledged.status_code == 200, acknowledged.text
    response: httpx.Response = await intake.act(
        report_id, officer, "respond", text="Đã vá ổ gà, có ảnh kèm theo."
    )
    assert response.status_code == 200, response.text
    return response


async def requires_approval(intake: Any, report_id: str) -> bool:
    async with intake.pool.acquire() as conn:
        flag: bool = await conn.fetchval(
            "SELECT requires_leader_approval FROM reports WHERE id = $1", uuid.UUID(report_id)
        )
    return flag


# --- names ------------------------------------------------------------------------------


async def test_routed_report_teaches_the_name_a_later_manual_assign_shows(intake):
    agency_id = random_id("ubnd-")
    first = await intake.submit()

    await route(intake, first, agency_id=agency_id, agency_name=KINH_BAC)
    by_hand = await assigned(intake, agency_id)

    assert (await staff_view(intake, first["id"]))["agency"] == {"id": agency_id, "name": KINH_BAC}
    assert by_hand["report"]["agency"] == {"id": agency_id, "name": KINH_BAC}
    learned = (await directory(intake))[agency_id]
    assert (learned["name"], learned["requires_leader_approval"]) == (KINH_BAC, False)
    assert learned["name_source"] == "routing"


async def test_manual_assign_to_an_unknown_agency_shows_its_id(intake):
    agency_id = random_id("so-")

    by_hand = await assigned(intake, agency_id)

    assert by_hand["report"]["agency"] == {"id": agency_id, "name": agency_id}
    assert agency_id not in await directory(intake)


async def test_admin_name_survives_routing_and_names_the_reports_routed_afterwards(intake):
    agency_id = random_id("ubnd-")
    admin_name = "Ủy ban nhân dân phường Kinh Bắc"
    created = await put_agency(intake, agency_id, name=admin_name, requires_leader_approval=True)
    assert created.status_code == 200, created.text
    assert created.json()["name_source"] == "admin"
    first, later = await intake.submit(), await intake.submit()

    await route(intake, first, agency_id=agency_id, agency_name=KINH_BAC)
    await route(intake, later, agency_id=agency_id, agency_name="Tên khác của routing")

    agency = (await directory(intake))[agency_id]
    assert (agency["name"], agency["name_source"], agency["requires_leader_approval"]) == (
        admin_name,
        "admin",
        True,
    )
    assert (await staff_view(intake, first["id"]))["agency"]["name"] == admin_name
    assert (await staff_view(intake, later["id"]))["agency"]["name"] == admin_name
    assert await requires_approval(intake, later["id"])


async def test_a_name_learned_from_routing_still_follows_routing(intake):
    agency_id = random_id("ubnd-")
    first, later = await intake.submit(), await intake.submit()

    await route(intake, first, agency_id=agency_id, agency_name="Tên cũ")
    flagged = await put_agency(intake, agency_id, requires_leader_approval=True)  # no name
    await route(intake, later, agency_id=agency_id, agency_name=KINH_BAC)

    assert flagged.status_code == 200, flagged.text
    assert flagged.json()["name_source"] == "routing"
    agency = (await directory(intake))[agency_id]
    assert (agency["name"], agency["name_source"], agency["requires_leader_approval"]) == (
        KINH_BAC,
        "routing",
        True,
    )
    assert (await staff_view(intake, first["id"]))["agency"]["name"] == "Tên cũ"
    assert (await staff_view(intake, later["id"]))["agency"]["name"] == KINH_BAC


async def test_admin_renaming_a_routed_agency_takes_the_name_over(intake):
    agency_id = random_id("ubnd-")
    first, later = await intake.submit(), await intake.submit()
    await route(intake, first, agency_id=agency_id, agency_name=KINH_BAC)

    renamed = await put_agency(intake, agency_id, name="Tên mới", requires_leader_approval=False)
    await route(intake, later, agency_id=agency_id, agency_name=KINH_BAC)
    by_hand = await assigned(intake, agency_id)

    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["name_source"]) == ("Tên mới", "admin")
    assert (await directory(intake))[agency_id]["name"] == "Tên mới"
    assert (await staff_view(intake, first["id"]))["agency"]["name"] == KINH_BAC  # kept
    assert (await staff_view(intake, later["id"]))["agency"]["name"] == "Tên mới"
    assert by_hand["report"]["agency"]["name"] == "Tên mới"


async def test_routed_event_on_kafka_names_the_agency(intake):
    agency_id = random_id("ubnd-")
    report = await intake.submit()
    event = routed(report, agency_id=agency_id, agency_name=KINH_BAC)
    await publish_event(intake.settings.kafka_bootstrap, ROUTING_EVENTS, event)

    view = await staff_view(intake, report["id"])
    for _ in range(600):  # bounded wait for the consumer to join its group and handle it
        if view["agency"] is not None:
            break
        await asyncio.sleep(0.1)
        view = await staff_view(intake, report["id"])

    assert view["agency"] == {"id": agency_id, "name": KINH_BAC}
    assert (await directory(intake))[agency_id]["name"] == KINH_BAC


# --- leader approval --------------------------------------------------------------------


async def test_agency_configured_by_the_admin_api_needs_its_leader_to_approve(intake):
    agency_id = random_id("so-xd-")
    configured = await put_agency(
        intake, agency_id, name="Sở Xây dựng", requires_leader_approval=True
    )
    assert configured.status_code == 200, configured.text
    assert configured.json()["requires_leader_approval"] is True

    report_id = (await assigned(intake, agency_id))["report"]["id"]
    drafted = await respond(intake, report_id, agency_id)
    approved = await intake.act(
        report_id, intake.staff("leader", agency=agency_id), "approve_response"
    )

    assert (drafted.json()["from"], drafted.json()["to"]) == ("in_progress", "pending_approval")
    assert approved.status_code == 200, approved.text
    assert (approved.json()["from"], approved.json()["to"]) == ("pending_approval", "resolved")
    timeline = await intake.client.get(
        f"/v1/reports/{report_id}/timeline", headers=intake.staff("coordinator")
    )
    assign = next(row for row in timeline.json() if row["action"] == "assign")
    assert assign["details"]["requires_leader_approval"] is True


async def test_agency_without_the_flag_resolves_on_the_officers_response(intake):
    agency_id = random_id("so-xd-")
    configured = await put_agency(
        intake, agency_id, name="Sở Xây dựng", requires_leader_approval=False
    )
    assert configured.status_code == 200, configured.text

    report_id = (await assigned(intake, agency_id))["report"]["id"]
    answered = await respond(intake, report_id, agency_id)

    assert (answered.json()["from"], answered.json()["to"]) == ("in_progress", "resolved")


async def test_the_flag_is_taken_when_the_agency_is_assigned(intake):
    agency_id = random_id("ubnd-")
    await put_agency(intake, agency_id, name=KINH_BAC, requires_leader_approval=False)
    before = (await assigned(intake, agency_id))["report"]["id"]

    turned_on = await put_agency(intake, agency_id, requires_leader_approval=True)
    after = (await assigned(intake, agency_id))["report"]["id"]

    assert turned_on.status_code == 200, turned_on.text
    assert turned_on.json()["name"] == KINH_BAC  # no name: the known one is kept
    assert (await respond(intake, before, agency_id)).json()["to"] == "resolved"
    assert (await respond(intake, after, agency_id)).json()["to"] == "pending_approval"


async def test_setting_turns_leader_approval_on_without_renaming(intake_with):
    agency_id, named = random_id("ubnd-"), random_id("so-")
    async with intake_with(leader_approval_agencies=[agency_id, named]) as intake:
        known = await put_agency(intake, named, name="Sở Y tế", requires_leader_approval=False)
        assert known.status_code == 200, known.text
        await seed.seed(intake.settings)  # as `python -m intake seed` after a deploy

        agencies = await directory(intake)
        report_id = (await assigned(intake, agency_id))["report"]["id"]
        drafted = await respond(intake, report_id, agency_id)

    assert (agencies[agency_id]["name"], agencies[agency_id]["requires_leader_approval"]) == (
        agency_id,
        True,
    )
    assert (agencies[named]["name"], agencies[named]["requires_leader_approval"]) == (
        "Sở Y tế",
        True,
    )
    assert drafted.json()["to"] == "pending_approval"


# --- admin API --------------------------------------------------------------------------


async def test_creating_an_agency_needs_a_name(intake):
    agency_id = random_id("so-")

    missing = await put_agency(intake, agency_id, requires_leader_approval=True)
    null = await put_agency(intake, agency_id, name=None, requires_leader_approval=True)
    blank = await put_agency(intake, agency_id, name="  ", requires_leader_approval=True)

    assert intake.problem(missing, 422) == {"name"}
    assert intake.problem(null, 422) == {"name"}
    assert intake.problem(blank, 422) == {"name"}
    assert agency_id not in await directory(intake)


async def test_agency_body_is_validated_naming_the_field(intake):
    agency_id = random_id("so-")

    no_flag = await put_agency(intake, agency_id, name="Sở Tư pháp")
    not_bool = await put_agency(intake, agency_id, name="Sở Tư pháp", requires_leader_approval="y")
    too_long = await put_agency(intake, agency_id, name="x" * 301, requires_leader_approval=False)
    extra = await put_agency(
        intake, agency_id, name="Sở Tư pháp", requires_leader_approval=False, kind="x"
    )

    assert intake.problem(no_flag, 422) == {"requires_leader_approval"}
    assert intake.problem(not_bool, 422) == {"requires_leader_approval"}
    assert intake.problem(too_long, 422) == {"name"}
    assert intake.problem(extra, 422) == {"kind"}


async def test_agency_name_is_stored_in_nfc(intake):
    agency_id = random_id("ubnd-")
    decomposed = unicodedata.normalize("NFD", KINH_BAC)

    created = await put_agency(intake, agency_id, name=decomposed, requires_leader_approval=False)

    assert created.status_code == 200, created.text
    assert created.json()["name"] == KINH_BAC
    assert (await directory(intake))[agency_id]["name"] == KINH_BAC


async def test_agency_admin_needs_the_admin_token(intake):
    agency_id = random_id("so-")
    body = {"name": "Sở Tư pháp", "requires_leader_approval": True}

    no_token = await intake.client.put(f"{AGENCIES}/{agency_id}", json=body)
    staff_token = await intake.client.put(
        f"{AGENCIES}/{agency_id}", json=body, headers=intake.staff("coordinator")
    )
    listing = await intake.client.get(AGENCIES)

    assert intake.problem(no_token, 401) == {"Authorization"}
    assert intake.problem(staff_token, 401) == {"Authorization"}
    assert intake.problem(listing, 401) == {"Authorization"}
    assert agency_id not in await directory(intake)


async def test_agency_routes_are_in_the_openapi_document(intake):
    paths = intake.app.openapi()["paths"]

    assert set(paths[AGENCIES]) == {"get"}
    put = paths[f"{AGENCIES}/{{agency_id}}"]["put"]
    assert {"401", "422"} <= set(put["responses"])
    assert "application/problem+json" in put["responses"]["422"]["content"]
