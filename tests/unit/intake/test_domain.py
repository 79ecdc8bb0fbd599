"""Unit tests of the pure intake domain: lifecycle, actions and text helpers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from intake.domain import (
    AGENCY_HELD_STATES,
    CLOSED_FOR_OPEN311,
    STATE_LABELS_VI,
    TERMINAL_STATES,
    AcknowledgeAction,
    Action,
    ActionType,
    Actor,
    AddNoteAction,
    ApproveExtensionAction,
    ApproveResponseAction,
    AssignAction,
    CloseAction,
    DenyExtensionAction,
    Forbidden,
    IllegalTransition,
    MergeAction,
    PauseForReporterAction,
    PublishAction,
    RateAction,
    RejectAction,
    RejectReason,
    ReopenAction,
    ReportSnapshot,
    RequestExtensionAction,
    RescreenAction,
    RespondAction,
    ResumeAction,
    ReturnAction,
    ReviewRejectAction,
    Role,
    RuleViolation,
    ScreenAction,
    SendBackAction,
    State,
    allowed_actions,
    content_warnings,
    decide,
    fold_diacritics,
    haversine_m,
    human_number,
    normalize_description,
    parse_action,
)

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
AGENCY = "ubnd-phuong-suoi-hoa"
OTHER_AGENCY = "so-xay-dung"

ACTORS: dict[Role, Actor] = {
    Role.COORDINATOR: Actor(Role.COORDINATOR, "ioc-operator-1", None),
    Role.OFFICER: Actor(Role.OFFICER, "officer-1", AGENCY),
    Role.LEADER: Actor(Role.LEADER, "leader-1", AGENCY),
    Role.SUPERVISOR: Actor(Role.SUPERVISOR, "ubnd-tinh-1", None),
    Role.REPORTER: Actor(Role.REPORTER, "reporter-1", None),
    Role.SYSTEM: Actor(Role.SYSTEM, "routing", None),
}

SAMPLE_ACTIONS: dict[ActionType, Action] = {
    ActionType.SCREEN: ScreenAction(),
    ActionType.REJECT: RejectAction(reason_code=RejectReason.SPAM, note="quảng cáo"),
    ActionType.MERGE: MergeAction(duplicate_of="report-42"),
    ActionType.ASSIGN: AssignAction(agency_id=AGENCY, reason="Sai thẩm quyền"),
    ActionType.ACKNOWLEDGE: AcknowledgeAction(),
    ActionType.RETURN: ReturnAction(reason="Không thuộc thẩm quyền"),
    ActionType.REQUEST_EXTENSION: RequestExtensionAction(days=3, reason="Chờ vật tư"),
    ActionType.APPROVE_EXTENSION: ApproveExtensionAction(),
    ActionType.DENY_EXTENSION: DenyExtensionAction(reason="Không đủ căn cứ"),
    ActionType.RESPOND: RespondAction(text="Đã vá ổ gà", evidence=("media-1",)),
    ActionType.APPROVE_RESPONSE: ApproveResponseAction(),
    ActionType.SEND_BACK: SendBackAction(reason="Thiếu ảnh"),
    ActionType.REVIEW_REJECT: ReviewRejectAction(reason="Chưa trả lời đúng nội dung"),
    ActionType.PUBLISH: PublishAction(),
    ActionType.RATE: RateAction(rating=5),
    ActionType.REOPEN: ReopenAction(reason="Ổ gà vẫn còn"),
    ActionType.CLOSE: CloseAction(),
    ActionType.RESCREEN: RescreenAction(reason="Cần phân loại lại"),
    ActionType.PAUSE_FOR_REPORTER: PauseForReporterAction(reason="Xin vị trí chính xác"),
    ActionType.RESUME: ResumeAction(),
    ActionType.ADD_NOTE: AddNoteAction(text="Đã phối hợp kiểm tra hiện trường"),
}


def snap(state: State, **changes: object) -> ReportSnapshot:
    """Snapshot of a report handled by AGENCY, closed yesterday when CLOSED."""
    base = ReportSnapshot(
        state=state,
        agency_id=AGENCY,
        requires_leader_approval=False,
        reopen_count=0,
        extension_count=0,
        closed_at=NOW - timedelta(days=1) if state is State.CLOSED else None,
        waiting_for_reporter=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


C, OF, L, R, Y = Role.COORDINATOR, Role.OFFICER, Role.LEADER, Role.REPORTER, Role.SYSTEM

# Every edge of domain.md §3.2 (plus the automatic SUBMITTED→ASSIGNED routing edge and the
# waiting-for-reporter annotations), with the roles that may take it. Written out by hand.
EDGES: list[tuple[ReportSnapshot, ActionType, set[Role], State]] = [
    (snap(State.SUBMITTED, agency_id=None), ActionType.SCREEN, {C}, State.SCREENING),
    (snap(State.SUBMITTED, agency_id=None), ActionType.ASSIGN, {Y}, State.ASSIGNED),
    (snap(State.SCREENING, agency_id=None), ActionType.REJECT, {C}, State.REJECTED),
    (snap(State.SCREENING, agency_id=None), ActionType.MERGE, {C}, State.MERGED),
    (snap(State.SCREENING, agency_id=None), ActionType.ASSIGN, {C, Y}, State.ASSIGNED),
    (snap(State.ASSIGNED), ActionType.ACKNOWLEDGE, {OF, L}, State.IN_PROGRESS),
    (snap(State.ASSIGNED), ActionType.RETURN, {OF, L}, State.RETURNED),
    (snap(State.IN_PROGRESS), ActionType.RETURN, {OF, L}, State.RETURNED),
    (snap(State.RETURNED), ActionType.ASSIGN, {C, Y}, State.ASSIGNED),
    (snap(State.RETURNED), ActionType.REJECT, {C}, State.REJECTED),
    (
        snap(State.IN_PROGRESS),
        ActionType.REQUEST_EXTENSION,
        {OF, L},
        State.EXTENSION_REQUESTED,
    ),
    (snap(State.EXTENSION_REQUESTED), ActionType.APPROVE_EXTENSION, {C}, State.IN_PROGRESS),
    (snap(State.EXTENSION_REQUESTED), ActionType.DENY_EXTENSION, {C}, State.IN_PROGRESS),
    (
        snap(State.IN_PROGRESS, requires_leader_approval=True),
        ActionType.RESPOND,
        {OF, L},
        State.PENDING_APPROVAL,
    ),
    (snap(State.IN_PROGRESS), ActionType.RESPOND, {OF, L}, State.RESOLVED),
    (snap(State.PENDING_APPROVAL), ActionType.SEND_BACK, {L}, State.IN_PROGRESS),
    (snap(State.PENDING_APPROVAL), ActionType.APPROVE_RESPONSE, {L}, State.RESOLVED),
    (snap(State.RESOLVED), ActionType.REVIEW_REJECT, {C}, State.IN_PROGRESS),
    (snap(State.RESOLVED), ActionType.PUBLISH, {C, Y}, State.PUBLISHED),
    (snap(State.PUBLISHED), ActionType.RATE, {R}, State.RATED),
    (snap(State.PUBLISHED), ActionType.CLOSE, {C, Y}, State.CLOSED),
    (snap(State.RATED), ActionType.CLOSE, {C, Y}, State.CLOSED),
    (snap(State.PUBLISHED), ActionType.REOPEN, {R, C}, State.REOPENED),
    (snap(State.RATED), ActionType.REOPEN, {R, C}, State.REOPENED),
    (snap(State.CLOSED), ActionType.REOPEN, {R, C}, State.REOPENED),
    (snap(State.REOPENED), ActionType.RESCREEN, {C}, State.SCREENING),
    (snap(State.REOPENED), ActionType.ASSIGN, {C, Y}, State.ASSIGNED),
    (snap(State.REOPENED), ActionType.REJECT, {C}, State.REJECTED),
    (snap(State.REOPENED), ActionType.MERGE, {C}, State.MERGED),
    (snap(State.RETURNED), ActionType.RESCREEN, {C}, State.SCREENING),
    # the coordinator's override of an agency holding the report (domain.md §6)
    *[
        (snap(state), action, {C}, to)
        for state in sorted(AGENCY_HELD_STATES)
        for action, to in (
            (ActionType.ASSIGN, State.ASSIGNED),
            (ActionType.REJECT, State.REJECTED),
            (ActionType.MERGE, State.MERGED),
            (ActionType.RESCREEN, State.SCREENING),
        )
    ],
    # notes and partial responses: lead or co-handling agency, or the coordinator
    *[
        (snap(state), ActionType.ADD_NOTE, {C, OF, L}, state)
        for state in sorted(AGENCY_HELD_STATES - {State.RESOLVED})
    ],
    (snap(State.IN_PROGRESS), ActionType.PAUSE_FOR_REPORTER, {OF, L}, State.IN_PROGRESS),
    (
        snap(State.IN_PROGRESS, waiting_for_reporter=True),
        ActionType.RESUME,
        {OF, L, Y},
        State.IN_PROGRESS,
    ),
]

ALLOWED_ROLE_CASES = [
    pytest.param(s, a, role, to, id=f"{s.state}-{a}-{role}")
    for s, a, roles, to in EDGES
    for role in sorted(roles)
]
REFUSED_ROLE_CASES = [
    pytest.param(s, a, role, id=f"{s.state}-{a}-{role}")
    for s, a, roles, _ in EDGES
    for role in sorted(set(Role) - roles)
]

OVERRIDE = [ActionType.REJECT, ActionType.MERGE, ActionType.ASSIGN]
RESCREEN = [ActionType.RESCREEN]
NOTE = [ActionType.ADD_NOTE]
# Actions possible from each state (for some role), in ActionType declaration order.
STATE_ACTIONS: dict[State, list[ActionType]] = {
    State.SUBMITTED: [ActionType.SCREEN, ActionType.ASSIGN],
    State.SCREENING: [ActionType.REJECT, ActionType.MERGE, ActionType.ASSIGN],
    State.REJECTED: [],
    State.MERGED: [],
    State.ASSIGNED: [*OVERRIDE, ActionType.ACKNOWLEDGE, ActionType.RETURN, *RESCREEN, *NOTE],
    State.RETURNED: [ActionType.REJECT, ActionType.ASSIGN, ActionType.RESCREEN],
    State.IN_PROGRESS: [
        *OVERRIDE,
        ActionType.RETURN,
        ActionType.REQUEST_EXTENSION,
        ActionType.RESPOND,
        *RESCREEN,
        ActionType.PAUSE_FOR_REPORTER,
        *NOTE,
    ],
    State.EXTENSION_REQUESTED: [
        *OVERRIDE,
        ActionType.APPROVE_EXTENSION,
        ActionType.DENY_EXTENSION,
        *RESCREEN,
        *NOTE,
    ],
    State.PENDING_APPROVAL: [
        *OVERRIDE,
        ActionType.APPROVE_RESPONSE,
        ActionType.SEND_BACK,
        *RESCREEN,
        *NOTE,
    ],
    State.RESOLVED: [*OVERRIDE, ActionType.REVIEW_REJECT, ActionType.PUBLISH, *RESCREEN],
    State.PUBLISHED: [ActionType.RATE, ActionType.REOPEN, ActionType.CLOSE],
    State.RATED: [ActionType.REOPEN, ActionType.CLOSE],
    State.REOPENED: [ActionType.REJECT, ActionType.MERGE, ActionType.ASSIGN, ActionType.RESCREEN],
    State.CLOSED: [ActionType.REOPEN],
}

ILLEGAL_CASES = [
    pytest.param(state, action, id=f"{state}-{action}")
    for state, allowed in STATE_ACTIONS.items()
    for action in ActionType
    if action not in allowed
]


# --- enums and constants ---------------------------------------------------------------------


def test_state_values_are_lower_case_names() -> None:
    assert State.IN_PROGRESS.value == "in_progress"
    assert State.EXTENSION_REQUESTED.value == "extension_requested"
    assert all(s.value == s.name.lower() for s in State)
    assert len(State) == 14


def test_state_labels_cover_every_state_in_vietnamese() -> None:
    assert set(STATE_LABELS_VI) == set(State)
    assert STATE_LABELS_VI[State.SUBMITTED] == "Chờ tiếp nhận"
    assert STATE_LABELS_VI[State.IN_PROGRESS] == "Đang xử lý"
    assert STATE_LABELS_VI[State.PENDING_APPROVAL] == "Chờ lãnh đạo duyệt"
    assert STATE_LABELS_VI[State.REOPENED] == "Phản ánh lại"


def test_terminal_and_open311_closed_state_sets() -> None:
    assert TERMINAL_STATES == {State.REJECTED, State.MERGED, State.CLOSED}
    assert CLOSED_FOR_OPEN311 == {
        State.PUBLISHED,
        State.RATED,
        State.CLOSED,
        State.REJECTED,
        State.MERGED,
    }


def test_role_values() -> None:
    assert [r.value for r in Role] == [
        "coordinator",
        "officer",
        "leader",
        "supervisor",
        "reporter",
        "system",
    ]


# --- transitions: roles ----------------------------------------------------------------------


@pytest.mark.parametrize(("snapshot", "action_type", "role", "to_state"), ALLOWED_ROLE_CASES)
def test_transition_allowed_for_permitted_role(
    snapshot: ReportSnapshot, action_type: ActionType, role: Role, to_state: State
) -> None:
    transition = decide(snapshot, SAMPLE_ACTIONS[action_type], ACTORS[role], now=NOW)

    assert transition.from_state is snapshot.state
    assert transition.to_state is to_state
    assert transition.action_type is action_type


@pytest.mark.parametrize(("snapshot", "action_type", "role"), REFUSED_ROLE_CASES)
def test_transition_forbidden_for_other_roles(
    snapshot: ReportSnapshot, action_type: ActionType, role: Role
) -> None:
    with pytest.raises(Forbidden):
        decide(snapshot, SAMPLE_ACTIONS[action_type], ACTORS[role], now=NOW)


def test_coordinator_cannot_assign_straight_from_submitted() -> None:
    with pytest.raises(Forbidden, match="system"):
        decide(
            snap(State.SUBMITTED, agency_id=None),
            AssignAction(agency_id=AGENCY),
            ACTORS[Role.COORDINATOR],
            now=NOW,
        )


def test_supervisor_has_no_actions_in_any_state() -> None:
    for state in State:
        assert allowed_actions(snap(state), ACTORS[Role.SUPERVISOR]) == []


# --- transitions: illegal ----------------------------------------------------------------------


@pytest.mark.parametrize(("state", "action_type"), ILLEGAL_CASES)
def test_illegal_transition_names_state_and_allowed_actions(
    state: State, action_type: ActionType
) -> None:
    snapshot = snap(state)
    with pytest.raises(IllegalTransition) as excinfo:
        decide(snapshot, SAMPLE_ACTIONS[action_type], ACTORS[Role.COORDINATOR], now=NOW)

    error = excinfo.value
    assert error.current is state
    assert error.action is action_type
    assert error.allowed == STATE_ACTIONS[state]
    message = str(error)
    assert f"'{state.value}'" in message
    assert f"'{action_type.value}'" in message
    for allowed in STATE_ACTIONS[state]:
        assert allowed.value in message


def test_illegal_transition_message_from_submitted() -> None:
    with pytest.raises(IllegalTransition) as excinfo:
        decide(snap(State.SUBMITTED), PublishAction(), ACTORS[Role.COORDINATOR], now=NOW)

    assert str(excinfo.value) == (
        "action 'publish' is not allowed in state 'submitted'; allowed actions: screen, assign"
    )


def test_illegal_transition_from_terminal_state_says_none_allowed() -> None:
    with pytest.raises(IllegalTransition, match="allowed actions: none"):
        decide(snap(State.REJECTED), ReopenAction(reason="x"), ACTORS[Role.REPORTER], now=NOW)


def test_state_is_checked_before_role() -> None:
    with pytest.raises(IllegalTransition):
        decide(snap(State.RESOLVED), RateAction(rating=5), ACTORS[Role.SUPERVISOR], now=NOW)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(
            snap(State.SUBMITTED),
            ScreenAction(),
            ACTORS[Role.COORDINATOR],
            now=datetime(2026, 3, 10, 9, 0),
        )


# --- agency and reporter matching -------------------------------------------------------------


def test_officer_of_another_agency_is_forbidden() -> None:
    outsider = Actor(Role.OFFICER, "officer-9", OTHER_AGENCY)
    with pytest.raises(Forbidden, match="own agency"):
        decide(snap(State.ASSIGNED), AcknowledgeAction(), outsider, now=NOW)


def test_leader_of_another_agency_cannot_approve_response() -> None:
    outsider = Actor(Role.LEADER, "leader-9", OTHER_AGENCY)
    with pytest.raises(Forbidden):
        decide(snap(State.PENDING_APPROVAL), ApproveResponseAction(), outsider, now=NOW)


def test_officer_without_agency_is_forbidden() -> None:
    with pytest.raises(Forbidden):
        decide(
            snap(State.IN_PROGRESS),
            RespondAction(text="Đã xử lý"),
            Actor(Role.OFFICER, "officer-2", None),
            now=NOW,
        )


def test_officer_cannot_act_on_report_without_agency() -> None:
    with pytest.raises(Forbidden):
        decide(
            snap(State.ASSIGNED, agency_id=None), AcknowledgeAction(), ACTORS[Role.OFFICER], now=NOW
        )


def test_coordinator_needs_no_agency_match() -> None:
    transition = decide(
        snap(State.RESOLVED, agency_id=OTHER_AGENCY),
        PublishAction(),
        ACTORS[Role.COORDINATOR],
        now=NOW,
    )
    assert transition.to_state is State.PUBLISHED


def test_reporter_other_than_the_report_owner_is_forbidden() -> None:
    snapshot = snap(State.PUBLISHED, reporter_subject="reporter-1")
    stranger = Actor(Role.REPORTER, "reporter-2", None)
    with pytest.raises(Forbidden, match="own report"):
        decide(snapshot, RateAction(rating=4), stranger, now=NOW)
    assert decide(snapshot, RateAction(rating=4), ACTORS[Role.REPORTER], now=NOW).to_state is (
        State.RATED
    )


# --- leader approval ---------------------------------------------------------------------------


def test_respond_goes_to_pending_approval_when_leader_approval_required() -> None:
    snapshot = snap(State.IN_PROGRESS, requires_leader_approval=True)
    transition = decide(snapshot, SAMPLE_ACTIONS[ActionType.RESPOND], ACTORS[Role.OFFICER], now=NOW)

    assert transition.to_state is State.PENDING_APPROVAL
    assert transition.details["requires_leader_approval"] is True
    assert transition.details["text"] == "Đã vá ổ gà"
    assert transition.details["evidence"] == ["media-1"]


def test_respond_resolves_directly_without_leader_approval() -> None:
    snapshot = snap(State.IN_PROGRESS, requires_leader_approval=False)
    transition = decide(snapshot, SAMPLE_ACTIONS[ActionType.RESPOND], ACTORS[Role.OFFICER], now=NOW)

    assert transition.to_state is State.RESOLVED
    assert transition.details["requires_leader_approval"] is False


def test_leader_approval_path_ends_resolved() -> None:
    drafted = decide(
        snap(State.IN_PROGRESS, requires_leader_approval=True),
        RespondAction(text="Đã xử lý xong"),
        ACTORS[Role.OFFICER],
        now=NOW,
    )
    approved = decide(
        snap(drafted.to_state, requires_leader_approval=True),
        ApproveResponseAction(),
        ACTORS[Role.LEADER],
        now=NOW,
    )
    assert (drafted.to_state, approved.to_state) == (State.PENDING_APPROVAL, State.RESOLVED)


def test_officer_cannot_approve_own_draft() -> None:
    with pytest.raises(Forbidden):
        decide(snap(State.PENDING_APPROVAL), ApproveResponseAction(), ACTORS[Role.OFFICER], now=NOW)


def test_send_back_records_reason() -> None:
    transition = decide(
        snap(State.PENDING_APPROVAL),
        SendBackAction(reason="Thiếu ảnh"),
        ACTORS[Role.LEADER],
        now=NOW,
    )
    assert transition.to_state is State.IN_PROGRESS
    assert transition.reason == "Thiếu ảnh"


# --- reopen limits and window ------------------------------------------------------------------


def test_reopen_increments_count_in_details() -> None:
    transition = decide(
        snap(State.PUBLISHED, reopen_count=1),
        ReopenAction(reason="Vẫn chưa sửa"),
        ACTORS[Role.REPORTER],
        now=NOW,
    )
    assert transition.to_state is State.REOPENED
    assert transition.details["reopen_count"] == 2
    assert transition.reason == "Vẫn chưa sửa"


def test_third_reopen_is_refused_by_default() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        decide(
            snap(State.RATED, reopen_count=2),
            ReopenAction(reason="Vẫn chưa sửa"),
            ACTORS[Role.REPORTER],
            now=NOW,
        )
    assert excinfo.value.field == "reopen_count"


def test_reopen_limit_is_configurable() -> None:
    transition = decide(
        snap(State.RATED, reopen_count=2),
        ReopenAction(reason="Vẫn chưa sửa"),
        ACTORS[Role.COORDINATOR],
        now=NOW,
        max_reopens=3,
    )
    assert transition.details["reopen_count"] == 3


def test_reopen_limit_applies_to_coordinator_too() -> None:
    with pytest.raises(RuleViolation):
        decide(
            snap(State.PUBLISHED, reopen_count=2),
            ReopenAction(reason="Kiểm tra lại"),
            ACTORS[Role.COORDINATOR],
            now=NOW,
        )


def test_reopen_from_closed_on_last_day_of_window_is_allowed() -> None:
    snapshot = snap(State.CLOSED, closed_at=NOW - timedelta(days=30))
    transition = decide(snapshot, ReopenAction(reason="Tái diễn"), ACTORS[Role.REPORTER], now=NOW)
    assert transition.to_state is State.REOPENED


def test_reopen_from_closed_after_window_is_refused() -> None:
    snapshot = snap(State.CLOSED, closed_at=NOW - timedelta(days=30, seconds=1))
    with pytest.raises(RuleViolation) as excinfo:
        decide(snapshot, ReopenAction(reason="Tái diễn"), ACTORS[Role.REPORTER], now=NOW)
    assert excinfo.value.field == "closed_at"
    assert "30 days" in excinfo.value.message


def test_reopen_window_is_configurable() -> None:
    snapshot = snap(State.CLOSED, closed_at=NOW - timedelta(days=45))
    transition = decide(
        snapshot,
        ReopenAction(reason="Tái diễn"),
        ACTORS[Role.REPORTER],
        now=NOW,
        reopen_window_days=60,
    )
    assert transition.to_state is State.REOPENED


def test_reopen_from_closed_without_closing_time_is_refused() -> None:
    with pytest.raises(RuleViolation, match="closing time"):
        decide(
            snap(State.CLOSED, closed_at=None),
            ReopenAction(reason="Tái diễn"),
            ACTORS[Role.REPORTER],
            now=NOW,
        )


def test_window_does_not_apply_to_published_reports() -> None:
    transition = decide(
        snap(State.PUBLISHED, closed_at=None),
        ReopenAction(reason="Chưa sửa"),
        ACTORS[Role.REPORTER],
        now=NOW,
    )
    assert transition.to_state is State.REOPENED


def test_low_rating_with_reopen_goes_through_reopen() -> None:
    transition = decide(
        snap(State.PUBLISHED, reopen_count=0),
        RateAction(rating=2, comment="Chưa sửa gì", reopen=True),
        ACTORS[Role.REPORTER],
        now=NOW,
    )
    assert transition.to_state is State.REOPENED
    assert transition.action_type is ActionType.REOPEN
    assert transition.details["rating"] == 2
    assert transition.details["reopen_count"] == 1
    assert transition.reason == "Chưa sửa gì"


def test_low_rating_without_reopen_just_rates() -> None:
    transition = decide(
        snap(State.PUBLISHED), RateAction(rating=1, comment="Chậm"), ACTORS[Role.REPORTER], now=NOW
    )
    assert transition.to_state is State.RATED
    assert transition.action_type is ActionType.RATE
    assert transition.details == {"rating": 1, "comment": "Chậm", "reopen": False}


def test_low_rating_reopen_respects_reopen_limit() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        decide(
            snap(State.PUBLISHED, reopen_count=2),
            RateAction(rating=1, comment="Chưa sửa", reopen=True),
            ACTORS[Role.REPORTER],
            now=NOW,
        )
    assert excinfo.value.field == "reopen_count"


def test_high_rating_cannot_reopen() -> None:
    with pytest.raises(ValidationError) as excinfo:
        parse_action({"type": "rate", "rating": 4, "comment": "ok", "reopen": True})
    assert excinfo.value.errors()[0]["loc"] == ("rate", "reopen")


def test_reopen_by_rating_needs_a_comment() -> None:
    with pytest.raises(ValidationError) as excinfo:
        parse_action({"type": "rate", "rating": 1, "reopen": True})
    assert excinfo.value.errors()[0]["loc"] == ("rate", "reopen")


# --- extension limits --------------------------------------------------------------------------


def test_extension_request_within_limits_is_accepted() -> None:
    transition = decide(
        snap(State.IN_PROGRESS),
        RequestExtensionAction(days=5, reason="Chờ vật tư"),
        ACTORS[Role.OFFICER],
        now=NOW,
    )
    assert transition.to_state is State.EXTENSION_REQUESTED
    assert transition.details == {"days": 5, "reason": "Chờ vật tư"}


def test_extension_days_over_limit_are_refused() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        decide(
            snap(State.IN_PROGRESS),
            RequestExtensionAction(days=6, reason="Chờ vật tư"),
            ACTORS[Role.OFFICER],
            now=NOW,
        )
    assert excinfo.value.field == "days"


def test_extension_day_limit_is_configurable() -> None:
    transition = decide(
        snap(State.IN_PROGRESS),
        RequestExtensionAction(days=6, reason="Chờ vật tư"),
        ACTORS[Role.OFFICER],
        now=NOW,
        max_extension_days=10,
    )
    assert transition.details["days"] == 6


def test_second_extension_is_refused_by_default() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        decide(
            snap(State.IN_PROGRESS, extension_count=1),
            RequestExtensionAction(days=2, reason="Chờ vật tư"),
            ACTORS[Role.LEADER],
            now=NOW,
        )
    assert excinfo.value.field == "extension_count"


def test_extension_count_limit_is_configurable() -> None:
    transition = decide(
        snap(State.IN_PROGRESS, extension_count=1),
        RequestExtensionAction(days=2, reason="Chờ vật tư"),
        ACTORS[Role.LEADER],
        now=NOW,
        max_extensions=2,
    )
    assert transition.to_state is State.EXTENSION_REQUESTED


def test_approved_extension_increments_count() -> None:
    transition = decide(
        snap(State.EXTENSION_REQUESTED, extension_count=0),
        ApproveExtensionAction(days=2),
        ACTORS[Role.COORDINATOR],
        now=NOW,
    )
    assert transition.to_state is State.IN_PROGRESS
    assert transition.details["extension_count"] == 1
    assert transition.details["days"] == 2


def test_approved_extension_days_over_limit_are_refused() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        decide(
            snap(State.EXTENSION_REQUESTED),
            ApproveExtensionAction(days=7),
            ACTORS[Role.COORDINATOR],
            now=NOW,
        )
    assert excinfo.value.field == "days"


def test_denied_extension_does_not_count() -> None:
    transition = decide(
        snap(State.EXTENSION_REQUESTED),
        DenyExtensionAction(reason="Không đủ căn cứ"),
        ACTORS[Role.COORDINATOR],
        now=NOW,
    )
    assert transition.to_state is State.IN_PROGRESS
    assert "extension_count" not in transition.details
    assert transition.reason == "Không đủ căn cứ"


# --- waiting for reporter ----------------------------------------------------------------------


def test_pause_for_reporter_keeps_state_and_sets_flag() -> None:
    transition = decide(
        snap(State.IN_PROGRESS),
        PauseForReporterAction(reason="Xin vị trí chính xác"),
        ACTORS[Role.OFFICER],
        now=NOW,
    )
    assert transition.from_state is transition.to_state is State.IN_PROGRESS
    assert transition.details["waiting_for_reporter"] is True


def test_resume_clears_flag() -> None:
    transition = decide(
        snap(State.IN_PROGRESS, waiting_for_reporter=True),
        ResumeAction(),
        ACTORS[Role.SYSTEM],
        now=NOW,
    )
    assert transition.to_state is State.IN_PROGRESS
    assert transition.details["waiting_for_reporter"] is False


def test_pause_while_already_waiting_is_illegal() -> None:
    with pytest.raises(IllegalTransition) as excinfo:
        decide(
            snap(State.IN_PROGRESS, waiting_for_reporter=True),
            PauseForReporterAction(reason="Hỏi thêm"),
            ACTORS[Role.OFFICER],
            now=NOW,
        )
    assert excinfo.value.allowed == [
        *OVERRIDE,
        ActionType.RETURN,
        ActionType.REQUEST_EXTENSION,
        ActionType.RESPOND,
        ActionType.RESCREEN,
        ActionType.RESUME,
        ActionType.ADD_NOTE,
    ]


def test_leaving_in_progress_clears_waiting_flag() -> None:
    transition = decide(
        snap(State.IN_PROGRESS, waiting_for_reporter=True),
        ReturnAction(reason="Không thuộc thẩm quyền"),
        ACTORS[Role.OFFICER],
        now=NOW,
    )
    assert transition.to_state is State.RETURNED
    assert transition.details["waiting_for_reporter"] is False


# --- transition payloads -----------------------------------------------------------------------


def test_reject_transition_carries_reason_code() -> None:
    transition = decide(
        snap(State.SCREENING),
        RejectAction(reason_code=RejectReason.CRIME_REPORT, note="Chuyển công an"),
        ACTORS[Role.COORDINATOR],
        now=NOW,
    )
    assert transition.reason == "crime_report"
    assert transition.details == {"reason_code": "crime_report", "note": "Chuyển công an"}


def test_reassign_records_previous_agency() -> None:
    transition = decide(
        snap(State.RETURNED, agency_id=AGENCY),
        AssignAction(agency_id=OTHER_AGENCY, co_agency_ids=("dien-luc",)),
        ACTORS[Role.COORDINATOR],
        now=NOW,
    )
    assert transition.details["agency_id"] == OTHER_AGENCY
    assert transition.details["previous_agency_id"] == AGENCY
    assert transition.details["co_agency_ids"] == ["dien-luc"]


# --- allowed_actions ---------------------------------------------------------------------------


def test_allowed_actions_for_coordinator_in_screening() -> None:
    assert allowed_actions(snap(State.SCREENING), ACTORS[Role.COORDINATOR]) == [
        ActionType.REJECT,
        ActionType.MERGE,
        ActionType.ASSIGN,
    ]


def test_allowed_actions_from_submitted_depend_on_role() -> None:
    submitted = snap(State.SUBMITTED, agency_id=None)
    assert allowed_actions(submitted, ACTORS[Role.COORDINATOR]) == [ActionType.SCREEN]
    assert allowed_actions(submitted, ACTORS[Role.SYSTEM]) == [ActionType.ASSIGN]


def test_allowed_actions_for_officer_in_progress() -> None:
    assert allowed_actions(snap(State.IN_PROGRESS), ACTORS[Role.OFFICER]) == [
        ActionType.RETURN,
        ActionType.REQUEST_EXTENSION,
        ActionType.RESPOND,
        ActionType.PAUSE_FOR_REPORTER,
        ActionType.ADD_NOTE,
    ]


def test_allowed_actions_hide_exhausted_extension() -> None:
    actions = allowed_actions(snap(State.IN_PROGRESS, extension_count=1), ACTORS[Role.OFFICER])
    assert ActionType.REQUEST_EXTENSION not in actions


def test_allowed_actions_empty_for_officer_of_other_agency() -> None:
    outsider = Actor(Role.OFFICER, "officer-9", OTHER_AGENCY)
    assert allowed_actions(snap(State.IN_PROGRESS), outsider) == []


def test_allowed_actions_check_reopen_window_only_with_now() -> None:
    closed_long_ago = snap(State.CLOSED, closed_at=NOW - timedelta(days=31))
    assert allowed_actions(closed_long_ago, ACTORS[Role.REPORTER]) == [ActionType.REOPEN]
    assert allowed_actions(closed_long_ago, ACTORS[Role.REPORTER], now=NOW) == []


def test_allowed_actions_hide_reopen_after_limit() -> None:
    actions = allowed_actions(snap(State.PUBLISHED, reopen_count=2), ACTORS[Role.REPORTER])
    assert actions == [ActionType.RATE]


# --- action parsing ----------------------------------------------------------------------------


def test_parse_reject_with_short_complaint_code() -> None:
    action = parse_action({"type": "reject", "reason_code": "complaint", "note": "Khiếu nại đất"})
    assert isinstance(action, RejectAction)
    assert action.reason_code is RejectReason.COMPLAINT_OR_DENUNCIATION
    assert action.note == "Khiếu nại đất"


def test_parse_action_from_json_text() -> None:
    action = parse_action('{"type": "assign", "agency_id": "so-xay-dung", "urgency": "urgent"}')
    assert isinstance(action, AssignAction)
    assert action.agency_id == "so-xay-dung"


def test_parse_error_names_missing_field() -> None:
    with pytest.raises(ValidationError) as excinfo:
        parse_action({"type": "reject", "note": "x"})
    assert [e["loc"] for e in excinfo.value.errors()] == [("reject", "reason_code")]


def test_parse_error_names_unknown_reason_code() -> None:
    with pytest.raises(ValidationError) as excinfo:
        parse_action({"type": "reject", "reason_code": "boring"})
    assert excinfo.value.errors()[0]["loc"] == ("reject", "reason_code")


def test_parse_error_names_rating_out_of_range() -> None:
    with pytest.raises(ValidationError) as excinfo:
        parse_action({"type": "rate", "rating": 6})
    assert excinfo.value.errors()[0]["loc"] == ("rate", "rating")


def test_parse_error_names_zero_extension_days() -> None:
    with pytest.raises(ValidationError) as excinfo:
        parse_action({"type": "request_extension", "days": 0, "reason": "x"})
    assert excinfo.value.errors()[0]["loc"] == ("request_extension", "days")


def test_parse_error_names_blank_reason() -> None:
    with pytest.raises(ValidationError) as excinfo:
        parse_action({"type": "return", "reason": "   "})
    assert excinfo.value.errors()[0]["loc"] == ("return", "reason")


def test_parse_error_names_unexpected_field() -> None:
    with pytest.raises(ValidationError) as excinfo:
        parse_action({"type": "screen", "agency": "x"})
    assert excinfo.value.errors()[0]["loc"] == ("screen", "agency")


def test_parse_error_for_unknown_type_mentions_type() -> None:
    with pytest.raises(ValidationError, match="'type'"):
        parse_action({"type": "teleport"})


def test_lead_agency_cannot_also_co_handle() -> None:
    with pytest.raises(ValidationError) as excinfo:
        parse_action({"type": "assign", "agency_id": "a", "co_agency_ids": ["a"]})
    assert excinfo.value.errors()[0]["loc"] == ("assign", "co_agency_ids")


def test_actions_are_frozen() -> None:
    action = ReturnAction(reason="x")
    with pytest.raises(ValidationError):
        action.reason = "y"  # type: ignore[misc]


# --- normalize_description ---------------------------------------------------------------------


def test_normalize_composes_nfd_and_keeps_diacritics() -> None:
    decomposed = "Ho\u0302\u0300 Ta\u0302y"  # "Hồ Tây" written in NFD
    assert normalize_description(decomposed) == "H\u1ed3 T\u00e2y"


def test_normalize_strips_and_collapses_blank_lines() -> None:
    text = "  Ổ gà  \r\n\r\n\r\n\r\n\r\nNguy hiểm \n"
    assert normalize_description(text) == "Ổ gà\n\n\nNguy hiểm"


def test_normalize_keeps_two_blank_lines_and_tabs() -> None:
    assert normalize_description("a\n\n\nb\tc") == "a\n\n\nb\tc"


def test_normalize_rejects_empty_text() -> None:
    with pytest.raises(RuleViolation) as excinfo:
        normalize_description(" \n\t \n")
    assert excinfo.value.field == "description"


def test_normalize_rejects_text_over_max_len() -> None:
    assert normalize_description("a" * 4000) == "a" * 4000
    with pytest.raises(RuleViolation, match="4000"):
        normalize_description("a" * 4001)
    with pytest.raises(RuleViolation):
        normalize_description("ổ gà lớn", max_len=5)


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x85"])
def test_normalize_rejects_control_characters(char: str) -> None:
    with pytest.raises(RuleViolation, match="control character"):
        normalize_description(f"Ổ gà{char}lớn")


@pytest.mark.parametrize(
    "text", ["<script>alert(1)</script>", "Xem <b>đây</b>", "ảnh <img src=x>", "a<br/>b"]
)
def test_normalize_rejects_html(text: str) -> None:
    with pytest.raises(RuleViolation, match="HTML"):
        normalize_description(text)


def test_normalize_allows_angle_brackets_that_are_not_tags() -> None:
    assert normalize_description("Độ sâu < 5 cm, rộng > 1 m") == "Độ sâu < 5 cm, rộng > 1 m"


# --- content_warnings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Gọi 0912345678 nhé",
        "SĐT +84 912 345 678",
        "84-91-234-5678",
        "0912.345.678",
        "(+84) 987654321",
        "Máy bàn 024 3825 1234",
    ],
)
def test_warns_about_phone_numbers(text: str) -> None:
    assert content_warnings(text) == ["phone_number"]


def test_twelve_digit_phone_with_country_code_is_not_an_id() -> None:
    assert content_warnings("840912345678") == ["phone_number"]


@pytest.mark.parametrize("text", ["CCCD 001099012345", "CMND số 012345678"])
def test_warns_about_id_numbers(text: str) -> None:
    assert content_warnings(text) == ["id_number"]


def test_warns_about_email() -> None:
    assert content_warnings("Liên hệ an.nguyen@example.com") == ["email"]


@pytest.mark.parametrize(
    "text",
    ["Địt mẹ bọn nó", "dit me", "DCM lại ngập", "Đồ khốn nạn", "thằng ngu", "Ngu như bò"],
)
def test_warns_about_profanity(text: str) -> None:
    assert content_warnings(text) == ["profanity"]


def test_profanity_in_decomposed_text_is_found() -> None:
    assert content_warnings("Kho\u0302\u0301n na\u0323n") == ["profanity"]


@pytest.mark.parametrize(
    "text",
    [
        "Ổ gà lớn trên đường Nguyễn Văn Cừ, phường Suối Hoa",
        "Tấm vải lớn che kín mặt đường",
        "Đã 1 tháng chờ xử lý mà vẫn chưa có ai đến",
        "Còn các buổi sáng thì người dân phải đeo khẩu trang",
        "Xác chó chết ở đầu ngõ 12, thu phí 5.000.000 đồng ngày 12/03/2026",
        "Đường cụt, đi không được",
    ],
)
def test_no_warnings_for_ordinary_descriptions(text: str) -> None:
    assert content_warnings(text) == []


def test_warnings_are_reported_once_in_fixed_order() -> None:
    text = "vcl, gọi 0912345678 hoặc 0987654321, CCCD 001099012345, mail a@b.vn"
    assert content_warnings(text) == ["phone_number", "id_number", "email", "profanity"]


# --- fold_diacritics, haversine_m, human_number ------------------------------------------------


def test_fold_diacritics_street_name() -> None:
    assert fold_diacritics("Đường Nguyễn Trãi") == "duong nguyen trai"


def test_fold_diacritics_handles_upper_case_and_nfd() -> None:
    assert fold_diacritics("ĐẮK LẮK") == "dak lak"
    assert fold_diacritics("Ho\u0302\u0300 Gu\u031bo\u031bm") == "ho guom"


def test_haversine_one_degree_of_latitude() -> None:
    # 6,371,008.8 m * pi / 180
    assert haversine_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(111_195.08, abs=0.01)


def test_haversine_equator_to_pole() -> None:
    # 6,371,008.8 m * pi / 2
    assert haversine_m(0.0, 105.0, 90.0, 105.0) == pytest.approx(10_007_557.22, abs=0.01)


def test_haversine_is_zero_for_same_point_and_symmetric() -> None:
    assert haversine_m(21.0285, 105.8542, 21.0285, 105.8542) == 0.0
    there = haversine_m(21.0285, 105.8542, 10.7725, 106.6980)
    back = haversine_m(10.7725, 106.6980, 21.0285, 105.8542)
    assert there == pytest.approx(back)


def test_human_number_pads_sequence() -> None:
    assert human_number("BN", 2026, 123) == "BN-2026-000123"
    assert human_number("HUE", 2025, 1_234_567) == "HUE-2025-1234567"


@pytest.mark.parametrize(
    ("prefix", "year", "seq"), [("bn", 2026, 1), ("", 2026, 1), ("BN", 26, 1), ("BN", 2026, 0)]
)
def test_human_number_rejects_bad_input(prefix: str, year: int, seq: int) -> None:
    with pytest.raises(ValueError, match="must"):
        human_number(prefix, year, seq)
