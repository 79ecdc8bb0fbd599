"""Who may read a file: media follow their reports (real PostgreSQL + Kafka).

Staff read a file when they may see a report that carries it (coordinators and supervisors
any, officers and leaders those assigned to their agency). Without a token, a file is read
only when the coordinator released it on a report that is published and public; every
other file answers 404, as an unknown one, so the answer reveals nothing.
"""

from __future__ import annotations

import hashlib
import io
import uuid

import pytest
from PIL import Image

pytestmark = pytest.mark.integration

AGENCY_A = "ubnd-kinh-bac"
AGENCY_B = "ubnd-vo-cuong"
AGENCY_C = "ubnd-dai-phuc"


def png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(out, format="PNG")
    return out.getvalue()


async def attach(intake, report_id: str, data: bytes) -> str:
    """Upload one file to the report; its SHA-256."""
    response = await intake.client.post(
        f"/v1/reports/{report_id}/media",
        files=[("files", ("p.png", data, "image/png"))],
        headers=intake.app_headers,
    )
    assert response.status_code == 201, response.text
    return hashlib.sha256(data).hexdigest()


async def act(intake, report_id: str, staff: dict[str, str], action: str, **fields) -> None:
    response = await intake.act(report_id, staff, action, **fields)
    assert response.status_code == 200, (action, response.text)


async def report_with(intake, *files: bytes, agency: str | None = None) -> tuple[str, list[str]]:
    """A report carrying ``files``, assigned to ``agency`` when given; its id and digests."""
    report_id: str = (await intake.submit())["id"]
    digests = [await attach(intake, report_id, data) for data in files]
    if agency is not None:
        coordinator = intake.staff("coordinator")
        await act(intake, report_id, coordinator, "screen")
        await act(intake, report_id, coordinator, "assign", agency_id=agency)
    return report_id, digests


async def publish(intake, report_id: str, agency: str, **fields) -> None:
    """Take an assigned report through the agency's response to PUBLISHED."""
    officer = intake.staff("officer", agency=agency)
    await act(intake, report_id, officer, "acknowledge")
    await act(intake, report_id, officer, "respond", text="Đã vá ổ gà.")
    await act(intake, report_id, intake.staff("coordinator"), "publish", **fields)


async def mark(intake, report_id: str, sha: str, public: bool, staff=None):
    return await intake.client.put(
        f"/v1/reports/{report_id}/media/{sha}",
        json={"public": public},
        headers=intake.staff("coordinator") if staff is None else staff,
    )


async def read(intake, sha: str, headers=None) -> tuple[int, int]:
    """Status of GET on the file and on its thumbnail."""
    file = await intake.client.get(f"/v1/media/{sha}", headers=headers)
    thumb = await intake.client.get(f"/v1/media/{sha}/thumbnail", headers=headers)
    return file.status_code, thumb.status_code


async def assert_hidden(intake, sha: str, headers=None) -> None:
    """Both the file and its thumbnail answer 404 problem+json naming sha256."""
    for path in (f"/v1/media/{sha}", f"/v1/media/{sha}/thumbnail"):
        response = await intake.client.get(path, headers=headers)
        assert intake.problem(response, 404) == {"sha256"}, path


# --- staff ---------------------------------------------------------------------------------


async def test_officer_of_another_agency_gets_404_for_the_file_and_its_thumbnail(intake):
    _, [sha] = await report_with(intake, png((1, 2, 3)), agency=AGENCY_B)

    await assert_hidden(intake, sha, intake.staff("officer", agency=AGENCY_A))
    await assert_hidden(intake, sha, intake.staff("leader", agency=AGENCY_A))


async def test_hidden_file_answers_exactly_as_an_unknown_one(intake):
    _, [sha] = await report_with(intake, png((1, 2, 4)), agency=AGENCY_B)
    unknown = "f" * 64
    officer = intake.staff("officer", agency=AGENCY_A)

    hidden = await intake.client.get(f"/v1/media/{sha}", headers=officer)
    missing = await intake.client.get(f"/v1/media/{unknown}", headers=officer)

    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"].replace(sha, "x") == missing.json()["detail"].replace(
        unknown, "x"
    )


async def test_staff_of_the_assigned_agency_read_the_file_and_its_thumbnail(intake):
    data = png((1, 2, 5))
    _, [sha] = await report_with(intake, data, agency=AGENCY_B)

    for role in ("officer", "leader"):
        headers = intake.staff(role, agency=AGENCY_B)
        assert await read(intake, sha, headers) == (200, 200), role
    stored = await intake.client.get(
        f"/v1/media/{sha}", headers=intake.staff("officer", agency=AGENCY_B)
    )
    assert stored.content == data
    assert stored.headers["vary"] == "Authorization"


async def test_agency_staff_read_nothing_of_an_unassigned_report(intake):
    _, [sha] = await report_with(intake, png((1, 2, 6)))

    await assert_hidden(intake, sha, intake.staff("officer", agency=AGENCY_A))
    await assert_hidden(intake, sha, intake.staff("leader", agency=AGENCY_B))


async def test_coordinator_and_supervisor_read_media_of_any_agency(intake):
    _, [assigned] = await report_with(intake, png((1, 2, 7)), agency=AGENCY_B)
    _, [unassigned] = await report_with(intake, png((1, 2, 8)))

    for role in ("coordinator", "supervisor"):
        for sha in (assigned, unassigned):
            assert await read(intake, sha, intake.staff(role)) == (200, 200), role


async def test_a_file_on_two_reports_is_read_through_either_of_them(intake):
    data = png((1, 2, 9))
    _, [sha] = await report_with(intake, data, agency=AGENCY_A)
    _, [same] = await report_with(intake, data, agency=AGENCY_B)
    assert same == sha

    for agency in (AGENCY_A, AGENCY_B):
        assert await read(intake, sha, intake.staff("officer", agency=agency)) == (200, 200)
    await assert_hidden(intake, sha, intake.staff("officer", agency=AGENCY_C))


async def test_reassigning_a_report_moves_its_media_to_the_new_agency(intake):
    report_id, [sha] = await report_with(intake, png((1, 3, 1)), agency=AGENCY_A)
    officer_a = intake.staff("officer", agency=AGENCY_A)
    assert await read(intake, sha, officer_a) == (200, 200)

    await act(intake, report_id, officer_a, "return", reason="Không thuộc thẩm quyền.")
    await act(intake, report_id, intake.staff("coordinator"), "assign", agency_id=AGENCY_B)

    await assert_hidden(intake, sha, officer_a)
    assert await read(intake, sha, intake.staff("officer", agency=AGENCY_B)) == (200, 200)


# --- the public ----------------------------------------------------------------------------


async def test_without_a_token_media_of_an_unpublished_report_is_404_even_when_released(intake):
    report_id, [sha] = await report_with(intake, png((1, 4, 1)), agency=AGENCY_A)

    await assert_hidden(intake, sha)
    released = await mark(intake, report_id, sha, True)
    assert released.status_code == 200, released.text
    await assert_hidden(intake, sha)  # released, but the report is not published yet

    await publish(intake, report_id, AGENCY_A)

    assert await read(intake, sha) == (200, 200)


async def test_without_a_token_a_published_report_shows_only_its_released_media(intake):
    shown, kept = png((1, 5, 1)), png((1, 5, 2))
    report_id, [shown_sha, kept_sha] = await report_with(intake, shown, kept, agency=AGENCY_A)
    await publish(intake, report_id, AGENCY_A)
    assert (await mark(intake, report_id, shown_sha, True)).status_code == 200

    file = await intake.client.get(f"/v1/media/{shown_sha}")
    assert file.status_code == 200
    assert file.content == shown
    thumb = await intake.client.get(f"/v1/media/{shown_sha}/thumbnail")
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"
    await assert_hidden(intake, kept_sha)
    view = await intake.client.get(f"/v1/reports/{report_id}")
    assert view.status_code == 200
    assert [m["sha256"] for m in view.json()["media"]] == [shown_sha]


async def test_withdrawing_a_file_hides_it_from_the_public_again(intake):
    report_id, [sha] = await report_with(intake, png((1, 6, 1)), agency=AGENCY_A)
    await publish(intake, report_id, AGENCY_A)
    await mark(intake, report_id, sha, True)
    assert await read(intake, sha) == (200, 200)

    withdrawn = await mark(intake, report_id, sha, False)

    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["public"] is False
    await assert_hidden(intake, sha)
    assert (await intake.client.get(f"/v1/reports/{report_id}")).json()["media"] == []


async def test_a_report_published_not_public_releases_no_media(intake):
    report_id, [sha] = await report_with(intake, png((1, 7, 1)), agency=AGENCY_A)
    await publish(intake, report_id, AGENCY_A, public=False)
    await mark(intake, report_id, sha, True)

    await assert_hidden(intake, sha)
    assert (await intake.client.get(f"/v1/reports/{report_id}")).json()["media"] == []


async def test_reopening_a_published_report_hides_its_released_media(intake):
    report_id, [sha] = await report_with(intake, png((1, 8, 1)), agency=AGENCY_A)
    await publish(intake, report_id, AGENCY_A)
    await mark(intake, report_id, sha, True)
    assert await read(intake, sha) == (200, 200)

    await act(intake, report_id, intake.staff("coordinator"), "reopen", reason="Chưa vá xong.")

    await assert_hidden(intake, sha)


async def test_a_file_released_on_one_report_is_public_through_that_report_only(intake):
    data = png((1, 9, 1))
    released_id, [sha] = await report_with(intake, data, agency=AGENCY_A)
    other_id, _ = await report_with(intake, data, agency=AGENCY_B)
    await publish(intake, other_id, AGENCY_B)
    await publish(intake, released_id, AGENCY_A)
    await mark(intake, other_id, sha, True)
    await mark(intake, other_id, sha, False)
    await assert_hidden(intake, sha)

    await mark(intake, released_id, sha, True)

    assert await read(intake, sha) == (200, 200)
    assert (await intake.client.get(f"/v1/reports/{other_id}")).json()["media"] == []


# --- releasing a file ----------------------------------------------------------------------


async def timeline_of(intake, report_id: str) -> list[dict]:
    response = await intake.client.get(
        f"/v1/reports/{report_id}/timeline", headers=intake.staff("coordinator")
    )
    assert response.status_code == 200, response.text
    return [row for row in response.json() if row["action"] == "set_media_public"]


async def test_only_the_coordinator_releases_media(intake):
    report_id, [sha] = await report_with(intake, png((2, 1, 1)), agency=AGENCY_A)
    await publish(intake, report_id, AGENCY_A)

    for staff in (
        intake.staff("officer", agency=AGENCY_A),
        intake.staff("leader", agency=AGENCY_A),
        intake.staff("supervisor"),
    ):
        refused = await mark(intake, report_id, sha, True, staff=staff)
        assert intake.problem(refused, 403) == {"Authorization"}
    anonymous = await intake.client.put(
        f"/v1/reports/{report_id}/media/{sha}", json={"public": True}
    )

    assert intake.problem(anonymous, 401) == {"Authorization"}
    await assert_hidden(intake, sha)
    assert await timeline_of(intake, report_id) == []


async def test_releasing_an_unknown_report_or_a_file_it_does_not_carry_is_404(intake):
    report_id, [sha] = await report_with(intake, png((2, 2, 1)))
    _, [elsewhere] = await report_with(intake, png((2, 2, 2)))

    unknown_report = await mark(intake, str(uuid.uuid4()), sha, True)
    not_carried = await mark(intake, report_id, elsewhere, True)
    unknown_file = await mark(intake, report_id, "e" * 64, True)

    assert intake.problem(unknown_report, 404) == {"report_id"}
    assert intake.problem(not_carried, 404) == {"sha256"}
    assert intake.problem(unknown_file, 404) == {"sha256"}


async def test_release_body_must_be_a_boolean(intake):
    report_id, [sha] = await report_with(intake, png((2, 3, 1)))

    for body in ({"public": "yes"}, {}, {"public": True, "extra": 1}):
        response = await intake.client.put(
            f"/v1/reports/{report_id}/media/{sha}",
            json=body,
            headers=intake.staff("coordinator"),
        )
        assert response.status_code == 422, body


async def test_a_release_is_recorded_once_on_the_timeline_and_shown_to_staff(intake):
    report_id, [sha] = await report_with(intake, png((2, 4, 1)), agency=AGENCY_A)

    first = await mark(intake, report_id, sha, True, staff=intake.staff("coordinator", sub="lan"))
    again = await mark(intake, report_id, sha, True)

    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert first.json()["sha256"] == sha
    assert first.json()["public"] is True
    [row] = await timeline_of(intake, report_id)
    assert row["actor_role"] == "coordinator"
    assert row["actor_subject"] == "lan"
    assert row["from_state"] == row["to_state"] == "assigned"
    assert row["details"] == {"sha256": sha, "public": True}
    staff_view = await intake.client.get(
        f"/v1/reports/{report_id}", headers=intake.staff("officer", agency=AGENCY_A)
    )
    assert [(m["sha256"], m["public"]) for m in staff_view.json()["media"]] == [(sha, True)]

    await mark(intake, report_id, sha, False)

    assert [r["details"]["public"] for r in await timeline_of(intake, report_id)] == [True, False]
