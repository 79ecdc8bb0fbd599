"""The rating-window scanner: closes published reports whose window ended.

Several instances may run; ``FOR UPDATE SKIP LOCKED`` lets them share the due reports, and
the close clears ``closes_at`` in the transaction that writes the outbox row, so each
window fires once (see ``handlers.close_expired``).
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from intake.handlers import IntakeContext, close_expired

logger = logging.getLogger(__name__)


async def scan_once(pool: asyncpg.Pool, *, ctx: IntakeContext, batch: int) -> int:
    """One scan cycle in one transaction; returns how many reports closed."""
    async with pool.acquire() as conn, conn.transaction():
        return await close_expired(conn, ctx=ctx, limit=batch)


async def run_scanner(
    pool: asyncpg.Pool, *, ctx: IntakeContext, interval: float, batch: int
) -> None:
    """Scan forever; a full batch is followed at once by another cycle."""
    while True:
        try:
            closed = await scan_once(pool, ctx=ctx, batch=batch)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("rating-window scan failed: %r", exc)
            closed = 0
        if closed:
            logger.info("closed %s report(s) at the end of their rating window", closed)
        if closed < batch:
            await asyncio.sleep(interval)
