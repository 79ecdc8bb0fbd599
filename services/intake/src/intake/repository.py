"""SQL of the intake service (raw asyncpg, ``$n`` parameters only)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import to_json

from paht_common.db import Conn

# --- API keys ---------------------------------------------------------------------------

KEY_BY_HASH = """
SELECT id, app_id, scopes, rate_per_minute, expires_at FROM api_keys
WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
"""
INSERT_KEY = """
INSERT INTO api_keys (id, app_id, key_hash, scopes, rate_per_minute, label, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (key_hash) DO NOTHING
"""
REVOKE_KEY = "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL"
_KEY_COLUMNS = """
id, app_id, scopes, rate_per_minute, label, created_at, expires_at, revoked_at,
CASE WHEN revoked_at IS NOT NULL THEN 'revoked'
     WHEN expires_at <= now() THEN 'expired' ELSE 'active' END AS status
"""
KEYS_OF = f"""
SELECT {_KEY_COLUMNS} FROM api_keys
WHERE $1::text IS NULL OR app_id = $1 ORDER BY app_id, created_at, id
"""
KEY_BY_ID = f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1"
KEY_BY_ID_FOR_UPDATE = KEY_BY_ID + " FOR UPDATE"
EXPIRE_KEY = """
UPDATE api_keys SET expires_at = LEAST(expires_at, now() + make_interval(secs => $2))
WHERE id = $1 AND revoked_at IS NULL
RETURNING expires_at
"""


async def key_by_hash(conn: Conn, *, key_hash: bytes) -> dict[str, Any] | None:
    """The active key with this hash (neither revoked nor expired)."""
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
    label: str | None = None,
    expires_at: datetime | None = None,
) -> None:
    """Store a new key (idempotent on the hash); ``expires_at`` None never expires."""
    await conn.execute(
        INSERT_KEY, key_id, app_id, key_hash, list(scopes), rate_per_minute, label, expires_at
    )


ADD_KEY_SCOPES = """
UPDATE api_keys SET scopes = ARRAY(SELECT DISTINCT unnest(scopes || $2::text[]) ORDER BY 1)
WHERE id = $1 AND NOT scopes @> $2::text[]
"""


async def add_key_scopes(conn: Conn, *, key_id: uuid.UUID, scopes: Sequence[str]) -> None:
    """Give an existing key these scopes too (idempotent; a missing key is left alone)."""
    await conn.execute(ADD_KEY_SCOPES, key_id, list(scopes))


async def revoke_key(conn: Conn, *, key_id: uuid.UUID) -> bool:
    """Revoke a key; False when unknown or already revoked."""
    return str(await conn.execute(REVOKE_KEY, key_id)).endswith(" 1")


async def keys_of(conn: Conn, *, app_id: str | None) -> list[dict[str, Any]]:
    """Every key of an app, or of every app (never the hashes), with its ``status``."""
    return [dict(r) for r in await conn.fetch(KEYS_OF, app_id)]


async def key_by_id(
    conn: Conn, *, key_id: uuid.UUID, for_update: bool = False
) -> dict[str, Any] | None:
    """One key (never its hash) with its ``status``: active, expired or revoked."""
    row = await conn.fetchrow(KEY_BY_ID_FOR_UPDATE if for_update else KEY_BY_ID, key_id)
    return None if row is None else dict(row)


async def expire_key(conn: Conn, *, key_id: uuid.UUID, within_seconds: float) -> datetime | None:
    """Make a key expire ``within_seconds`` from now unless it expires sooner already.

    Returns the key's expiry, or None when it is unknown or revoked.
    """
    expires_at: datetime | None = await conn.fetchval(EXPIRE_KEY, key_id, within_seconds)
    return expires_at


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


# --- agencies ---------------------------------------------------------------------------

_AGENCY_COLUMNS = "id, name, name_source, requires_leader_approval, updated_at"
AGENCIES = f"SELECT {_AGENCY_COLUMNS} FROM agencies ORDER BY id"
AGENCY = f"SELECT {_AGENCY_COLUMNS} FROM agencies WHERE id = $1"
LEARN_AGENCY_NAME = """
INSERT INTO agencies (id, name) VALUES ($1, $2)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()
WHERE agencies.name_source = 'routing' AND agencies.name IS DISTINCT FROM EXCLUDED.name
"""
PUT_AGENCY = f"""
INSERT INTO agencies (id, name, name_source, requires_leader_approval)
VALUES ($1, $2, 'admin', $3)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, name_source = 'admin',
    requires_leader_approval = EXCLUDED.requires_leader_approval, updated_at = now()
RETURNING {_AGENCY_COLUMNS}
"""
SET_AGENCY_APPROVAL = f"""
UPDATE agencies SET requires_leader_approval = $2, updated_at = now() WHERE id = $1
RETURNING {_AGENCY_COLUMNS}
"""
REQUIRE_LEADER_APPROVAL = """
INSERT INTO agencies (id, name, requires_leader_approval)
SELECT a, normalize(a, NFC), true FROM unnest($1::text[]) AS a
ON CONFLICT (id) DO UPDATE SET requires_leader_approval = true, updated_at = now()
WHERE NOT agencies.requires_leader_approval
"""


async def agencies(conn: Conn) -> list[dict[str, Any]]:
    """The agency directory, ordered by id."""
    return [dict(r) for r in await conn.fetch(AGENCIES)]


async def agency(conn: Conn, *, agency_id: str) -> dict[str, Any] | None:
    """One agency of the directory, or None when intake has never heard of it."""
    row = await conn.fetchrow(AGENCY, agency_id)
    return None if row is None else dict(row)


async def learn_agency_name(conn: Conn, *, agency_id: str, name: str) -> None:
    """Record the agency's name (NFC) as routing states it, unless an admin named it; the
    approval flag is untouched."""
    await conn.execute(LEARN_AGENCY_NAME, agency_id, name)


async def put_agency(
    conn: Conn, *, agency_id: str, name: str | None, requires_leader_approval: bool
) -> dict[str, Any] | None:
    """Create or update an agency; without ``name`` only an existing one (else None).

    A name given here is the admin's: routing no longer renames the agency.
    """
    if name is None:
        row = await conn.fetchrow(SET_AGENCY_APPROVAL, agency_id, requires_leader_approval)
    else:
        row = await conn.fetchrow(PUT_AGENCY, agency_id, name, requires_leader_approval)
    return None if row is None else dict(row)


async def require_leader_approval(conn: Conn, *, agency_ids: Sequence[str]) -> None:
    """Turn the approval flag on for these agencies; an unknown one is added, named by its id."""
    await conn.execute(REQUIRE_LEADER_APPROVAL, list(agency_ids))


# --- reports ----------------------------------------------------------------------------

NEXT_NUMBERS = "SELECT nextval('report_number_seq') FROM generate_series(1, $1)"
# One statement writes a whole batch of submissions (group commit): the reports, then for the
# ones actually inserted (an idempotent replay conflicts and is skipped) their reporter,
# timeline row, outbox event and media. A single statement is atomic on its own.
INSERT_SUBMISSIONS = """
WITH input AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[],
        $8::text[], $9::text[], $10::text[], $11::float8[], $12::float8[], $13::text[],
        $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::timestamptz[],
        $20::text[], $21::text[], $22::text[], $23::bool[], $24::uuid[], $25::text[],
        $26::bytea[], $27::bytea[], $28::text[]
    ) AS t(id, number, source_app, client_report_id, idempotency_key, request_hash, category,
           description, search_text, commune_code, lat, lon, address, channel, urgency,
           media_urls, flags, possible_duplicates, submitted_at, reporter_name, reporter_phone,
           reporter_email, reporter_anonymous, event_id, details, event_key, event_value,
           event_headers)
), ins AS (
    INSERT INTO reports (id, number, source_app, client_report_id, idempotency_key,
        request_hash, category, description, search_text, commune_code, lat, lon, address,
        channel, urgency, media_urls, state, flags, possible_duplicates, submitted_at,
        updated_at)
    SELECT id, number, source_app, client_report_id, idempotency_key, request_hash, category,
        description, search_text, commune_code, lat, lon, address, channel, urgency,
        ARRAY(SELECT jsonb_array_elements_text(media_urls::jsonb)), 'submitted',
        ARRAY(SELECT jsonb_array_elements_text(flags::jsonb)),
        ARRAY(SELECT jsonb_array_elements_text(possible_duplicates::jsonb)::uuid),
        submitted_at, submitted_at
    FROM input
    ON CONFLICT DO NOTHING
    RETURNING id
), reporter AS (
    INSERT INTO reporters (report_id, name, phone, email, anonymous)
    SELECT i.id, i.reporter_name, i.reporter_phone, i.reporter_email, i.reporter_anonymous
    FROM input i JOIN ins USING (id)
), timeline AS (
    INSERT INTO report_timeline (report_id, event_id, at, actor_role, actor_subject,
        actor_agency_id, action, from_state, to_state, reason, details)
    SELECT i.id, i.event_id, i.submitted_at, 'reporter', 'app:' || i.source_app, NULL,
        'submit', '', 'submitted', NULL, i.details::jsonb
    FROM input i JOIN ins USING (id)
), events AS (
    INSERT INTO outbox (event_id, topic, key, value, headers)
    SELECT i.event_id, $29, i.event_key, i.event_value, i.event_headers::jsonb
    FROM input i JOIN ins USING (id)
    ON CONFLICT (event_id) DO NOTHING
), stored_media AS (
    INSERT INTO media (sha256, content_type, size, thumbnail_sha256)
    SELECT DISTINCT ON (sha256) *
    FROM unnest($30::text[], $31::text[], $32::bigint[], $33::text[])
        AS m(sha256, content_type, size, thumbnail_sha256)
    ORDER BY sha256
    ON CONFLICT (sha256) DO NOTHING
), attached AS (
    INSERT INTO report_media (report_id, sha256, position)
    SELECT a.report_id, a.sha256, a.position
    FROM unnest($34::uuid[], $35::text[], $36::int[]) AS a(report_id, sha256, position)
    JOIN ins ON ins.id = a.report_id
)
SELECT id FROM ins
"""
REPORT_COLUMNS = """
r.id, r.number, r.source_app, r.client_report_id, r.category, r.description, r.commune_code,
r.lat, r.lon, r.address, r.channel, r.urgency, r.media_urls, r.state, r.agency_id,
r.agency_name, r.requires_leader_approval, r.reopen_count, r.extension_count,
r.waiting_for_reporter, r.public, r.flags, r.possible_duplicates, r.duplicate_of, r.rating,
r.response_text, r.screening_due_at, r.acknowledgement_due_at, r.resolution_due_at,
r.overdue, r.submitted_at, r.updated_at, r.closed_at, r.request_hash, r.co_agency_ids,
r.published_at, r.closes_at
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
SELECT q.i, r.id, r.lat, r.lon
FROM unnest($1::int[], $2::text[], $3::float8[], $4::float8[], $5::float8[], $6::float8[])
    AS q(i, category, lat_min, lat_max, lon_min, lon_max)
CROSS JOIN LATERAL (
    SELECT id, lat, lon FROM reports
    WHERE category = q.category AND submitted_at >= $7 AND lat IS NOT NULL
      AND lat BETWEEN q.lat_min AND q.lat_max AND lon BETWEEN q.lon_min AND q.lon_max
      AND state NOT IN ('rejected', 'merged', 'closed')
    LIMIT 50
) r
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


async def next_numbers(conn: Conn, count: int) -> list[int]:
    """Values of the report number sequence (gaps are possible, never repeats)."""
    return [int(r[0]) for r in await conn.fetch(NEXT_NUMBERS, count)]


@dataclass(frozen=True)
class NewReport:
    """Everything one submission writes: the report, its reporter, event and media."""

    values: dict[str, Any]
    """Report columns, reporter_* fields and the event's id, key, value and headers."""
    media: Sequence[tuple[str, str, int, str | None]] = ()
    """(sha256, content_type, size, thumbnail_sha256) in upload order."""


_SUBMISSION_COLUMNS = (
    "id",
    "number",
    "source_app",
    "client_report_id",
    "idempotency_key",
    "request_hash",
    "category",
    "description",
    "search_text",
    "commune_code",
    "lat",
    "lon",
    "address",
    "channel",
    "urgency",
    "media_urls",
    "flags",
    "possible_duplicates",
    "submitted_at",
    "reporter_name",
    "reporter_phone",
    "reporter_email",
    "reporter_anonymous",
    "event_id",
    "details",
    "event_key",
    "event_value",
    "event_headers",
)
_JSON_COLUMNS = frozenset(
    {"media_urls", "flags", "possible_duplicates", "details", "event_headers"}
)


async def insert_submissions(
    conn: Conn, reports: Sequence[NewReport], *, topic: str
) -> set[uuid.UUID]:
    """Write a batch in one statement; returns the ids inserted (replays are skipped)."""
    columns: list[list[Any]] = [[] for _ in _SUBMISSION_COLUMNS]
    media_columns: list[list[Any]] = [[], [], [], []]
    attached: list[list[Any]] = [[], [], []]
    for report in reports:
        for column, name in zip(columns, _SUBMISSION_COLUMNS, strict=True):
            value = report.values[name]
            column.append(to_json(value).decode() if name in _JSON_COLUMNS else value)
        for position, item in enumerate(report.media, start=1):
            for column, value in zip(media_columns, item, strict=True):
                column.append(value)
            attached[0].append(report.values["id"])
            attached[1].append(item[0])
            attached[2].append(position)
    rows = await conn.fetch(INSERT_SUBMISSIONS, *columns, topic, *media_columns, *attached)
    return {r["id"] for r in rows}


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


@dataclass(frozen=True)
class NearbyQuery:
    """One submission's search box for possible duplicates."""

    category: str
    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float


async def nearby(
    conn: Conn, queries: Sequence[NearbyQuery], *, since: datetime
) -> list[list[dict[str, Any]]]:
    """For each query, open reports of its category inside its box submitted since ``since``."""
    found: list[list[dict[str, Any]]] = [[] for _ in queries]
    if not queries:
        return found
    rows = await conn.fetch(
        NEARBY,
        list(range(len(queries))),
        [q.category for q in queries],
        [q.lat_min for q in queries],
        [q.lat_max for q in queries],
        [q.lon_min for q in queries],
        [q.lon_max for q in queries],
        since,
    )
    for row in rows:
        found[row["i"]].append({"id": row["id"], "lat": row["lat"], "lon": row["lon"]})
    return found


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
    response_text = $10, closed_at = $11, public = $12, urgency = $13, updated_at = $14,
    requires_leader_approval = $15, co_agency_ids = $16, published_at = $17, closes_at = $18
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
        f["requires_leader_approval"],
        list(f["co_agency_ids"]),
        f["published_at"],
        f["closes_at"],
    )


# The rating window's timer: due reports, claimed so that concurrent scanners share them.
DUE_TO_CLOSE = """
SELECT id FROM reports
WHERE closes_at <= $1 AND state IN ('published', 'rated')
ORDER BY closes_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""


async def claim_due_to_close(conn: Conn, *, now: datetime, limit: int) -> list[uuid.UUID]:
    """Reports whose rating window ended by ``now``, locked (others skip them); call inside
    the transaction that closes them."""
    return [r["id"] for r in await conn.fetch(DUE_TO_CLOSE, now, limit)]


UPDATE_SLA = """
UPDATE reports SET screening_due_at = $2, acknowledgement_due_at = $3, resolution_due_at = $4,
    overdue = $5, sla_version = $6, updated_at = greatest(updated_at, $7)
WHERE id = $1 AND sla_version <= $6
"""
SET_OVERDUE = (
    "UPDATE reports SET overdue = true, updated_at = greatest(updated_at, $2) WHERE id = $1"
)
TOUCH_REPORT = "UPDATE reports SET updated_at = greatest(updated_at, $2) WHERE id = $1"


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


async def touch_report(conn: Conn, *, report_id: uuid.UUID, at: datetime) -> None:
    """Record that the report changed at ``at`` without a transition (media added)."""
    await conn.execute(TOUCH_REPORT, report_id, at)


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
    if filters.get("handled_by"):  # the lead agency or a co-handling one
        add("(r.agency_id = ? OR ? = ANY(r.co_agency_ids))", filters["handled_by"])
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
SELECT m.sha256, m.content_type, m.size, m.thumbnail_sha256, rm.public
FROM report_media rm JOIN media m ON m.sha256 = rm.sha256
WHERE rm.report_id = $1 ORDER BY rm.position
"""
MEDIA = "SELECT sha256, content_type, size, thumbnail_sha256 FROM media WHERE sha256 = $1"
# Who may read a file is decided by the reports that carry it, in one statement: staff when
# one of them is theirs to see ($2: every agency's, else $3: assigned to their agency) ...
STAFF_READABLE_MEDIA = """
SELECT m.sha256, m.content_type, m.size, m.thumbnail_sha256 FROM media m
WHERE m.sha256 = $1 AND EXISTS (
    SELECT 1 FROM report_media rm JOIN reports r ON r.id = rm.report_id
    WHERE rm.sha256 = m.sha256
      AND ($2::boolean OR r.agency_id = $3::text OR $3::text = ANY(r.co_agency_ids))
)
"""
# ... and the public when one of them released it, published ($2) and public.
_RELEASED = "rm.public AND r.public AND r.state = ANY($2::text[])"
PUBLIC_READABLE_MEDIA = f"""
SELECT m.sha256, m.content_type, m.size, m.thumbnail_sha256 FROM media m
WHERE m.sha256 = $1 AND EXISTS (
    SELECT 1 FROM report_media rm JOIN reports r ON r.id = rm.report_id
    WHERE rm.sha256 = m.sha256 AND {_RELEASED}
)
"""
RELEASED_MEDIA_OF = f"""
SELECT m.sha256, m.content_type, m.size, m.thumbnail_sha256
FROM report_media rm JOIN media m ON m.sha256 = rm.sha256 JOIN reports r ON r.id = rm.report_id
WHERE rm.report_id = $1 AND {_RELEASED}
ORDER BY rm.position
"""
ATTACHED_MEDIA_FOR_UPDATE = """
SELECT m.sha256, m.content_type, m.size, m.thumbnail_sha256, rm.public
FROM report_media rm JOIN media m ON m.sha256 = rm.sha256
WHERE rm.report_id = $1 AND rm.sha256 = $2
FOR UPDATE OF rm
"""
SET_MEDIA_PUBLIC = "UPDATE report_media SET public = $3 WHERE report_id = $1 AND sha256 = $2"
STORED_DIGESTS = """
SELECT sha256 FROM media
UNION SELECT thumbnail_sha256 FROM media WHERE thumbnail_sha256 IS NOT NULL
"""


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


async def staff_readable_media(
    conn: Conn, *, sha256: str, every_agency: bool, agency_id: str | None
) -> dict[str, Any] | None:
    """The file's record when a report carrying it is one the staff member may see: any
    report with ``every_agency``, else one ``agency_id`` leads or co-handles; None otherwise
    (and when unknown)."""
    row = await conn.fetchrow(STAFF_READABLE_MEDIA, sha256, every_agency, agency_id)
    return None if row is None else dict(row)


async def public_readable_media(
    conn: Conn, *, sha256: str, published: Sequence[str]
) -> dict[str, Any] | None:
    """The file's record when a public report in a ``published`` state carrying it released
    it to the public; None otherwise (and when unknown)."""
    row = await conn.fetchrow(PUBLIC_READABLE_MEDIA, sha256, list(published))
    return None if row is None else dict(row)


async def released_media_of(
    conn: Conn, *, report_id: uuid.UUID, published: Sequence[str]
) -> list[dict[str, Any]]:
    """The files of a report the public may read (same rule as ``public_readable_media``),
    in upload order; none unless the report is public and in a ``published`` state."""
    return [dict(r) for r in await conn.fetch(RELEASED_MEDIA_OF, report_id, list(published))]


async def attached_media_for_update(
    conn: Conn, *, report_id: uuid.UUID, sha256: str
) -> dict[str, Any] | None:
    """A file of a report with its ``public`` flag, the link locked; call inside a
    transaction. None when the report does not carry the file."""
    row = await conn.fetchrow(ATTACHED_MEDIA_FOR_UPDATE, report_id, sha256)
    return None if row is None else dict(row)


async def set_media_public(conn: Conn, *, report_id: uuid.UUID, sha256: str, public: bool) -> None:
    """Release a report's file to the public, or withdraw it."""
    await conn.execute(SET_MEDIA_PUBLIC, report_id, sha256, public)


async def stored_digests(conn: Conn) -> set[str]:
    """Digests of every recorded file and thumbnail."""
    return {r["sha256"] for r in await conn.fetch(STORED_DIGESTS)}
