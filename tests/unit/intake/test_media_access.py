"""Unit tests of who may read media: the published states, the agency rule, and how the
handlers turn a caller into one repository query (a fake connection, no I/O)."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest

from intake import repository
from intake.api import media_view, report_view
from intake.domain import (
    PUBLISHED_STATES,
    RULES,
    ActionType,
    Actor,
    Forbidden,
    Role,
    State,
    sees_every_agency,
)
from intake.handlers import IntakeContext, readable_media, released_media_of, set_media_public
from paht_common.db import Conn

SHA = "ab" * 32
ROW = {"sha256": SHA, "content_type": "image/png", "size": 10, "thumbnail_sha256": "cd" * 32}


class RecordingConn:
    """Answers every query with nothing and keeps the statements and their arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def fetchrow(self, sql: str, *args: Any) -> None:
        self.calls.append((sql, args))
        return None

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.calls.append((sql, args))
        return []


def test_published_states_are_those_a_published_report_reaches_without_a_reopen():
    reached, frontier = {State.PUBLISHED}, [State.PUBLISHED]
    while frontier:
        state = frontier.pop()
        for rule in RULES:
            if state in rule.from_states and rule.action is not ActionType.REOPEN:
                if rule.to_state not in reached:
                    reached.add(rule.to_state)
                    frontier.append(rule.to_state)

    assert reached == PUBLISHED_STATES
    assert State.REOPENED not in PUBLISHED_STATES


def test_only_publish_enters_the_published_states():
    for rule in RULES:
        if rule.to_state in PUBLISHED_STATES and rule.action is not ActionType.PUBLISH:
            assert rule.from_states <= PUBLISHED_STATES, rule


@pytest.mark.parametrize(
    ("role", "every"),
    [
        (Role.COORDINATOR, True),
        (Role.SUPERVISOR, True),
        (Role.OFFICER, False),
        (Role.LEADER, False),
        (Role.REPORTER, False),
        (Role.SYSTEM, False),
    ],
)
def test_only_coordinators_and_supervisors_see_every_agency(role, every):
    assert sees_every_agency(role) is every


async def test_an_officer_reads_through_the_staff_query_scoped_to_its_agency():
    conn = RecordingConn()

    found = await readable_media(
        cast(Conn, conn), sha256=SHA, role=Role.OFFICER, agency_id="ubnd-kinh-bac"
    )

    assert found is None
    assert conn.calls == [(repository.STAFF_READABLE_MEDIA, (SHA, False, "ubnd-kinh-bac"))]


async def test_a_supervisor_reads_through_the_staff_query_for_every_agency():
    conn = RecordingConn()

    await readable_media(cast(Conn, conn), sha256=SHA, role=Role.SUPERVISOR, agency_id=None)

    assert conn.calls == [(repository.STAFF_READABLE_MEDIA, (SHA, True, None))]


async def test_the_public_reads_through_the_released_query_with_the_published_states():
    conn = RecordingConn()

    await readable_media(cast(Conn, conn), sha256=SHA, role=None, agency_id="ignored")
    await released_media_of(cast(Conn, conn), report_id=uuid.UUID(int=1))

    [(file_sql, file_args), (list_sql, list_args)] = conn.calls
    assert file_sql == repository.PUBLIC_READABLE_MEDIA
    assert list_sql == repository.RELEASED_MEDIA_OF
    assert set(file_args[1]) == set(list_args[1]) == {s.value for s in PUBLISHED_STATES}
    for sql in (file_sql, list_sql):
        assert "rm.public" in sql
        assert "r.public" in sql


@pytest.mark.parametrize("role", [Role.OFFICER, Role.LEADER, Role.SUPERVISOR, Role.REPORTER])
async def test_only_the_coordinator_may_release_media_and_nothing_is_read_first(role):
    conn = RecordingConn()

    with pytest.raises(Forbidden):
        await set_media_public(
            cast(Conn, conn),
            report_id=uuid.UUID(int=1),
            sha256=SHA,
            public=True,
            actor=Actor(role=role, subject="someone", agency_id="ubnd-kinh-bac"),
            ctx=cast(IntakeContext, None),
        )

    assert conn.calls == []


def test_media_view_names_the_public_flag_only_when_the_row_has_it():
    assert "public" not in media_view(ROW)
    assert media_view({**ROW, "public": True})["public"] is True


def test_the_public_report_view_lists_exactly_the_media_it_is_given():
    report = {
        "id": uuid.UUID(int=1),
        "number": "BN-2026-000001",
        "category": "INFRA.ROAD",
        "state": State.PUBLISHED.value,
        "commune_code": None,
        "lat": None,
        "lon": None,
        "address": None,
        "channel": "app",
        "urgency": "normal",
        "agency_id": None,
        "agency_name": None,
        "screening_due_at": None,
        "acknowledgement_due_at": None,
        "resolution_due_at": None,
        "overdue": False,
        "submitted_at": None,
        "updated_at": None,
        "public": True,
        "flags": [],
        "description": "Ổ gà",
        "response_text": "Đã vá",
    }

    assert report_view(report, role=None)["media"] == []
    [item] = report_view(report, role=None, media_rows=[ROW])["media"]
    assert item["url"] == f"/v1/media/{SHA}"
