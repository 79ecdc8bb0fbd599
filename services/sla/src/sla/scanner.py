"""The due-threshold scanner: cost per cycle follows the thresholds due, not the clocks open.

Several instances may run; ``FOR UPDATE SKIP LOCKED`` lets them share the work and the
fired_at mark (written with the outbox row) makes each threshold fire once.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from sla.handlers import SlaContext, fire_due_thresholds
from sla.metrics import SCAN_SECONDS

logger = logging.getLogger(__name__)


async def scan_once(pool: asyncpg.Pool, *, ctx: SlaContext, batch: int) -> int:
    """One scan cycle; returns how many thresholds fired."""
    started = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction():
        fired = await fire_due_thresholds(conn, ctx=ctx, limit=batch)
    SCAN_SECONDS.observe(time.perf_counter() - started)
    return fired


async def run_scanner(pool: asyncpg.Pool, *, ctx: SlaContext, interval: float, batch: int) -> None:
    """Scan forever; a full batch is followed at once by another cycle."""
    while True:
        try:
            fired = await scan_once(pool, ctx=ctx, batch=batch)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("threshold scan failed: %r", exc)
            fired = 0
        if fired < batch:
            await asyncio.sleep(interval)
