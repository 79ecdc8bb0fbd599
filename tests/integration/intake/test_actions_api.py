"""Lifecycle actions, the audit timeline and staff tokens, against a running intake app."""

from __future__ import annotations

import uuid

import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from intake.auth import dev_key_pair, issue_token

pytestmark = pytest.mark.integration

AGENCY = "ubnd-kinh-bac"
OTHER_AGENCY = "ubnd-vo-cuong"


async def state_of(intake, report_id: str) -> str:
    response = await intake.client.get(
        f"/v1/reports/{report_id}", headers=intake.staff("supervisor")
    )
    assert response.status_code == 200
    status: str = response.json()["status"]
    return status


async def in_progress(intake, *, agency: str = AGENCY) -> str:
    """A report screened, assigned to ``agency`` and acknowledged by its officer."""
    report_id: str = (await intake.submit())["id"]
    coordinator = intake.staff("coordinator")
    officer = intake.staff("officer", agency=agency)
    for staff, action, fields in (
        (coordinator, "screen", {}),
        (coordinator, "assign", {"agency_id": agency}),
        (officer, "acknowledge", {}),
    ):
        response = await intake.act(report_id, staff, action, **fields)
        assert response.status_code == 200, response.text
    return report_id


async def test_coordinator_and_agency_take_a_report_from_submitted_to_closed(intake):
    created = await intake.submit()
    report_id = created["id"]
    coordinator = intake.staff("coordinator", sub="ioc-lan")
    officer = intake.staff("officer", agency=AGENCY, sub="officer-minh")
    steps = [
        (coordinator, "screen", {}, "submitted", "screening"),
        (coordinator, "assign", {"agency_id": AGENCY}, "screening", "assigned"),
        (officer, "acknowledge", {}, "assigned", "in_progress"),
        (officer, "respond", {"text": "Đã vá ổ gà ngày 12/3."}, "in_progress", "resolved"),
        (coordinator, "publish", {}, "resolved", "published"),
        (coordinator, "close", {}, "published", "closed"),
    ]

    for staff, action, fields, before, after in steps:
        response = await intake.act(report_id, staff, action, **fields)
        assert response.status_code == 200, (action, response.text)
        body = response.json()
        assert (body["action"], body["from"], body["to"]) == (action, before, after)
        assert body["report"]["status"] == after

    public = await intake.client.get(f"/v1/reports/{report_id}")
    assert public.status_code == 200
    assert public.json()["status"] == "closed"
    assert public.json()["agency"]["id"] == AGENCY
    assert public.json()["response"] == "Đã vá ổ gà ngày 12/3."


async def test_response_is_hidden_from_the_public_until_published(intake):
    report_id = await in_progress(intake)
    officer = intake.staff("officer", agency=AGENCY)
    await intake.act(report_id, officer, "respond", text="Đã xử lý xong.")

    before = await intake.client.get(f"/v1/reports/{report_id}")
    await intake.act(report_id, intake.staff("coordinator"), "publish")
    after = await intake.client.get(f"/v1/reports/{report_id}")

    assert before.status_code == 200
    assert before.json()["response"] is None
    assert after.json()["response"] == "Đã xử lý xong."


async def test_illegal_action_is_409_with_current_state_and_allowed_actions(intake):
    report_id = (await intake.submit())["id"]
    outbox_before = await intake.count("outbox")

    as_coordinator = await intake.act(report_id, intake.staff("coordinator"), "publish")

    assert intake.problem(as_coordinator, 409) == {"type"}
    problem = as_coordinator.json()
    assert problem["current_state"] == "submitted"
    assert "screen" in problem["allowed_actions"]
    assert "publish" not in problem["allowed_actions"]
    assert await state_of(intake, report_id) == "submitted"
    assert await intake.count("outbox") == outbox_before
    assert await intake.count("report_timeline") == 1


async def test_officer_of_another_agency_cannot_act(intake):
    created = await intake.submit()
    report_id = created["id"]
    coordinator = intake.staff("coordinator")
    await intake.act(report_id, coordinator, "screen")
    await intake.act(report_id, coordinator, "assign", agency_id=AGENCY)

    other = await intake.act(report_id, intake.staff("officer", agency=OTHER_AGENCY), "acknowledge")
    other_leader = await intake.act(
        report_id, intake.staff("leader", agency=OTHER_AGENCY), "return", reason="Không phải"
    )

    assert intake.problem(other, 404) == {"report_id"}
    assert intake.problem(other_leader, 404) == {"report_id"}
    assert await state_of(intake, report_id) == "assigned"


async def test_role_without_the_right_is_403(intake):
    report_id = (await intake.submit())["id"]
    coordinator = intake.staff("coordinator")
    await intake.act(report_id, coordinator, "screen")
    await intake.act(report_id, coordinator, "assign", agency_id=AGENCY)

    coordinator_acknowledges = await intake.act(report_id, coordinator, "acknowledge")
    supervisor_returns = await intake.act(
        report_id, intake.staff("supervisor"), "return", reason="Không thuộc thẩm quyền"
    )

    assert intake.problem(coordinator_acknowledges, 403) == {"type"}
    assert intake.problem(supervisor_returns, 403) == {"type"}
    assert await state_of(intake, report_id) == "assigned"


async def test_leader_approves_a_response_that_needs_approval(intake):
    report_id = await in_progress(intake)
    # No API sets this flag yet; the column is how the product expresses the rule.
    async with intake.pool.acquire() as conn:
        await conn.execute(
            "UPDATE reports SET requires_leader_approval = true WHERE id = $1",
            uuid.UUID(report_id),
        )
    officer = intake.staff("officer", agency=AGENCY)
    leader = intake.staff("leader", agency=AGENCY, sub="leader-hoa")

    drafted = await intake.act(report_id, officer, "respond", text="Dự thảo trả lời.")
    officer_approves = await intake.act(report_id, officer, "approve_response")
    other_leader = await intake.act(
        report_id, intake.staff("leader", agency=OTHER_AGENCY), "approve_response"
    )
    approved = await intake.act(report_id, leader, "approve_response")

    assert drafted.status_code == 200
    assert drafted.json()["to"] == "pending_approval"
    assert intake.problem(officer_approves, 403) == {"type"}
    assert other_leader.status_code == 404
    assert approved.status_code == 200
    assert (approved.json()["from"], approved.json()["to"]) == ("pending_approval", "resolved")


async def test_leader_sends_a_draft_back_to_the_officer(intake):
    report_id = await in_progress(intake)
    async with intake.pool.acquire() as conn:
        await conn.execute(
            "UPDATE reports SET requires_leader_approval = true WHERE id = $1",
            uuid.UUID(report_id),
        )
    await intake.act(report_id, intake.staff("officer", agency=AGENCY), "respond", text="Bản nháp.")

    sent_back = await intake.act(
        report_id, intake.staff("leader", agency=AGENCY), "send_back", reason="Thiếu ảnh."
    )

    assert sent_back.status_code == 200
    assert (sent_back.json()["from"], sent_back.json()["to"]) == (
        "pending_approval",
        "in_progress",
    )


async def test_reject_needs_a_reason_code(intake):
    report_id = (await intake.submit())["id"]
    coordinator = intake.staff("coordinator")
    await intake.act(report_id, coordinator, "screen")

    without = await intake.act(report_id, coordinator, "reject")
    unknown = await intake.act(report_id, coordinator, "reject", reason_code="boring")
    rejected = await intake.act(report_id, coordinator, "reject", reason_code="spam")

    assert any("reason_code" in field for field in intake.problem(without, 422))
    assert any("reason_code" in field for field in intake.problem(unknown, 422))
    assert rejected.status_code == 200
    assert rejected.json()["to"] == "rejected"
    timeline = await intake.client.get(f"/v1/reports/{report_id}/timeline", headers=coordinator)
    assert timeline.json()[-1]["reason"] == "spam"


@pytest.mark.parametrize(
    "payload",
    [{}, {"type": "fly"}, {"type": "assign"}, {"type": "screen", "surprise": 1}],
    ids=["no-type", "unknown-type", "missing-field", "extra-field"],
)
async def test_malformed_action_is_422_naming_the_field(intake, payload):
    report_id = (await intake.submit())["id"]

    response = await intake.client.post(
        f"/v1/reports/{report_id}/actions", json=payload, headers=intake.staff("coordinator")
    )

    intake.problem(response, 422)
    assert await state_of(intake, report_id) == "submitted"


async def test_action_text_with_nul_is_422_not_500(intake):
    report_id = (await intake.submit())["id"]

    response = await intake.act(report_id, intake.staff("coordinator"), "screen", note="a\x00b")

    assert intake.problem(response, 422) == {"note"}
    assert await state_of(intake, report_id) == "submitted"


async def test_merge_needs_an_existing_open_master(intake):
    coordinator = intake.staff("coordinator")
    master = (await intake.submit())["id"]
    rejected_master = (await intake.submit())["id"]
    await intake.act(rejected_master, coordinator, "screen")
    await intake.act(rejected_master, coordinator, "reject", reason_code="spam")
    duplicate = (await intake.submit())["id"]
    await intake.act(duplicate, coordinator, "screen")

    attempts = {
        value: await intake.act(duplicate, coordinator, "merge", duplicate_of=value)
        for value in ("not-a-uuid", str(uuid.uuid4()), duplicate, rejected_master)
    }
    merged = await intake.act(duplicate, coordinator, "merge", duplicate_of=master)

    for value, response in attempts.items():
        assert intake.problem(response, 422) == {"duplicate_of"}, value
    assert merged.status_code == 200
    assert merged.json()["to"] == "merged"
    assert merged.json()["report"]["duplicate_of"] == master


async def test_action_on_unknown_report_is_404(intake):
    response = await intake.act(str(uuid.uuid4()), intake.staff("coordinator"), "screen")

    assert intake.problem(response, 404) == {"report_id"}


# --- timeline and events -----------------------------------------------------------------


async def run_lifecycle(intake) -> str:
    report_id: str = (await intake.submit())["id"]
    coordinator = intake.staff("coordinator", sub="ioc-lan")
    officer = intake.staff("officer", agency=AGENCY, sub="officer-minh")
    for staff, action, fields in (
        (coordinator, "screen", {}),
        (coordinator, "assign", {"agency_id": AGENCY}),
        (officer, "acknowledge", {}),
        (officer, "respond", {"text": "Đã xử lý."}),
        (coordinator, "publish", {}),
        (coordinator, "close", {}),
    ):
        response = await intake.act(report_id, staff, action, **fields)
        assert response.status_code == 200, response.text
    return report_id


async def test_every_transition_appears_once_in_the_timeline_with_its_actor(intake):
    report_id = await run_lifecycle(intake)

    response = await intake.client.get(
        f"/v1/reports/{report_id}/timeline", headers=intake.staff("coordinator")
    )

    assert response.status_code == 200
    rows = response.json()
    assert [
        (r["action"], r["from_state"], r["to_state"], r["actor_role"], r["actor_subject"])
        for r in rows
    ] == [
        ("submit", "", "submitted", "reporter", "app:demo-app"),
        ("screen", "submitted", "screening", "coordinator", "ioc-lan"),
        ("assign", "screening", "assigned", "coordinator", "ioc-lan"),
        ("acknowledge", "assigned", "in_progress", "officer", "officer-minh"),
        ("respond", "in_progress", "resolved", "officer", "officer-minh"),
        ("publish", "resolved", "published", "coordinator", "ioc-lan"),
        ("close", "published", "closed", "coordinator", "ioc-lan"),
    ]
    assert [r["actor_agency_id"] for r in rows] == [None, None, None, AGENCY, AGENCY, None, None]
    assert all(r["at"].endswith("+07:00") for r in rows)


async def test_agency_staff_see_the_reporter_masked_in_the_timeline(intake):
    report_id = await in_progress(intake)

    response = await intake.client.get(
        f"/v1/reports/{report_id}/timeline", headers=intake.staff("officer", agency=AGENCY)
    )

    assert response.status_code == 200
    assert response.json()[0]["actor_subject"] == "reporter"


async def test_each_transition_writes_one_report_transitioned_event(intake):
    report_id = await run_lifecycle(intake)

    events = await intake.outbox(report_id)

    types = [headers["ce_type"] for headers, _ in events]
    assert types[0].endswith("report.submitted.v1")
    assert all(t.endswith("report.transitioned.v1") for t in types[1:])
    transitions = [envelope.payload for _, envelope in events[1:]]
    assert [(p.action, p.from_state, p.to_state) for p in transitions] == [
        ("screen", "submitted", "screening"),
        ("assign", "screening", "assigned"),
        ("acknowledge", "assigned", "in_progress"),
        ("respond", "in_progress", "resolved"),
        ("publish", "resolved", "published"),
        ("close", "published", "closed"),
    ]
    assert all(headers["ce_subject"] == report_id for headers, _ in events)
    assert len({envelope.event_id for _, envelope in events}) == len(events)
    async with intake.pool.acquire() as conn:
        timeline_ids = await conn.fetch(
            "SELECT event_id FROM report_timeline WHERE report_id = $1 ORDER BY id",
            uuid.UUID(report_id),
        )
    assert [r["event_id"] for r in timeline_ids] == [e.event_id for _, e in events]


async def test_timeline_is_append_only(intake):
    report_id = await in_progress(intake)

    async with intake.pool.acquire() as conn:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE report_timeline SET reason = 'rewritten'")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM report_timeline")
        rows = await conn.fetchval(
            "SELECT count(*) FROM report_timeline WHERE report_id = $1 AND reason IS NULL",
            uuid.UUID(report_id),
        )
    assert rows == 4


# --- staff tokens ------------------------------------------------------------------------


def foreign_key_token(intake) -> str:
    return issue_token(
        ec.generate_private_key(ec.SECP256R1()),
        subject="mallory",
        role="coordinator",
        agency_id=None,
        issuer=intake.settings.jwt_issuer,
        audience=intake.settings.jwt_audience,
    )


BAD_TOKENS = {
    "garbage": lambda intake: "not.a.jwt",
    "expired": lambda intake: intake.token("coordinator", ttl=-60),
    "foreign-key": foreign_key_token,
    "wrong-audience": lambda intake: issue_token(
        dev_key_pair(intake.key_dir)[0],
        subject="x",
        role="coordinator",
        agency_id=None,
        issuer=intake.settings.jwt_issuer,
        audience="someone-else",
    ),
    "hs256": lambda intake: jwt.encode(
        {"sub": "x", "role": "coordinator", "exp": 4_000_000_000}, "secret", algorithm="HS256"
    ),
    "not-staff-role": lambda intake: intake.token("reporter"),
    "officer-without-agency": lambda intake: intake.token("officer"),
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_invalid_staff_token_is_401(intake, kind):
    report_id = (await intake.submit())["id"]
    headers = {"Authorization": f"Bearer {BAD_TOKENS[kind](intake)}"}

    listing = await intake.client.get("/v1/reports", headers=headers)
    acting = await intake.act(report_id, headers, "screen")
    reading = await intake.client.get(f"/v1/reports/{report_id}", headers=headers)

    assert intake.problem(listing, 401) == {"Authorization"}
    assert intake.problem(acting, 401) == {"Authorization"}
    assert intake.problem(reading, 401) == {"Authorization"}
    assert await state_of(intake, report_id) == "submitted"


async def test_authorization_header_without_bearer_is_401(intake):
    response = await intake.client.get(
        "/v1/reports", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"}
    )

    assert intake.problem(response, 401) == {"Authorization"}
