"""The key admin API (/v1/admin/api-keys) against a running intake app (real PostgreSQL + Kafka)."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from paht_common.testing import random_id

pytestmark = pytest.mark.integration

KEYS = "/v1/admin/api-keys"


@dataclass
class Admin:
    """The app under test with the admin token, and helpers around the key endpoints."""

    intake: Any

    @property
    def client(self) -> httpx.AsyncClient:
        client: httpx.AsyncClient = self.intake.client
        return client

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.intake.settings.admin_token}"}

    async def create(self, **fields: Any) -> httpx.Response:
        body: dict[str, Any] = {
            "app_id": random_id("app-"),
            "scopes": ["reports:write"],
            "rate_per_minute": 600,
        }
        body.update(fields)
        return await self.client.post(KEYS, json=body, headers=self.headers)

    async def created(self, **fields: Any) -> dict[str, Any]:
        response = await self.create(**fields)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def rotate(self, key_id: str, **fields: Any) -> httpx.Response:
        return await self.client.post(f"{KEYS}/{key_id}/rotate", json=fields, headers=self.headers)

    async def revoke(self, key_id: str) -> httpx.Response:
        return await self.client.delete(f"{KEYS}/{key_id}", headers=self.headers)

    async def submit_with(self, key: str) -> int:
        """Status of POST /v1/reports with this API key."""
        response = await self.client.post(
            "/v1/reports", json=self.intake.body(), headers={"X-API-Key": key}
        )
        status: int = response.status_code
        return status


@pytest.fixture
async def admin(
    intake_with: Callable[..., AbstractAsyncContextManager[Any]], tmp_path: Path
) -> AsyncIterator[Admin]:
    """The intake app with its admin API (and its real API key cache)."""
    async with intake_with() as running:
        yield Admin(running)


# --- create and list ---------------------------------------------------------------------


async def test_created_key_is_shown_once_and_submits_reports(admin):
    app_id = random_id("hue-s-")

    response = await admin.create(
        app_id=app_id,
        scopes=["reports:write", "reports:read", "reports:write"],
        rate_per_minute=120,
        label="Huế-S production",
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["api_key"].startswith("paht_")
    assert uuid.UUID(body["id"])
    assert body["app_id"] == app_id
    assert body["scopes"] == ["reports:read", "reports:write"]
    assert body["rate_per_minute"] == 120
    assert body["label"] == "Huế-S production"
    assert body["status"] == "active"
    assert body["expires_at"] is None
    assert body["revoked_at"] is None
    assert await admin.submit_with(body["api_key"]) == 202


async def test_created_key_carries_only_its_scopes(admin):
    key = (await admin.created(scopes=["reports:read"]))["api_key"]

    response = await admin.client.post(
        "/v1/reports", json=admin.intake.body(), headers={"X-API-Key": key}
    )

    assert admin.intake.problem(response, 403) == {"X-API-Key"}


async def test_key_with_a_future_expiry_works_and_lists_its_expiry(admin):
    expires = datetime.now(UTC) + timedelta(days=90)

    created = await admin.created(expires_at=expires.isoformat())

    assert datetime.fromisoformat(created["expires_at"]) == expires
    assert created["expires_at"].endswith("+07:00")
    assert await admin.submit_with(created["api_key"]) == 202


async def test_list_shows_an_apps_keys_without_hashes_or_plaintext(admin):
    app_id, other = random_id("app-"), random_id("app-")
    first = await admin.created(app_id=app_id, label="first")
    second = await admin.created(app_id=app_id, scopes=["reports:read"])
    third = await admin.created(app_id=other)

    response = await admin.client.get(KEYS, params={"app_id": app_id}, headers=admin.headers)
    everything = await admin.client.get(KEYS, headers=admin.headers)

    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [i["id"] for i in items] == [first["id"], second["id"]]
    assert [i["label"] for i in items] == ["first", None]
    assert all(set(i) == set(items[0]) for i in items)
    assert not {"api_key", "key_hash", "hash"} & set(items[0])
    for made in (first, second, third):
        assert made["api_key"] not in response.text
        assert made["api_key"] not in everything.text
    listed = {i["id"] for i in everything.json()["items"]}
    assert {first["id"], second["id"], third["id"]} <= listed


async def test_list_of_an_unknown_app_is_empty(admin):
    response = await admin.client.get(
        KEYS, params={"app_id": random_id("nobody-")}, headers=admin.headers
    )

    assert response.status_code == 200
    assert response.json() == {"items": []}


# --- rotate -----------------------------------------------------------------------------


async def test_rotation_keeps_both_keys_working_during_the_grace_period(admin):
    old = await admin.created(scopes=["reports:write", "reports:read"], label="tổng đài 1022")
    assert await admin.submit_with(old["api_key"]) == 202

    response = await admin.rotate(old["id"], grace_seconds=3600)

    assert response.status_code == 201, response.text
    new = response.json()
    assert new["id"] != old["id"]
    assert new["api_key"] != old["api_key"]
    for field in ("app_id", "scopes", "rate_per_minute", "label"):
        assert new[field] == old[field]
    assert new["status"] == "active"
    assert new["expires_at"] is None
    replaced = new["replaces"]
    assert replaced["id"] == old["id"]
    assert replaced["status"] == "active"
    grace_ends = datetime.fromisoformat(replaced["expires_at"]) - datetime.now(UTC)
    assert timedelta(minutes=59) < grace_ends <= timedelta(hours=1)
    assert "api_key" not in replaced
    assert await admin.submit_with(old["api_key"]) == 202
    assert await admin.submit_with(new["api_key"]) == 202


async def test_old_key_is_refused_once_its_grace_is_over(admin):
    old = await admin.created()
    assert await admin.submit_with(old["api_key"]) == 202  # cached by the app from here on

    response = await admin.rotate(old["id"], grace_seconds=0)

    assert response.status_code == 201, response.text
    new = response.json()
    assert new["replaces"]["status"] == "expired"
    refused = await admin.client.post(
        "/v1/reports", json=admin.intake.body(), headers={"X-API-Key": old["api_key"]}
    )
    assert admin.intake.problem(refused, 401) == {"X-API-Key"}
    assert await admin.submit_with(new["api_key"]) == 202
    listed = await admin.client.get(KEYS, params={"app_id": old["app_id"]}, headers=admin.headers)
    assert [(i["id"], i["status"]) for i in listed.json()["items"]] == [
        (old["id"], "expired"),
        (new["id"], "active"),
    ]


async def test_key_whose_expiry_has_passed_is_refused(admin):
    created = await admin.created()
    async with admin.intake.pool.acquire() as conn:
        await conn.execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1",
            uuid.UUID(created["id"]),
        )

    assert await admin.submit_with(created["api_key"]) == 401


async def test_rotation_without_a_body_grants_a_day_of_grace(admin):
    old = await admin.created()

    response = await admin.client.post(f"{KEYS}/{old['id']}/rotate", headers=admin.headers)

    assert response.status_code == 201, response.text
    grace_ends = datetime.fromisoformat(response.json()["replaces"]["expires_at"])
    assert timedelta(hours=23, minutes=59) < grace_ends - datetime.now(UTC) <= timedelta(days=1)


async def test_rotating_a_revoked_or_expired_key_is_409(admin):
    revoked = await admin.created()
    assert (await admin.revoke(revoked["id"])).status_code == 204
    expired = await admin.created()
    assert (await admin.rotate(expired["id"], grace_seconds=0)).status_code == 201

    for key in (revoked, expired):
        response = await admin.rotate(key["id"], grace_seconds=60)
        assert admin.intake.problem(response, 409) == {"key_id"}
    assert (await admin.rotate(revoked["id"])).json()["key_status"] == "revoked"
    assert (await admin.rotate(expired["id"])).json()["key_status"] == "expired"


async def test_rotating_an_unknown_key_is_404(admin):
    response = await admin.rotate(str(uuid.uuid4()), grace_seconds=60)

    assert admin.intake.problem(response, 404) == {"key_id"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"grace_seconds": -1}, "grace_seconds"),
        ({"grace_seconds": 30 * 86400 + 1}, "grace_seconds"),
        ({"grace_seconds": "soon"}, "grace_seconds"),
        ({"grace": 60}, "grace"),
        ({"expires_at": "2020-01-01T00:00:00+07:00"}, "expires_at"),
    ],
    ids=["negative", "over-30-days", "not-a-number", "unknown-field", "past-expiry"],
)
async def test_invalid_rotation_is_422_naming_the_field(admin, body, field):
    old = await admin.created()

    response = await admin.rotate(old["id"], **body)

    assert field in admin.intake.problem(response, 422)
    assert await admin.submit_with(old["api_key"]) == 202  # nothing changed


# --- revoke -----------------------------------------------------------------------------


async def test_revoked_key_is_refused_on_the_next_request(admin):
    created = await admin.created()
    assert await admin.submit_with(created["api_key"]) == 202  # now in the app's key cache

    response = await admin.revoke(created["id"])

    assert response.status_code == 204
    assert response.content == b""
    refused = await admin.client.post(
        "/v1/reports", json=admin.intake.body(), headers={"X-API-Key": created["api_key"]}
    )
    assert admin.intake.problem(refused, 401) == {"X-API-Key"}
    listed = await admin.client.get(
        KEYS, params={"app_id": created["app_id"]}, headers=admin.headers
    )
    (item,) = listed.json()["items"]
    assert item["status"] == "revoked"
    assert item["revoked_at"] is not None


async def test_revoking_twice_is_204_and_an_unknown_key_404(admin):
    created = await admin.created()

    first = await admin.revoke(created["id"])
    again = await admin.revoke(created["id"])
    unknown = await admin.revoke(str(uuid.uuid4()))

    assert (first.status_code, again.status_code) == (204, 204)
    assert admin.intake.problem(unknown, 404) == {"key_id"}


async def test_malformed_key_id_is_422_naming_it(admin):
    response = await admin.revoke("not-a-uuid")

    assert admin.intake.problem(response, 422) == {"key_id"}


# --- the admin token ----------------------------------------------------------------------


def every_admin_request() -> list[tuple[str, str, dict[str, Any] | None]]:
    some = str(uuid.uuid4())
    return [
        ("POST", KEYS, {"app_id": "x", "scopes": ["reports:write"], "rate_per_minute": 1}),
        ("GET", KEYS, None),
        ("POST", f"{KEYS}/{some}/rotate", {"grace_seconds": 0}),
        ("DELETE", f"{KEYS}/{some}", None),
    ]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Bearer ", "Basic ZGV2LWFkbWluLXRva2Vu", "dev-admin-token"],
    ids=["missing", "wrong", "empty", "basic-scheme", "no-scheme"],
)
async def test_admin_routes_refuse_a_missing_or_wrong_token_with_401(admin, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}

    for method, path, body in every_admin_request():
        response = await admin.client.request(method, path, json=body, headers=headers)
        assert admin.intake.problem(response, 401) == {"Authorization"}, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
    async with admin.intake.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM api_keys WHERE app_id = 'x'") == 0


async def test_a_staff_token_is_not_an_admin_token(admin):
    staff = admin.intake.staff("coordinator")

    response = await admin.client.get(KEYS, headers=staff)

    assert admin.intake.problem(response, 401) == {"Authorization"}


async def test_an_empty_admin_token_disables_the_admin_api(intake_with, tmp_path):
    async with intake_with(admin_token="") as running:
        response = await running.client.get(KEYS, headers={"Authorization": "Bearer "})

        assert running.problem(response, 401) == {"Authorization"}


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"scopes": ["reports:admin"]}, "scopes"),
        ({"scopes": ["reports:write", "*"]}, "scopes"),
        ({"scopes": []}, "scopes"),
        ({"scopes": "reports:write"}, "scopes"),
        ({"app_id": ""}, "app_id"),
        ({"app_id": "has spaces"}, "app_id"),
        ({"rate_per_minute": 0}, "rate_per_minute"),
        ({"rate_per_minute": None}, "rate_per_minute"),
        ({"label": "x" * 201}, "label"),
        ({"label": "nul\x00"}, "label"),
        ({"expires_at": "2020-01-01T00:00:00+07:00"}, "expires_at"),
        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({"key_hash": "00"}, "key_hash"),
    ],
    ids=[
        "unknown-scope",
        "wildcard-scope",
        "no-scope",
        "scopes-not-a-list",
        "empty-app",
        "app-with-spaces",
        "zero-rate",
        "null-rate",
        "long-label",
        "nul-in-label",
        "past-expiry",
        "expiry-without-offset",
        "unknown-field",
    ],
)
async def test_invalid_key_is_422_naming_the_field(admin, fields, field):
    response = await admin.create(**fields)

    named = admin.intake.problem(response, 422)
    assert any(f == field or f.startswith(f"{field}.") for f in named), named


async def test_missing_rate_is_422(admin):
    response = await admin.client.post(
        KEYS, json={"app_id": "a", "scopes": ["reports:write"]}, headers=admin.headers
    )

    assert "rate_per_minute" in admin.intake.problem(response, 422)


# --- documentation and the CLI -----------------------------------------------------------


async def test_admin_routes_are_documented_with_their_problems(admin):
    schema = admin.intake.app.openapi()
    operations = {
        (path, method): op
        for path, item in schema["paths"].items()
        if path.startswith("/v1/admin/")
        for method, op in item.items()
    }

    assert set(operations) == {
        (KEYS, "post"),
        (KEYS, "get"),
        (f"{KEYS}/{{key_id}}/rotate", "post"),
        (f"{KEYS}/{{key_id}}", "delete"),
        ("/v1/admin/agencies", "get"),
        ("/v1/admin/agencies/{agency_id}", "put"),
    }
    for (path, method), op in operations.items():
        assert op["tags"] == ["admin"], (path, method)
        for status in ("401", "422"):
            assert "application/problem+json" in op["responses"][status]["content"]
    assert "409" in operations[(f"{KEYS}/{{key_id}}/rotate", "post")]["responses"]
    assert "404" in operations[(f"{KEYS}/{{key_id}}", "delete")]["responses"]


async def test_cli_creates_a_labelled_expiring_key(admin, capsys):
    cli = importlib.import_module("intake.__main__")
    app_id = random_id("cli-")

    code = await asyncio.to_thread(
        cli.admin,
        admin.intake.settings,
        ["create-api-key", "--app", app_id, "--label", "từ CLI", "--expires-in-days", "7"],
    )

    assert code == 0
    printed = dict(line.split("=", 1) for line in capsys.readouterr().out.split())
    assert await admin.submit_with(printed["api_key"]) == 202
    listed = await admin.client.get(KEYS, params={"app_id": app_id}, headers=admin.headers)
    (item,) = listed.json()["items"]
    assert item["id"] == printed["key_id"]
    assert item["label"] == "từ CLI"
    remaining = datetime.fromisoformat(item["expires_at"]) - datetime.now(UTC)
    assert timedelta(days=6, hours=23) < remaining <= timedelta(days=7)
