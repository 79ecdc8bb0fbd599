"""The outbox relay as a process of its own: API workers with ``OUTBOX_RELAY=false`` leave
rows for it; ``python -m <service> relay`` publishes them and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from paht_common.events import new_envelope
from paht_common.kafka import decode
from paht_common.outbox import add_to_outbox
from paht_common.runtime import Runtime, run_relay
from paht_common.settings import BaseServiceSettings
from paht_common.testing import random_id
from paht_devenv.kafka import create_topics

from .test_outbox_inbox import _read_all, _submitted

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


async def _queue(pool: asyncpg.Pool, topic: str, count: int) -> list[uuid.UUID]:
    envelopes = [new_envelope(_submitted(i), source="/t", province="bn") for i in range(count)]
    async with pool.acquire() as conn, conn.transaction():
        for envelope in envelopes:
            await add_to_outbox(conn, topic, envelope)
    return [e.event_id for e in envelopes]


async def _unpublished(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


async def _all_marked_published(pool: asyncpg.Pool) -> bool:
    """Whether the relay marks every row (it does so just after the broker acknowledged)."""
    for _ in range(100):
        if await _unpublished(pool) == 0:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_runtime_without_the_relay_leaves_the_outbox_to_run_relay(
    fresh_database: str, fresh_pool: asyncpg.Pool, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = random_id("topic-")
    await create_topics(kafka_bootstrap, [topic], wait_seconds=30)
    settings = BaseServiceSettings(
        database_url=fresh_database, kafka_bootstrap=kafka_bootstrap, outbox_relay=False
    )
    async with Runtime(service="t", settings=settings, migrations=tmp_path):
        ids = await _queue(fresh_pool, topic, 5)
        await asyncio.sleep(1.5)  # longer than the relay's poll interval
        assert await _unpublished(fresh_pool) == 5

        relay = asyncio.create_task(run_relay(service="t", settings=settings, migrations=tmp_path))
        records = await _read_all(kafka_bootstrap, topic, 5)
        marked = await _all_marked_published(fresh_pool)
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)

    assert sorted(decode(r).event_id for r in records) == sorted(ids)
    assert marked


async def test_relay_command_publishes_and_exits_cleanly_on_sigterm(
    fresh_database: str, fresh_pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    topic = random_id("topic-")
    await create_topics(kafka_bootstrap, [topic], wait_seconds=30)
    env = {
        **os.environ,
        "INTAKE_DATABASE_URL": fresh_database,
        "INTAKE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "INTAKE_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "intake", "relay", cwd=REPO, env=env
    )
    try:
        for _ in range(150):  # the relay migrates the database first: wait for the outbox
            async with fresh_pool.acquire() as conn:
                if await conn.fetchval("SELECT to_regclass('outbox') IS NOT NULL"):
                    break
            await asyncio.sleep(0.2)
        ids = await _queue(fresh_pool, topic, 3)
        records = await _read_all(kafka_bootstrap, topic, 3)
        marked = await _all_marked_published(fresh_pool)
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=30)

    assert sorted(decode(r).event_id for r in records) == sorted(ids)
    assert marked
    assert code == 0
