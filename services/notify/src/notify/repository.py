"""SQL of the notify service (raw asyncpg, ``$n`` parameters only)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
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

# Lease due rows for one dispatcher. Only the oldest $7 due rows (by the deliveries_due
# index) are candidates, so the cost does not grow with the backlog; rows of subscriptions
# that can take nothing now are left out of them, so those cannot crowd the others out: an
# endpoint whose circuit is open (too many failures in a row) until its probe time, and one
# whose slots ($4 each, counting what this dispatcher already has in flight, $2/$3) are full;
# a half-open circuit ($6: the failures that make one) gets one attempt at a time until one
# succeeds. Rows another dispatcher is claiming are skipped. The lease commits with the
# claim, before any send, so a dispatcher that dies mid-send leaves the row to be retried
# once the lease lapses, and no other dispatcher sends it meanwhile.
CLAIM_DUE = """
WITH busy AS (
    SELECT * FROM unnest($2::uuid[], $3::int[]) AS b (subscription_id, in_flight)
), blocked AS (
    SELECT s.id FROM subscriptions s WHERE s.circuit_open_until > now()
    UNION ALL
    SELECT b.subscription_id FROM busy b JOIN subscriptions s ON s.id = b.subscription_id
    WHERE b.in_flight >= CASE WHEN s.consecutive_failures >= $6 THEN 1 ELSE $4 END
), candidates AS (
    SELECT d.id, d.subscription_id, d.next_attempt_at
    FROM deliveries d
    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
      AND d.subscription_id NOT IN (SELECT id FROM blocked)
    ORDER BY d.next_attempt_at
    LIMIT $7
), ranked AS (
    SELECT c.id, c.next_attempt_at,
           row_number() OVER (PARTITION BY c.subscription_id ORDER BY c.next_attempt_at, c.id)
               + coalesce(b.in_flight, 0) AS slot,
           CASE WHEN s.consecutive_failures >= $6 THEN 1 ELSE $4 END AS slots
    FROM candidates c
    JOIN subscriptions s ON s.id = c.subscription_id
    LEFT JOIN busy b ON b.subscription_id = c.subscription_id
    WHERE s.circuit_open_until IS NULL OR s.circuit_open_until <= now()
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

CANDIDATES_PER_ROW = 4
"""Candidate rows ranked per row a claim may take: room for several per subscription."""

# Outcomes of many attempts, one statement per kind. Each is fenced by the attempt number:
# a dispatcher whose lease lapsed and whose row was claimed again cannot overwrite the newer
# attempt's state; nor can anything change a row that is no longer pending.
MARK_DELIVERED = """
UPDATE deliveries d
SET status = 'delivered', delivered_at = now(), next_attempt_at = NULL,
    last_status_code = o.status_code, last_error = NULL
FROM unnest($1::uuid[], $2::int[], $3::int[]) AS o (id, attempts, status_code)
WHERE d.id = o.id AND d.attempts = o.attempts AND d.status = 'pending'
RETURNING d.id, d.attempts
"""

MARK_RETRY = """
UPDATE deliveries d
SET next_attempt_at = now() + make_interval(secs => o.retry_in),
    last_status_code = o.status_code, last_error = o.error
FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[], $5::float8[])
    AS o (id, attempts, status_code, error, retry_in)
WHERE d.id = o.id AND d.attempts = o.attempts AND d.status = 'pending'
RETURNING d.id, d.attempts
"""

MARK_FAILED = """
UPDATE deliveries d
SET status = 'failed', next_attempt_at = NULL, last_status_code = o.status_code,
    last_error = o.error
FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[]) AS o (id, attempts, status_code, error)
WHERE d.id = o.id AND d.attempts = o.attempts AND d.status = 'pending'
RETURNING d.id, d.attempts
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

# The circuit breaker's memory: failures in a row reset by a success; at the threshold ($4)
# the circuit opens for $5 seconds (again after each failed probe). Per endpoint of a batch:
# whether a success reset the run ($2) and the failures counted after it ($3).
ENDPOINT_OUTCOMES = """
WITH o AS (
    SELECT * FROM unnest($1::uuid[], $2::bool[], $3::int[]) AS o (id, reset, failures)
), counted AS (
    SELECT s.id,
           CASE WHEN o.reset THEN 0 ELSE s.consecutive_failures END + o.failures AS failures,
           o.failures > 0 AS failed
    FROM subscriptions s JOIN o ON o.id = s.id
    ORDER BY s.id
    FOR UPDATE OF s
)
UPDATE subscriptions s
SET consecutive_failures = c.failures,
    circuit_open_until = CASE WHEN c.failures >= $4 THEN now() + make_interval(secs => $5) END
FROM counted c
WHERE s.id = c.id
  AND (c.failed OR s.consecutive_failures <> 0 OR s.circuit_open_until IS NOT NULL)
RETURNING s.id, c.failed AND s.circuit_open_until IS NOT NULL AS opened
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


async def record_endpoint_runs(
    conn: Conn,
    runs: Mapping[uuid.UUID, tuple[bool, int]],
    *,
    threshold: int,
    probe_seconds: float,
) -> set[uuid.UUID]:
    """Count endpoints' outcomes for their circuit breakers; call inside a transaction.

    ``runs`` maps a subscription to (a success reset its run of failures, failures counted
    after that). Returns the endpoints whose circuit is open after a failure counted now.
    """
    if not runs:
        return set()
    ids = sorted(runs)
    rows = await conn.fetch(
        ENDPOINT_OUTCOMES,
        ids,
        [runs[i][0] for i in ids],
        [runs[i][1] for i in ids],
        threshold,
        probe_seconds,
    )
    return {r["id"] for r in rows if r["opened"]}


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
        limit * CANDIDATES_PER_ROW,
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


async def record_decisions(
    conn: Conn, outcomes: Sequence[tuple[ClaimedDelivery, Decision]]
) -> set[tuple[uuid.UUID, int]]:
    """Store attempts' outcomes, one statement per kind; call inside a transaction.

    Returns the (delivery id, attempt) pairs stored: an outcome whose row a newer attempt
    owns, or that is no longer pending, is not.
    """
    delivered = [(d, o) for d, o in outcomes if o.outcome == "delivered"]
    retry = [(d, o) for d, o in outcomes if o.outcome == "retry"]
    failed = [(d, o) for d, o in outcomes if o.outcome in ("failed", "gone")]
    rows: list[Any] = []
    if delivered:
        rows += await conn.fetch(
            MARK_DELIVERED,
            [d.id for d, _ in delivered],
            [d.attempts for d, _ in delivered],
            [o.status_code for _, o in delivered],
        )
    if retry:
        rows += await conn.fetch(
            MARK_RETRY,
            [d.id for d, _ in retry],
            [d.attempts for d, _ in retry],
            [o.status_code for _, o in retry],
            [o.error for _, o in retry],
            [o.retry_in for _, o in retry],
        )
    if failed:
        rows += await conn.fetch(
            MARK_FAILED,
            [d.id for d, _ in failed],
            [d.attempts for d, _ in failed],
            [o.status_code for _, o in failed],
            [o.error for _, o in failed],
        )
    return {(r["id"], r["attempts"]) for r in rows}


async def pending_stats(conn: Conn, *, excluding: list[uuid.UUID]) -> tuple[int, float | None]:
    """(pending deliveries, seconds until the earliest outside ``excluding`` becomes due).

    The second value is None when no such delivery is pending.
    """
    row = await conn.fetchrow(PENDING_STATS, excluding)
    assert row is not None
    return int(row["pending"]), row["next_due_in"]
