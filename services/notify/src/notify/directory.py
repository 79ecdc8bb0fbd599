"""SQL of notify's read models: staff as their tokens name them, preferences, report facts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from notify.alerts import Audience, ReportFacts
from paht_common.db import Conn
from paht_common.staff_auth import Staff

UPSERT_STAFF = """
INSERT INTO staff (user_id, role, agency_id, display_name, email)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (user_id) DO UPDATE
SET role = EXCLUDED.role, agency_id = EXCLUDED.agency_id,
    display_name = EXCLUDED.display_name, email = EXCLUDED.email, updated_at = now()
WHERE (staff.role, staff.agency_id, staff.display_name, staff.email)
      IS DISTINCT FROM (EXCLUDED.role, EXCLUDED.agency_id, EXCLUDED.display_name, EXCLUDED.email)
"""

# Active personal subscriptions of the staff an audience names, less what their preferences
# turned off for this kind of event.
RECIPIENTS = """
SELECT s.id, s.channel, st.user_id, st.quiet_hours, st.display_name
FROM staff st
JOIN subscriptions s ON s.user_id = st.user_id AND s.active AND s.owner_kind = 'user'
WHERE st.role = ANY($1::text[])
  AND ($2::text IS NULL OR st.agency_id = $2)
  AND NOT EXISTS (
      SELECT 1 FROM preferences p
      WHERE p.user_id = st.user_id AND p.event_kind = $3 AND p.channel = s.channel
        AND NOT p.enabled)
ORDER BY s.id
"""

PREFERENCES = "SELECT event_kind, channel, enabled FROM preferences WHERE user_id = $1"
QUIET_HOURS = "SELECT quiet_hours FROM staff WHERE user_id = $1"
SET_QUIET_HOURS = "UPDATE staff SET quiet_hours = $2 WHERE user_id = $1"
CLEAR_PREFERENCES = "DELETE FROM preferences WHERE user_id = $1"
INSERT_PREFERENCES = """
INSERT INTO preferences (user_id, event_kind, channel, enabled)
SELECT $1, k, c, e FROM unnest($2::text[], $3::text[], $4::bool[]) AS t (k, c, e)
"""

UPSERT_FACTS = """
INSERT INTO reports (report_id, number, category, commune_code, urgency, source_app, agency_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (report_id) DO UPDATE
SET number = coalesce(EXCLUDED.number, reports.number),
    category = coalesce(EXCLUDED.category, reports.category),
    commune_code = coalesce(EXCLUDED.commune_code, reports.commune_code),
    urgency = coalesce(EXCLUDED.urgency, reports.urgency),
    source_app = coalesce(EXCLUDED.source_app, reports.source_app),
    agency_id = coalesce(EXCLUDED.agency_id, reports.agency_id),
    updated_at = now()
"""

FACTS = """
SELECT report_id, number, category, commune_code, urgency, source_app, agency_id
FROM reports WHERE report_id = $1
"""


@dataclass(frozen=True)
class Recipient:
    """One personal subscription an alert goes to."""

    subscription_id: uuid.UUID
    channel: str
    user_id: str
    quiet_hours: bool
    display_name: str | None


async def remember_staff(conn: Conn, member: Staff) -> None:
    """Record (or refresh) a staff member from their token's claims."""
    await conn.execute(
        UPSERT_STAFF,
        member.subject,
        member.role.value,
        member.agency_id,
        member.name,
        member.email,
    )


async def recipients(conn: Conn, audience: Audience, *, kind: str) -> list[Recipient]:
    """The personal subscriptions an audience has for ``kind``, preferences applied."""
    rows = await conn.fetch(
        RECIPIENTS, sorted(r.value for r in audience.roles), audience.agency_id, kind
    )
    return [
        Recipient(
            subscription_id=r["id"],
            channel=r["channel"],
            user_id=r["user_id"],
            quiet_hours=r["quiet_hours"],
            display_name=r["display_name"],
        )
        for r in rows
    ]


async def preferences(conn: Conn, *, user_id: str) -> tuple[bool, dict[tuple[str, str], bool]]:
    """(quiet hours on, {(event kind, channel): enabled}) of a staff member."""
    quiet = await conn.fetchval(QUIET_HOURS, user_id)
    rows = await conn.fetch(PREFERENCES, user_id)
    return bool(quiet), {(r["event_kind"], r["channel"]): r["enabled"] for r in rows}


async def replace_preferences(
    conn: Conn, *, user_id: str, quiet_hours: bool, choices: dict[tuple[str, str], bool]
) -> None:
    """Store a staff member's whole preference set; call inside a transaction."""
    await conn.execute(SET_QUIET_HOURS, user_id, quiet_hours)
    await conn.execute(CLEAR_PREFERENCES, user_id)
    items = sorted(choices.items())
    await conn.execute(
        INSERT_PREFERENCES,
        user_id,
        [k for (k, _), _ in items],
        [c for (_, c), _ in items],
        [e for _, e in items],
    )


async def remember_facts(conn: Conn, facts: ReportFacts) -> None:
    """Merge what an event says about a report into notify's view of it."""
    await conn.execute(
        UPSERT_FACTS,
        facts.report_id,
        facts.number,
        facts.category,
        facts.commune_code,
        facts.urgency,
        facts.source_app,
        facts.agency_id,
    )


async def facts_of(conn: Conn, report_id: uuid.UUID) -> ReportFacts | None:
    """What notify knows of a report, or None."""
    row = await conn.fetchrow(FACTS, report_id)
    if row is None:
        return None
    return ReportFacts(
        report_id=row["report_id"],
        number=row["number"],
        category=row["category"],
        commune_code=row["commune_code"],
        urgency=row["urgency"],
        source_app=row["source_app"],
        agency_id=row["agency_id"],
    )
