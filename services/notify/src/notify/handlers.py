"""Notify use cases: queue deliveries from SLA events, manage subscriptions, record attempts."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from notify import directory, repository
from notify.alerts import Alert, ReportFacts, alerts_for, email_content, push_payload
from notify.directory import Recipient
from notify.domain import EMAIL, WEB_PUSH, WEBHOOK, ClaimedDelivery, Decision, delivery_id
from notify.metrics import CIRCUIT_OPENED, QUEUED
from paht_common.db import Conn
from paht_common.events import (
    Envelope,
    Payload,
    ReportRouted,
    ReportSubmitted,
    ReportTransitioned,
    SlaClocksChanged,
    SlaThresholdReached,
)
from paht_common.staff_auth import Staff

logger = logging.getLogger(__name__)

GONE_REASON = "endpoint answered 410 Gone"


@dataclass(frozen=True)
class FanOutContext:
    """What fanning an event out needs besides the database."""

    workspace_url: str = "http://127.0.0.1:8084"
    push_ttl_seconds: int = 86_400
    working_time: WorkingTime | None = None
    """Where office hours resume (quiet hours); None: nobody's alerts wait."""


class WorkingTime(Protocol):
    """The province's office hours, as the SLA service's calendar counts them."""

    async def next_working_instant(self, at: datetime) -> datetime | None:
        """The first office-hours instant at or after ``at``; None when it cannot be told."""
        ...


def facts_from(payload: Payload) -> ReportFacts | None:
    """What an event says about its report for notify's view of it, if anything."""
    if isinstance(payload, ReportSubmitted):
        return ReportFacts(
            report_id=payload.report_id,
            number=payload.number,
            category=payload.category,
            commune_code=payload.commune_code,
            urgency=str(payload.urgency),
            source_app=payload.source_app,
        )
    if isinstance(payload, ReportRouted):
        return ReportFacts(
            report_id=payload.report_id,
            number=payload.number,
            category=payload.category,
            commune_code=payload.commune_code,
            urgency=str(payload.urgency),
            agency_id=payload.agency_id,
        )
    if isinstance(payload, ReportTransitioned) and payload.agency_id is not None:
        return ReportFacts(report_id=payload.report_id, agency_id=payload.agency_id)
    return None


async def handle_event(
    conn: Conn, envelope: Envelope[Payload], ctx: FanOutContext | None = None
) -> int:
    """Queue one delivery per recipient channel an event's alert reaches.

    Call inside the handling transaction (with the inbox claim). Delivery ids derive from the
    event and subscription ids, so handling the same event again queues nothing new. Returns
    how many deliveries were queued now.
    """
    ctx = ctx or FanOutContext()
    payload = envelope.payload
    update = facts_from(payload)
    if update is not None:
        await directory.remember_facts(conn, update)
    if not isinstance(payload, SlaClocksChanged | SlaThresholdReached | ReportTransitioned):
        return 0
    facts = await directory.facts_of(conn, payload.report_id)
    created = 0
    for alert in alerts_for(envelope, facts):
        created += await _queue_alert(conn, envelope, alert, ctx)
    return created


async def _queue_alert(
    conn: Conn, envelope: Envelope[Payload], alert: Alert, ctx: FanOutContext
) -> int:
    created = 0
    if alert.agency_webhook_body is not None and alert.agency_id is not None:
        hooks = await repository.active_subscription_ids(
            conn, agency_id=alert.agency_id, channel=WEBHOOK
        )
        created += await _queue_webhooks(
            conn,
            envelope,
            alert,
            hooks,
            alert.agency_webhook_body,
            event_type=alert.agency_webhook_type or alert.kind,
        )
    if alert.app_webhook_body is not None and alert.app_id is not None:
        hooks = await repository.app_webhook_ids(conn, app_id=alert.app_id)
        created += await _queue_webhooks(
            conn, envelope, alert, hooks, alert.app_webhook_body, event_type=alert.kind
        )
    created += await _queue_personal(conn, envelope, alert, ctx)
    logger.info(
        "queued %s deliveries of %s about report %s",
        created,
        alert.kind,
        alert.report_id,
        extra={"report_id": str(alert.report_id), "event_type": alert.kind},
    )
    return created


async def _queue_webhooks(
    conn: Conn,
    envelope: Envelope[Payload],
    alert: Alert,
    subscriptions: list[uuid.UUID],
    body: str,
    *,
    event_type: str,
) -> int:
    created = 0
    for subscription_id in subscriptions:
        queued = await repository.insert_delivery(
            conn,
            delivery_id=delivery_id(envelope.event_id, subscription_id),
            event_id=envelope.event_id,
            subscription_id=subscription_id,
            agency_id=alert.agency_id,
            channel=WEBHOOK,
            event_type=event_type,
            report_id=alert.report_id,
            body=body,
        )
        created += 1 if queued else 0
    if created:
        QUEUED.labels(WEBHOOK, event_type).inc(created)
    return created


async def _queue_personal(
    conn: Conn, envelope: Envelope[Payload], alert: Alert, ctx: FanOutContext
) -> int:
    seen: set[uuid.UUID] = set()
    recipients: list[Recipient] = []
    for audience in alert.people:
        for recipient in await directory.recipients(conn, audience, kind=alert.kind):
            if recipient.subscription_id not in seen:  # one alert per channel and device
                seen.add(recipient.subscription_id)
                recipients.append(recipient)
    if not recipients:
        return 0
    resume = None
    if not alert.urgent and ctx.working_time is not None and any(r.quiet_hours for r in recipients):
        now = envelope.occurred_at
        resume = await ctx.working_time.next_working_instant(now)
        if resume is not None and resume <= now:
            resume = None  # office hours now: nothing waits
    created = 0
    push_body = push_payload(alert, workspace_url=ctx.workspace_url)
    for recipient in recipients:
        if recipient.channel == WEB_PUSH:
            body = push_body
        else:
            body = email_content(
                alert, workspace_url=ctx.workspace_url, name=recipient.display_name
            ).to_body()
        queued = await repository.insert_delivery(
            conn,
            delivery_id=delivery_id(envelope.event_id, recipient.subscription_id),
            event_id=envelope.event_id,
            subscription_id=recipient.subscription_id,
            agency_id=alert.agency_id,
            channel=recipient.channel,
            event_type=alert.kind,
            report_id=alert.report_id,
            body=body,
            recipient=recipient.user_id,
            urgency=alert.urgency,
            topic=alert.topic,
            ttl_seconds=ctx.push_ttl_seconds,
            held_until=resume if recipient.quiet_hours else None,
        )
        if queued:
            created += 1
            QUEUED.labels(recipient.channel, alert.kind).inc()
    return created


async def create_subscription(
    conn: Conn,
    *,
    url: str,
    secret: str,
    agency_id: str | None = None,
    app_id: str | None = None,
    created_by: str | None = None,
) -> dict[str, Any]:
    """Register an agency's (or an upstream app's) webhook; the record never has the secret."""
    if (agency_id is None) == (app_id is None):
        raise ValueError("a webhook belongs to exactly one agency or one app")
    subscription = await repository.insert_subscription(
        conn,
        subscription_id=uuid.uuid4(),
        owner_kind="agency" if agency_id is not None else "app",
        agency_id=agency_id,
        app_id=app_id,
        channel=WEBHOOK,
        url=url,
        secret=secret,
        created_by=created_by,
    )
    logger.info(
        "webhook subscription %s created for %s",
        subscription["id"],
        agency_id or f"app {app_id}",
        extra={"subscription_id": str(subscription["id"]), "channel": WEBHOOK},
    )
    return subscription


async def subscribe_push(
    conn: Conn, *, member: Staff, endpoint: str, p256dh: str, auth: str
) -> tuple[dict[str, Any], bool]:
    """A staff member's browser subscribes to Web Push; returns (subscription, created).

    The same browser subscribing again with the same keys gets its subscription back; a
    browser whose endpoint another user (or older keys) held replaces that subscription.
    """
    async with conn.transaction():
        await directory.remember_staff(conn, member)
        current = await repository.active_push_at(conn, endpoint=endpoint)
        unchanged = False
        if current is not None:
            keys = (current.pop("p256dh"), current.pop("auth_secret"))  # never returned
            unchanged = (current["user_id"], *keys) == (member.subject, p256dh, auth)
        return await _personal_subscription(
            conn,
            member=member,
            current=current,
            unchanged=unchanged,
            reason="replaced by a new subscription of this browser",
            channel=WEB_PUSH,
            url=endpoint,
            p256dh=p256dh,
            auth_secret=auth,
        )


async def subscribe_email(
    conn: Conn, *, member: Staff, address: str
) -> tuple[dict[str, Any], bool]:
    """A staff member's email alerts go to ``address``; returns (subscription, created)."""
    async with conn.transaction():
        await directory.remember_staff(conn, member)
        current = await repository.active_email_of(conn, user_id=member.subject)
        return await _personal_subscription(
            conn,
            member=member,
            current=current,
            unchanged=current is not None and current["email"] == address,
            reason="replaced by another address",
            channel=EMAIL,
            email=address,
        )


async def _personal_subscription(
    conn: Conn,
    *,
    member: Staff,
    current: dict[str, Any] | None,
    unchanged: bool,
    reason: str,
    channel: str,
    **target: str,
) -> tuple[dict[str, Any], bool]:
    """Keep ``current`` when unchanged, else replace it with a new subscription of ``member``;
    call inside a transaction. Returns (subscription, created)."""
    if current is not None:
        if unchanged:
            return current, False
        await repository.deactivate_subscription(conn, subscription_id=current["id"], reason=reason)
    created = await repository.insert_subscription(
        conn,
        subscription_id=uuid.uuid4(),
        owner_kind="user",
        agency_id=member.agency_id,
        user_id=member.subject,
        channel=channel,
        created_by=member.subject,
        **target,
    )
    logger.info("%s subscription %s created for %s", channel, created["id"], member.subject)
    return created, True


async def retry_delivery(conn: Conn, *, delivery_id: uuid.UUID, by: str) -> dict[str, Any] | None:
    """Send a failed delivery again (same id); None unless it was failed on an active
    subscription."""
    retried = await repository.retry_failed(conn, delivery_id=delivery_id)
    if retried is not None:
        logger.info("delivery %s queued again by %s", delivery_id, by)
    return retried


async def deactivate_subscription(conn: Conn, *, subscription_id: uuid.UUID, reason: str) -> bool:
    """Stop sending to a subscription and fail its pending deliveries; False when unknown.

    Deactivating an inactive subscription is a no-op that still returns True.
    """
    async with conn.transaction():
        if await repository.get_subscription(conn, subscription_id=subscription_id) is None:
            return False
        cancelled = await repository.deactivate_subscription(
            conn, subscription_id=subscription_id, reason=reason
        )
    logger.info(
        "subscription %s deactivated (%s); %s pending deliveries cancelled",
        subscription_id,
        reason,
        cancelled,
    )
    return True


@dataclass(frozen=True)
class Breaker:
    """Circuit breaker settings: failures in a row that open a circuit, and its pause."""

    threshold: int = 5
    probe_seconds: float = 300.0


async def record_attempt(
    conn: Conn, delivery: ClaimedDelivery, decision: Decision, breaker: Breaker | None = None
) -> bool:
    """Store one attempt's outcome (``record_attempts`` of one); True when stored."""
    [stored] = await record_attempts(conn, [(delivery, decision)], breaker)
    return stored


async def record_attempts(
    conn: Conn,
    outcomes: Sequence[tuple[ClaimedDelivery, Decision]],
    breaker: Breaker | None = None,
) -> list[bool]:
    """Store attempts' outcomes in one transaction; a 410 also deactivates the subscription.

    With a breaker, each endpoint's run of failures is counted too, in the order the outcomes
    are given: at the threshold its circuit opens and its deliveries wait for the probe time
    instead of being attempted. Returns, per outcome, False when the row moved on meanwhile
    (its lease lapsed and another attempt took it, or the subscription was deactivated); that
    outcome is then not stored, nor counted.
    """
    async with conn.transaction():
        stored = await repository.record_decisions(conn, outcomes)
        kept = [(d.id, d.attempts) in stored for d, _ in outcomes]
        gone = sorted({d.subscription_id for d, o in outcomes if o.outcome == "gone"})
        for subscription_id in gone:
            await repository.deactivate_subscription(
                conn, subscription_id=subscription_id, reason=GONE_REASON
            )
        if breaker is not None:
            runs: dict[uuid.UUID, tuple[bool, int]] = {}
            channels: dict[uuid.UUID, str] = {}
            for (delivery, decision), counted in zip(outcomes, kept, strict=True):
                if not counted or decision.outcome == "gone":
                    continue
                reset, failures = runs.get(delivery.subscription_id, (False, 0))
                if decision.outcome == "delivered":
                    runs[delivery.subscription_id] = (True, 0)
                else:
                    runs[delivery.subscription_id] = (reset, failures + 1)
                channels[delivery.subscription_id] = delivery.channel
            opened = await repository.record_endpoint_runs(
                conn, runs, threshold=breaker.threshold, probe_seconds=breaker.probe_seconds
            )
            for subscription_id in opened:
                CIRCUIT_OPENED.labels(channels[subscription_id]).inc()
    for (delivery, decision), counted in zip(outcomes, kept, strict=True):
        if not counted:
            logger.warning(
                "outcome %s of delivery %s attempt %s not stored: the row moved on",
                decision.outcome,
                delivery.id,
                delivery.attempts,
            )
    return kept
