"""A running intake app (real PostgreSQL + Kafka) and helpers to call it."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from intake import repository, seed
from intake.api import MIGRATIONS, build_app
from intake.auth import dev_key_pair, hash_key, issue_token
from intake.settings import IntakeSettings
from paht_common.events import Envelope, Payload
from paht_common.kafka import RawRecord, decode
from paht_common.problems import PROBLEM_JSON
from paht_common.runtime import migrate
from paht_common.testing import random_id

BAC_NINH_POINT = {"lat": 21.1861, "lon": 106.0763}
KINH_BAC_WARD = "09187"


@dataclass
class Intake:
    """The app under test, its client, settings and a pool on its database."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: IntakeSettings
    api_key: str
    key_dir: Path

    @property
    def pool(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = self.app.state.runtime.pool
        return pool

    @property
    def app_headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}

    def token(
        self, role: str, *, sub: str | None = None, agency: str | None = None, ttl: int = 600
    ) -> str:
        private, _ = dev_key_pair(self.key_dir)
        return issue_token(
            private,
            subject=sub or random_id(f"{role}-"),
            role=role,
            agency_id=agency,
            issuer=self.settings.jwt_issuer,
            audience=self.settings.jwt_audience,
            ttl_seconds=ttl,
        )

    def staff(
        self, role: str, *, agency: str | None = None, sub: str | None = None
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, agency=agency, sub=sub)}"}

    async def new_key(
        self,
        *,
        scopes: tuple[str, ...] = ("reports:write",),
        rate: int = 600,
        expires_at: datetime | None = None,
    ) -> tuple[uuid.UUID, str]:
        """Register another API key for a new app; returns (key id, key)."""
        key_id, key = uuid.uuid4(), random_id("key-")
        async with self.pool.acquire() as conn:
            await repository.insert_key(
                conn,
                key_id=key_id,
                app_id=random_id("app-"),
                key_hash=hash_key(key),
                scopes=scopes,
                rate_per_minute=rate,
                expires_at=expires_at,
            )
        return key_id, key

    @staticmethod
    def body(**overrides: Any) -> dict[str, Any]:
        """A valid submission in Bắc Ninh; keyword arguments replace top-level fields."""
        body: dict[str, Any] = {
            "category": "INFRA.ROAD",
            "description": "Ổ gà lớn giữa đường, xe máy dễ ngã.",
            "location": {
                **BAC_NINH_POINT,
                "commune_code": KINH_BAC_WARD,
                "address": "đường Lý Thái Tổ",
            },
            "reporter": {"name": "Nguyễn Văn An", "phone": "0912345678"},
            "client_report_id": random_id("c-"),
        }
        body.update(overrides)
        return body

    async def submit(self, **overrides: Any) -> dict[str, Any]:
        """POST a valid report (fields overridable); asserts 202 and returns the body."""
        response = await self.client.post(
            "/v1/reports", json=self.body(**overrides), headers=self.app_headers
        )
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    @staticmethod
    def problem(response: httpx.Response, status: int) -> set[str]:
        """Assert a problem+json answer with ``status``; returns the fields it names."""
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == PROBLEM_JSON
        body = response.json()
        assert body["status"] == status
        fields = {e["field"] for e in body.get("errors", [])}
        if "field" in body:
            fields.add(body["field"])
        assert fields, f"the problem names no field: {body}"
        return fields

    async def act(
        self, report_id: str, staff: dict[str, str], action: str, **fields: Any
    ) -> httpx.Response:
        """POST one lifecycle action."""
        return await self.client.post(
            f"/v1/reports/{report_id}/actions", json={"type": action, **fields}, headers=staff
        )

    async def outbox(self, report_id: str) -> list[tuple[dict[str, str], Envelope[Payload]]]:
        """Outbox rows about a report, oldest first: stored headers and the decoded event."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT topic, key, value, headers FROM outbox WHERE key = $1 ORDER BY id",
                report_id.encode(),
            )
        events = []
        for offset, row in enumerate(rows):
            headers: dict[str, str] = row["headers"]
            record = RawRecord(
                topic=row["topic"],
                partition=0,
                offset=offset,
                key=row["key"],
                value=row["value"],
                headers=tuple((name, value.encode()) for name, value in headers.items()),
            )
            events.append((headers, decode(record)))
        return events

    async def count(self, table: str) -> int:
        assert table in {
            "reports",
            "outbox",
            "report_timeline",
            "reporters",
            "media",
            "report_media",
        }
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


@asynccontextmanager
async def running_intake(
    database_url: str, kafka_bootstrap: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[Intake]:
    """Migrate and seed the database, then run an intake app (settings overridable)."""
    settings = IntakeSettings(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        jwt_dev_key_dir=tmp_path,
        dev_api_key=random_id("test-key-"),
        media_dir=tmp_path / "media",
        **overrides,
    )
    await migrate(settings, MIGRATIONS)
    await seed.seed(settings)
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Intake(app, client, settings, settings.dev_api_key, tmp_path)


@pytest.fixture
async def intake(
    fresh_database: str, kafka_bootstrap: str, tmp_path: Path
) -> AsyncIterator[Intake]:
    """A migrated, seeded intake app running its lifespan, with an httpx client on it."""
    async with running_intake(fresh_database, kafka_bootstrap, tmp_path) as running:
        yield running


@pytest.fixture
def intake_with(
    fresh_database: str, kafka_bootstrap: str, tmp_path: Path
) -> Callable[..., AbstractAsyncContextManager[Intake]]:
    """Start an intake app with overridden settings: ``async with intake_with(x=1) as it``."""
    return functools.partial(running_intake, fresh_database, kafka_bootstrap, tmp_path)
