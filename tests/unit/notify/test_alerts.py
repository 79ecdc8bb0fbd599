"""Who hears about which event, and what they read (notify.alerts, pure)."""

from __future__ import annotations

import json
import unicodedata
import uuid
from datetime import UTC, datetime

from notify.alerts import (
    REPORT_CO_ASSIGNED,
    REPORT_PUBLISHED,
    REPORT_RETURNED,
    REPORT_TAKEN_AWAY,
    SLA_ESCALATED,
    Audience,
    ReportFacts,
    alerts_for,
    email_content,
    push_payload,
)
from paht_common.events import (
    ReportTransitioned,
    SlaThresholdReached,
    new_envelope,
)
from paht_common.roles import Role

REPORT = uuid.UUID("5f0c1f3e-6d4a-4a57-9a43-3d1f2a9c5e10")
AT = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
FACTS = ReportFacts(report_id=REPORT, number="BN-2026-000042", source_app="demo-app")


def threshold(percent: int, level: str | None = None) -> SlaThresholdReached:
    return SlaThresholdReached(
        report_id=REPORT,
        number="BN-2026-000042",
        agency_id="so-xd",
        clock="resolution",
        percent=percent,
        due_at=datetime(2026, 12, 3, 10, 0, tzinfo=UTC),
        escalation_level=level,
    )


def transition(action: str, to_state: str, **details: object) -> ReportTransitioned:
    return ReportTransitioned(
        report_id=REPORT,
        action=action,
        from_state="assigned",
        to_state=to_state,
        actor_role="coordinator",
        agency_id="so-xd",
        reason="không thuộc thẩm quyền",
        details=details,  # type: ignore[arg-type]
        at=AT,
    )


def only(payload: object, facts: ReportFacts | None = FACTS):  # type: ignore[no-untyped-def]
    found = alerts_for(new_envelope(payload, source="/t", province="bn"), facts)  # type: ignore[arg-type]
    assert len(found) == 1, found
    return found[0]


def test_a_warning_goes_to_the_agencys_officers_at_normal_urgency() -> None:
    alert = only(threshold(50))

    assert alert.people == (Audience(frozenset({Role.OFFICER}), "so-xd"),)
    assert alert.urgency == "normal"
    assert "50%" in alert.text


def test_a_breach_goes_to_officers_and_the_leader_urgently() -> None:
    alert = only(threshold(100))

    assert alert.people == (Audience(frozenset({Role.OFFICER, Role.LEADER}), "so-xd"),)
    assert alert.urgency == "high"


def test_escalation_levels_reach_the_coordinator_then_province_leadership() -> None:
    first = only(threshold(120, "coordinator"))
    last = only(threshold(150, "province_leadership"))

    assert first.kind == last.kind == SLA_ESCALATED
    assert first.people == (Audience(frozenset({Role.COORDINATOR}), None),)
    assert last.people == (Audience(frozenset({Role.SUPERVISOR}), None),)
    assert first.agency_webhook_type == "sla.breached"  # agencies' systems see a breach


def test_a_returned_report_goes_to_the_coordinators_with_the_reason() -> None:
    alert = only(transition("return", "screening"))

    assert alert.kind == REPORT_RETURNED
    assert alert.people == (Audience(frozenset({Role.COORDINATOR}), None),)
    assert "không thuộc thẩm quyền" in alert.text


def test_publication_goes_to_the_submitting_apps_webhook_only() -> None:
    alert = only(transition("publish", "published"))

    assert alert.kind == REPORT_PUBLISHED
    assert alert.people == ()
    assert alert.app_id == "demo-app"
    assert json.loads(alert.app_webhook_body or "")["type"] == REPORT_PUBLISHED


def test_publication_of_a_report_without_a_known_app_notifies_nobody() -> None:
    envelope = new_envelope(transition("publish", "published"), source="/t", province="bn")

    assert alerts_for(envelope, None) == []


def test_a_manual_reassignment_tells_the_co_agencies_and_the_agency_it_left() -> None:
    payload = transition(
        "assign", "assigned", previous_agency_id="ubnd-07627", co_agency_ids=["so-gtvt"]
    )

    found = alerts_for(new_envelope(payload, source="/t", province="bn"), FACTS)

    kinds = {a.kind: a for a in found}
    assert set(kinds) == {REPORT_CO_ASSIGNED, REPORT_TAKEN_AWAY}
    assert kinds[REPORT_CO_ASSIGNED].people == (Audience(frozenset({Role.OFFICER}), "so-gtvt"),)
    assert kinds[REPORT_TAKEN_AWAY].people == (
        Audience(frozenset({Role.OFFICER, Role.LEADER}), "ubnd-07627"),
    )


def test_an_assignment_to_the_same_agency_tells_nobody_extra() -> None:
    payload = transition("assign", "assigned", previous_agency_id="so-xd")

    assert alerts_for(new_envelope(payload, source="/t", province="bn"), FACTS) == []


def test_push_and_email_keep_vietnamese_nfc_and_link_into_the_workspace() -> None:
    alert = only(threshold(100))

    push = json.loads(push_payload(alert, workspace_url="https://ws.bacninh.gov.vn/"))
    mail = email_content(alert, workspace_url="https://ws.bacninh.gov.vn", name="Nguyễn Thị Lan")

    assert push["url"] == f"https://ws.bacninh.gov.vn/reports/{REPORT}"
    assert push["title"] == "Quá hạn: BN-2026-000042"
    assert unicodedata.is_normalized("NFC", push["body"])
    assert len(push_payload(alert, workspace_url="https://x").encode()) < 1024
    assert mail.text.startswith("Kính gửi Nguyễn Thị Lan,")
    assert f"/reports/{REPORT}" in mail.html
    assert mail.subject == "[PAHT] Quá hạn: BN-2026-000042"
