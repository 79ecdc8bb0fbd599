"""POST /v1/reports/{id}/media and GET /v1/media/{sha} (real PostgreSQL + Kafka)."""

from __future__ import annotations

import hashlib
import io
import os
import time

import pytest
from PIL import Image

from intake import media
from intake.__main__ import collect_media_garbage

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
    anonymous = await intake.client.get(item["url"])
    assert anonymous.status_code == 401
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


async def test_staff_view_lists_media_public_view_does_not(intake):
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
    assert "media" not in public.json()


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
