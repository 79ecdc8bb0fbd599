"""PostgreSQL helpers: pool creation and numbered SQL migrations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

logger = logging.getLogger(__name__)

Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
"""A connection, whether taken directly or from a pool."""

MIGRATIONS_LOCK_ID = 7_240_311
COMMON_MIGRATIONS = resources.files("paht_common") / "migrations"

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def _init_connection(conn: Conn) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Pool whose connections decode json/jsonb to Python values; close() is the caller's."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=30,
        # JIT compiles generic plans of the small indexed scans into 100s of ms; never worth it
        server_settings={"jit": "off"},
    )
    assert pool is not None
    return pool


PURGE_CHUNK = 5_000
"""Rows one purge statement deletes at most: short transactions, bounded WAL bursts."""
PURGE_CHUNKS = 20
"""Statements one purge runs at most; what is left waits for the next purge."""


async def delete_in_chunks(
    pool: asyncpg.Pool, statement: str, *args: Any, chunk: int = PURGE_CHUNK
) -> int:
    """Run a chunked DELETE until it deletes fewer than ``chunk`` rows; how many went.

    ``statement`` takes ``args`` and then the chunk size as its last parameter (its LIMIT).
    Each chunk commits on its own, so a purge never holds locks or a snapshot for long.
    """
    deleted_total = 0
    async with pool.acquire() as conn:
        for _ in range(PURGE_CHUNKS):
            status = await conn.execute(statement, *args, chunk)
            deleted = int(status.rsplit(" ", 1)[-1])
            deleted_total += deleted
            if deleted < chunk:
                break
    return deleted_total


def _migration_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix == ".sql")


async def apply_migrations(conn: Conn, service_dir: Path) -> list[str]:
    """Apply common then service migrations not yet applied, under an advisory lock.

    Each file runs in its own transaction together with its ledger row. Returns the
    names applied now.
    """
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATIONS_LOCK_ID)
    try:
        await conn.execute(_CREATE_LEDGER)
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        common_dir = Path(str(COMMON_MIGRATIONS))
        batches = [("common", common_dir), ("service", service_dir)]
        for label, directory in batches:
            for path in _migration_files(directory):
                name = f"{label}/{path.name}"
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text(encoding="utf-8"))
                    await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                logger.info("applied migration %s", name)
                applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS_LOCK_ID)
    return applied_now


async def ensure_database(admin_dsn: str, name: str) -> None:
    """Create database ``name`` if it does not exist (name must be a plain identifier)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"invalid database name {name!r}")
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def with_database(dsn: str, name: str) -> str:
    """The same DSN pointing at another database."""
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


class Wakeup:
    """What a polling loop sleeps on between rounds: set by a NOTIFY (``ChannelListener``'s
    ``on_notify``) or by the loop's own work, else the sleep ends after its timeout.

    ``sleep`` waits under ``asyncio.timeout``, not ``wait_for``: on Python 3.11 wait_for can
    swallow a cancellation that arrives in the same instant as the wake-up, and the loop
    then runs on after its shutdown.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        """Wake the sleeper (or make its next sleep return at once)."""
        self._event.set()

    def clear(self) -> None:
        """Forget earlier wake-ups; call before the round whose news the sleep waits for."""
        self._event.clear()

    async def sleep(self, seconds: float) -> None:
        """Until woken, or ``seconds`` at most."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()


class ChannelListener:
    """LISTEN on one channel through a pooled connection held for the purpose.

    ``ensure()`` (re)opens it and says whether it is listening now; when the connection dies
    ``on_notify`` is called once as well, because notifications may have been missed.
    """

    def __init__(self, pool: asyncpg.Pool, channel: str, on_notify: Callable[[], None]) -> None:
        self._pool = pool
        self._channel = channel
        self._on_notify = on_notify
        self._conn: Any = None

    @property
    def listening(self) -> bool:
        """Whether a live connection is listening."""
        return self._conn is not None

    def _notified(self, *_: object) -> None:
        self._on_notify()

    def _lost(self, *_: object) -> None:
        # the pool gets the dead connection back by itself; listen again on the next ensure()
        self._conn = None
        self._on_notify()

    async def ensure(self) -> bool:
        """Listen if not listening yet; False (logged) when the database refuses."""
        if self._conn is not None:
            return True
        try:
            conn = await self._pool.acquire()
        except Exception as exc:
            logger.warning("cannot listen on %s: %r", self._channel, exc)
            return False
        try:
            await conn.add_listener(self._channel, self._notified)
            conn.add_termination_listener(self._lost)
        except BaseException as exc:
            # cancelled too: the connection must go back, or closing the pool waits forever
            with contextlib.suppress(Exception):
                await self._pool.release(conn)
            if not isinstance(exc, Exception):
                raise
            logger.warning("cannot listen on %s: %r", self._channel, exc)
            return False
        self._conn = conn
        return True

    async def stop(self) -> None:
        """Stop listening and give the connection back."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            conn.remove_termination_listener(self._lost)
        with contextlib.suppress(Exception):
            await conn.remove_listener(self._channel, self._notified)
        with contextlib.suppress(Exception):
            await self._pool.release(conn)
