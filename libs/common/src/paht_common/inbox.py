"""Inbox: makes a consumer idempotent by remembering which events it handled.

The memory is bounded: rows older than the retention are purged (``purge_forever``). The
retention must exceed how long a duplicate can still arrive, that is the retention of the
topics consumed: a record Kafka no longer holds cannot be delivered again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import asyncpg

from paht_common.db import PURGE_CHUNK, Conn, delete_in_chunks

logger = logging.getLogger(__name__)

CLAIM = """
INSERT INTO inbox (consumer, event_id) VALUES ($1, $2)
ON CONFLICT DO NOTHING
RETURNING 1
"""

CLAIM_MANY = """
INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::uuid[])
ON CONFLICT DO NOTHING
RETURNING event_id
"""

PURGE_HANDLED = """
DELETE FROM inbox WHERE (consumer, event_id) IN (
    SELECT consumer, event_id FROM inbox
    WHERE handled_at < now() - make_interval(secs => $1)
    ORDER BY handled_at
    LIMIT $2
)
"""


async def claim(conn: Conn, *, consumer: str, event_id: uuid.UUID) -> bool:
    """True the first time ``consumer`` sees ``event_id``; call inside the handling transaction."""
    return await conn.fetchval(CLAIM, consumer, event_id) is not None


async def claim_many(conn: Conn, *, consumer: str, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """The events ``consumer`` sees for the first time, claimed in one statement; call inside
    the handling transaction."""
    rows = await conn.fetch(CLAIM_MANY, consumer, event_ids)
    return {r["event_id"] for r in rows}


async def purge_handled(
    pool: asyncpg.Pool, *, retention_seconds: float, chunk: int = PURGE_CHUNK
) -> int:
    """Forget events handled longer ago than the retention (every consumer); how many."""
    return await delete_in_chunks(pool, PURGE_HANDLED, retention_seconds, chunk=chunk)


async def purge_forever(
    pool: asyncpg.Pool, *, retention_seconds: float, interval_seconds: float
) -> None:
    """Purge now and then every ``interval_seconds``; database trouble waits for the next."""
    while True:
        try:
            purged = await purge_handled(pool, retention_seconds=retention_seconds)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            logger.warning("inbox purge failed: %r", exc)
        else:
            if purged:
                logger.info("inbox purge: %s rows older than the retention", purged)
        await asyncio.sleep(interval_seconds)
