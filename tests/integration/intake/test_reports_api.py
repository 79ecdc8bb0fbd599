"""POST /v1/reports and the read side, against a running intake app (real PostgreSQL + Kafka)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from intake import repository

pytestmark = pytest.mark.integration

METRES_PER_DEGREE_LAT = 111_320.0
POINT = {"lat": 21.1861, "lon": 106.0763}


def north_of(point: dict[str, float], metres: float) -> dict[str, float]:
    return {"lat": point["lat"] + metres / METRES_PER_DEGREE_LAT, "lon": point["lon"]}


# --- submit ------------------------------------------------------------------------------


async def test_submit_answers_202_with_id_number_and_location(intake):
    response = await intake.client.post(
        "/v1/reports", json=intake.body(), headers=intake.app_headers
    )

    assert response.status_code == 202, response.text
    body = response.json()
    report_id = str(uuid.UUID(body["id"]))
    submitted = datetime.fromisoformat(body["submitted_at"])
    assert re.fullmatch(rf"BN-{submitted.astimezone(UTC).year}-\d{{6}}", body["number"])
    assert body["status"] == "submitted"
    assert response.headers["location"] == f"/v1/reports/{report_id}"
    stored = await intake.client.get(response.headers["location"])
    assert stored.status_code == 200
    assert stored.json()["number"] == body["number"]


async def test_reports_get_distinct_numbers(intake):
    first = await intake.submit()
    second = await intake.submit()

    assert first["number"] != second["number"]
    assert first["id"] != second["id"]


async def test_description_sent_in_nfd_is_stored_in_nfc(intake):
    nfc = "Đèn đường hỏng ở ngõ 5 phố Nguyễn Văn Cừ"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc

    created = await intake.submit(description=nfd)

    view = await intake.client.get(
        f"/v1/reports/{created['id']}", headers=intake.staff("coordinator")
    )
    assert view.status_code == 200
    assert view.json()["description"] == nfc
    async with intake.pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT description FROM reports WHERE id = $1", uuid.UUID(created["id"])
        )
    assert stored == nfc


async def test_replay_with_same_idempotency_key_answers_200_with_the_same_report(intake):
    body = intake.body()
    headers = {**intake.app_headers, "Idempotency-Key": "k-" + uuid.uuid4().hex}

    first = await intake.client.post("/v1/reports", json=body, headers=headers)
    replay = await intake.client.post("/v1/reports", json=body, headers=headers)

    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    assert replay.json()["number"] == first.json()["number"]
    assert replay.headers["location"] == first.headers["location"]
    assert await intake.count("reports") == 1
    assert await intake.count("outbox") == 1


async def test_same_idempotency_key_with_another_body_is_409_problem(intake):
    headers = {**intake.app_headers, "Idempotency-Key": "k-" + uuid.uuid4().hex}
    first = await intake.client.post("/v1/reports", json=intake.body(), headers=headers)

    other = await intake.client.post(
        "/v1/reports", json=intake.body(description="Một nội dung khác hẳn."), headers=headers
    )

    assert first.status_code == 202
    assert intake.problem(other, 409) == {"Idempotency-Key"}
    assert other.json()["report_id"] == first.json()["id"]
    assert await intake.count("reports") == 1


async def test_empty_idempotency_key_is_422(intake):
    headers = {**intake.app_headers, "Idempotency-Key": ""}

    first = await intake.client.post("/v1/reports", json=intake.body(), headers=headers)
    second = await intake.client.post("/v1/reports", json=intake.body(), headers=headers)

    assert intake.problem(first, 422) == {"Idempotency-Key"}
    assert intake.problem(second, 422) == {"Idempotency-Key"}
    assert await intake.count("reports") == 0


async def test_same_client_report_id_returns_the_same_report(intake):
    body = intake.body()

    first = await intake.client.post("/v1/reports", json=body, headers=intake.app_headers)
    again = await intake.client.post("/v1/reports", json=body, headers=intake.app_headers)

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert await intake.count("reports") == 1


async def test_same_client_report_id_with_another_body_is_409(intake):
    body = intake.body()
    first = await intake.client.post("/v1/reports", json=body, headers=intake.app_headers)

    other = await intake.client.post(
        "/v1/reports", json={**body, "urgency": "urgent"}, headers=intake.app_headers
    )

    assert first.status_code == 202
    assert other.status_code == 409
    assert other.json()["report_id"] == first.json()["id"]
    assert await intake.count("reports") == 1


# --- API keys ----------------------------------------------------------------------------


async def test_missing_api_key_is_401(intake):
    response = await intake.client.post("/v1/reports", json=intake.body())

    assert intake.problem(response, 401) == {"X-API-Key"}
    assert await intake.count("reports") == 0


async def test_unknown_api_key_is_401(intake):
    response = await intake.client.post(
        "/v1/reports", json=intake.body(), headers={"X-API-Key": "paht_not-a-key"}
    )

    assert intake.problem(response, 401) == {"X-API-Key"}


async def until_refused(intake, headers, *, within: float):  # type: ignore[no-untyped-def]
    """Post until the key is refused; the refusal and how many posts it let through before."""
    accepted = 0
    async with asyncio.timeout(within):
        while True:
            response = await intake.client.post("/v1/reports", json=intake.body(), headers=headers)
            if response.status_code != 202:
                return response, accepted
            accepted += 1
            await asyncio.sleep(0.05)  # between polls of the condition, not a synchronisation


async def test_revoked_api_key_is_401(intake):
    key_id, key = await intake.new_key()
    before = await intake.client.post("/v1/reports", json=intake.body(), headers={"X-API-Key": key})
    async with intake.pool.acquire() as conn:
        # revoked in the database, as the CLI or another process does: the app had the key
        # cached, and the table's NOTIFY must drop it (the 60 s cache would otherwise hold)
        assert await repository.revoke_key(conn, key_id=key_id)
    # the notification travels asynchronously: wait for the refusal itself, well inside the
    # cache's lifetime, so only the NOTIFY can have dropped the key
    after, accepted_meanwhile = await until_refused(intake, {"X-API-Key": key}, within=20.0)

    assert intake.settings.api_key_cache_seconds >= 30
    assert before.status_code == 202
    assert intake.problem(after, 401) == {"X-API-Key"}
    assert await intake.count("reports") == 1 + accepted_meanwhile


async def test_an_expired_key_is_401(intake):
    key_id, key = await intake.new_key()
    async with intake.pool.acquire() as conn:
        await conn.execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", key_id
        )

    response = await intake.client.post(
        "/v1/reports", json=intake.body(), headers={"X-API-Key": key}
    )

    assert intake.problem(response, 401) == {"X-API-Key"}  # never cached: refused at once


async def test_a_cached_key_stops_working_when_it_expires(intake):
    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    _, key = await intake.new_key(expires_at=expires_at)
    headers = {"X-API-Key": key}

    before = await intake.client.post("/v1/reports", json=intake.body(), headers=headers)
    after, _ = await until_refused(intake, headers, within=10.0)
    refused_at = datetime.now(UTC)

    assert intake.settings.api_key_cache_seconds > 10  # the cache alone would still hold it
    assert before.status_code == 202
    assert refused_at >= expires_at
    assert intake.problem(after, 401) == {"X-API-Key"}


async def test_key_without_reports_write_scope_is_403(intake):
    _, key = await intake.new_key(scopes=("reports:read",))

    response = await intake.client.post(
        "/v1/reports", json=intake.body(), headers={"X-API-Key": key}
    )

    assert intake.problem(response, 403) == {"X-API-Key"}
    assert await intake.count("reports") == 0


async def test_a_key_has_one_rate_budget_across_v1_and_open311(intake):
    _, key = await intake.new_key(rate=2)

    first = await intake.client.post("/v1/reports", json=intake.body(), headers={"X-API-Key": key})
    second = await intake.client.post("/v1/reports", json=intake.body(), headers={"X-API-Key": key})
    body = intake.body()
    open311 = await intake.client.post(
        "/open311/v2/requests.json",
        data={
            "api_key": key,
            "service_code": body["category"],
            "lat": body["location"]["lat"],
            "long": body["location"]["lon"],
            "description": body["description"],
        },
    )

    assert (first.status_code, second.status_code) == (202, 202)
    assert open311.status_code == 429
    assert int(open311.headers["retry-after"]) >= 1


async def test_key_over_its_rate_answers_429_with_retry_after(intake):
    _, key = await intake.new_key(rate=2)
    headers = {"X-API-Key": key}

    statuses = [
        (await intake.client.post("/v1/reports", json=intake.body(), headers=headers)).status_code
        for _ in range(2)
    ]
    limited = await intake.client.post("/v1/reports", json=intake.body(), headers=headers)

    assert statuses == [202, 202]
    assert intake.problem(limited, 429) == {"X-API-Key"}
    assert int(limited.headers["retry-after"]) >= 1
    assert await intake.count("reports") == 2
    other_app = await intake.client.post(
        "/v1/reports", json=intake.body(), headers=intake.app_headers
    )
    assert other_app.status_code == 202


# --- rejected submissions ----------------------------------------------------------------


async def assert_nothing_written(intake) -> None:
    for table in ("reports", "reporters", "report_timeline", "outbox"):
        assert await intake.count(table) == 0, table


async def test_unknown_category_is_422_naming_category_and_writes_nothing(intake):
    response = await intake.client.post(
        "/v1/reports", json=intake.body(category="INFRA.NO_SUCH"), headers=intake.app_headers
    )

    assert intake.problem(response, 422) == {"category"}
    await assert_nothing_written(intake)


async def test_point_outside_bac_ninh_is_422_naming_location(intake):
    ho_chi_minh_city = {"lat": 10.7769, "lon": 106.7009}

    response = await intake.client.post(
        "/v1/reports", json=intake.body(location=ho_chi_minh_city), headers=intake.app_headers
    )

    assert intake.problem(response, 422) == {"location"}
    await assert_nothing_written(intake)


async def test_commune_of_another_province_is_422(intake):
    hoan_kiem_hanoi = "00070"

    response = await intake.client.post(
        "/v1/reports",
        json=intake.body(location={**POINT, "commune_code": hoan_kiem_hanoi}),
        headers=intake.app_headers,
    )

    assert intake.problem(response, 422) == {"location.commune_code"}
    await assert_nothing_written(intake)


async def test_lat_without_lon_is_422_naming_location(intake):
    response = await intake.client.post(
        "/v1/reports", json=intake.body(location={"lat": 21.18}), headers=intake.app_headers
    )

    assert intake.problem(response, 422) == {"location"}
    await assert_nothing_written(intake)


@pytest.mark.parametrize(
    "description",
    [
        "x" * 4001,
        "Ổ gà <b>rất</b> to",
        "<script>alert(1)</script>",
        "có ký tự điều khiển \x07",
        "   \n\n  ",
    ],
    ids=["over-4000-chars", "html-tag", "script", "control-char", "blank"],
)
async def test_invalid_description_is_422_naming_description(intake, description):
    response = await intake.client.post(
        "/v1/reports", json=intake.body(description=description), headers=intake.app_headers
    )

    assert intake.problem(response, 422) == {"description"}
    await assert_nothing_written(intake)


async def test_description_of_exactly_4000_chars_is_accepted(intake):
    created = await intake.submit(description="ổ" * 4000)

    assert created["status"] == "submitted"


@pytest.mark.parametrize(
    ("field", "body_change"),
    [
        ("location.address", {"location": {**POINT, "address": "số 1\x00"}}),
        ("reporter.name", {"reporter": {"name": "An\x00"}}),
        ("client_report_id", {"client_report_id": "abc\x00"}),
    ],
)
async def test_text_with_nul_is_422_not_500(intake, field, body_change):
    response = await intake.client.post(
        "/v1/reports", json=intake.body(**body_change), headers=intake.app_headers
    )

    assert intake.problem(response, 422) == {field}
    await assert_nothing_written(intake)


async def test_body_over_max_body_bytes_is_413(intake):
    body = intake.body(description="a" * (intake.settings.max_body_bytes + 1))

    response = await intake.client.post("/v1/reports", json=body, headers=intake.app_headers)

    assert intake.problem(response, 413) == {"body"}
    await assert_nothing_written(intake)


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_chunked_body_over_max_body_bytes_is_413(intake):
    padding = " " * (intake.settings.max_body_bytes + 1)
    data = (padding + json.dumps(intake.body())).encode()

    response = await intake.client.post(
        "/v1/reports",
        content=chunks(data),
        headers={**intake.app_headers, "Content-Type": "application/json"},
    )

    assert response.request.headers.get("content-length") is None
    assert intake.problem(response, 413) == {"body"}
    await assert_nothing_written(intake)


async def test_chunked_body_under_the_limit_is_accepted(intake):
    data = json.dumps(intake.body()).encode()

    response = await intake.client.post(
        "/v1/reports",
        content=chunks(data, size=50),
        headers={**intake.app_headers, "Content-Type": "application/json"},
    )

    assert response.request.headers.get("content-length") is None
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("text/plain", "json"),
        ("application/x-www-form-urlencoded", "category=INFRA.ROAD&description=abc"),
        ("application/xml", "<report><category>INFRA.ROAD</category></report>"),
        ("application/json", "{not json"),
        ("application/json", ""),
        ("application/json", "[]"),
    ],
    ids=["text-plain", "form", "xml", "malformed-json", "empty", "array"],
)
async def test_wrong_content_type_or_malformed_body_is_4xx_problem(intake, content_type, content):
    data = json.dumps(intake.body()) if content == "json" else content

    response = await intake.client.post(
        "/v1/reports",
        content=data.encode(),
        headers={**intake.app_headers, "Content-Type": content_type},
    )

    assert 400 <= response.status_code < 500, response.text
    intake.problem(response, response.status_code)
    await assert_nothing_written(intake)


# --- what an accepted report writes ------------------------------------------------------


async def test_accepted_report_writes_report_timeline_and_report_submitted_outbox_row(intake):
    created = await intake.submit()

    events = await intake.outbox(created["id"])

    assert len(events) == 1
    headers, envelope = events[0]
    assert headers["ce_type"].endswith("report.submitted.v1")
    assert headers["ce_subject"] == created["id"]
    assert str(envelope.payload.report_id) == created["id"]
    assert envelope.payload.number == created["number"]
    async with intake.pool.acquire() as conn:
        timeline_event = await conn.fetchval(
            "SELECT event_id FROM report_timeline WHERE report_id = $1",
            uuid.UUID(created["id"]),
        )
    assert timeline_event == envelope.event_id


async def test_outbox_event_carries_no_reporter_identity(intake):
    created = await intake.submit(reporter={"name": "Trần Thị Bình", "phone": "0987654321"})

    [(_, envelope)] = await intake.outbox(created["id"])

    serialized = envelope.model_dump_json()
    assert "Trần Thị Bình" not in serialized
    assert "0987654321" not in serialized


# --- flags -------------------------------------------------------------------------------


async def flags_of(intake, report_id: str) -> dict[str, object]:
    view = await intake.client.get(f"/v1/reports/{report_id}", headers=intake.staff("coordinator"))
    assert view.status_code == 200
    body: dict[str, object] = view.json()
    return body


async def test_same_category_within_50_m_is_flagged_possible_duplicate(intake):
    first = await intake.submit(location=POINT)
    near = await intake.submit(location=north_of(POINT, 20))
    far = await intake.submit(location=north_of(POINT, -80))
    other_category = await intake.submit(category="INFRA.LIGHTING", location=north_of(POINT, 10))

    near_view = await flags_of(intake, near["id"])
    assert "possible_duplicate" in near_view["flags"]
    assert near_view["possible_duplicates"] == [first["id"]]
    for report in (first, far, other_category):
        view = await flags_of(intake, report["id"])
        assert "possible_duplicate" not in view["flags"], report
        assert view["possible_duplicates"] == []


async def test_phone_number_in_description_is_flagged(intake):
    with_phone = await intake.submit(description="Cống tắc, gọi tôi 0912 345 678 nhé.")
    without = await intake.submit(description="Cống tắc ở đầu ngõ.", location=north_of(POINT, 500))

    assert "phone_number" in (await flags_of(intake, with_phone["id"]))["flags"]
    assert (await flags_of(intake, without["id"]))["flags"] == []


# --- reading one report ------------------------------------------------------------------


async def assign(intake, report_id: str, agency: str) -> None:
    coordinator = intake.staff("coordinator")
    assert (await intake.act(report_id, coordinator, "screen")).status_code == 200
    assigned = await intake.act(report_id, coordinator, "assign", agency_id=agency)
    assert assigned.status_code == 200, assigned.text


async def test_public_view_has_no_reporter_and_no_flags(intake):
    created = await intake.submit(description="Gọi 0912345678 khi cần.")

    response = await intake.client.get(f"/v1/reports/{created['id']}")

    assert response.status_code == 200
    view = response.json()
    assert view["id"] == created["id"]
    for private in ("reporter", "flags", "client_report_id", "source_app", "allowed_actions"):
        assert private not in view
    assert "Nguyễn Văn An" not in response.text
    assert view["description"] is None  # it carries a phone number
    assert "0912345678" not in response.text


async def test_public_view_shows_an_ordinary_description(intake):
    created = await intake.submit(description="Ổ gà lớn trên đường Nguyễn Văn Cừ")

    response = await intake.client.get(f"/v1/reports/{created['id']}")

    assert response.status_code == 200
    assert response.json()["description"] == "Ổ gà lớn trên đường Nguyễn Văn Cừ"


async def test_coordinator_sees_the_reporter(intake):
    created = await intake.submit(reporter={"name": "Lê Văn Cường", "phone": "0912345678"})

    response = await intake.client.get(
        f"/v1/reports/{created['id']}", headers=intake.staff("coordinator")
    )

    assert response.status_code == 200
    assert response.json()["reporter"]["name"] == "Lê Văn Cường"
    assert response.json()["reporter"]["phone"] == "0912345678"
    assert response.json()["allowed_actions"] == ["screen"]


async def test_officer_of_another_agency_gets_404(intake):
    created = await intake.submit()
    await assign(intake, created["id"], "ubnd-kinh-bac")
    own = intake.staff("officer", agency="ubnd-kinh-bac")
    other = intake.staff("officer", agency="ubnd-vo-cuong")

    mine = await intake.client.get(f"/v1/reports/{created['id']}", headers=own)
    theirs = await intake.client.get(f"/v1/reports/{created['id']}", headers=other)
    their_timeline = await intake.client.get(f"/v1/reports/{created['id']}/timeline", headers=other)

    assert mine.status_code == 200
    assert "reporter" not in mine.json()
    assert intake.problem(theirs, 404) == {"report_id"}
    assert intake.problem(their_timeline, 404) == {"report_id"}


async def test_officer_cannot_read_an_unassigned_report(intake):
    created = await intake.submit()

    response = await intake.client.get(
        f"/v1/reports/{created['id']}", headers=intake.staff("officer", agency="ubnd-kinh-bac")
    )

    assert response.status_code == 404


async def test_supervisor_reads_any_report_without_the_reporter(intake):
    created = await intake.submit()
    await assign(intake, created["id"], "ubnd-kinh-bac")

    response = await intake.client.get(
        f"/v1/reports/{created['id']}", headers=intake.staff("supervisor")
    )

    assert response.status_code == 200
    assert response.json()["agency"]["id"] == "ubnd-kinh-bac"
    assert "reporter" not in response.json()


async def test_unknown_report_is_404_and_malformed_id_is_422(intake):
    missing = await intake.client.get(f"/v1/reports/{uuid.uuid4()}")
    malformed = await intake.client.get("/v1/reports/not-a-uuid")

    assert intake.problem(missing, 404) == {"report_id"}
    assert intake.problem(malformed, 422) == {"report_id"}


# --- listing -----------------------------------------------------------------------------


async def list_ids(intake, headers: dict[str, str], **params: object) -> list[str]:
    response = await intake.client.get("/v1/reports", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_list_needs_a_staff_token(intake):
    await intake.submit()

    response = await intake.client.get("/v1/reports")

    assert intake.problem(response, 401) == {"Authorization"}


async def test_list_filters_by_status_category_agency_and_commune(intake):
    coordinator = intake.staff("coordinator")
    road = await intake.submit()
    light = await intake.submit(
        category="INFRA.LIGHTING", location={**north_of(POINT, 500), "commune_code": "09190"}
    )
    assigned = await intake.submit(category="INFRA.DRAINAGE", location=north_of(POINT, 900))
    await assign(intake, assigned["id"], "ubnd-kinh-bac")

    assert await list_ids(intake, coordinator, status="assigned") == [assigned["id"]]
    assert set(await list_ids(intake, coordinator, status="submitted")) == {
        road["id"],
        light["id"],
    }
    assert await list_ids(intake, coordinator, category="INFRA.LIGHTING") == [light["id"]]
    both = await list_ids(intake, coordinator, category=["INFRA.LIGHTING", "INFRA.ROAD"])
    assert set(both) == {light["id"], road["id"]}
    assert await list_ids(intake, coordinator, agency="ubnd-kinh-bac") == [assigned["id"]]
    assert await list_ids(intake, coordinator, commune="09190") == [light["id"]]
    assert await list_ids(intake, coordinator) == [assigned["id"], light["id"], road["id"]]


async def test_list_filters_overdue(intake):
    coordinator = intake.staff("coordinator")
    late = await intake.submit()
    on_time = await intake.submit(location=north_of(POINT, 300))
    async with intake.pool.acquire() as conn:
        await repository.set_overdue(conn, report_id=uuid.UUID(late["id"]), at=datetime.now(UTC))

    assert await list_ids(intake, coordinator, overdue="true") == [late["id"]]
    assert await list_ids(intake, coordinator, overdue="false") == [on_time["id"]]


async def test_list_filters_by_submission_time(intake):
    coordinator = intake.staff("coordinator")
    first, second, third = [
        await intake.submit(location=north_of(POINT, 200 * i)) for i in range(3)
    ]

    since = await list_ids(intake, coordinator, since=second["submitted_at"])
    until = await list_ids(intake, coordinator, until=second["submitted_at"])
    window = await list_ids(
        intake, coordinator, since=second["submitted_at"], until=third["submitted_at"]
    )

    assert since == [third["id"], second["id"]]
    assert until == [first["id"]]
    assert window == [second["id"]]


async def test_list_refuses_naive_or_out_of_range_times(intake):
    coordinator = intake.staff("coordinator")

    naive = await intake.client.get(
        "/v1/reports", params={"since": "2026-01-01T00:00:00"}, headers=coordinator
    )
    too_early = await intake.client.get(
        "/v1/reports", params={"since": "0001-01-01T00:00:00+07:00"}, headers=coordinator
    )
    too_late = await intake.client.get(
        "/v1/reports", params={"until": "9999-12-31T23:59:59-05:00"}, headers=coordinator
    )

    assert intake.problem(naive, 422) == {"since"}
    assert intake.problem(too_early, 422) == {"since"}
    assert intake.problem(too_late, 422) == {"until"}


async def test_text_search_ignores_diacritics_and_case(intake):
    coordinator = intake.staff("coordinator")
    match = await intake.submit(description="Ổ gà sâu trên đường Nguyễn Văn Cừ, gần chợ.")
    await intake.submit(description="Cây đổ chắn lối đi.", location=north_of(POINT, 300))

    assert await list_ids(intake, coordinator, q="duong nguyen van cu") == [match["id"]]
    assert await list_ids(intake, coordinator, q="Đường Nguyễn Văn Cừ") == [match["id"]]
    assert await list_ids(intake, coordinator, q="DUONG NGUYEN") == [match["id"]]
    assert await list_ids(intake, coordinator, q="nguyen trai") == []


async def test_text_search_finds_the_address(intake):
    coordinator = intake.staff("coordinator")
    match = await intake.submit(
        location={**POINT, "address": "Số 12 phố Hàn Thuyên"}, description="Rác ùn ứ."
    )

    assert await list_ids(intake, coordinator, q="han thuyen") == [match["id"]]


async def test_cursor_paging_returns_every_report_once_in_order(intake):
    coordinator = intake.staff("coordinator")
    created = [await intake.submit(location=north_of(POINT, 100 * i)) for i in range(7)]
    tied = [uuid.UUID(r["id"]) for r in created[1:5]]
    async with intake.pool.acquire() as conn:
        await conn.execute(
            "UPDATE reports SET submitted_at = (SELECT min(submitted_at) FROM reports) "
            "WHERE id = ANY($1::uuid[])",
            tied,
        )
    expected = await list_ids(intake, coordinator, limit=200)

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = await intake.client.get("/v1/reports", params=params, headers=coordinator)
        assert response.status_code == 200
        page = response.json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert sorted(seen) == sorted(r["id"] for r in created)
    assert seen == expected
    assert pages == 4


def encoded(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "bm90LWEtY3Vyc29y",
        "!!!",
        encoded(["2026-03-01T00:00:00+07:00", 5]),
        encoded([5, str(uuid.uuid4())]),
        encoded(["2026-03-01T00:00:00", str(uuid.uuid4())]),
        encoded(["0001-01-01T00:00:00+07:00", str(uuid.uuid4())]),
        encoded({"at": 1}),
    ],
    ids=["not-json", "not-base64", "int-id", "int-instant", "naive", "year-1", "object"],
)
async def test_forged_cursor_is_400_naming_cursor(intake, cursor):
    response = await intake.client.get(
        "/v1/reports", params={"cursor": cursor}, headers=intake.staff("coordinator")
    )

    assert intake.problem(response, 400) == {"cursor"}


@pytest.mark.parametrize("param", ["q", "category", "agency"])
async def test_list_parameter_with_nul_is_422_not_500(intake, param):
    response = await intake.client.get(
        "/v1/reports", params={param: "a\x00b"}, headers=intake.staff("coordinator")
    )

    assert response.status_code == 422
    assert any(field.startswith(param) for field in intake.problem(response, 422))


async def test_officer_lists_only_their_agency(intake):
    mine = await intake.submit()
    theirs = await intake.submit(location=north_of(POINT, 400))
    await intake.submit(location=north_of(POINT, 800))
    await assign(intake, mine["id"], "ubnd-kinh-bac")
    await assign(intake, theirs["id"], "ubnd-vo-cuong")
    officer = intake.staff("officer", agency="ubnd-kinh-bac")

    listed = await list_ids(intake, officer)
    other_agency = await intake.client.get(
        "/v1/reports", params={"agency": "ubnd-vo-cuong"}, headers=officer
    )

    assert listed == [mine["id"]]
    assert intake.problem(other_agency, 403) == {"agency"}
    assert len(await list_ids(intake, intake.staff("supervisor"))) == 3


async def test_http_metrics_are_labelled_by_route_template(intake):
    created = await intake.submit()
    await intake.client.get(f"/v1/reports/{created['id']}")

    metrics = await intake.client.get("/metrics")

    assert metrics.status_code == 200
    assert 'intake_http_requests_total{method="POST",route="/v1/reports",status="202"}' in (
        metrics.text
    )
    assert 'route="/v1/reports/{report_id}"' in metrics.text
    assert created["id"] not in metrics.text  # ids never become label values
