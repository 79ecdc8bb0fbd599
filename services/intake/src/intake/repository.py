"""SQL of the intake service (raw asyncpg, ``$n`` parameters only)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from paht_common.db import Conn

# --- API keys ---------------------------------------------------------------------------

KEY_BY_HASH = """
SELECT id, app_id, scopes, rate_per_minute FROM api_keys
WHERE key_hash = $1 AND revoked_at IS NULL
"""
INSERT_KEY = """
INSERT INTO api_keys (id, app_id, key_hash, scopes, rate_per_minute) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (key_hash) DO NOTHING
"""
REVOKE_KEY = "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL"
KEYS_OF = """
SELECT id, app_id, scopes, rate_per_minute, created_at, revoked_at FROM api_keys
WHERE app_id = $1 ORDER BY created_at
"""


async def key_by_hash(conn: Conn, *, key_hash: bytes) -> dict[str, Any] | None:
    """The active key with this hash."""
    row = await conn.fetchrow(KEY_BY_HASH, key_hash)
    return None if row is None else dict(row)


async def insert_key(
    conn: Conn,
    *,
    key_id: uuid.UUID,
    app_id: str,
    key_hash: bytes,
    scopes: Sequence[str],
    rate_per_minute: int,
) -> None:
    """Store a new key (idempotent on the hash)."""
    await conn.execute(INSERT_KEY, key_id, app_id, key_hash, list(scopes), rate_per_minute)


async def revoke_key(conn: Conn, *, key_id: uuid.UUID) -> bool:
    """Revoke a key; False when unknown or already revoked."""
    return str(await conn.execute(REVOKE_KEY, key_id)).endswith(" 1")


async def keys_of(conn: Conn, *, app_id: str) -> list[dict[str, Any]]:
    """Every key of an app (never the hashes)."""
    return [dict(r) for r in await conn.fetch(KEYS_OF, app_id)]


# --- categories -------------------------------------------------------------------------

CATEGORIES = """
SELECT code, group_code, name_vi, name_en, description, keywords, version
FROM categories WHERE active ORDER BY code
"""
CATEGORY = "SELECT code, name_vi, name_en, group_code FROM categories WHERE code = $1 AND active"
UPSERT_CATEGORY = """
INSERT INTO categories (code, group_code, name_vi, name_en, description, keywords)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (code) DO UPDATE SET group_code = EXCLUDED.group_code, name_vi = EXCLUDED.name_vi,
    name_en = EXCLUDED.name_en, description = EXCLUDED.description,
    keywords = EXCLUDED.keywords, active = true,
    version = categories.version + CASE WHEN (categories.name_vi, categories.name_en,
        categories.group_code) IS DISTINCT FROM (EXCLUDED.name_vi, EXCLUDED.name_en,
        EXCLUDED.group_code) THEN 1 ELSE 0 END
"""


async def categories(conn: Conn) -> list[dict[str, Any]]:
    """The active catalogue."""
    return [dict(r) for r in await conn.fetch(CATEGORIES)]


async def category(conn: Conn, *, code: str) -> dict[str, Any] | None:
    """One active category."""
    row = await conn.fetchrow(CATEGORY, code)
    return None if row is None else dict(row)


async def upsert_category(
    conn: Conn,
    *,
    code: str,
    group_code: str,
    name_vi: str,
    name_en: str,
    description: str,
    keywords: str,
) -> None:
    """Create or update a category."""
    await conn.execute(UPSERT_CATEGORY, code, group_code, name_vi, name_en, description, keywords)


# --- reports ----------------------------------------------------------------------------

NEXT_NUMBER = "SELECT nextval('report_number_seq')"
INSERT_REPORT = """
INSERT INTO reports (id, number, source_app, client_report_id, idempotency_key, request_hash,
    category, description, search_text, commune_code, lat, lon, address, channel, urgency,
    media_urls, state, flags, possible_duplicates, submitted_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
        $20, $20)
"""
INSERT_REPORTER = """
INSERT INTO reporters (report_id, name, phone, email, anonymous) VALUES ($1, $2, $3, $4, $5)
"""
REPORT_COLUMNS = """
r.id, r.number, r.source_app, r.client_report_id, r.category, r.description, r.commune_code,
r.lat, r.lon, r.address, r.channel, r.urgency, r.media_urls, r.state, r.agency_id,
r.agency_name, r.requires_leader_approval, r.reopen_count, r.extension_count,
r.waiting_for_reporter, r.public, r.flags, r.possible_duplicates, r.duplicate_of, r.rating,
r.response_text, r.screening_due_at, r.acknowledgement_due_at, r.resolution_due_at,
r.overdue, r.submitted_at, r.updated_at, r.closed_at, r.request_hash
"""
REPORT = f"SELECT {REPORT_COLUMNS} FROM reports r WHERE r.id = $1"
REPORT_FOR_UPDATE = REPORT + " FOR UPDATE"
REPORT_BY_CLIENT_ID = (
    f"SELECT {REPORT_COLUMNS} FROM reports r WHERE r.source_app = $1 AND r.client_report_id = $2"
)
REPORT_BY_IDEMPOTENCY = (
    f"SELECT {REPORT_COLUMNS} FROM reports r WHERE r.source_app = $1 AND r.idempotency_key = $2"
)
REPORTER = "SELECT name, phone, email, anonymous FROM reporters WHERE report_id = $1"
NEARBY = """
SELECT id, lat, lon FROM reports
WHERE category = $1 AND submitted_at >= $2 AND lat IS NOT NULL
  AND lat BETWEEN $3 AND $4 AND lon BETWEEN $5 AND $6
  AND state NOT IN ('rejected', 'merged', 'closed')
LIMIT 50
"""
INSERT_TIMELINE = """
INSERT INTO report_timeline (report_id, event_id, at, actor_role, actor_subject,
    actor_agency_id, action, from_state, to_state, reason, details)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""
TIMELINE = """
SELECT at, actor_role, actor_subject, actor_agency_id, action, from_state, to_state, reason,
       details
FROM report_timeline WHERE report_id = $1 ORDER BY id
"""


async def next_number(conn: Conn) -> int:
    """Next value of the report number sequence (gaps are possible, never repeats)."""
    return int(await conn.fetchval(NEXT_NUMBER))


async def insert_report(conn: Conn, *, values: dict[str, Any]) -> None:
    """Insert a new report row; UniqueViolation on a replayed idempotency key."""
    v = values
    await conn.execute(
        INSERT_REPORT,
        v["id"],
        v["number"],
        v["source_app"],
        v["client_report_id"],
        v["idempotency_key"],
        v["request_hash"],
        v["category"],
        v["description"],
        v["search_text"],
        v["commune_code"],
        v["lat"],
        v["lon"],
        v["address"],
        v["channel"],
        v["urgency"],
        v["media_urls"],
        v["state"],
        v["flags"],
        v["possible_duplicates"],
        v["submitted_at"],
    )


async def insert_reporter(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    name: str | None,
    phone: str | None,
    email: str | None,
    anonymous: bool,
) -> None:
    """Store the reporter's identity apart from the report."""
    await conn.execute(INSERT_REPORTER, report_id, name, phone, email, anonymous)


async def get_report(
    conn: Conn, *, report_id: uuid.UUID, for_update: bool = False
) -> dict[str, Any] | None:
    """One report (optionally locked for a transition)."""
    row = await conn.fetchrow(REPORT_FOR_UPDATE if for_update else REPORT, report_id)
    return None if row is None else dict(row)


async def find_replay(
    conn: Conn, *, source_app: str, client_report_id: str | None, idempotency_key: str | None
) -> dict[str, Any] | None:
    """The report an idempotent retry refers to, if any."""
    if idempotency_key:
        row = await conn.fetchrow(REPORT_BY_IDEMPOTENCY, source_app, idempotency_key)
        if row is not None:
            return dict(row)
    if client_report_id:
        row = await conn.fetchrow(REPORT_BY_CLIENT_ID, source_app, client_report_id)
        if row is not None:
            return dict(row)
    return None


async def reporter(conn: Conn, *, report_id: uuid.UUID) -> dict[str, Any] | None:
    """Reporter identity (coordinator only)."""
    row = await conn.fetchrow(REPORTER, report_id)
    return None if row is None else dict(row)


async def nearby(
    conn: Conn,
    *,
    category: str,
    since: datetime,
    lat_min: float,
    lat_max: float,
    lon_min: float,
    lon_max: float,
) -> list[dict[str, Any]]:
    """Open reports of a category inside a bounding box since an instant."""
    rows = await conn.fetch(NEARBY, category, since, lat_min, lat_max, lon_min, lon_max)
    return [dict(r) for r in rows]


async def append_timeline(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    event_id: uuid.UUID,
    at: datetime,
    actor_role: str,
    actor_subject: str,
    actor_agency_id: str | None,
    action: str,
    from_state: str,
    to_state: str,
    reason: str | None,
    details: dict[str, Any],
) -> None:
    """Append one audit row (the table refuses updates and deletes)."""
    await conn.execute(
        INSERT_TIMELINE,
        report_id,
        event_id,
        at,
        actor_role,
        actor_subject,
        actor_agency_id,
        action,
        from_state,
        to_state,
        reason,
        details,
    )


async def timeline(conn: Conn, *, report_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every transition of a report, oldest first."""
    return [dict(r) for r in await conn.fetch(TIMELINE, report_id)]


UPDATE_AFTER_TRANSITION = """
UPDATE reports SET state = $2, agency_id = $3, agency_name = $4, reopen_count = $5,
    extension_count = $6, waiting_for_reporter = $7, duplicate_of = $8, rating = $9,
    response_text = $10, closed_at = $11, public = $12, urgency = $13, updated_at = $14
WHERE id = $1
"""


async def update_after_transition(
    conn: Conn, *, report_id: uuid.UUID, fields: dict[str, Any], at: datetime
) -> None:
    """Write the report's new state and derived fields."""
    f = fields
    await conn.execute(
        UPDATE_AFTER_TRANSITION,
        report_id,
        f["state"],
        f["agency_id"],
        f["agency_name"],
        f["reopen_count"],
        f["extension_count"],
        f["waiting_for_reporter"],
        f["duplicate_of"],
        f["rating"],
        f["response_text"],
        f["closed_at"],
        f["public"],
        f["urgency"],
        at,
    )


UPDATE_SLA = """
UPDATE reports SET screening_due_at = $2, acknowledgement_due_at = $3, resolution_due_at = $4,
    overdue = $5, sla_version = $6, updated_at = greatest(updated_at, $7)
WHERE id = $1 AND sla_version <= $6
"""
SET_OVERDUE = (
    "UPDATE reports SET overdue = true, updated_at = greatest(updated_at, $2) WHERE id = $1"
)


async def update_sla(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    screening: datetime | None,
    acknowledgement: datetime | None,
    resolution: datetime | None,
    overdue: bool,
    version: int,
    at: datetime,
) -> None:
    """Refresh the deadline view; an older SLA event never overwrites a newer one."""
    await conn.execute(
        UPDATE_SLA, report_id, screening, acknowledgement, resolution, overdue, version, at
    )


async def set_overdue(conn: Conn, *, report_id: uuid.UUID, at: datetime) -> None:
    """Flag a report as overdue (a flag, not a state)."""
    await conn.execute(SET_OVERDUE, report_id, at)


def list_query(filters: dict[str, Any], *, limit: int) -> tuple[str, list[Any]]:
    """SELECT for GET /v1/reports with only ``$n`` parameters (the clauses are fixed text)."""
    clauses: list[str] = []
    args: list[Any] = []

    def add(clause: str, value: Any) -> None:
        args.append(value)
        clauses.append(clause.replace("?", f"${len(args)}"))

    if filters.get("status"):
        add("r.state = ANY(?::text[])", filters["status"])
    if filters.get("category"):
        add("(r.category = ANY(?::text[]))", filters["category"])
    if filters.get("agency_id"):
        add("r.agency_id = ?", filters["agency_id"])
    if filters.get("commune_code"):
        add("r.commune_code = ?", filters["commune_code"])
    if filters.get("overdue") is not None:
        add("r.overdue = ?", filters["overdue"])
    if filters.get("since"):
        add("r.submitted_at >= ?", filters["since"])
    if filters.get("until"):
        add("r.submitted_at < ?", filters["until"])
    if filters.get("updated_after"):
        add("r.updated_at > ?", filters["updated_after"])
    if filters.get("text"):
        escaped = filters["text"].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        add("r.search_text LIKE ? ESCAPE '\\'", "%" + escaped + "%")
    if filters.get("ids"):
        add("r.id = ANY(?::uuid[])", filters["ids"])
    if filters.get("after"):
        at, rid = filters["after"]
        args.extend([at, rid])
        clauses.append(f"(r.submitted_at, r.id) < (${len(args) - 1}, ${len(args)})")
    where = " AND ".join(clauses) if clauses else "true"
    args.append(limit)
    sql = (
        f"SELECT {REPORT_COLUMNS} FROM reports r WHERE {where} "
        f"ORDER BY r.submitted_at DESC, r.id DESC LIMIT ${len(args)}"
    )
    return sql, args


async def list_reports(conn: Conn, *, filters: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Reports matching filters, newest first."""
    sql, args = list_query(filters, limit=limit)
    return [dict(r) for r in await conn.fetch(sql, *args)]


# --- media ------------------------------------------------------------------------------

INSERT_MEDIA = """
INSERT INTO media (sha256, content_type, size, thumbnail_sha256) VALUES ($1, $2, $3, $4)
ON CONFLICT (sha256) DO NOTHING
"""
ATTACH_MEDIA = """
INSERT INTO report_media (report_id, sha256, position)
VALUES ($1, $2, (SELECT coalesce(max(position), 0) + 1 FROM report_media WHERE report_id = $1))
ON CONFLICT (report_id, sha256) DO NOTHING
"""
MEDIA_SHAS_OF = "SELECT sha256 FROM report_media WHERE report_id = $1"
MEDIA_OF = """
SELECT m.sha256, m.content_type, m.size, m.thumbnail_sha256
FROM report_media rm JOIN media m ON m.sha256 = rm.sha256
WHERE rm.report_id = $1 ORDER BY rm.position
"""
MEDIA = "SELECT sha256, content_type, size, thumbnail_sha256 FROM media WHERE sha256 = $1"


async def media_shas_of(conn: Conn, *, report_id: uuid.UUID) -> set[str]:
    """Digests of the files attached to a report."""
    return {r["sha256"] for r in await conn.fetch(MEDIA_SHAS_OF, report_id)}


async def attach_media(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    sha256: str,
    content_type: str,
    size: int,
    thumbnail_sha256: str | None,
) -> None:
    """Record a stored file and attach it to a report (both idempotent)."""
    await conn.execute(INSERT_MEDIA, sha256, content_type, size, thumbnail_sha256)
    await conn.execute(ATTACH_MEDIA, report_id, sha256)


async def media_of(conn: Conn, *, report_id: uuid.UUID) -> list[dict[str, Any]]:
    """The files attached to a report, in upload order."""
    return [dict(r) for r in await conn.fetch(MEDIA_OF, report_id)]


async def media(conn: Conn, *, sha256: str) -> dict[str, Any] | None:
    """One stored file's record."""
    row = await conn.fetchrow(MEDIA, sha256)
    return None if row is None else dict(row)
