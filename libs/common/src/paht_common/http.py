"""Health, readiness and metrics endpoints every service serves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

import asyncpg
from aiokafka import AIOKafkaProducer
from asyncpg.pool import PoolConnectionProxy
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

ReadinessCheck = Callable[[], Awaitable[bool]]


def postgres_check(pool: asyncpg.Pool) -> ReadinessCheck:
    """Readiness check that runs SELECT 1 on the pool."""

    async def check() -> bool:
        async with pool.acquire(timeout=2) as conn:
            return bool(await conn.fetchval("SELECT 1", timeout=2) == 1)

    return check


def kafka_check(producer: AIOKafkaProducer) -> ReadinessCheck:
    """Readiness check that fetches cluster metadata through the producer's client."""

    async def check() -> bool:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), 3)
        return True

    return check


def ops_router(checks: dict[str, ReadinessCheck]) -> APIRouter:
    """Router with GET /healthz (process alive), /readyz (dependencies) and /metrics."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                results[name] = "ok" if await check() else "failing"
            except Exception as exc:  # a readiness probe reports, it never raises
                results[name] = f"failing: {type(exc).__name__}"
        ready = all(v == "ok" for v in results.values())
        return JSONResponse({"ready": ready, "checks": results}, status_code=200 if ready else 503)

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


if TYPE_CHECKING:
    PooledConnection = PoolConnectionProxy[asyncpg.Record]
else:
    PooledConnection = PoolConnectionProxy


async def _pooled_connection(request: Request) -> AsyncIterator[PooledConnection]:
    async with request.app.state.runtime.pool.acquire() as conn:
        yield conn


DbConn = Annotated[PooledConnection, Depends(_pooled_connection)]
"""Route parameter type: a connection from the service runtime's pool for the request."""
