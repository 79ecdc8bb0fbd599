"""Which SLA events notify agencies, and the exact webhook body they produce."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from notify.domain import delivery_id, notification_for
from paht_common.events import (
    ClockView,
    Envelope,
    Payload,
    ReportRouted,
    SlaClocksChanged,
    SlaThresholdReached,
    new_envelope,
)

REPORT = uuid.UUID("0b6f1f3e-6d4a-4a57-9a43-3d1f2a9c5e10")
OCCURRED = datetime(2025, 3, 4, 2, 15, 30, tzinfo=UTC)


def clocks_changed(
    trigger: str = "routed", agency_id: str | None = "ubnd-09277"
) -> SlaClocksChanged:
    return SlaClocksChanged(
        report_id=REPORT,
        trigger=trigger,
        number="BN-2025-000123",
        agency_id=agency_id,
        category="INFRA.ROAD",
        policy_id="bn-default",
        calendar_version="2025.1",
        clocks=[
            ClockView(
                kind="acknowledgement",
                status="running",
                amount=8,
                unit="working_hours",
                started_at=datetime(2025, 3, 4, 2, 15, tzinfo=UTC),
                due_at=datetime(2025, 3, 5, 2, 15, tzinfo=UTC),
            ),
            ClockView(
                kind="resolution",
                status="pending",
                amount=5,
                unit="working_days",
                started_at=None,
                due_at=None,
            ),
        ],
    )


def threshold(percent: int) -> SlaThresholdReached:
    return SlaThresholdReached(
        report_id=REPORT,
        number="BN-2025-000123",
        agency_id="so-xd",
        clock="resolution",
        percent=percent,
        due_at=datetime(2025, 3, 11, 10, 0, tzinfo=UTC),
        escalation_level="Phó Giám đốc Sở" if percent >= 100 else None,
    )


def envelope(payload: Payload, event_id: uuid.UUID | None = None) -> Envelope[Payload]:
    return new_envelope(
        payload, source="/sla", province="bn", occurred_at=OCCURRED, event_id=event_id
    )


def test_routed_clocks_become_report_assigned_with_local_times() -> None:
    notification = notification_for(envelope(clocks_changed()))

    assert notification is not None
    assert notification.event_type == "report.assigned"
    assert notification.agency_id == "ubnd-09277"
    assert notification.report_id == REPORT
    assert json.loads(notification.body) == {
        "type": "report.assigned",
        "timestamp": "2025-03-04T09:15:30+07:00",
        "data": {
            "report_id": str(REPORT),
            "number": "BN-2025-000123",
            "agency_id": "ubnd-09277",
            "category": "INFRA.ROAD",
            "clocks": [
                {
                    "kind": "acknowledgement",
                    "status": "running",
                    "amount": 8.0,
                    "unit": "working_hours",
                    "started_at": "2025-03-04T09:15:00+07:00",
                    "due_at": "2025-03-05T09:15:00+07:00",
                    "breached": False,
                },
                {
                    "kind": "resolution",
                    "status": "pending",
                    "amount": 5.0,
                    "unit": "working_days",
                    "started_at": None,
                    "due_at": None,
                    "breached": False,
                },
            ],
            "acknowledge_due_at": "2025-03-05T09:15:00+07:00",
            "resolution_due_at": None,
        },
    }


def test_other_clock_triggers_notify_nobody() -> None:
    for trigger in ("acknowledged", "resolved", "paused", "resumed"):
        assert notification_for(envelope(clocks_changed(trigger))) is None


def test_events_without_an_agency_notify_nobody() -> None:
    assert notification_for(envelope(clocks_changed(agency_id=None))) is None


def test_events_other_than_sla_notify_nobody() -> None:
    routed = ReportRouted(
        report_id=REPORT,
        number="BN-2025-000123",
        agency_id="so-xd",
        agency_name="Sở Xây dựng tỉnh Bắc Ninh",
        category="INFRA.ROAD",
        commune_code=None,
        urgency="normal",
        rule_id="bn-infra",
        routed_at=OCCURRED,
    )
    assert notification_for(envelope(routed)) is None


def test_threshold_below_100_percent_is_a_warning() -> None:
    notification = notification_for(envelope(threshold(75)))

    assert notification is not None
    assert notification.event_type == "sla.warning"
    assert json.loads(notification.body) == {
        "type": "sla.warning",
        "timestamp": "2025-03-04T09:15:30+07:00",
        "data": {
            "report_id": str(REPORT),
            "number": "BN-2025-000123",
            "agency_id": "so-xd",
            "clock": "resolution",
            "percent": 75,
            "due_at": "2025-03-11T17:00:00+07:00",
            "escalation_level": None,
        },
    }


def test_threshold_at_100_percent_is_a_breach() -> None:
    notification = notification_for(envelope(threshold(100)))

    assert notification is not None
    assert notification.event_type == "sla.breached"
    assert json.loads(notification.body)["data"]["percent"] == 100


def test_body_keeps_vietnamese_as_utf8_text() -> None:
    notification = notification_for(envelope(threshold(100)))

    assert notification is not None
    assert "Phó Giám đốc Sở" in notification.body
    assert "\\u" not in notification.body


def test_body_is_the_same_for_the_same_event() -> None:
    event_id = uuid.uuid4()
    first = notification_for(envelope(clocks_changed(), event_id))
    again = notification_for(envelope(clocks_changed(), event_id))

    assert first == again


def test_delivery_id_is_stable_per_event_and_subscription() -> None:
    event_id, subscription, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    assert delivery_id(event_id, subscription) == delivery_id(event_id, subscription)
    assert delivery_id(event_id, subscription) != delivery_id(event_id, other)
    assert delivery_id(event_id, subscription) != delivery_id(uuid.uuid4(), subscription)
