"""Notify use cases: queue deliveries from SLA events, manage subscriptions, record attempts."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from notify import repository
from notify.domain import WEBHOOK, ClaimedDelivery, Decision, delivery_id, notification_for
from notify.metrics import QUEUED
from paht_common.db import Conn
from paht_common.events import Envelope, Payload

logger = logging.getLogger(__name__)

GONE_REASON = "endpoint answered 410 Gone"


async def handle_sla_event(conn: Conn, envelope: Envelope[Payload]) -> int:
    """Queue one delivery per active webhook subscription of the event's agency.

    Call inside the handling transaction (with the inbox claim). Delivery ids derive from the
    event and subscription ids, so handling the same event again queues nothing new.
    Returns how many deliveries were queued now.
    """
    notification = notification_for(envelope)
    if notification is None:
        return 0
    subscriptions = await repository.active_subscription_ids(
        conn, agency_id=notification.agency_id, channel=WEBHOOK
    )
    if not subscriptions:
        logger.debug("no active subscriptions for agency %s", notification.agency_id)
        return 0
    created = 0
    for subscription_id in subscriptions:
        queued = await repository.insert_delivery(
            conn,
            delivery_id=delivery_id(envelope.event_id, subscription_id),
            event_id=envelope.event_id,
            subscription_id=subscription_id,
            agency_id=notification.agency_id,
            channel=WEBHOOK,
            event_type=notification.event_type,
            report_id=notification.report_id,
            body=notification.body,
        )
        created += 1 if queued else 0
    if created:
        QUEUED.labels(WEBHOOK, notification.event_type).inc(created)
    logger.info(
        "queued %s %s deliveries for agency %s",
        created,
        notification.event_type,
        notification.agency_id,
    )
    return created


async def create_subscription(
    conn: Conn, *, agency_id: str, channel: str, url: str, secret: str
) -> dict[str, Any]:
    """Register an active subscription; the returned record never contains the secret."""
    subscription = await repository.insert_subscription(
        conn,
        subscription_id=uuid.uuid4(),
        agency_id=agency_id,
        channel=channel,
        url=url,
        secret=secret,
    )
    logger.info(
        "subscription %s created for agency %s",
        subscription["id"],
        agency_id,
        extra={"subscription_id": str(subscription["id"]), "channel": channel},
    )
    return subscription


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


async def record_attempt(conn: Conn, delivery: ClaimedDelivery, decision: Decision) -> bool:
    """Store an attempt's outcome; a 410 also deactivates the subscription, atomically.

    Returns False when the row moved on meanwhile (its lease lapsed and another attempt took
    it, or the subscription was deactivated); the outcome is then not stored.
    """
    async with conn.transaction():
        stored = await repository.record_decision(conn, delivery, decision)
        if decision.outcome == "gone":
            await repository.deactivate_subscription(
                conn, subscription_id=delivery.subscription_id, reason=GONE_REASON
            )
    if not stored:
        logger.warning(
            "outcome %s of delivery %s attempt %s not stored: the row moved on",
            decision.outcome,
            delivery.id,
            delivery.attempts,
        )
    return stored
