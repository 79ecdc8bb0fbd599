"""Issue 19 rules in the pure domain: the coordinator's override, co-handling agencies,
the reporter's reopen window and the rating window's positive ratings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from intake.domain import (
    Actor,
    AddNoteAction,
    AssignAction,
    Forbidden,
    ReopenAction,
    ReportSnapshot,
    RescreenAction,
    RespondAction,
    Role,
    RuleViolation,
    State,
    closes_after_rating,
    decide,
)
from intake.handlers import needs_screening
from intake.schemas import ReportIn
from intake.settings import IntakeSettings

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
LEAD, CO, OTHER = "ubnd-phuong-suoi-hoa", "dien-luc-bac-ninh", "so-xay-dung"
COORDINATOR = Actor(Role.COORDINATOR, "ioc-1")
REPORTER = Actor(Role.REPORTER, "app:demo-app")


def held(state: State = State.IN_PROGRESS) -> ReportSnapshot:
    return ReportSnapshot(state=state, agency_id=LEAD, co_agency_ids=(CO,))


def test_reassigning_a_report_an_agency_holds_needs_a_reason() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        decide(held(), AssignAction(agency_id=OTHER), COORDINATOR, now=NOW)
    assert excinfo.value.field == "reason"


def test_reassignment_from_in_progress_records_the_previous_agency_as_an_override() -> None:
    t = decide(held(), AssignAction(agency_id=OTHER, reason="Sai thẩm quyền"), COORDINATOR, now=NOW)
    assert t.to_state is State.ASSIGNED
    assert t.reason == "Sai thẩm quyền"
    assert t.details["previous_agency_id"] == LEAD
    assert t.details["override"] is True


def test_sending_an_assigned_report_back_to_screening_needs_a_reason() -> None:
    with pytest.raises(RuleViolation):
        decide(held(State.ASSIGNED), RescreenAction(), COORDINATOR, now=NOW)
    t = decide(held(State.ASSIGNED), RescreenAction(reason="Phân loại lại"), COORDINATOR, now=NOW)
    assert t.to_state is State.SCREENING


def test_automatic_routing_never_takes_a_report_from_its_agency() -> None:
    with pytest.raises(Forbidden):
        decide(
            held(State.ASSIGNED),
            AssignAction(agency_id=OTHER, reason="x"),
            Actor(Role.SYSTEM, "service:routing"),
            now=NOW,
        )


def test_co_handling_officer_adds_a_partial_response_without_moving_the_report() -> None:
    officer = Actor(Role.OFFICER, "o-1", CO)
    t = decide(
        held(), AddNoteAction(text="Đã cắt điện khu vực", partial_response=True), officer, now=NOW
    )
    assert t.from_state is t.to_state is State.IN_PROGRESS
    assert t.details["partial_response"] is True


def test_only_the_lead_agency_resolves() -> None:
    with pytest.raises(Forbidden):
        decide(held(), RespondAction(text="Xong"), Actor(Role.OFFICER, "o-1", CO), now=NOW)
    t = decide(held(), RespondAction(text="Xong"), Actor(Role.OFFICER, "o-2", LEAD), now=NOW)
    assert t.to_state is State.RESOLVED


def test_an_unrelated_agency_may_not_add_notes() -> None:
    with pytest.raises(Forbidden):
        decide(held(), AddNoteAction(text="?"), Actor(Role.OFFICER, "o-3", OTHER), now=NOW)


def test_reporter_reopens_a_published_report_on_the_last_day_of_the_window() -> None:
    snapshot = ReportSnapshot(
        state=State.RATED, agency_id=LEAD, published_at=NOW - timedelta(days=30)
    )
    assert decide(snapshot, ReopenAction(reason="Chưa sửa"), REPORTER, now=NOW).to_state is (
        State.REOPENED
    )


def test_reporter_cannot_reopen_after_the_window_from_publication() -> None:
    snapshot = ReportSnapshot(
        state=State.PUBLISHED, agency_id=LEAD, published_at=NOW - timedelta(days=30, seconds=1)
    )
    with pytest.raises(RuleViolation) as excinfo:
        decide(snapshot, ReopenAction(reason="Chưa sửa"), REPORTER, now=NOW)
    assert excinfo.value.field == "published_at"


def test_another_reporter_may_not_act_on_the_report() -> None:
    snapshot = ReportSnapshot(state=State.PUBLISHED, reporter_subject="app:other")
    with pytest.raises(Forbidden):
        decide(snapshot, ReopenAction(reason="Chưa sửa"), REPORTER, now=NOW)


@pytest.mark.parametrize(("rating", "closes"), [(1, False), (2, False), (3, True), (5, True)])
def test_a_rating_of_three_or_more_is_positive(rating: int, closes: bool) -> None:
    assert closes_after_rating(rating) is closes


def _report(channel: str = "app", category: str = "INFRA.ROAD") -> ReportIn:
    return ReportIn.model_validate(
        {
            "category": category,
            "description": "Ổ gà lớn",
            "channel": channel,
            "location": {"commune_code": "09190"},
            "reporter": {"anonymous": True},
        }
    )


@pytest.mark.parametrize(
    ("settings", "body", "flags", "held_back"),
    [
        ({}, {}, [], False),
        ({"screening_channels": ["hotline"]}, {"channel": "hotline"}, [], True),
        ({"screening_channels": ["hotline"]}, {"channel": "app"}, [], False),
        ({"screening_categories": ["INFRA"]}, {"category": "INFRA.ROAD"}, [], True),
        ({"screening_categories": ["INF"]}, {"category": "INFRA.ROAD"}, [], False),
        ({"screening_flags": ["possible_duplicate"]}, {}, ["possible_duplicate"], True),
    ],
)
def test_screening_is_configured_by_channel_category_or_flag(
    settings: dict[str, list[str]], body: dict[str, str], flags: list[str], held_back: bool
) -> None:
    s = IntakeSettings(**settings)  # type: ignore[arg-type]
    assert needs_screening(_report(**body), flags=flags, settings=s) is held_back
