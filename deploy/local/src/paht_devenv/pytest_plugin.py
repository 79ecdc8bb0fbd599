"""Pytest fixtures that start real PostgreSQL and Kafka for the test session.

Infrastructure lives in a temporary directory on free ports, so tests never touch a running
development system. A component that fails to start is a test error, never a skip.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from paht_common.db import create_pool, ensure_database, with_database
from paht_common.testing import random_id
from paht_devenv.environment import Environment, throwaway_environment


@pytest.fixture(scope="session")
def infra() -> Iterator[Environment]:
    """PostgreSQL + Kafka (with every topic) for the session; stopped at the end."""
    with throwaway_environment("paht-test-", with_prometheus=False) as env:
        env.start_infrastructure()
        yield env


@pytest.fixture(scope="session")
def postgres_dsn(infra: Environment) -> str:
    """Superuser DSN of the session's PostgreSQL."""
    return infra.postgres.dsn


@pytest.fixture(scope="session")
def kafka_bootstrap(infra: Environment) -> str:
    """bootstrap.servers of the session's Kafka broker."""
    return infra.kafka.bootstrap


@pytest.fixture
async def fresh_database(postgres_dsn: str) -> str:
    """DSN of a new, empty database unique to this test."""
    name = random_id("db_")
    await ensure_database(postgres_dsn, name)
    return with_database(postgres_dsn, name)


@pytest.fixture
async def fresh_pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    """Pool on a fresh database; closed after the test."""
    pool = await create_pool(fresh_database, min_size=1, max_size=5)
    try:
        yield pool
    finally:
        await asyncio.wait_for(pool.close(), 10)
