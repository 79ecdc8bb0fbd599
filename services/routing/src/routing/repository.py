"""SQL of the routing service (raw asyncpg, ``$n`` parameters only)."""

from __future__ import annotations

import uuid
from datetime import datetime

from paht_common.db import Conn
from routing.domain import Rule

CANDIDATE_RULES = """
SELECT id, priority, agency_id, category, commune_code
FROM routing_rules
WHERE active
  AND (commune_code IS NULL OR commune_code = $2)
  AND (category IS NULL OR category = $1 OR $1 LIKE category || '.%')
"""

AGENCY_NAME = "SELECT name FROM agencies WHERE id = $1"
AGENCY_EXISTS = "SELECT EXISTS (SELECT 1 FROM agencies WHERE id = $1)"
CURRENT_ASSIGNMENT = """
SELECT agency_id, category, commune_code, source FROM assignments
WHERE report_id = $1 AND is_current
"""

RETIRE_CURRENT = "UPDATE assignments SET is_current = false WHERE report_id = $1 AND is_current"

INSERT_ASSIGNMENT = """
INSERT INTO assignments (report_id, event_id, agency_id, rule_id, category, commune_code,
                         source, routed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""

ASSIGNMENTS_OF = """
SELECT a.agency_id, g.name AS agency_name, a.rule_id, a.category, a.commune_code, a.source,
       a.routed_at, a.is_current
FROM assignments a JOIN agencies g ON g.id = a.agency_id
WHERE a.report_id = $1
ORDER BY a.routed_at, a.id
"""

UPSERT_AGENCY = """
INSERT INTO agencies (id, name, kind, commune_code) VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
                               commune_code = EXCLUDED.commune_code
"""

UPSERT_RULE = """
INSERT INTO routing_rules (id, priority, category, commune_code, agency_id, note)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO UPDATE SET priority = EXCLUDED.priority, category = EXCLUDED.category,
    commune_code = EXCLUDED.commune_code, agency_id = EXCLUDED.agency_id, note = EXCLUDED.note
"""


async def candidate_rules(conn: Conn, *, category: str, commune_code: str | None) -> list[Rule]:
    """Active rules that could match; the domain picks the winner."""
    rows = await conn.fetch(CANDIDATE_RULES, category, commune_code)
    return [
        Rule(
            id=r["id"],
            priority=r["priority"],
            agency_id=r["agency_id"],
            category=r["category"],
            commune_code=r["commune_code"],
        )
        for r in rows
    ]


async def agency_name(conn: Conn, *, agency_id: str) -> str:
    """Display name of an agency; KeyError when unknown."""
    name = await conn.fetchval(AGENCY_NAME, agency_id)
    if name is None:
        raise KeyError(agency_id)
    return str(name)


async def agency_exists(conn: Conn, *, agency_id: str) -> bool:
    """Whether routing knows the agency."""
    return bool(await conn.fetchval(AGENCY_EXISTS, agency_id))


async def current_assignment(conn: Conn, *, report_id: uuid.UUID) -> dict[str, object] | None:
    """The report's current assignment, or None."""
    row = await conn.fetchrow(CURRENT_ASSIGNMENT, report_id)
    return None if row is None else dict(row)


async def insert_assignment(
    conn: Conn,
    *,
    report_id: uuid.UUID,
    event_id: uuid.UUID,
    agency_id: str,
    rule_id: str | None,
    category: str,
    commune_code: str | None,
    source: str,
    routed_at: datetime,
) -> None:
    """Record a new current assignment, retiring the previous one; call inside a transaction."""
    await conn.execute(RETIRE_CURRENT, report_id)
    await conn.execute(
        INSERT_ASSIGNMENT,
        report_id,
        event_id,
        agency_id,
        rule_id,
        category,
        commune_code,
        source,
        routed_at,
    )


async def assignments_of(conn: Conn, *, report_id: uuid.UUID) -> list[dict[str, object]]:
    """Every assignment of a report, oldest first."""
    return [dict(r) for r in await conn.fetch(ASSIGNMENTS_OF, report_id)]


async def upsert_agency(
    conn: Conn, *, agency_id: str, name: str, kind: str, commune_code: str | None
) -> None:
    """Create or update an agency."""
    await conn.execute(UPSERT_AGENCY, agency_id, name, kind, commune_code)


async def upsert_rule(
    conn: Conn,
    *,
    rule_id: str,
    priority: int,
    category: str | None,
    commune_code: str | None,
    agency_id: str,
    note: str = "",
) -> None:
    """Create or update a routing rule."""
    await conn.execute(UPSERT_RULE, rule_id, priority, category, commune_code, agency_id, note)
