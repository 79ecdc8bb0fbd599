"""Who hears about an event and what they read: pure rules and Vietnamese wording.

An event becomes at most one ``Alert``: the people it is for (roles, in an agency or
province-wide), whether the agency's webhooks and the submitting app's webhook also get it,
how urgent it is, and its text. Channels then shape the same alert as a Web Push payload, an
email or a Standard Webhooks body.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from html import escape

from notify.domain import (
    REPORT_ASSIGNED,
    SLA_BREACHED,
    SLA_WARNING,
    EmailContent,
    PushUrgency,
    notification_for,
    render_body,
    report_topic,
)
from paht_common.clock import LOCAL_TZ
from paht_common.events import (
    Envelope,
    Payload,
    ReportTransitioned,
    SlaClocksChanged,
    SlaThresholdReached,
)
from paht_common.roles import Role

SLA_ESCALATED = "sla.escalated"
REPORT_RETURNED = "report.returned"
EXTENSION_REQUESTED = "report.extension_requested"
REPORT_CO_ASSIGNED = "report.co_assigned"
REPORT_TAKEN_AWAY = "report.reassigned_away"
REPORT_PUBLISHED = "report.published"

PERSONAL_KINDS = (
    REPORT_ASSIGNED,
    SLA_WARNING,
    SLA_BREACHED,
    SLA_ESCALATED,
    REPORT_RETURNED,
    EXTENSION_REQUESTED,
    REPORT_CO_ASSIGNED,
    REPORT_TAKEN_AWAY,
)
"""Event kinds a staff member can receive, and so set preferences for."""

KIND_LABELS_VI = {
    REPORT_ASSIGNED: "Phản ánh mới được giao",
    SLA_WARNING: "Sắp đến hạn",
    SLA_BREACHED: "Quá hạn",
    SLA_ESCALATED: "Chuyển cấp do quá hạn",
    REPORT_RETURNED: "Phản ánh bị trả lại",
    EXTENSION_REQUESTED: "Đề nghị gia hạn",
    REPORT_CO_ASSIGNED: "Phối hợp xử lý phản ánh",
    REPORT_TAKEN_AWAY: "Phản ánh được giao cho cơ quan khác",
}

CLOCKS_VI = {"screening": "phân loại", "acknowledgement": "tiếp nhận", "resolution": "xử lý"}

ESCALATION_ROLES = {"coordinator": Role.COORDINATOR, "province_leadership": Role.SUPERVISOR}
"""SLA escalation levels and who answers for them; an unknown level goes to the coordinator."""

MAX_TEXT = 400
"""Longest alert text: a push payload stays far below the 4 KB budget."""


@dataclass(frozen=True)
class ReportFacts:
    """What notify knows of a report from the report and routing events."""

    report_id: uuid.UUID
    number: str | None = None
    category: str | None = None
    commune_code: str | None = None
    urgency: str | None = None
    source_app: str | None = None
    agency_id: str | None = None


@dataclass(frozen=True)
class Audience:
    """Staff in some roles: of one agency, or province-wide when ``agency_id`` is None."""

    roles: frozenset[Role]
    agency_id: str | None


@dataclass(frozen=True)
class Alert:
    """One event's notification, before it is shaped for a channel."""

    kind: str
    report_id: uuid.UUID
    number: str
    agency_id: str | None
    people: tuple[Audience, ...]
    urgent: bool
    title: str
    text: str
    agency_webhook_body: str | None = None
    """Standard Webhooks body for the agency's webhooks, when they get this kind."""
    agency_webhook_type: str | None = None
    """``type`` of that body (an escalation reaches agency systems as ``sla.breached``)."""
    app_id: str | None = None
    """Upstream app whose webhook gets ``app_webhook_body``."""
    app_webhook_body: str | None = None

    @property
    def urgency(self) -> PushUrgency:
        """RFC 8030 Urgency: high for breaches, escalations and urgent reports."""
        return "high" if self.urgent else "normal"

    @property
    def topic(self) -> str:
        """Web Push Topic: one per report (``domain.report_topic``)."""
        return report_topic(self.report_id)


def local_time(value: datetime | None) -> str:
    """``dd/mm/yyyy HH:MM`` in Vietnam's time (vi-VN), or a dash."""
    return "—" if value is None else value.astimezone(LOCAL_TZ).strftime("%H:%M %d/%m/%Y")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _officers(agency_id: str, *more: Role) -> tuple[Audience, ...]:
    return (Audience(frozenset({Role.OFFICER, *more}), agency_id),)


def alerts_for(envelope: Envelope[Payload], facts: ReportFacts | None) -> list[Alert]:
    """The alerts an event causes (none when nobody needs to hear about it)."""
    payload = envelope.payload
    urgent_report = facts is not None and facts.urgency == "urgent"
    found: list[Alert | None] = []
    if isinstance(payload, SlaClocksChanged | SlaThresholdReached):
        found.append(_sla_alert(envelope, payload, facts, urgent_report))
    elif isinstance(payload, ReportTransitioned):
        if payload.action == "assign":
            found += _assignment_alerts(payload, facts, urgent_report)
        else:
            found.append(_transition_alert(envelope, payload, facts, urgent_report))
    return [a for a in found if a is not None]


def _sla_alert(
    envelope: Envelope[Payload],
    payload: SlaClocksChanged | SlaThresholdReached,
    facts: ReportFacts | None,
    urgent_report: bool,
) -> Alert | None:
    notification = notification_for(envelope)
    if notification is None or payload.agency_id is None:
        return None
    agency = payload.agency_id
    webhook = notification.body
    if isinstance(payload, SlaClocksChanged):
        due = {c.kind: c.due_at for c in payload.clocks}
        place = f" · xã/phường {facts.commune_code}" if facts and facts.commune_code else ""
        return Alert(
            kind=REPORT_ASSIGNED,
            report_id=payload.report_id,
            number=payload.number,
            agency_id=agency,
            people=_officers(agency),
            urgent=urgent_report,
            title=f"Phản ánh mới {payload.number}" + (" (khẩn)" if urgent_report else ""),
            text=_clip(
                f"{payload.category}{place}. Hạn tiếp nhận: "
                f"{local_time(due.get('acknowledgement'))}; hạn xử lý: "
                f"{local_time(due.get('resolution'))}."
            ),
            agency_webhook_body=webhook,
            agency_webhook_type=notification.event_type,
        )
    clock = CLOCKS_VI.get(payload.clock, payload.clock)
    due_text = local_time(payload.due_at)
    if payload.escalation_level is not None:
        role = ESCALATION_ROLES.get(payload.escalation_level, Role.COORDINATOR)
        return Alert(
            kind=SLA_ESCALATED,
            report_id=payload.report_id,
            number=payload.number,
            agency_id=agency,
            people=(Audience(frozenset({role}), None),),
            urgent=True,
            title=f"Chuyển cấp: {payload.number} quá hạn",
            text=_clip(
                f"Phản ánh {payload.number} tại {agency} đã quá hạn {clock} "
                f"(hạn {due_text}); cần đôn đốc."
            ),
            agency_webhook_body=webhook,
            agency_webhook_type=notification.event_type,
        )
    if payload.percent >= 100:
        return Alert(
            kind=SLA_BREACHED,
            report_id=payload.report_id,
            number=payload.number,
            agency_id=agency,
            people=_officers(agency, Role.LEADER),
            urgent=True,
            title=f"Quá hạn: {payload.number}",
            text=_clip(f"Phản ánh {payload.number} đã quá hạn {clock} (hạn {due_text})."),
            agency_webhook_body=webhook,
            agency_webhook_type=notification.event_type,
        )
    return Alert(
        kind=SLA_WARNING,
        report_id=payload.report_id,
        number=payload.number,
        agency_id=agency,
        people=_officers(agency),
        urgent=urgent_report,
        title=f"Sắp đến hạn: {payload.number}",
        text=_clip(
            f"Đã dùng {payload.percent}% thời hạn {clock} của phản ánh {payload.number}; "
            f"hạn {due_text}."
        ),
        agency_webhook_body=webhook,
    )


def _transition_alert(
    envelope: Envelope[Payload],
    payload: ReportTransitioned,
    facts: ReportFacts | None,
    urgent_report: bool,
) -> Alert | None:
    number = facts.number if facts is not None and facts.number else str(payload.report_id)
    agency = payload.agency_id or (facts.agency_id if facts is not None else None)
    reason = f": {payload.reason}" if payload.reason else ""
    coordinators = Audience(frozenset({Role.COORDINATOR}), None)
    if payload.action == "return":
        return Alert(
            kind=REPORT_RETURNED,
            report_id=payload.report_id,
            number=number,
            agency_id=agency,
            people=(coordinators,),
            urgent=urgent_report,
            title=f"Phản ánh bị trả lại: {number}",
            text=_clip(f"{agency or 'Cơ quan'} trả lại phản ánh {number}{reason}."),
        )
    if payload.action == "request_extension":
        people = [coordinators]
        if agency is not None:
            people.insert(0, Audience(frozenset({Role.LEADER}), agency))
        return Alert(
            kind=EXTENSION_REQUESTED,
            report_id=payload.report_id,
            number=number,
            agency_id=agency,
            people=tuple(people),
            urgent=urgent_report,
            title=f"Đề nghị gia hạn: {number}",
            text=_clip(f"{agency or 'Cơ quan'} đề nghị gia hạn phản ánh {number}{reason}."),
        )
    if payload.to_state == "published" and facts is not None and facts.source_app:
        data = {
            "report_id": str(payload.report_id),
            "number": number,
            "state": payload.to_state,
            "agency_id": agency,
        }
        return Alert(
            kind=REPORT_PUBLISHED,
            report_id=payload.report_id,
            number=number,
            agency_id=agency,
            people=(),
            urgent=False,
            title=f"Đã công khai kết quả: {number}",
            text=f"Kết quả xử lý phản ánh {number} đã được công khai.",
            app_id=facts.source_app,
            app_webhook_body=render_body(REPORT_PUBLISHED, envelope.occurred_at, data),
        )
    return None


def _assignment_alerts(
    payload: ReportTransitioned, facts: ReportFacts | None, urgent_report: bool
) -> list[Alert]:
    """A manual assignment: co-handling agencies' officers are told, and so is the agency a
    coordinator took the report from (the new lead hears through SLA's ``report.assigned``)."""
    number = facts.number if facts is not None and facts.number else str(payload.report_id)
    agency = payload.agency_id
    details = payload.details
    co = details.get("co_agency_ids")
    co_agencies = [str(a) for a in co if a != agency] if isinstance(co, list) else []
    previous = details.get("previous_agency_id")
    alerts: list[Alert] = []
    if co_agencies:
        alerts.append(
            Alert(
                kind=REPORT_CO_ASSIGNED,
                report_id=payload.report_id,
                number=number,
                agency_id=agency,
                people=tuple(Audience(frozenset({Role.OFFICER}), a) for a in co_agencies),
                urgent=urgent_report,
                title=f"Phối hợp xử lý: {number}",
                text=_clip(f"Cơ quan anh/chị phối hợp với {agency} xử lý phản ánh {number}."),
            )
        )
    taken_from = (
        previous
        if isinstance(previous, str) and previous not in (agency, "", *co_agencies)
        else None
    )
    if taken_from is not None:
        alerts.append(
            Alert(
                kind=REPORT_TAKEN_AWAY,
                report_id=payload.report_id,
                number=number,
                agency_id=taken_from,
                people=(Audience(frozenset({Role.OFFICER, Role.LEADER}), taken_from),),
                urgent=False,
                title=f"Đã chuyển phản ánh {number}",
                text=_clip(
                    f"Phản ánh {number} đã được giao cho {agency or 'cơ quan khác'}"
                    + (f": {payload.reason}" if payload.reason else "")
                    + "."
                ),
            )
        )
    return alerts


def report_link(workspace_url: str, report_id: uuid.UUID) -> str:
    """Where the agency workspace shows a report."""
    return f"{workspace_url.rstrip('/')}/reports/{report_id}"


def push_payload(alert: Alert, *, workspace_url: str) -> str:
    """The JSON a service worker receives: what to show and where a tap leads (< 1 KB)."""
    return json.dumps(
        {
            "kind": alert.kind,
            "title": alert.title,
            "body": alert.text,
            "report_id": str(alert.report_id),
            "number": alert.number,
            "url": report_link(workspace_url, alert.report_id),
            "tag": alert.topic,
            "urgent": alert.urgent,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def email_content(alert: Alert, *, workspace_url: str, name: str | None) -> EmailContent:
    """Subject, plain text and HTML of the email version of an alert."""
    link = report_link(workspace_url, alert.report_id)
    greeting = f"Kính gửi {name}," if name else "Kính gửi anh/chị,"
    label = KIND_LABELS_VI.get(alert.kind, alert.kind)
    text = (
        f"{greeting}\n\n{alert.text}\n\nXem phản ánh: {link}\n\n"
        "Hệ thống thông tin phản ánh hiện trường (thư tự động, vui lòng không trả lời)."
    )
    html = (
        f'<!doctype html><html lang="vi"><body><p>{escape(greeting)}</p>'
        f"<p><strong>{escape(label)}</strong></p><p>{escape(alert.text)}</p>"
        f'<p><a href="{escape(link, quote=True)}">Xem phản ánh {escape(alert.number)}</a></p>'
        "<p><small>Hệ thống thông tin phản ánh hiện trường (thư tự động, vui lòng không "
        "trả lời).</small></p></body></html>"
    )
    return EmailContent(subject=f"[PAHT] {alert.title}", text=text, html=html)
