"""SQL of the notify service (raw asyncpg, ``$n`` parameters only)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from notify.domain import ClaimedDelivery, Decision
from paht_common.db import Conn

WAKE_CHANNEL = "notify_deliveries"
"""LISTEN/NOTIFY channel the insert trigger signals (see migrations/0001_notify.sql)."""

SUBSCRIPTION_COLUMNS = """
id, owner_kind, agency_id, user_id, app_id, channel, url, email, active, created_at,
consecutive_failures, circuit_open_until
"""

INSERT_SUBSCRIPTION = f"""
INSERT INTO subscriptions (id, owner_kind, agency_id, user_id, app_id, channel, url, secret,
                           p256dh, auth_secret, email, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING {SUBSCRIPTION_COLUMNS}
"""

ACTIVE_PUSH_AT = f"""
SELECT {SUBSCRIPTION_COLUMNS}, p256dh, auth_secret FROM subscriptions
WHERE url = $1 AND channel = 'web_push' AND active
FOR UPDATE
"""

ACTIVE_EMAIL_OF = f"""
SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions
WHERE user_id = $1 AND channel = 'email' AND active
FOR UPDATE
"""

SUBSCRIPTIONS_MATCHING = f"""
SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions
WHERE ($1::text IS NULL OR agency_id = $1)
  AND ($2::text IS NULL OR user_id = $2)
  AND ($3::text IS NULL OR app_id = $3)
ORDER BY created_at, id
LIMIT 1000
"""

APP_WEBHOOK_IDS = """
SELECT id FROM subscriptions
WHERE app_id = $1 AND owner_kind = 'app' AND channel = 'webhook' AND active ORDER BY id
"""

SUBSCRIPTION = f"SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1"

SUBSCRIPTIONS_OF = f"""
SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE agency_id = $1 ORDER BY created_at, id
"""

ACTIVE_SUBSCRIPTION_IDS = """
SELECT id FROM subscriptions
WHERE agency_id = $1 AND owner_kind = 'agency' AND channel = $2 AND active ORDER BY id
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
                        report_id, body, recipient, urgency, topic, ttl_seconds,
                        next_attempt_at, held_until)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, coalesce($13, now()), $13)
ON CONFLICT DO NOTHING
"""

DELIVERY_COLUMNS = """
id, subscription_id, agency_id, recipient, channel, event_type, report_id, status, attempts,
last_status_code, last_error, next_attempt_at, held_until, created_at, delivered_at
"""

# Staff of an agency see its deliveries and their own; $2/$3 NULL: no restriction.
DELIVERIES_OF_REPORT = f"""
SELECT {DELIVERY_COLUMNS} FROM deliveries
WHERE report_id = $1
  AND ($2::text IS NULL OR agency_id = $2 OR recipient = $3)
ORDER BY created_at, id
"""

DELIVERY = f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1"

# A failed delivery goes again with its id (the webhook-id receivers deduplicate on) and a
# fresh retry schedule; only while its subscription is active.
RETRY_FAILED = f"""
UPDATE deliveries d
SET status = 'pending', attempts = 0, next_attempt_at = now(), held_until = NULL
FROM subscriptions s
WHERE d.id = $1 AND d.status = 'failed' AND s.id = d.subscription_id AND s.active
RETURNING {", ".join("d." + c.strip() for c in DELIVERY_COLUMNS.split(","))}
"""

# Lock due rows (skipping rows another dispatcher is claiming), take at most $4 per
# subscription counting what this dispatcher already has in flight ($2/$3), and lease them:
# the lease commits with the claim, before any send, so a dispatcher that dies mid-send leaves
# the row to be retried once the lease lapses, and no other dispatcher sends it meanwhile.
# An endpoint whose circuit is open (too many failures in a row) is skipped until its probe
# time; then it gets one attempt at a time ($6: the failures that make a circuit half-open)
# until one succeeds.
CLAIM_DUE = """
WITH busy AS (
    SELECT * FROM unnest($2::uuid[], $3::int[]) AS b (subscription_id, in_flight)
), ranked AS (
    SELECT d.id, d.next_attempt_at,
           row_number() OVER (PARTITION BY d.subscription_id ORDER BY d.next_attempt_at, d.id)
               + coalesce(b.in_flight, 0) AS slot,
           CASE WHEN s.consecutive_failures >= $6 THEN 1 ELSE $4 END AS slots
    FROM deliveries d
    JOIN subscriptions s ON s.id = d.subscription_id
    LEFT JOIN busy b ON b.subscription_id = d.subscription_id
    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
      AND (s.circuit_open_until IS NULL OR s.circuit_open_until <= now())
), due AS (
    SELECT d.id
    FROM deliveries d
    WHERE d.id IN (SELECT id FROM ranked WHERE slot <= slots)
      AND d.status = 'pending' AND d.next_attempt_at <= now()
    ORDER BY d.next_attempt_at, d.id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE deliveries d
SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $5)
FROM due, subscriptions s
WHERE d.id = due.id AND s.id = d.subscription_id
RETURNING d.id, d.subscription_id, d.channel, d.event_type, d.body, d.attempts, s.url, s.secret,
          s.p256dh, s.auth_secret, s.email, d.urgency, d.topic, d.ttl_seconds
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
       extract(epoch FROM min(greatest(d.next_attempt_at,
                                       coalesce(s.circuit_open_until, d.next_attempt_at)))
           FILTER (WHERE NOT (d.subscription_id = ANY($1::uuid[]))) - now())::float8
           AS next_due_in
FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
WHERE d.status = 'pending'
"""

# The circuit breaker's memory: failures in a row reset by a success; at the threshold ($2)
# the circuit opens for $3 seconds (again after each failed probe).
ENDPOINT_SUCCEEDED = """
UPDATE subscriptions SET consecutive_failures = 0, circuit_open_until = NULL
WHERE id = $1 AND (consecutive_failures <> 0 OR circuit_open_until IS NOT NULL)
"""

ENDPOINT_FAILED = """
UPDATE subscriptions
SET consecutive_failures = consecutive_failures + 1,
    circuit_open_until = CASE WHEN consecutive_failures + 1 >= $2
                              THEN now() + make_interval(secs => $3) END
WHERE id = $1
RETURNING consecutive_failures, circuit_open_until
"""


def _updated(tag: str) -> int:
    return int(tag.rsplit(" ", 1)[-1])


async def insert_subscription(
    conn: Conn,
    *,
    subscription_id: uuid.UUID,
    owner_kind: str,
    channel: str,
    agency_id: str | None = None,
    user_id: str | None = None,
    app_id: str | None = None,
    url: str | None = None,
    secret: str | None = None,
    p256dh: str | None = None,
    auth_secret: str | None = None,
    email: str | None = None,
    created_by: str | None = None,
) -> dict[str, Any]:
    """Create an active subscription; returns it without its secrets."""
    row = await conn.fetchrow(
        INSERT_SUBSCRIPTION,
        subscription_id,
        owner_kind,
        agency_id,
        user_id,
        app_id,
        channel,
        url,
        secret,
        p256dh,
        auth_secret,
        email,
        created_by,
    )
    assert row is not None
    return dict(row)


async def active_push_at(conn: Conn, *, endpoint: str) -> dict[str, Any] | None:
    """The active Web Push subscription of an endpoint, locked; call inside a transaction."""
    row = await conn.fetchrow(ACTIVE_PUSH_AT, endpoint)
    return None if row is None else dict(row)


async def active_email_of(conn: Conn, *, user_id: str) -> dict[str, Any] | None:
    """A user's active email subscription, locked; call inside a transaction."""
    row = await conn.fetchrow(ACTIVE_EMAIL_OF, user_id)
    return None if row is None else dict(row)


async def subscriptions_matching(
    conn: Conn,
    *,
    agency_id: str | None = None,
    user_id: str | None = None,
    app_id: str | None = None,
) -> list[dict[str, Any]]:
    """Subscriptions (active or not) matching every given owner field, oldest first."""
    rows = await conn.fetch(SUBSCRIPTIONS_MATCHING, agency_id, user_id, app_id)
    return [dict(r) for r in rows]


async def app_webhook_ids(conn: Conn, *, app_id: str) -> list[uuid.UUID]:
    """Ids of an upstream app's active webhook subscriptions."""
    return [r["id"] for r in await conn.fetch(APP_WEBHOOK_IDS, app_id)]


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
    agency_id: str | None,
    channel: str,
    event_type: str,
    report_id: uuid.UUID,
    body: str,
    recipient: str | None = None,
    urgency: str = "normal",
    topic: str | None = None,
    ttl_seconds: int = 86_400,
    held_until: datetime | None = None,
) -> bool:
    """Queue a delivery, due now (or when ``held_until`` comes); False when it already exists.

    Call inside a transaction.
    """
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
        recipient,
        urgency,
        topic,
        ttl_seconds,
        held_until,
    )
    return _updated(tag) == 1


async def deliveries_of_report(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    agency_id: str | None = None,
    recipient: str | None = None,
) -> list[dict[str, Any]]:
    """Deliveries about a report, oldest first: all, or an agency's and one person's."""
    rows = await conn.fetch(DELIVERIES_OF_REPORT, report_id, agency_id, recipient)
    return [dict(r) for r in rows]


async def get_delivery(conn: Conn, *, delivery_id: uuid.UUID) -> dict[str, Any] | None:
    """One delivery, or None."""
    row = await conn.fetchrow(DELIVERY, delivery_id)
    return None if row is None else dict(row)


async def retry_failed(conn: Conn, *, delivery_id: uuid.UUID) -> dict[str, Any] | None:
    """Put a failed delivery back in the queue, due now; None unless it was failed and its
    subscription is still active."""
    row = await conn.fetchrow(RETRY_FAILED, delivery_id)
    return None if row is None else dict(row)


async def endpoint_succeeded(conn: Conn, *, subscription_id: uuid.UUID) -> None:
    """Close the endpoint's circuit and forget its failures."""
    await conn.execute(ENDPOINT_SUCCEEDED, subscription_id)


async def endpoint_failed(
    conn: Conn, *, subscription_id: uuid.UUID, threshold: int, probe_seconds: float
) -> bool:
    """Count a failed attempt; True when the endpoint's circuit is (now) open."""
    row = await conn.fetchrow(ENDPOINT_FAILED, subscription_id, threshold, probe_seconds)
    return row is not None and row["circuit_open_until"] is not None


async def claim_due(
    conn: Conn,
    *,
    limit: int,
    in_flight: Mapping[uuid.UUID, int],
    per_subscription: int,
    lease_seconds: float,
    breaker_threshold: int = 1_000_000,
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
        breaker_threshold,
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
            p256dh=r["p256dh"],
            auth=r["auth_secret"],
            email=r["email"],
            urgency=r["urgency"],
            topic=r["topic"],
            ttl_seconds=r["ttl_seconds"],
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
