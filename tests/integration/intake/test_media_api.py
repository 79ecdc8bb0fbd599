"""POST /v1/reports/{id}/media and GET /v1/media/{sha} (real PostgreSQL + Kafka)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
import uuid

import pytest
from PIL import Image

from intake import media
from intake.__main__ import collect_media_garbage
from paht_common.events import ReportMediaAdded

pytestmark = pytest.mark.integration


def png(color: tuple[int, int, int] = (10, 120, 200), size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


async def upload(intake, report_id, *files, headers=None):
    parts = [("files", (name, data, declared)) for name, data, declared in files]
    return await intake.client.post(
        f"/v1/reports/{report_id}/media",
        files=parts,
        headers=intake.app_headers if headers is None else headers,
    )


async def test_upload_png_then_get_identical_bytes_and_a_jpeg_thumbnail(intake):
    report = await intake.submit()
    data = png()

    response = await upload(intake, report["id"], ("photo.png", data, "image/png"))

    assert response.status_code == 201, response.text
    [item] = response.json()["media"]
    sha = hashlib.sha256(data).hexdigest()
    assert item == {
        "sha256": sha,
        "content_type": "image/png",
        "size": len(data),
        "url": f"/v1/media/{sha}",
        "thumbnail_url": f"/v1/media/{sha}/thumbnail",
    }
    anonymous = await intake.client.get(item["url"])  # not released on a published report
    assert intake.problem(anonymous, 404) == {"sha256"}
    stored = await intake.client.get(item["url"], headers=intake.staff("coordinator"))
    assert stored.status_code == 200
    assert stored.headers["content-type"] == "image/png"
    assert stored.content == data
    thumb = await intake.client.get(item["thumbnail_url"], headers=intake.staff("supervisor"))
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).format == "JPEG"


async def test_declared_type_is_ignored_text_named_png_is_415(intake):
    report = await intake.submit()

    response = await upload(intake, report["id"], ("notes.png", b"just some text\n", "image/png"))

    assert intake.problem(response, 415) == {"files"}
    assert await intake.count("media") == 0


async def test_corrupt_image_is_415(intake):
    report = await intake.submit()

    response = await upload(intake, report["id"], ("broken.png", png()[:40], "image/png"))

    assert intake.problem(response, 415) == {"files"}
    assert await intake.count("report_media") == 0


async def test_file_over_the_limit_is_413(intake_with):
    async with intake_with(max_media_bytes=1_000) as intake:
        report = await intake.submit()
        big = png(size=(400, 400)) + b"\x00" * 2_000

        response = await upload(intake, report["id"], ("big.png", big, "image/png"))

        assert intake.problem(response, 413) == {"files"}
        assert await intake.count("media") == 0


async def test_more_files_than_allowed_on_the_report_is_422(intake_with):
    async with intake_with(max_media_files=2) as intake:
        report = await intake.submit()
        first = await upload(
            intake,
            report["id"],
            ("a.png", png((1, 1, 1)), "image/png"),
            ("b.png", png((2, 2, 2)), "image/png"),
        )
        assert first.status_code == 201, first.text

        again = await upload(intake, report["id"], ("a.png", png((1, 1, 1)), "image/png"))
        third = await upload(intake, report["id"], ("c.png", png((3, 3, 3)), "image/png"))

        assert again.status_code == 201, again.text  # already attached: not a new file
        assert intake.problem(third, 422) == {"files"}
        assert await intake.count("report_media") == 2


async def test_another_apps_key_gets_404(intake):
    report = await intake.submit()
    _, other_key = await intake.new_key()

    response = await upload(
        intake, report["id"], ("p.png", png(), "image/png"), headers={"X-API-Key": other_key}
    )

    assert intake.problem(response, 404) == {"report_id"}


async def test_unknown_report_is_404_even_when_the_file_is_bad(intake):
    response = await upload(intake, str(uuid.uuid4()), ("x.png", b"not an image", "image/png"))

    assert intake.problem(response, 404) == {"report_id"}


async def test_upload_without_key_is_401(intake):
    report = await intake.submit()

    response = await upload(intake, report["id"], ("p.png", png(), "image/png"), headers={})

    assert intake.problem(response, 401) == {"X-API-Key"}


async def test_reupload_is_idempotent(intake):
    report = await intake.submit()
    data = png()

    first = await upload(intake, report["id"], ("p.png", data, "image/png"))
    second = await upload(intake, report["id"], ("copy.png", data, "application/octet-stream"))

    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert await intake.count("media") == 1
    assert await intake.count("report_media") == 1


async def test_unknown_media_is_404_and_a_bad_digest_422(intake):
    staff = intake.staff("coordinator")
    unknown = await intake.client.get("/v1/media/" + "0" * 64, headers=staff)
    bad = await intake.client.get("/v1/media/not-a-digest", headers=staff)

    assert intake.problem(unknown, 404) == {"sha256"}
    assert bad.status_code == 422


async def test_staff_view_lists_media_public_view_only_released_ones(intake):
    report = await intake.submit()
    data = png()
    await upload(intake, report["id"], ("p.png", data, "image/png"))
    sha = hashlib.sha256(data).hexdigest()

    staff = await intake.client.get(
        f"/v1/reports/{report['id']}", headers=intake.staff("coordinator")
    )
    public = await intake.client.get(f"/v1/reports/{report['id']}")

    assert staff.status_code == public.status_code == 200
    assert [m["sha256"] for m in staff.json()["media"]] == [sha]
    assert staff.json()["media"][0]["url"] == f"/v1/media/{sha}"
    assert staff.json()["media"][0]["public"] is False
    assert public.json()["media"] == []  # unpublished, and nothing released


# --- timeline and event ---------------------------------------------------------------------


async def timeline_rows(intake, report_id):
    async with intake.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT event_id, actor_role, actor_subject, actor_agency_id, action, from_state,"
            " to_state, reason, details FROM report_timeline WHERE report_id = $1 ORDER BY id",
            uuid.UUID(report_id),
        )
    return [dict(r) for r in rows]


async def written(intake):
    return {t: await intake.count(t) for t in ("report_timeline", "outbox", "report_media")}


async def test_attaching_media_adds_one_timeline_row_and_one_media_added_event(intake):
    report = await intake.submit()
    a, b = png((1, 1, 1)), png((2, 2, 2))
    digests = [hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()]

    response = await upload(
        intake, report["id"], ("a.png", a, "image/png"), ("b.png", b, "image/png")
    )

    assert response.status_code == 201, response.text
    submit, added = await timeline_rows(intake, report["id"])
    assert submit["action"] == "submit"
    assert {k: added[k] for k in ("action", "from_state", "to_state", "actor_role")} == {
        "action": "add_media",
        "from_state": "submitted",
        "to_state": "submitted",
        "actor_role": "reporter",
    }
    assert added["actor_subject"] == submit["actor_subject"]  # app:<app id>
    assert added["actor_subject"].startswith("app:")
    assert (added["actor_agency_id"], added["reason"]) == (None, None)
    assert added["details"] == {"media": 2, "sha256": digests}
    events = await intake.outbox(report["id"])
    assert len(events) == 2  # report.submitted, then this one
    headers, envelope = events[1]
    assert headers["ce_type"] == "vn.bn.fieldreport.report.media_added.v1"
    assert envelope.event_id == added["event_id"]
    payload = envelope.payload
    assert isinstance(payload, ReportMediaAdded)
    assert (payload.number, payload.count) == (report["number"], 2)
    assert [(m.sha256, m.content_type) for m in payload.media] == [
        (digests[0], "image/png"),
        (digests[1], "image/png"),
    ]
    assert "Nguyễn" not in envelope.model_dump_json()  # no reporter identity


async def test_attaching_media_updates_the_report_but_a_replay_does_not(intake):
    report = await intake.submit()
    staff = intake.staff("coordinator")

    async def updated_at() -> str:
        return (await intake.client.get(f"/v1/reports/{report['id']}", headers=staff)).json()[
            "updated_at"
        ]

    submitted = await updated_at()
    await upload(intake, report["id"], ("p.png", png(), "image/png"))
    after_upload = await updated_at()
    await upload(intake, report["id"], ("p.png", png(), "image/png"))  # the same file again

    assert after_upload > submitted
    assert await updated_at() == after_upload


async def test_media_on_a_report_in_progress_keeps_its_state_on_the_timeline(intake):
    report = await intake.submit()
    screened = await intake.act(report["id"], intake.staff("coordinator"), "screen")
    assert screened.status_code == 200, screened.text

    response = await upload(intake, report["id"], ("p.png", png(), "image/png"))

    assert response.status_code == 201, response.text
    added = (await timeline_rows(intake, report["id"]))[-1]
    assert (added["action"], added["from_state"], added["to_state"]) == (
        "add_media",
        "screening",
        "screening",
    )


async def test_a_replay_of_attached_files_writes_no_timeline_row_and_no_event(intake):
    report = await intake.submit()
    a, b = png((1, 1, 1)), png((2, 2, 2))
    first = await upload(intake, report["id"], ("a.png", a, "image/png"), ("b.png", b, "image/png"))
    assert first.status_code == 201, first.text
    before = await written(intake)

    replay = await upload(intake, report["id"], ("b.png", b, "image/png"))

    assert replay.status_code == 201, replay.text
    assert await written(intake) == before


async def test_only_the_files_new_to_the_report_are_recorded(intake):
    report = await intake.submit()
    a, c = png((1, 1, 1)), png((3, 3, 3))
    first = await upload(intake, report["id"], ("a.png", a, "image/png"))
    assert first.status_code == 201, first.text

    mixed = await upload(intake, report["id"], ("a.png", a, "image/png"), ("c.png", c, "image/png"))

    assert mixed.status_code == 201, mixed.text
    assert len(mixed.json()["media"]) == 2  # every file of the request is answered
    last = (await timeline_rows(intake, report["id"]))[-1]
    assert last["details"] == {"media": 1, "sha256": [hashlib.sha256(c).hexdigest()]}
    _, envelope = (await intake.outbox(report["id"]))[-1]
    assert isinstance(envelope.payload, ReportMediaAdded)
    assert envelope.payload.count == 1
    assert [m.sha256 for m in envelope.payload.media] == [hashlib.sha256(c).hexdigest()]


async def test_refused_uploads_write_nothing(intake_with):
    async with intake_with(max_media_files=1) as intake:
        report = await intake.submit()
        _, other_key = await intake.new_key()
        one = await upload(intake, report["id"], ("a.png", png((1, 1, 1)), "image/png"))
        assert one.status_code == 201, one.text
        before = await written(intake)
        stored = await intake.count("media")

        foreign = await upload(
            intake,
            report["id"],
            ("b.png", png((2, 2, 2)), "image/png"),
            headers={"X-API-Key": other_key},
        )
        unknown = await upload(intake, str(uuid.uuid4()), ("b.png", png((2, 2, 2)), "image/png"))
        too_many = await upload(intake, report["id"], ("c.png", png((3, 3, 3)), "image/png"))

        assert intake.problem(foreign, 404) == {"report_id"}
        assert intake.problem(unknown, 404) == {"report_id"}
        assert intake.problem(too_many, 422) == {"files"}
        assert too_many.json()["title"] == "Too many files"
        assert await written(intake) == before
        assert await intake.count("media") == stored
        assert not media.path_of(
            intake.settings.media_dir, hashlib.sha256(png((3, 3, 3))).hexdigest()
        ).exists()


async def test_files_are_stored_before_the_report_row_is_locked(intake, monkeypatch):
    report = await intake.submit()
    storing, release = asyncio.Event(), asyncio.Event()
    store_all = media.store_all

    async def slow_store_all(*args, **kwargs):
        storing.set()
        await release.wait()
        return await store_all(*args, **kwargs)

    monkeypatch.setattr(media, "store_all", slow_store_all)
    uploading = asyncio.create_task(
        upload(intake, report["id"], ("a.png", png((4, 4, 4)), "image/png"))
    )
    await asyncio.wait_for(storing.wait(), timeout=10)
    try:  # a staff action locks the row while the thumbnails are being made
        async with intake.pool.acquire() as conn, conn.transaction():
            locked = await conn.fetchval(
                "SELECT id FROM reports WHERE id = $1 FOR UPDATE NOWAIT", uuid.UUID(report["id"])
            )
    finally:
        release.set()
    response = await uploading

    assert locked == uuid.UUID(report["id"])
    assert response.status_code == 201, response.text
    assert len(await timeline_rows(intake, report["id"])) == 2


# --- orphaned files ------------------------------------------------------------------------


def age(path, hours: float) -> None:
    stamp = time.time() - hours * 3600
    os.utime(path, (stamp, stamp))


async def test_gc_media_deletes_only_old_unrecorded_files(intake):
    report = await intake.submit()
    kept = png((1, 2, 3))
    response = await upload(intake, report["id"], ("kept.png", kept, "image/png"))
    assert response.status_code == 201
    [item] = response.json()["media"]
    root = intake.settings.media_dir
    recorded = media.path_of(root, item["sha256"])
    thumb = media.path_of(root, item["thumbnail_url"].split("/")[-2])
    # a file stored by a submission that never committed, and one still in flight
    old_orphan = media.store(png((9, 9, 9)), root=root)
    new_orphan = media.store(png((8, 8, 8), size=(20, 20)), root=root)
    abandoned = root / "ab" / ".tmpfile.tmp"
    abandoned.parent.mkdir(parents=True, exist_ok=True)
    abandoned.write_bytes(b"partial")
    for path in (recorded, thumb, old_orphan.path, abandoned):
        age(path, 48)

    dry = await collect_media_garbage(intake.settings, older_than_hours=24, dry_run=True)
    assert old_orphan.path.exists()
    removed = await collect_media_garbage(intake.settings, older_than_hours=24, dry_run=False)

    assert sorted(dry) == sorted(removed)
    assert {old_orphan.path, abandoned} <= set(removed)
    assert not old_orphan.path.exists()
    assert not abandoned.exists()
    assert recorded.exists()
    assert thumb.exists()
    assert new_orphan.path.exists()  # too young: may belong to a submission in flight
