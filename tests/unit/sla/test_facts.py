"""Which clock facts the SLA reads from each lifecycle event (pure, no I/O)."""

from __future__ import annotations

import uuid
from datetime import datetime

from paht_common.events import ReportRouted, ReportSubmitted, ReportTransitioned, new_envelope
from sla.calendar import TZ
from sla.domain import FactKind
from sla.handlers import fact_from, facts_from

AT = datetime(2026, 12, 1, 10, tzinfo=TZ)
RID = uuid.UUID("00000000-0000-4000-8000-000000000001")


def transition(
    action: str,
    *,
    from_state: str = "in_progress",
    to_state: str = "in_progress",
    actor_role: str = "officer",
    details: dict[str, str | int | float | bool | None] | None = None,
) -> ReportTransitioned:
    return ReportTransitioned(
        report_id=RID,
        action=action,
        from_state=from_state,
        to_state=to_state,
        actor_role=actor_role,
        agency_id="ubnd-a",
        details=details or {},
        at=AT,
    )


def kinds(payload: ReportTransitioned | ReportRouted | ReportSubmitted) -> list[FactKind]:
    return [f.kind for f in facts_from(new_envelope(payload, source="/t", province="bn"))]


def test_routing_event_is_a_routed_fact_with_the_agency() -> None:
    routed = ReportRouted(
        report_id=RID,
        number="BN-1",
        agency_id="ubnd-b",
        agency_name="UBND B",
        category="INFRA.ROAD",
        commune_code=None,
        urgency="normal",
        rule_id="r1",
        routed_at=AT,
    )
    fact = fact_from(new_envelope(routed, source="/routing", province="bn"))
    assert fact is not None
    assert (fact.kind, fact.at, fact.agency_id) == (FactKind.ROUTED, AT, "ubnd-b")


def test_manual_assignment_is_a_routing_but_the_automatic_one_is_not() -> None:
    assert kinds(transition("assign", actor_role="coordinator", to_state="assigned")) == [
        FactKind.ROUTED
    ]
    assert kinds(transition("assign", actor_role="system", to_state="assigned")) == []


def test_any_move_into_resolved_stops_the_resolution_clock() -> None:
    assert kinds(transition("respond", to_state="resolved")) == [FactKind.RESOLVED]
    assert kinds(transition("approve_response", to_state="resolved")) == [FactKind.RESOLVED]


def test_reject_and_merge_cancel() -> None:
    assert kinds(transition("reject", to_state="rejected")) == [FactKind.CANCELLED]
    assert kinds(transition("merge", to_state="merged")) == [FactKind.CANCELLED]


def test_extension_request_and_approval_carry_their_days() -> None:
    request = facts_from(
        new_envelope(
            transition("request_extension", details={"days": 3}), source="/t", province="bn"
        )
    )
    approve = facts_from(
        new_envelope(
            transition("approve_extension", details={"days": 2}), source="/t", province="bn"
        )
    )
    assert [(f.kind, f.extension_days) for f in request] == [(FactKind.EXTENSION_REQUESTED, 3.0)]
    assert [(f.kind, f.extension_days) for f in approve] == [(FactKind.EXTENDED, 2.0)]


def test_approval_without_days_is_an_extension_of_zero_days_left_to_the_request() -> None:
    approve = facts_from(
        new_envelope(
            transition("approve_extension", details={"days": None}), source="/t", province="bn"
        )
    )
    assert [(f.kind, f.extension_days) for f in approve] == [(FactKind.EXTENDED, 0.0)]


def test_leaving_in_progress_while_waiting_for_the_reporter_resumes_the_clock() -> None:
    # intake clears waiting_for_reporter on these moves and then refuses an explicit resume.
    cleared: dict[str, str | int | float | bool | None] = {"days": 2, "waiting_for_reporter": False}
    assert kinds(
        transition("request_extension", to_state="extension_requested", details=cleared)
    ) == [FactKind.EXTENSION_REQUESTED, FactKind.RESUMED]
    assert kinds(
        transition("respond", to_state="pending_approval", details={"waiting_for_reporter": False})
    ) == [FactKind.RESUMED]


def test_explicit_pause_resume_and_return_give_one_fact_each() -> None:
    assert kinds(transition("pause_for_reporter", details={"waiting_for_reporter": True})) == [
        FactKind.PAUSED
    ]
    assert kinds(transition("resume", details={"waiting_for_reporter": False})) == [
        FactKind.RESUMED
    ]
    assert kinds(
        transition("return", to_state="returned", details={"waiting_for_reporter": False})
    ) == [FactKind.RETURNED]


def test_events_without_clock_meaning_give_no_fact() -> None:
    assert kinds(transition("publish", from_state="resolved", to_state="published")) == []
    assert fact_from(new_envelope(transition("rate"), source="/t", province="bn")) is None


def test_sending_a_report_back_to_screening_stops_the_agencys_clocks_like_a_return() -> None:
    payload = transition(
        "rescreen", from_state="in_progress", to_state="screening", actor_role="coordinator"
    )

    assert kinds(payload) == [FactKind.RETURNED]
