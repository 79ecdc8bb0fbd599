"""SQL of the notify service (raw asyncpg, ``$n`` parameters only)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from notify.domain import ClaimedDelivery, Decision
from paht_common.db import Conn

WAKE_CHANNEL = "notify_deliveries"
"""LISTEN/NOTIFY channel the insert trigger signals (see migrations/0001_notify.sql)."""

SUBSCRIPTION_COLUMNS = "id, agency_id, channel, url, active, created_at"

INSERT_SUBSCRIPTION = f"""
INSERT INTO subscriptions (id, agency_id, channel, url, secret)
VALUES ($1, $2, $3, $4, $5)
RETURNING {SUBSCRIPTION_COLUMNS}
"""

SUBSCRIPTION = f"SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1"

SUBSCRIPTIONS_OF = f"""
SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE agency_id = $1 ORDER BY created_at, id
"""

ACTIVE_SUBSCRIPTION_IDS = """
SELECT id FROM subscriptions WHERE agency_id = $1 AND channel = $2 AND active ORDER BY id
"""

DEACTIVATE_SUBSCRIPTION = """
UPDATE subscriptions SET active = false, deactivated_at = now(), deactivated_reason = $2
WHERE id = $1 AND active
"""

CANCEL_PENDING = """
UPDATE deliveries
SET status = 'failed', next_attempt_at = NULL, last_error = $2
WHERE subscription_id = $1 AND status = 'pending'
"""

INSERT_DELIVERY = """
INSERT INTO deliveries (id, event_id, subscription_id, agency_id, channel, event_type,
                        report_id, body)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT DO NOTHING
"""

DELIVERY_COLUMNS = """
id, subscription_id, agency_id, channel, event_type, report_id, status, attempts,
last_status_code, last_error, next_attempt_at, created_at, delivered_at
"""

DELIVERIES_OF_REPORT = f"""
SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE report_id = $1 ORDER BY created_at, id
"""

# Lock due rows (skipping rows another dispatcher is claiming), take at most $4 per
# subscription counting what this dispatcher already has in flight ($2/$3), and lease them:
# the lease commits with the claim, before any send, so a dispatcher that dies mid-send leaves
# the row to be retried once the lease lapses, and no other dispatcher sends it meanwhile.
CLAIM_DUE = """
WITH busy AS (
    SELECT * FROM unnest($2::uuid[], $3::int[]) AS b (subscription_id, in_flight)
), ranked AS (
    SELECT d.id, d.next_attempt_at,
           row_number() OVER (PARTITION BY d.subscription_id ORDER BY d.next_attempt_at, d.id)
               + coalesce(b.in_flight, 0) AS slot
    FROM deliveries d LEFT JOIN busy b ON b.subscription_id = d.subscription_id
    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
), due AS (
    SELECT d.id
    FROM deliveries d
    WHERE d.id IN (SELECT id FROM ranked WHERE slot <= $4)
      AND d.status = 'pending' AND d.next_attempt_at <= now()
    ORDER BY d.next_attempt_at, d.id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries d
SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $5)
FROM due, subscriptions s
WHERE d.id = due.id AND s.id = d.subscription_id
RETURNING d.id, d.subscription_id, d.channel, d.event_type, d.body, d.attempts, s.url, s.secret
"""

# Every outcome update is fenced by the attempt number: a dispatcher whose lease lapsed and
# whose row was claimed again cannot overwrite the newer attempt's state.
MARK_DELIVERED = """
UPDATE deliveries
SET status = 'delivered', delivered_at = now(), next_attempt_at = NULL,
    last_status_code = $3, last_error = NULL
WHERE id = $1 AND attempts = $2 AND status = 'pending'
"""

MARK_RETRY = """
UPDATE deliveries
SET next_attempt_at = now() + make_interval(secs => $5), last_status_code = $3, last_error = $4
WHERE id = $1 AND attempts = $2 AND status = 'pending'
"""

MARK_FAILED = """
UPDATE deliveries
SET status = 'failed', next_attempt_at = NULL, last_status_code = $3, last_error = $4
WHERE id = $1 AND attempts = $2 AND status = 'pending'
"""

PENDING_STATS = """
SELECT count(*) AS pending,
       extract(epoch FROM min(next_attempt_at) FILTER (
           WHERE NOT (subscription_id = ANY($1::uuid[]))) - now())::float8 AS next_due_in
FROM deliveries WHERE status = 'pending'
"""


def _updated(tag: str) -> int:
    return int(tag.rsplit(" ", 1)[-1])


async def insert_subscription(
    conn: Conn,
    *,
    subscription_id: uuid.UUID,
    agency_id: str,
    channel: str,
    url: str,
    secret: str,
) -> dict[str, Any]:
    """Create an active subscription; returns it without the secret."""
    row = await conn.fetchrow(INSERT_SUBSCRIPTION, subscription_id, agency_id, channel, url, secret)
    assert row is not None
    return dict(row)


async def get_subscription(conn: Conn, *, subscription_id: uuid.UUID) -> dict[str, Any] | None:
    """One subscription without its secret, or None."""
    row = await conn.fetchrow(SUBSCRIPTION, subscription_id)
    return None if row is None else dict(row)


async def subscriptions_of(conn: Conn, *, agency_id: str) -> list[dict[str, Any]]:
    """Every subscription of an agency (active or not), oldest first, without secrets."""
    return [dict(r) for r in await conn.fetch(SUBSCRIPTIONS_OF, agency_id)]


async def active_subscription_ids(conn: Conn, *, agency_id: str, channel: str) -> list[uuid.UUID]:
    """Ids of an agency's active subscriptions on one channel."""
    return [r["id"] for r in await conn.fetch(ACTIVE_SUBSCRIPTION_IDS, agency_id, channel)]


async def deactivate_subscription(conn: Conn, *, subscription_id: uuid.UUID, reason: str) -> int:
    """Deactivate a subscription and fail its pending deliveries; call inside a transaction.

    Returns how many pending deliveries were cancelled (0 when it was already inactive).
    """
    tag = await conn.execute(DEACTIVATE_SUBSCRIPTION, subscription_id, reason)
    if _updated(tag) == 0:
        return 0
    cancelled = await conn.execute(
        CANCEL_PENDING, subscription_id, f"subscription deactivated: {reason}"
    )
    return _updated(cancelled)


async def insert_delivery(
    conn: Conn,
    *,
    delivery_id: uuid.UUID,
    event_id: uuid.UUID,
    subscription_id: uuid.UUID,
    agency_id: str,
    channel: str,
    event_type: str,
    report_id: uuid.UUID,
    body: str,
) -> bool:
    """Queue a delivery, due now; False when it already exists. Call inside a transaction."""
    tag = await conn.execute(
        INSERT_DELIVERY,
        delivery_id,
        event_id,
        subscription_id,
        agency_id,
        channel,
        event_type,
        report_id,
        body,
    )
    return _updated(tag) == 1


async def deliveries_of_report(conn: Conn, *, report_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every delivery about a report, oldest first."""
    return [dict(r) for r in await conn.fetch(DELIVERIES_OF_REPORT, report_id)]


async def claim_due(
    conn: Conn,
    *,
    limit: int,
    in_flight: Mapping[uuid.UUID, int],
    per_subscription: int,
    lease_seconds: float,
) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` due deliveries; run it in its own (auto-committed) transaction."""
    busy = list(in_flight.items())
    rows = await conn.fetch(
        CLAIM_DUE,
        limit,
        [subscription for subscription, _ in busy],
        [count for _, count in busy],
        per_subscription,
        lease_seconds,
    )
    return [
        ClaimedDelivery(
            id=r["id"],
            subscription_id=r["subscription_id"],
            channel=r["channel"],
            event_type=r["event_type"],
            body=r["body"],
            attempts=r["attempts"],
            url=r["url"],
            secret=r["secret"],
        )
        for r in rows
    ]


async def record_decision(conn: Conn, delivery: ClaimedDelivery, decision: Decision) -> bool:
    """Store an attempt's outcome unless a newer attempt owns the row; True when stored."""
    if decision.outcome == "delivered":
        tag = await conn.execute(
            MARK_DELIVERED, delivery.id, delivery.attempts, decision.status_code
        )
    elif decision.outcome == "retry":
        tag = await conn.execute(
            MARK_RETRY,
            delivery.id,
            delivery.attempts,
            decision.status_code,
            decision.error,
            decision.retry_in,
        )
    else:
        tag = await conn.execute(
            MARK_FAILED, delivery.id, delivery.attempts, decision.status_code, decision.error
        )
    return _updated(tag) == 1


async def pending_stats(conn: Conn, *, excluding: list[uuid.UUID]) -> tuple[int, float | None]:
    """(pending deliveries, seconds until the earliest outside ``excluding`` becomes due).

    The second value is None when no such delivery is pending.
    """
    row = await conn.fetchrow(PENDING_STATS, excluding)
    assert row is not None
    return int(row["pending"]), row["next_due_in"]
