"""Pure domain model of the intake service: report lifecycle, actions and text rules.

Nothing here performs I/O (the profanity list is a package resource read once).
See domain.md §3 (lifecycle) and §9 (content, privacy, rejection reasons).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from importlib.resources import files
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    field_validator,
)

from paht_common.roles import AGENCY_ROLES, Role

__all__ = ["AGENCY_ROLES", "Role"]  # re-exported: intake's modules import roles from here

# ---------------------------------------------------------------------------
# States, roles, action types
# ---------------------------------------------------------------------------


class State(StrEnum):
    """Lifecycle state of a report (domain.md §3.1)."""

    SUBMITTED = "submitted"
    SCREENING = "screening"
    REJECTED = "rejected"
    MERGED = "merged"
    ASSIGNED = "assigned"
    RETURNED = "returned"
    IN_PROGRESS = "in_progress"
    EXTENSION_REQUESTED = "extension_requested"
    PENDING_APPROVAL = "pending_approval"
    RESOLVED = "resolved"
    PUBLISHED = "published"
    RATED = "rated"
    REOPENED = "reopened"
    CLOSED = "closed"


STATE_LABELS_VI: Mapping[State, str] = MappingProxyType(
    {
        State.SUBMITTED: "Chờ tiếp nhận",
        State.SCREENING: "Đang phân loại",
        State.REJECTED: "Từ chối",
        State.MERGED: "Trùng",
        State.ASSIGNED: "Đã chuyển xử lý",
        State.RETURNED: "Trả lại",
        State.IN_PROGRESS: "Đang xử lý",
        State.EXTENSION_REQUESTED: "Chờ duyệt gia hạn",
        State.PENDING_APPROVAL: "Chờ lãnh đạo duyệt",
        State.RESOLVED: "Đã xử lý",
        State.PUBLISHED: "Công khai",
        State.RATED: "Đã đánh giá",
        State.REOPENED: "Phản ánh lại",
        State.CLOSED: "Đã đóng",
    }
)

# A published report: its response, and the files the coordinator released, reach the
# public. RATED and CLOSED follow only PUBLISHED; a REOPENED report is being handled again
# and shows none of it until it is published anew.
PUBLISHED_STATES: frozenset[State] = frozenset({State.PUBLISHED, State.RATED, State.CLOSED})


def sees_every_agency(role: Role) -> bool:
    """Whether staff of ``role`` may read the reports (and their files) of every agency;
    every other role reads only the reports assigned to its own agency."""
    return role in (Role.COORDINATOR, Role.SUPERVISOR)


TERMINAL_STATES: frozenset[State] = frozenset({State.REJECTED, State.MERGED, State.CLOSED})

# States in which an agency holds the report. The coordinator may override there (re-assign,
# reject, merge, send back to screening: domain.md §6 "the coordinator can always override"),
# and a re-assignment or a send-back from one of them needs a reason (§6: every re-routing is
# kept with actor, time and reason).
AGENCY_HELD_STATES: frozenset[State] = frozenset(
    {
        State.ASSIGNED,
        State.IN_PROGRESS,
        State.EXTENSION_REQUESTED,
        State.PENDING_APPROVAL,
        State.RESOLVED,
    }
)

POSITIVE_RATING = 3
"""A rating of at least this is positive: the report then closes when its rating window
ends (domain.md §3.3 #14); a lower rating leaves it RATED for the coordinator."""


def closes_after_rating(rating: int) -> bool:
    """Whether a report rated ``rating`` still closes by itself when its window ends."""
    return rating >= POSITIVE_RATING


# Open311 reports these as status "closed"; every other state is "open".
CLOSED_FOR_OPEN311: frozenset[State] = frozenset(
    {State.PUBLISHED, State.RATED, State.CLOSED, State.REJECTED, State.MERGED}
)


class ActionType(StrEnum):
    """A command that moves (or annotates) a report in its lifecycle."""

    SCREEN = "screen"
    REJECT = "reject"
    MERGE = "merge"
    ASSIGN = "assign"
    ACKNOWLEDGE = "acknowledge"
    RETURN = "return"
    REQUEST_EXTENSION = "request_extension"
    APPROVE_EXTENSION = "approve_extension"
    DENY_EXTENSION = "deny_extension"
    RESPOND = "respond"
    APPROVE_RESPONSE = "approve_response"
    SEND_BACK = "send_back"
    REVIEW_REJECT = "review_reject"
    PUBLISH = "publish"
    RATE = "rate"
    REOPEN = "reopen"
    CLOSE = "close"
    RESCREEN = "rescreen"
    PAUSE_FOR_REPORTER = "pause_for_reporter"
    RESUME = "resume"
    ADD_NOTE = "add_note"


OVERRIDE_ACTIONS: frozenset[ActionType] = frozenset(
    {ActionType.ASSIGN, ActionType.REJECT, ActionType.MERGE, ActionType.RESCREEN}
)
"""What the coordinator may do to a report an agency holds (recorded with ``override``)."""


class RejectReason(StrEnum):
    """Why a report is rejected (domain.md §9)."""

    COMPLAINT_OR_DENUNCIATION = "complaint_or_denunciation"
    STATE_SECRET = "state_secret"
    CRIME_REPORT = "crime_report"
    UNCLEAR_INFORMATION = "unclear_information"
    OFFENSIVE_LANGUAGE = "offensive_language"
    NOT_IN_SCOPE = "not_in_scope"
    DUPLICATE = "duplicate"
    OUTSIDE_PROVINCE = "outside_province"
    SPAM = "spam"
    UNDER_OTHER_PROCEDURE = "under_other_procedure"
    PRIVATE_DISPUTE = "private_dispute"


REJECT_REASON_LABELS_VI: Mapping[RejectReason, str] = MappingProxyType(
    {
        RejectReason.COMPLAINT_OR_DENUNCIATION: "Nội dung khiếu nại, tố cáo",
        RejectReason.STATE_SECRET: "Nội dung thuộc bí mật nhà nước",
        RejectReason.CRIME_REPORT: "Tố giác tội phạm (chuyển cơ quan công an)",
        RejectReason.UNCLEAR_INFORMATION: "Thông tin không rõ ràng, không đầy đủ",
        RejectReason.OFFENSIVE_LANGUAGE: "Ngôn từ không phù hợp, xúc phạm",
        RejectReason.NOT_IN_SCOPE: "Nội dung không thuộc phạm vi tiếp nhận",
        RejectReason.DUPLICATE: "Trùng với phản ánh đã có",
        RejectReason.OUTSIDE_PROVINCE: "Địa điểm ngoài địa bàn tỉnh",
        RejectReason.SPAM: "Quảng cáo, tin rác",
        RejectReason.UNDER_OTHER_PROCEDURE: "Vụ việc đang được giải quyết theo thủ tục khác",
        RejectReason.PRIVATE_DISPUTE: "Tranh chấp dân sự giữa cá nhân",
    }
)

# Short forms accepted on input for convenience; stored as the canonical code.
_REJECT_REASON_ALIASES: Mapping[str, RejectReason] = MappingProxyType(
    {
        "complaint": RejectReason.COMPLAINT_OR_DENUNCIATION,
        "denunciation": RejectReason.COMPLAINT_OR_DENUNCIATION,
    }
)


class Urgency(StrEnum):
    """Urgency chosen at routing time (iHanoi levels, domain.md §3.3 #2)."""

    NORMAL = "normal"
    URGENT = "urgent"
    COMPLEX = "complex"


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class DomainError(Exception):
    """Base class of every error raised by the intake domain."""


class IllegalTransition(DomainError):
    """The action is not possible from the report's current state."""

    def __init__(self, current: State, action: ActionType, allowed: list[ActionType]) -> None:
        self.current = current
        self.action = action
        self.allowed = list(allowed)
        allowed_text = ", ".join(a.value for a in self.allowed) or "none"
        super().__init__(
            f"action '{action.value}' is not allowed in state '{current.value}'; "
            f"allowed actions: {allowed_text}"
        )


class Forbidden(DomainError):
    """The actor's role or agency does not permit the action."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RuleViolation(DomainError):
    """A business rule on a field is broken (limits, windows, content)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


# ---------------------------------------------------------------------------
# Actions (commands), parsed from API input
# ---------------------------------------------------------------------------

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20000)]
Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


def _reject_reason_alias(value: object) -> object:
    if isinstance(value, str):
        return _REJECT_REASON_ALIASES.get(value.strip().lower(), value)
    return value


class _ActionBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScreenAction(_ActionBase):
    """Coordinator picks up a submitted report for screening."""

    type: Literal[ActionType.SCREEN] = ActionType.SCREEN
    note: ShortText | None = None


class RejectAction(_ActionBase):
    """Coordinator rejects the report with a reason code."""

    type: Literal[ActionType.REJECT] = ActionType.REJECT
    reason_code: Annotated[RejectReason, BeforeValidator(_reject_reason_alias)]
    note: ShortText | None = None


class MergeAction(_ActionBase):
    """Coordinator marks the report as a duplicate of an open master case."""

    type: Literal[ActionType.MERGE] = ActionType.MERGE
    duplicate_of: Identifier
    note: ShortText | None = None


class AssignAction(_ActionBase):
    """Coordinator or routing sends the report to a lead agency."""

    type: Literal[ActionType.ASSIGN] = ActionType.ASSIGN
    agency_id: Identifier
    co_agency_ids: tuple[Identifier, ...] = Field(default=(), max_length=20)
    urgency: Urgency | None = None
    note: ShortText | None = None
    reason: ShortText | None = None
    """Why the coordinator re-assigns; required when an agency holds the report."""

    @field_validator("co_agency_ids")
    @classmethod
    def _co_agencies_differ_from_lead(
        cls, value: tuple[str, ...], info: ValidationInfo
    ) -> tuple[str, ...]:
        if info.data.get("agency_id") in value:
            raise ValueError("the lead agency cannot also be a co-handling agency")
        if len(set(value)) != len(value):
            raise ValueError("co-handling agencies must be unique")
        return value


class AcknowledgeAction(_ActionBase):
    """Agency receives the report (tiếp nhận)."""

    type: Literal[ActionType.ACKNOWLEDGE] = ActionType.ACKNOWLEDGE
    note: ShortText | None = None


class ReturnAction(_ActionBase):
    """Agency returns the report to the coordinator as outside its remit."""

    type: Literal[ActionType.RETURN] = ActionType.RETURN
    reason: ShortText


class RequestExtensionAction(_ActionBase):
    """Agency asks for more time."""

    type: Literal[ActionType.REQUEST_EXTENSION] = ActionType.REQUEST_EXTENSION
    days: int = Field(ge=1)
    reason: ShortText


class ApproveExtensionAction(_ActionBase):
    """Coordinator grants the extension, optionally for fewer days than asked."""

    type: Literal[ActionType.APPROVE_EXTENSION] = ActionType.APPROVE_EXTENSION
    days: int | None = Field(default=None, ge=1)
    note: ShortText | None = None


class DenyExtensionAction(_ActionBase):
    """Coordinator refuses the extension."""

    type: Literal[ActionType.DENY_EXTENSION] = ActionType.DENY_EXTENSION
    reason: ShortText


class RespondAction(_ActionBase):
    """Agency submits its response (draft when leader approval is required)."""

    type: Literal[ActionType.RESPOND] = ActionType.RESPOND
    text: LongText
    evidence: tuple[Identifier, ...] = Field(default=(), max_length=50)
    public: bool = True


class ApproveResponseAction(_ActionBase):
    """Agency leader approves the drafted response."""

    type: Literal[ActionType.APPROVE_RESPONSE] = ActionType.APPROVE_RESPONSE
    note: ShortText | None = None


class SendBackAction(_ActionBase):
    """Agency leader sends the draft back to the officer."""

    type: Literal[ActionType.SEND_BACK] = ActionType.SEND_BACK
    reason: ShortText


class ReviewRejectAction(_ActionBase):
    """Coordinator finds the response insufficient (yêu cầu xử lý lại)."""

    type: Literal[ActionType.REVIEW_REJECT] = ActionType.REVIEW_REJECT
    reason: ShortText


class PublishAction(_ActionBase):
    """Result is released to the reporter and, if public, to the portal."""

    type: Literal[ActionType.PUBLISH] = ActionType.PUBLISH
    public: bool = True
    note: ShortText | None = None


class RateAction(_ActionBase):
    """Reporter rates the result; a low rating may reopen the report."""

    type: Literal[ActionType.RATE] = ActionType.RATE
    rating: int = Field(ge=1, le=5)
    comment: ShortText | None = None
    reopen: bool = False

    @field_validator("reopen")
    @classmethod
    def _reopen_needs_low_rating_and_comment(cls, value: bool, info: ValidationInfo) -> bool:
        if value:
            rating = info.data.get("rating")
            if isinstance(rating, int) and rating > 2:
                raise ValueError("only a rating of 1 or 2 can reopen the report")
            if not info.data.get("comment"):
                raise ValueError("a comment explaining why is required to reopen")
        return value


class ReopenAction(_ActionBase):
    """Reporter or coordinator says the issue is not fixed."""

    type: Literal[ActionType.REOPEN] = ActionType.REOPEN
    reason: ShortText


class CloseAction(_ActionBase):
    """Coordinator or the system closes a published report."""

    type: Literal[ActionType.CLOSE] = ActionType.CLOSE
    note: ShortText | None = None


class RescreenAction(_ActionBase):
    """Coordinator takes a reopened report back into screening."""

    type: Literal[ActionType.RESCREEN] = ActionType.RESCREEN
    note: ShortText | None = None
    reason: ShortText | None = None
    """Why the report goes back to screening; required when an agency holds it."""


class PauseForReporterAction(_ActionBase):
    """Agency asks the reporter for information; the report waits on them."""

    type: Literal[ActionType.PAUSE_FOR_REPORTER] = ActionType.PAUSE_FOR_REPORTER
    reason: ShortText


class ResumeAction(_ActionBase):
    """Work continues after the reporter answered (or the wait was abandoned)."""

    type: Literal[ActionType.RESUME] = ActionType.RESUME
    note: ShortText | None = None


class AddNoteAction(_ActionBase):
    """A note, or a partial response, from the lead or a co-handling agency (or the
    coordinator); the state does not change."""

    type: Literal[ActionType.ADD_NOTE] = ActionType.ADD_NOTE
    text: LongText
    partial_response: bool = False
    evidence: tuple[Identifier, ...] = Field(default=(), max_length=50)


Action = Annotated[
    ScreenAction
    | RejectAction
    | MergeAction
    | AssignAction
    | AcknowledgeAction
    | ReturnAction
    | RequestExtensionAction
    | ApproveExtensionAction
    | DenyExtensionAction
    | RespondAction
    | ApproveResponseAction
    | SendBackAction
    | ReviewRejectAction
    | PublishAction
    | RateAction
    | ReopenAction
    | CloseAction
    | RescreenAction
    | PauseForReporterAction
    | ResumeAction
    | AddNoteAction,
    Field(discriminator="type"),
]

ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)


def parse_action(data: object) -> Action:
    """Validate a mapping (or JSON text/bytes) into an action; raises pydantic.ValidationError."""
    if isinstance(data, str | bytes | bytearray):
        return ACTION_ADAPTER.validate_json(data)
    return ACTION_ADAPTER.validate_python(data)


# ---------------------------------------------------------------------------
# Snapshot, actor, transition
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportSnapshot:
    """What the state machine needs to know about a report."""

    state: State
    agency_id: str | None = None
    requires_leader_approval: bool = False
    reopen_count: int = 0
    extension_count: int = 0
    closed_at: datetime | None = None
    waiting_for_reporter: bool = False
    # Subject of the reporter; when known, a REPORTER actor must be this subject.
    reporter_subject: str | None = None
    co_agency_ids: tuple[str, ...] = ()
    published_at: datetime | None = None


@dataclass(frozen=True)
class Actor:
    """Who performs an action."""

    role: Role
    subject: str
    agency_id: str | None = None


@dataclass(frozen=True)
class Transition:
    """The outcome of a decided action, ready to persist and publish."""

    from_state: State
    to_state: State
    action_type: ActionType
    reason: str | None
    details: dict[str, object] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class TransitionRule:
    """One edge of the state machine and who may take it."""

    action: ActionType
    from_states: frozenset[State]
    to_state: State | None  # None: the report stays in its state (an annotation)
    roles: frozenset[Role]
    # Applies to OFFICER and LEADER actors: their agency must be the report's agency ...
    requires_agency_match: bool = False
    # ... or, with this, one of its co-handling agencies.
    co_agencies: bool = False


def _rule(
    action: ActionType,
    from_states: set[State] | frozenset[State],
    to_state: State | None,
    roles: set[Role],
    *,
    agency: bool = False,
    co_agencies: bool = False,
) -> TransitionRule:
    return TransitionRule(
        action, frozenset(from_states), to_state, frozenset(roles), agency, co_agencies
    )


_S = State
_R = Role
_A = ActionType

# RESPOND's to_state is PENDING_APPROVAL or RESOLVED (see decide); RATE may become a reopen.
RULES: tuple[TransitionRule, ...] = (
    _rule(_A.SCREEN, {_S.SUBMITTED}, _S.SCREENING, {_R.COORDINATOR}),
    _rule(
        _A.REJECT,
        {_S.SCREENING, _S.RETURNED, _S.REOPENED} | AGENCY_HELD_STATES,
        _S.REJECTED,
        {_R.COORDINATOR},
    ),
    _rule(_A.MERGE, {_S.SCREENING, _S.REOPENED} | AGENCY_HELD_STATES, _S.MERGED, {_R.COORDINATOR}),
    _rule(
        _A.ASSIGN,
        {_S.SCREENING, _S.RETURNED, _S.REOPENED},
        _S.ASSIGNED,
        {_R.COORDINATOR, _R.SYSTEM},
    ),
    _rule(_A.ASSIGN, {_S.SUBMITTED}, _S.ASSIGNED, {_R.SYSTEM}),
    # the coordinator's override; automatic routing never takes a report from an agency
    _rule(_A.ASSIGN, AGENCY_HELD_STATES, _S.ASSIGNED, {_R.COORDINATOR}),
    _rule(_A.ACKNOWLEDGE, {_S.ASSIGNED}, _S.IN_PROGRESS, {_R.OFFICER, _R.LEADER}, agency=True),
    _rule(
        _A.RETURN,
        {_S.ASSIGNED, _S.IN_PROGRESS},
        _S.RETURNED,
        {_R.OFFICER, _R.LEADER},
        agency=True,
    ),
    _rule(
        _A.REQUEST_EXTENSION,
        {_S.IN_PROGRESS},
        _S.EXTENSION_REQUESTED,
        {_R.OFFICER, _R.LEADER},
        agency=True,
    ),
    _rule(_A.APPROVE_EXTENSION, {_S.EXTENSION_REQUESTED}, _S.IN_PROGRESS, {_R.COORDINATOR}),
    _rule(_A.DENY_EXTENSION, {_S.EXTENSION_REQUESTED}, _S.IN_PROGRESS, {_R.COORDINATOR}),
    _rule(_A.RESPOND, {_S.IN_PROGRESS}, _S.RESOLVED, {_R.OFFICER, _R.LEADER}, agency=True),
    _rule(_A.APPROVE_RESPONSE, {_S.PENDING_APPROVAL}, _S.RESOLVED, {_R.LEADER}, agency=True),
    _rule(_A.SEND_BACK, {_S.PENDING_APPROVAL}, _S.IN_PROGRESS, {_R.LEADER}, agency=True),
    _rule(_A.REVIEW_REJECT, {_S.RESOLVED}, _S.IN_PROGRESS, {_R.COORDINATOR}),
    _rule(_A.PUBLISH, {_S.RESOLVED}, _S.PUBLISHED, {_R.COORDINATOR, _R.SYSTEM}),
    _rule(_A.RATE, {_S.PUBLISHED}, _S.RATED, {_R.REPORTER}),
    _rule(
        _A.REOPEN,
        {_S.PUBLISHED, _S.RATED, _S.CLOSED},
        _S.REOPENED,
        {_R.REPORTER, _R.COORDINATOR},
    ),
    _rule(_A.CLOSE, {_S.PUBLISHED, _S.RATED}, _S.CLOSED, {_R.COORDINATOR, _R.SYSTEM}),
    _rule(
        _A.RESCREEN,
        {_S.REOPENED, _S.RETURNED} | AGENCY_HELD_STATES,
        _S.SCREENING,
        {_R.COORDINATOR},
    ),
    _rule(
        _A.PAUSE_FOR_REPORTER,
        {_S.IN_PROGRESS},
        _S.IN_PROGRESS,
        {_R.OFFICER, _R.LEADER},
        agency=True,
    ),
    _rule(
        _A.RESUME,
        {_S.IN_PROGRESS},
        _S.IN_PROGRESS,
        {_R.OFFICER, _R.LEADER, _R.SYSTEM},
        agency=True,
    ),
    _rule(
        _A.ADD_NOTE,
        AGENCY_HELD_STATES - {_S.RESOLVED},
        None,
        {_R.OFFICER, _R.LEADER, _R.COORDINATOR},
        agency=True,
        co_agencies=True,
    ),
)


def _flag_allows(snapshot: ReportSnapshot, action: ActionType) -> bool:
    if action is ActionType.PAUSE_FOR_REPORTER:
        return not snapshot.waiting_for_reporter
    if action is ActionType.RESUME:
        return snapshot.waiting_for_reporter
    return True


def rule_for(snapshot: ReportSnapshot, action: ActionType) -> TransitionRule | None:
    """Return the rule that lets `action` leave the snapshot's state, or None."""
    if not _flag_allows(snapshot, action):
        return None
    for rule in RULES:
        if rule.action is action and snapshot.state in rule.from_states:
            return rule
    return None


def _state_actions(snapshot: ReportSnapshot) -> list[ActionType]:
    return [a for a in ActionType if rule_for(snapshot, a) is not None]


def _authorise(snapshot: ReportSnapshot, rule: TransitionRule, actor: Actor) -> None:
    if actor.role not in rule.roles:
        roles = ", ".join(sorted(r.value for r in rule.roles))
        raise Forbidden(
            f"role '{actor.role.value}' may not '{rule.action.value}' a report in state "
            f"'{snapshot.state.value}' (allowed roles: {roles})"
        )
    if rule.requires_agency_match and actor.role in AGENCY_ROLES:
        lead = snapshot.agency_id is not None and actor.agency_id == snapshot.agency_id
        co = rule.co_agencies and actor.agency_id in snapshot.co_agency_ids
        if not (lead or co):
            raise Forbidden(
                f"{actor.role.value} of agency '{actor.agency_id}' may act only on reports "
                f"assigned to their own agency (report agency: '{snapshot.agency_id}')"
            )
    if (
        actor.role is Role.REPORTER
        and snapshot.reporter_subject is not None
        and actor.subject != snapshot.reporter_subject
    ):
        raise Forbidden("a reporter may act only on their own report")


def _reopen_violation(
    snapshot: ReportSnapshot,
    *,
    now: datetime | None,
    max_reopens: int,
    reopen_window_days: int,
) -> RuleViolation | None:
    if snapshot.reopen_count >= max_reopens:
        return RuleViolation(
            "reopen_count",
            f"the report has already been reopened {snapshot.reopen_count} time(s); "
            f"the limit is {max_reopens}",
        )
    if snapshot.state in (State.PUBLISHED, State.RATED) and now is not None:
        # the window runs from publication (unknown for reports published before it was kept)
        if snapshot.published_at is not None and now - snapshot.published_at > timedelta(
            days=reopen_window_days
        ):
            return RuleViolation(
                "published_at",
                f"a report can be reopened only within {reopen_window_days} days of publication",
            )
    if snapshot.state is State.CLOSED and now is not None:
        if snapshot.closed_at is None:
            return RuleViolation("closed_at", "closing time unknown; cannot check reopen window")
        if now - snapshot.closed_at > timedelta(days=reopen_window_days):
            return RuleViolation(
                "closed_at",
                f"a closed report can be reopened only within {reopen_window_days} days of closing",
            )
    return None


def _snapshot_violation(
    snapshot: ReportSnapshot,
    action: ActionType,
    *,
    now: datetime | None,
    max_reopens: int,
    reopen_window_days: int,
    max_extensions: int,
) -> RuleViolation | None:
    if action is ActionType.REOPEN:
        return _reopen_violation(
            snapshot, now=now, max_reopens=max_reopens, reopen_window_days=reopen_window_days
        )
    if action is ActionType.REQUEST_EXTENSION and snapshot.extension_count >= max_extensions:
        return RuleViolation(
            "extension_count",
            f"{snapshot.extension_count} extension(s) already granted; "
            f"the limit is {max_extensions}",
        )
    return None


def allowed_actions(
    snapshot: ReportSnapshot,
    actor: Actor,
    *,
    now: datetime | None = None,
    max_reopens: int = 2,
    reopen_window_days: int = 30,
    max_extensions: int = 1,
) -> list[ActionType]:
    """List the actions this actor may take now (reopen window checked only when `now` given)."""
    result: list[ActionType] = []
    for action in ActionType:
        rule = rule_for(snapshot, action)
        if rule is None:
            continue
        try:
            _authorise(snapshot, rule, actor)
        except Forbidden:
            continue
        violation = _snapshot_violation(
            snapshot,
            action,
            now=now,
            max_reopens=max_reopens,
            reopen_window_days=reopen_window_days,
            max_extensions=max_extensions,
        )
        if violation is None:
            result.append(action)
    return result


def _reason_of(action: Action) -> str | None:
    if isinstance(action, RejectAction):
        return action.reason_code.value
    if isinstance(action, RateAction):
        return action.comment
    reason = getattr(action, "reason", None)
    if isinstance(reason, str):
        return reason
    note = getattr(action, "note", None)
    return note if isinstance(note, str) else None


def decide(
    snapshot: ReportSnapshot,
    action: Action,
    actor: Actor,
    *,
    now: datetime,
    max_reopens: int = 2,
    reopen_window_days: int = 30,
    max_extensions: int = 1,
    max_extension_days: int = 5,
) -> Transition:
    """Decide the transition for an action, or raise IllegalTransition/Forbidden/RuleViolation."""
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    action_type = action.type
    rule = rule_for(snapshot, action_type)
    if rule is None:
        raise IllegalTransition(snapshot.state, action_type, _state_actions(snapshot))
    _authorise(snapshot, rule, actor)

    reopening = isinstance(action, RateAction) and action.reopen
    checked = ActionType.REOPEN if reopening else action_type
    violation = _snapshot_violation(
        snapshot,
        checked,
        now=now,
        max_reopens=max_reopens,
        reopen_window_days=reopen_window_days,
        max_extensions=max_extensions,
    )
    if violation is not None:
        raise violation

    details: dict[str, object] = action.model_dump(mode="json", exclude={"type"})
    to_state = rule.to_state or snapshot.state
    result_type = action_type

    overriding = (
        snapshot.state in AGENCY_HELD_STATES
        and actor.role is Role.COORDINATOR
        and action_type in OVERRIDE_ACTIONS
    )
    if overriding and isinstance(action, AssignAction | RescreenAction) and not action.reason:
        raise RuleViolation(
            "reason",
            f"a reason is required to take a report in state '{snapshot.state.value}' "
            "from its agency",
        )
    if overriding:
        details["previous_agency_id"] = snapshot.agency_id
        details["override"] = True

    if isinstance(action, RequestExtensionAction | ApproveExtensionAction):
        if action.days is not None and action.days > max_extension_days:
            raise RuleViolation("days", f"an extension may be at most {max_extension_days} day(s)")
    if isinstance(action, ApproveExtensionAction):
        details["extension_count"] = snapshot.extension_count + 1
    elif isinstance(action, AssignAction):
        details["previous_agency_id"] = snapshot.agency_id
    elif isinstance(action, RespondAction):
        details["requires_leader_approval"] = snapshot.requires_leader_approval
        if snapshot.requires_leader_approval:
            to_state = State.PENDING_APPROVAL
    elif isinstance(action, ReopenAction):
        details["reopen_count"] = snapshot.reopen_count + 1
    elif reopening:
        # A low rating with reopen=true is recorded as a reopen carrying the rating.
        to_state = State.REOPENED
        result_type = ActionType.REOPEN
        details["reopen_count"] = snapshot.reopen_count + 1
    elif isinstance(action, PauseForReporterAction):
        details["waiting_for_reporter"] = True
    elif isinstance(action, ResumeAction):
        details["waiting_for_reporter"] = False

    if snapshot.waiting_for_reporter and to_state is not State.IN_PROGRESS:
        details["waiting_for_reporter"] = False

    return Transition(
        from_state=snapshot.state,
        to_state=to_state,
        action_type=result_type,
        reason=_reason_of(action),
        details=details,
    )


# ---------------------------------------------------------------------------
# Text and screening helpers
# ---------------------------------------------------------------------------

_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>|<!--")
_TOO_MANY_BLANK_LINES = re.compile(r"\n{4,}")


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""Unicode category Cc (C0, DEL, C1) except tab and newline (carriage returns are gone)."""


def normalize_description(text: str, *, max_len: int = 4000) -> str:
    """Return the description in NFC, trimmed, with at most two consecutive blank lines."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    control = _CONTROL.search(text)
    if control:
        code = ord(control.group())
        raise RuleViolation("description", f"contains a control character (U+{code:04X})")
    if _HTML_TAG.search(text):
        raise RuleViolation("description", "must be plain text, not HTML")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _TOO_MANY_BLANK_LINES.sub("\n\n\n", text).strip()
    if not text:
        raise RuleViolation("description", "must not be empty")
    if len(text) > max_len:
        raise RuleViolation("description", f"must be at most {max_len} characters")
    return text


def _base_letters() -> dict[int, str]:
    """Each precomposed Latin letter whose marks fold away, mapped to its ASCII letter."""
    table = {ord("đ"): "d"}
    for code in (*range(0xC0, 0x250), *range(0x1E00, 0x1F00)):
        base = "".join(
            c for c in unicodedata.normalize("NFD", chr(code)) if unicodedata.category(c) != "Mn"
        )
        if len(base) == 1 and base.isascii() and base != chr(code):
            table[code] = base
    return table


_BASE_LETTERS = _base_letters()


def fold_diacritics(text: str) -> str:
    """Lower-case and strip Vietnamese diacritics (đ→d) for search and matching."""
    lowered = text.lower().translate(_BASE_LETTERS)  # precomposed letters: one table lookup
    if lowered.isascii():
        return lowered
    decomposed = unicodedata.normalize("NFD", lowered)
    if decomposed.isascii():
        return decomposed
    stripped = _NONSPACING.sub("", decomposed)
    if not stripped.isascii():  # other scripts or marks outside the common block
        stripped = "".join(c for c in stripped if unicodedata.category(c) != "Mn")
    return unicodedata.normalize("NFC", stripped)


_NONSPACING = re.compile("[\u0300-\u036f]")  # the combining marks Vietnamese decomposes into


_SEP = r"[ .\-]?"
# Mobile: 0 or +84/84 (optionally followed by a stray 0), then 3/5/7/8/9 and 8 digits.
# Landline: 0 or +84/84, then 2 and 9 digits (two-digit area code 2x plus 8 digits).
_PHONE = re.compile(
    r"(?<![\d+])(?:\(?\+?84\)?" + _SEP + r"0?|0)"
    r"(?:[35789](?:" + _SEP + r"\d){8}|2(?:" + _SEP + r"\d){9})"
    r"(?!\d)"
)
_CCCD = re.compile(r"(?<!\d)\d{12}(?!\d)")
_CMND = re.compile(r"(?<!\d)\d{9}(?!\d)")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_DIGIT = re.compile(r"\d")


@cache
def _profanity_pattern() -> re.Pattern[str] | None:
    raw = files("intake").joinpath("profanity_vi.txt").read_text(encoding="utf-8")
    phrases: set[str] = set()
    for line in raw.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            phrases.add(" ".join(fold_diacritics(unicodedata.normalize("NFC", entry)).split()))
    if not phrases:
        return None
    alternatives = "|".join(
        r"\s+".join(re.escape(word) for word in phrase.split())
        for phrase in sorted(phrases, key=len, reverse=True)
    )
    return re.compile(r"(?<![a-z0-9])(?:" + alternatives + r")(?![a-z0-9])")


def _overlaps(span: tuple[int, int], others: list[tuple[int, int]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in others)


def content_warnings(text: str) -> list[str]:
    """Return warning codes (phone_number, id_number, email, profanity) found in the text."""
    text = unicodedata.normalize("NFC", text)
    warnings: list[str] = []
    if _DIGIT.search(text):  # most descriptions have no digits: skip the number patterns
        phones = [m.span() for m in _PHONE.finditer(text)]
        if phones:
            warnings.append("phone_number")
        ids = [m.span() for m in _CCCD.finditer(text)] + [m.span() for m in _CMND.finditer(text)]
        if any(not _overlaps(span, phones) for span in ids):
            warnings.append("id_number")
    if "@" in text and _EMAIL.search(text):
        warnings.append("email")
    pattern = _profanity_pattern()
    if pattern is not None and pattern.search(fold_diacritics(text)):
        warnings.append("profanity")
    return warnings


_EARTH_RADIUS_M = 6_371_008.8  # IUGG mean Earth radius


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS84 points (spherical Earth)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_phi = phi2 - phi1
    d_lambda = math.radians(lon2 - lon1)
    a = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


_PREFIX = re.compile(r"[A-Z][A-Z0-9]*")


def human_number(prefix: str, year: int, seq: int) -> str:
    """Format a human-facing report number: ("BN", 2026, 123) -> "BN-2026-000123"."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"prefix must be upper-case letters and digits, got {prefix!r}")
    if not 1000 <= year <= 9999:
        raise ValueError(f"year must have four digits, got {year}")
    if seq < 1:
        raise ValueError(f"seq must be positive, got {seq}")
    return f"{prefix}-{year}-{seq:06d}"
