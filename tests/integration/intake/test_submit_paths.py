"""POST /v1/reports beyond plain JSON: multipart with media in one request, group commit
under concurrency, malformed bodies (real PostgreSQL + Kafka)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import uuid

import asyncpg
import av
import pytest
from PIL import Image

from intake import media
from intake.handlers import IntakeContext, Submission, SubmitResult, request_hash
from intake.schemas import ReportIn
from paht_common.clock import SystemClock
from paht_common.testing import random_id

pytestmark = pytest.mark.integration


def jpeg(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, format="JPEG")
    return out.getvalue()


async def post_multipart(intake, report, files, *, headers=None):
    parts = [("report", (None, json.dumps(report), "application/json"))]
    parts += [("files", (name, data, "application/octet-stream")) for name, data in files]
    return await intake.client.post(
        "/v1/reports", files=parts, headers=intake.app_headers if headers is None else headers
    )


# --- multipart: the report and its photos in one request ---------------------------------


async def test_multipart_report_with_photos_is_stored_with_its_media(intake):
    red, green = jpeg((200, 10, 10)), jpeg((10, 200, 10))

    response = await post_multipart(intake, intake.body(), [("a.jpg", red), ("b.jpg", green)])

    assert response.status_code == 202, response.text
    report_id = response.json()["id"]
    view = await intake.client.get(f"/v1/reports/{report_id}", headers=intake.staff("coordinator"))
    media = view.json()["media"]
    assert [m["sha256"] for m in media] == [
        hashlib.sha256(red).hexdigest(),
        hashlib.sha256(green).hexdigest(),
    ]
    assert all(m["content_type"] == "image/jpeg" and m["thumbnail_url"] for m in media)
    photo = await intake.client.get(media[0]["url"], headers=intake.staff("coordinator"))
    assert photo.content == red
    timeline = await intake.client.get(
        f"/v1/reports/{report_id}/timeline", headers=intake.staff("coordinator")
    )
    assert timeline.json()[0]["details"]["media"] == 2


async def test_multipart_replay_with_the_same_files_returns_the_original(intake):
    body, photo = intake.body(), jpeg((1, 2, 3))
    headers = {**intake.app_headers, "Idempotency-Key": str(uuid.uuid4())}

    first = await post_multipart(intake, body, [("p.jpg", photo)], headers=headers)
    again = await post_multipart(intake, body, [("p.jpg", photo)], headers=headers)
    other = await post_multipart(intake, body, [("p.jpg", jpeg((9, 9, 9)))], headers=headers)

    assert first.status_code == 202, first.text
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert intake.problem(other, 409) == {"Idempotency-Key"}


async def test_the_same_file_twice_in_one_request_is_attached_once(intake):
    photo = jpeg((50, 50, 50))

    response = await post_multipart(intake, intake.body(), [("a.jpg", photo), ("b.jpg", photo)])

    assert response.status_code == 202, response.text
    view = await intake.client.get(
        f"/v1/reports/{response.json()['id']}", headers=intake.staff("coordinator")
    )
    assert len(view.json()["media"]) == 1


async def test_multipart_with_a_text_file_is_415_and_stores_nothing(intake):
    before = await intake.count("reports")

    response = await post_multipart(
        intake, intake.body(), [("ok.jpg", jpeg((1, 1, 1))), ("notes.jpg", b"plain text")]
    )

    assert intake.problem(response, 415) == {"files"}
    assert "files[1]" in response.json()["detail"]
    assert await intake.count("reports") == before


async def test_multipart_with_too_many_files_is_422(intake):
    files = [(f"{i}.jpg", jpeg((i, i, i))) for i in range(intake.settings.max_media_files + 1)]

    response = await post_multipart(intake, intake.body(), files)

    assert intake.problem(response, 422) == {"files"}


async def test_multipart_report_part_errors_name_the_field_inside_it(intake):
    bad = intake.body(location={"lat": 95.0, "lon": 106.0})

    response = await post_multipart(intake, bad, [])

    assert intake.problem(response, 422) == {"report.location.lat"}


async def test_multipart_without_a_report_part_is_422(intake):
    response = await intake.client.post(
        "/v1/reports",
        files=[("files", ("a.jpg", jpeg((1, 1, 1)), "image/jpeg"))],
        headers=intake.app_headers,
    )

    assert intake.problem(response, 422) == {"report"}


async def test_multipart_with_an_unknown_category_stores_no_file(intake):
    photo = jpeg((77, 1, 1))
    sha = hashlib.sha256(photo).hexdigest()

    response = await post_multipart(intake, intake.body(category="NO.SUCH"), [("a.jpg", photo)])

    assert intake.problem(response, 422) == {"category"}
    assert not media.path_of(intake.settings.media_dir, sha).exists()
    async with intake.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM media WHERE sha256 = $1", sha) == 0


# --- malformed bodies --------------------------------------------------------------------


async def test_malformed_json_is_422_naming_the_body(intake):
    response = await intake.client.post(
        "/v1/reports",
        content=b'{"category": "INFRA.ROAD",',
        headers={**intake.app_headers, "Content-Type": "application/json"},
    )

    assert intake.problem(response, 422) == {"body"}


async def test_a_body_that_is_neither_json_nor_multipart_is_415(intake):
    response = await intake.client.post(
        "/v1/reports",
        content=b"category=INFRA.ROAD",
        headers={**intake.app_headers, "Content-Type": "application/x-www-form-urlencoded"},
    )

    assert intake.problem(response, 415) == {"Content-Type"}


# --- group commit --------------------------------------------------------------------------


async def test_concurrent_submissions_each_get_one_report_event_and_timeline_row(intake):
    bodies = [intake.body() for _ in range(60)]

    responses = await asyncio.gather(
        *(intake.client.post("/v1/reports", json=b, headers=intake.app_headers) for b in bodies)
    )

    assert [r.status_code for r in responses] == [202] * 60
    ids = [uuid.UUID(r.json()["id"]) for r in responses]
    numbers = [r.json()["number"] for r in responses]
    assert len(set(numbers)) == 60
    async with intake.pool.acquire() as conn:
        stored = await conn.fetch(
            "SELECT r.client_report_id, r.number,"
            " (SELECT count(*) FROM outbox o WHERE o.key = r.id::text::bytea) AS events,"
            " (SELECT count(*) FROM report_timeline t WHERE t.report_id = r.id) AS steps,"
            " (SELECT count(*) FROM reporters p WHERE p.report_id = r.id) AS reporters"
            " FROM reports r WHERE r.id = ANY($1::uuid[])",
            ids,
        )
    assert sorted(r["client_report_id"] for r in stored) == sorted(
        b["client_report_id"] for b in bodies
    )
    assert {(r["events"], r["steps"], r["reporters"]) for r in stored} == {(1, 1, 1)}
    for response in responses:
        [(_, event)] = await intake.outbox(response.json()["id"])
        assert event.payload.number == response.json()["number"]


async def test_concurrent_retries_with_one_key_make_one_report(intake):
    body = intake.body()
    headers = {**intake.app_headers, "Idempotency-Key": str(uuid.uuid4())}

    responses = await asyncio.gather(
        *(intake.client.post("/v1/reports", json=body, headers=headers) for _ in range(12))
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 11 + [202]
    assert len({r.json()["id"] for r in responses}) == 1
    async with intake.pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM reports WHERE client_report_id = $1",
                body["client_report_id"],
            )
            == 1
        )


async def test_a_failing_item_does_not_sink_its_batch(intake):
    app_id = random_id("batch-")
    bodies = [intake.body() for _ in range(3)]
    # validation is bypassed: an unknown category breaks a foreign key inside the batch
    bodies.insert(2, intake.body(category="NOT.IN.CATALOGUE"))
    submissions = [
        Submission(
            body=ReportIn.model_validate(b),
            app_id=app_id,
            idempotency_key=None,
            fingerprint=request_hash(ReportIn.model_validate(b)),
            flags=(),
        )
        for b in bodies
    ]
    ctx = IntakeContext(settings=intake.settings, clock=SystemClock(), communes=frozenset())
    writer = ctx.bind(intake.pool)
    running = asyncio.create_task(writer.run())
    try:
        outcomes = await asyncio.gather(
            *(writer.submit(s) for s in submissions), return_exceptions=True
        )
    finally:
        running.cancel()

    assert [type(o) for o in outcomes] == [
        SubmitResult,
        SubmitResult,
        asyncpg.ForeignKeyViolationError,
        SubmitResult,
    ]
    async with intake.pool.acquire() as conn:
        stored = await conn.fetchval("SELECT count(*) FROM reports WHERE source_app = $1", app_id)
    assert stored == 3


async def test_a_malformed_multipart_body_is_400_naming_the_body(intake):
    boundary = "xyz"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=report\r\n"
        "Bad[Header]: 1\r\n\r\n{}\r\n"
        f"--{boundary}--\r\n"
    ).encode()

    response = await intake.client.post(
        "/v1/reports",
        content=body,
        headers={**intake.app_headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )

    assert intake.problem(response, 400) == {"body"}


async def test_far_too_many_files_is_422_naming_files(intake):
    files = [(f"{i}.jpg", jpeg((i, 0, 0))) for i in range(intake.settings.max_media_files + 3)]

    response = await post_multipart(intake, intake.body(), files)

    assert intake.problem(response, 422) == {"files"}


async def test_a_video_sent_with_the_report_gets_a_jpeg_thumbnail(intake):
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as muxer:
        stream = muxer.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(3):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 48), (30, 160, 30)))
            for packet in stream.encode(frame):
                muxer.mux(packet)
        for packet in stream.encode():
            muxer.mux(packet)

    response = await post_multipart(intake, intake.body(), [("clip.mp4", out.getvalue())])

    assert response.status_code == 202, response.text
    view = await intake.client.get(
        f"/v1/reports/{response.json()['id']}", headers=intake.staff("coordinator")
    )
    [item] = view.json()["media"]
    assert item["content_type"] == "video/mp4"
    thumb = await intake.client.get(item["thumbnail_url"], headers=intake.staff("coordinator"))
    assert thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (64, 48)


async def test_duplicate_hints_see_earlier_reports_of_the_same_batch_but_not_retries(intake):
    app_id = random_id("burst-")
    ctx = IntakeContext(settings=intake.settings, clock=SystemClock(), communes=frozenset())
    writer = ctx.bind(intake.pool)

    def submission(client_id: str, category: str = "INFRA.ROAD") -> Submission:
        body = ReportIn.model_validate(intake.body(client_report_id=client_id, category=category))
        return Submission(
            body=body,
            app_id=app_id,
            idempotency_key=None,
            fingerprint=request_hash(body),
            flags=(),
        )

    running = asyncio.create_task(writer.run())
    try:
        stored = await writer.submit(submission("r"))
        running.cancel()
        # queued before the writer runs again: one batch
        names = ["a", "b", "r", "d", "a", "f"]
        waiting = [asyncio.ensure_future(writer.submit(submission(n))) for n in names]
        other = asyncio.ensure_future(writer.submit(submission("x", category="INFRA.LIGHTING")))
        await asyncio.sleep(0)
        running = asyncio.create_task(writer.run())
        a, b, r_again, d, a_again, f = await asyncio.gather(*waiting)
        x = await other
    finally:
        running.cancel()

    def hints(result: SubmitResult) -> set[uuid.UUID]:
        return set(result.report["possible_duplicates"])

    r_id, a_id, b_id, d_id = (o.report["id"] for o in (stored, a, b, d))
    assert (a.created, b.created, d.created, f.created) == (True, True, True, True)
    assert (r_again.created, a_again.created) == (False, False)
    assert r_again.report["id"] == r_id
    assert a_again.report["id"] == a_id
    assert hints(a) == {r_id}
    assert hints(b) == {r_id, a_id}
    assert hints(d) == {r_id, a_id, b_id}  # not the retry of r
    assert hints(f) == {r_id, a_id, b_id, d_id}  # not the retries of r and a
    assert hints(x) == set()  # another category


# --- the plain ASGI endpoint is still a documented route ---------------------------------


async def test_submit_route_is_described_in_the_openapi_document(intake):
    operation = intake.app.openapi()["paths"]["/v1/reports"]["post"]

    content = operation["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/ReportIn"}
    assert {p["name"] for p in operation["parameters"]} == {"X-API-Key", "Idempotency-Key"}
    assert {"200", "202", "401", "403", "409", "413", "415", "422", "429"} <= set(
        operation["responses"]
    )
    assert operation["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Accepted"
    }
    assert "Idempotency-Key" in operation["description"]


async def test_submit_errors_and_successes_are_counted_under_the_route(intake):
    def counts(text: str) -> dict[str, float]:
        prefix = 'intake_http_requests_total{method="POST",route="/v1/reports",status="'
        found = {}
        for line in text.splitlines():
            if line.startswith(prefix):
                status, _, value = line[len(prefix) :].partition('"} ')
                found[status] = float(value)
        return found

    before = counts((await intake.client.get("/metrics")).text)
    await intake.client.post("/v1/reports", json=intake.body(), headers=intake.app_headers)
    await intake.client.post("/v1/reports", json=intake.body())  # no key: 401
    await intake.client.post("/v1/reports", json=intake.body())

    after = counts((await intake.client.get("/metrics")).text)

    assert after.get("202", 0) - before.get("202", 0) == 1
    assert after.get("401", 0) - before.get("401", 0) == 2
