"""Issue 19 against a running intake app: the reporter's own steps through its app, the
rating window, the coordinator's override, configurable screening and co-handling agencies."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from datetime import timedelta

import pytest
from PIL import Image

from intake.handlers import IntakeContext
from intake.scanner import scan_once
from paht_common.clock import SystemClock
from paht_common.events import ReportTransitioned

pytestmark = pytest.mark.integration

LEAD = "ubnd-kinh-bac"
CO = "dien-luc-bac-ninh"
OTHER = "ubnd-vo-cuong"


async def act(intake, report_id: str, headers: dict[str, str], action: str, **fields) -> dict:
    response = await intake.act(report_id, headers, action, **fields)
    assert response.status_code == 200, (action, response.text)
    body: dict = response.json()
    return body


async def assigned(intake, **assign_fields) -> str:
    report_id: str = (await intake.submit())["id"]
    coordinator = intake.staff("coordinator")
    await act(intake, report_id, coordinator, "screen")
    await act(intake, report_id, coordinator, "assign", agency_id=LEAD, **assign_fields)
    return report_id


async def published(intake) -> str:
    report_id = await assigned(intake)
    officer = intake.staff("officer", agency=LEAD)
    await act(intake, report_id, officer, "acknowledge")
    await act(intake, report_id, officer, "respond", text="Đã vá ổ gà.")
    await act(intake, report_id, intake.staff("coordinator"), "publish")
    return report_id


async def row(intake, report_id: str, sql: str):
    async with intake.pool.acquire() as conn:
        return await conn.fetchrow(sql, report_id)


async def timeline(intake, report_id: str) -> list[dict]:
    response = await intake.client.get(
        f"/v1/reports/{report_id}/timeline", headers=intake.staff("coordinator")
    )
    assert response.status_code == 200
    items: list[dict] = response.json()
    return items


# --- the reporter's steps through the submitting app ----------------------------------------


async def test_the_submitting_app_rates_its_published_report_with_its_api_key(intake):
    report_id = await published(intake)

    response = await intake.act(
        report_id, intake.app_headers, "rate", rating=4, comment="Đã sửa, cảm ơn."
    )

    assert response.status_code == 200, response.text
    assert response.json()["to"] == "rated"
    assert response.json()["report"]["rating"] == 4
    last = (await timeline(intake, report_id))[-1]
    assert (last["action"], last["actor_role"]) == ("rate", "reporter")
    assert last["actor_subject"] == "app:demo-app"


async def test_the_app_reopens_its_report_as_not_fixed(intake):
    report_id = await published(intake)

    response = await intake.act(report_id, intake.app_headers, "reopen", reason="Vẫn còn ổ gà.")

    assert response.status_code == 200, response.text
    assert response.json()["to"] == "reopened"
    assert response.json()["report"]["reopen_count"] == 1


async def test_another_apps_key_finds_no_report_to_rate(intake):
    report_id = await published(intake)
    _, other_key = await intake.new_key(scopes=("reports:write", "reports:feedback"))

    response = await intake.act(report_id, {"X-API-Key": other_key}, "rate", rating=5)

    assert intake.problem(response, 404) == {"report_id"}


async def test_a_key_without_the_feedback_scope_is_403(intake):
    report_id = await published(intake)
    _, key = await intake.new_key(scopes=("reports:write",))

    response = await intake.act(report_id, {"X-API-Key": key}, "rate", rating=5)

    assert intake.problem(response, 403) == {"X-API-Key"}


async def test_the_app_may_not_take_staff_actions(intake):
    report_id = await published(intake)

    response = await intake.act(report_id, intake.app_headers, "close")

    assert intake.problem(response, 403) == {"type"}


async def test_the_app_cannot_rate_before_publication(intake):
    report_id = await assigned(intake)

    response = await intake.act(report_id, intake.app_headers, "rate", rating=5)

    assert intake.problem(response, 409) == {"type"}


async def test_reopening_is_limited_in_number(intake_with):
    async with intake_with(max_reopens=1) as intake:
        report_id = await published(intake)
        await act(intake, report_id, intake.app_headers, "reopen", reason="Chưa sửa.")
        await act(intake, report_id, intake.staff("coordinator"), "assign", agency_id=LEAD)
        officer = intake.staff("officer", agency=LEAD)
        await act(intake, report_id, officer, "acknowledge")
        await act(intake, report_id, officer, "respond", text="Đã sửa lại.")
        await act(intake, report_id, intake.staff("coordinator"), "publish")

        again = await intake.act(report_id, intake.app_headers, "reopen", reason="Vẫn hỏng.")

        assert intake.problem(again, 422) == {"reopen_count"}


async def test_reopening_after_the_window_from_publication_is_refused(intake):
    report_id = await published(intake)
    async with intake.pool.acquire() as conn:
        await conn.execute(
            "UPDATE reports SET published_at = now() - interval '31 days', closes_at = NULL"
            " WHERE id = $1",
            report_id,
        )

    response = await intake.act(report_id, intake.app_headers, "reopen", reason="Vẫn hỏng.")

    assert intake.problem(response, 422) == {"published_at"}


async def test_no_credential_at_all_is_401(intake):
    report_id = await published(intake)

    response = await intake.client.post(
        f"/v1/reports/{report_id}/actions", json={"type": "rate", "rating": 5}
    )

    assert intake.problem(response, 401) == {"Authorization"}


# --- the rating window ------------------------------------------------------------------------


async def until(predicate, *, within: float = 15.0):
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_publication_opens_the_rating_window(intake):
    report_id = await published(intake)

    stored = await row(intake, report_id, "SELECT published_at, closes_at FROM reports WHERE id=$1")

    assert stored["closes_at"] - stored["published_at"] == timedelta(days=7)


async def test_a_low_rating_keeps_the_report_open_for_the_coordinator(intake):
    report_id = await published(intake)
    await act(intake, report_id, intake.app_headers, "rate", rating=2, comment="Làm ẩu.")

    stored = await row(intake, report_id, "SELECT state, closes_at FROM reports WHERE id=$1")

    assert (stored["state"], stored["closes_at"]) == ("rated", None)


async def test_the_window_closes_unrated_and_positively_rated_reports(intake_with):
    async with intake_with(rating_window_days=2 / 86400, close_scan_interval_seconds=0.05) as it:
        unrated = await published(it)
        positive = await published(it)
        await act(it, positive, it.app_headers, "rate", rating=3)

        async def both_closed() -> bool:
            states = [
                (await row(it, r, "SELECT state FROM reports WHERE id=$1"))["state"]
                for r in (unrated, positive)
            ]
            return states == ["closed", "closed"]

        assert await until(both_closed)
        for report_id in (unrated, positive):
            last = (await timeline(it, report_id))[-1]
            assert (last["action"], last["actor_role"]) == ("close", "system")
            assert last["reason"] == "the rating window ended"
            _, event = (await it.outbox(report_id))[-1]
            assert isinstance(event.payload, ReportTransitioned)
            assert (event.payload.action, event.payload.actor_role) == ("close", "system")


async def test_a_due_window_fires_once_across_concurrent_scanners(intake):
    reports = [await published(intake) for _ in range(3)]
    async with intake.pool.acquire() as conn:
        await conn.execute(
            "UPDATE reports SET closes_at = now() - interval '1 second' WHERE id = ANY($1)",
            reports,
        )
    ctx = IntakeContext(settings=intake.settings, clock=SystemClock(), communes=frozenset())

    closed = await asyncio.gather(*(scan_once(intake.pool, ctx=ctx, batch=2) for _ in range(4)))

    async with intake.pool.acquire() as conn:
        closes = await conn.fetchval(
            "SELECT count(*) FROM report_timeline WHERE action = 'close' AND report_id = ANY($1)",
            reports,
        )
        due = await conn.fetchval(
            "SELECT count(*) FROM reports WHERE closes_at IS NOT NULL AND id = ANY($1)", reports
        )
    assert closes == 3  # the app's own scanner may have taken some; never one twice
    assert sum(closed) <= 3
    assert due == 0


# --- the coordinator's override ---------------------------------------------------------------


async def test_coordinator_reassigns_a_report_in_progress_with_a_reason(intake):
    report_id = await assigned(intake)
    await act(intake, report_id, intake.staff("officer", agency=LEAD), "acknowledge")

    without = await intake.act(report_id, intake.staff("coordinator"), "assign", agency_id=OTHER)
    moved = await intake.act(
        report_id, intake.staff("coordinator"), "assign", agency_id=OTHER, reason="Sai địa bàn."
    )

    assert intake.problem(without, 422) == {"reason"}
    assert moved.status_code == 200, moved.text
    assert moved.json()["report"]["agency"]["id"] == OTHER
    _, event = (await intake.outbox(report_id))[-1]
    assert event.payload.action == "assign"
    assert event.payload.details["previous_agency_id"] == LEAD
    assert event.payload.details["override"] is True
    old_officer = await intake.client.get(
        f"/v1/reports/{report_id}", headers=intake.staff("officer", agency=LEAD)
    )
    assert intake.problem(old_officer, 404) == {"report_id"}


async def test_coordinator_reassigns_an_assigned_report(intake):
    report_id = await assigned(intake)

    response = await intake.act(
        report_id, intake.staff("coordinator"), "assign", agency_id=OTHER, reason="Điều chỉnh."
    )

    assert response.status_code == 200, response.text
    assert response.json()["to"] == "assigned"


@pytest.mark.parametrize(
    ("action", "fields", "to"),
    [
        ("reject", {"reason_code": "not_in_scope"}, "rejected"),
        ("rescreen", {"reason": "Cần phân loại lại."}, "screening"),
    ],
)
async def test_coordinator_overrides_an_agency_holding_the_report(intake, action, fields, to):
    report_id = await assigned(intake)
    await act(intake, report_id, intake.staff("officer", agency=LEAD), "acknowledge")

    response = await intake.act(report_id, intake.staff("coordinator"), action, **fields)

    assert response.status_code == 200, response.text
    assert response.json()["to"] == to


async def test_coordinator_merges_an_assigned_report_into_an_open_master(intake):
    master = await assigned(intake)
    report_id = await assigned(intake)

    response = await intake.act(
        report_id, intake.staff("coordinator"), "merge", duplicate_of=master
    )

    assert response.status_code == 200, response.text
    assert response.json()["to"] == "merged"


# --- configurable screening -------------------------------------------------------------------


async def test_a_hotline_report_is_held_for_the_coordinators_triage(intake_with):
    async with intake_with(screening_channels=["hotline"]) as intake:
        held = (await intake.submit(channel="hotline"))["id"]
        routed = (await intake.submit(channel="app"))["id"]

        _, held_event = (await intake.outbox(held))[0]
        _, routed_event = (await intake.outbox(routed))[0]

        assert "needs_screening" in held_event.payload.flags
        assert "needs_screening" not in routed_event.payload.flags


# --- co-handling agencies ---------------------------------------------------------------------


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (9, 1, 9)).save(out, format="PNG")
    return out.getvalue()


async def test_co_handling_agency_sees_notes_but_does_not_resolve(intake):
    report_id: str = (await intake.submit())["id"]
    data = png()
    upload = await intake.client.post(
        f"/v1/reports/{report_id}/media",
        files=[("files", ("p.png", data, "image/png"))],
        headers=intake.app_headers,
    )
    assert upload.status_code == 201
    coordinator = intake.staff("coordinator")
    await act(intake, report_id, coordinator, "screen")
    await act(intake, report_id, coordinator, "assign", agency_id=LEAD, co_agency_ids=[CO])
    co_officer = intake.staff("officer", agency=CO)
    await act(intake, report_id, intake.staff("officer", agency=LEAD), "acknowledge")

    seen = await intake.client.get(f"/v1/reports/{report_id}", headers=co_officer)
    listed = await intake.client.get("/v1/reports", headers=co_officer)
    photo = await intake.client.get(
        f"/v1/media/{hashlib.sha256(data).hexdigest()}", headers=co_officer
    )
    note = await intake.act(
        report_id, co_officer, "add_note", text="Đã cắt điện khu vực.", partial_response=True
    )
    resolve = await intake.act(report_id, co_officer, "respond", text="Xong.")
    outsider = await intake.client.get(
        f"/v1/reports/{report_id}", headers=intake.staff("officer", agency=OTHER)
    )

    assert seen.status_code == 200
    assert seen.json()["co_agency_ids"] == [CO]
    assert "add_note" in seen.json()["allowed_actions"]
    assert "respond" not in seen.json()["allowed_actions"]
    assert report_id in [r["id"] for r in listed.json()["items"]]
    assert photo.status_code == 200
    assert note.status_code == 200, note.text
    assert note.json()["to"] == "in_progress"
    assert intake.problem(resolve, 403) == {"type"}
    assert intake.problem(outsider, 404) == {"report_id"}
    _, event = (await intake.outbox(report_id))[-1]
    assert event.payload.action == "add_note"
    assert event.payload.details["co_agency_ids"] == [CO]
