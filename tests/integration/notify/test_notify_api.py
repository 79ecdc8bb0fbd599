"""The notify HTTP API, served by the real app (lifespan, PostgreSQL, Kafka) over ASGI."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from notify.api import build_app
from notify.settings import NotifySettings
from paht_common.db import ensure_database, with_database
from paht_common.testing import random_id

pytestmark = pytest.mark.integration

PROBLEM_JSON = "application/problem+json"
ADMIN_TOKEN = "test-notify-api-admin-token"


def new_secret(size: int = 32) -> str:
    return "whsec_" + base64.b64encode(os.urandom(size)).decode()


@asynccontextmanager
async def running_api(
    postgres_dsn: str, kafka_bootstrap: str, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    name = random_id("db_")
    await ensure_database(postgres_dsn, name)
    overrides.setdefault("webhook_allow_private", True)  # some tests register 10.0.0.5
    overrides.setdefault("webhook_allow_http", True)
    overrides.setdefault("admin_token", ADMIN_TOKEN)
    settings = NotifySettings(
        database_url=with_database(postgres_dsn, name),
        kafka_bootstrap=kafka_bootstrap,
        consumer_group=random_id("notify-"),
        **overrides,
    )
    app = build_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://notify",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},  # access rules: test_notify_access
        ) as api,
    ):
        yield api


@pytest.fixture(scope="module")
async def api(postgres_dsn: str, kafka_bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(postgres_dsn, kafka_bootstrap) as client:
        yield client


def subscription_body(**overrides: str) -> dict[str, str]:
    body = {
        "agency_id": random_id("ubnd-"),
        "channel": "webhook",
        "url": "https://hooks.example.vn/paht?tenant=bn",
        "secret": new_secret(),
    }
    body.update(overrides)
    return body


def problem_fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    return [e["field"] for e in response.json()["errors"]]


async def test_service_is_ready(api: httpx.AsyncClient) -> None:
    response = await api.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "ready": True,
        "checks": {"postgres": "ok", "kafka": "ok", "staff_keys": "ok"},
    }


async def test_creating_a_subscription_returns_it_without_the_secret(
    api: httpx.AsyncClient,
) -> None:
    body = subscription_body()

    response = await api.post("/v1/subscriptions", json=body)

    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == {
        "id",
        "owner_kind",
        "agency_id",
        "user_id",
        "app_id",
        "channel",
        "url",
        "email",
        "active",
        "created_at",
        "consecutive_failures",
        "circuit_open_until",
    }
    assert created["agency_id"] == body["agency_id"]
    assert created["channel"] == "webhook"
    assert created["url"] == "https://hooks.example.vn/paht?tenant=bn"
    assert created["active"] is True
    assert body["secret"] not in response.text
    assert response.headers["location"] == f"/v1/subscriptions/{created['id']}"
    fetched = await api.get(response.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json() == created


@pytest.mark.parametrize(
    "secret",
    [
        "c2VjcmV0LXdpdGhvdXQtcHJlZml4LWF0LWFsbC0xMjM0",
        "whsec_dG9vLXNob3J0",
        "whsec_***not-base64***",
        new_secret(65),
    ],
)
async def test_a_bad_secret_is_a_422_problem_naming_the_secret(
    api: httpx.AsyncClient, secret: str
) -> None:
    response = await api.post("/v1/subscriptions", json=subscription_body(secret=secret))

    assert problem_fields(response) == ["secret"]
    assert secret not in response.text


@pytest.mark.parametrize("url", ["ftp://hooks.example.vn/x", "hooks.example.vn/x", "javascript:x"])
async def test_a_bad_url_is_a_422_problem_naming_the_url(api: httpx.AsyncClient, url: str) -> None:
    response = await api.post("/v1/subscriptions", json=subscription_body(url=url))

    assert problem_fields(response) == ["url"]


async def test_unsupported_channels_and_missing_fields_are_422(api: httpx.AsyncClient) -> None:
    email = await api.post("/v1/subscriptions", json=subscription_body(channel="email"))
    empty = await api.post("/v1/subscriptions", json={})

    assert problem_fields(email) == ["channel"]
    assert sorted(problem_fields(empty)) == ["channel", "secret", "url"]


async def test_lists_the_subscriptions_of_one_agency(api: httpx.AsyncClient) -> None:
    agency = random_id("so-")
    first = await api.post("/v1/subscriptions", json=subscription_body(agency_id=agency))
    second = await api.post(
        "/v1/subscriptions",
        json=subscription_body(agency_id=agency, url="http://10.0.0.5:8080/hook"),
    )
    await api.post("/v1/subscriptions", json=subscription_body())

    response = await api.get("/v1/subscriptions", params={"agency_id": agency})

    assert response.status_code == 200
    assert [s["id"] for s in response.json()] == [first.json()["id"], second.json()["id"]]
    assert all("secret" not in s for s in response.json())


async def test_the_admin_lists_every_agencys_subscriptions_without_a_filter(
    api: httpx.AsyncClient,
) -> None:
    one = await api.post("/v1/subscriptions", json=subscription_body())
    two = await api.post("/v1/subscriptions", json=subscription_body())

    listed = await api.get("/v1/subscriptions")

    assert listed.status_code == 200
    assert {one.json()["id"], two.json()["id"]} <= {s["id"] for s in listed.json()}


async def test_delete_deactivates_the_subscription(api: httpx.AsyncClient) -> None:
    agency = random_id("ubnd-")
    created = (await api.post("/v1/subscriptions", json=subscription_body(agency_id=agency))).json()

    deleted = await api.delete(f"/v1/subscriptions/{created['id']}")
    again = await api.delete(f"/v1/subscriptions/{created['id']}")

    assert deleted.status_code == 204
    assert again.status_code == 204
    [listed] = (await api.get("/v1/subscriptions", params={"agency_id": agency})).json()
    assert listed["active"] is False


async def test_unknown_subscriptions_are_404_problems(api: httpx.AsyncClient) -> None:
    response = await api.delete(f"/v1/subscriptions/{uuid.uuid4()}")

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON
    assert (await api.get(f"/v1/subscriptions/{uuid.uuid4()}")).status_code == 404


async def test_a_report_without_deliveries_has_an_empty_list(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/deliveries", params={"report_id": str(uuid.uuid4())})

    assert response.status_code == 200
    assert response.json() == []


async def test_deliveries_need_a_valid_report_id(api: httpx.AsyncClient) -> None:
    assert problem_fields(await api.get("/v1/deliveries", params={"report_id": "x"})) == [
        "report_id"
    ]


async def test_private_destinations_are_refused_unless_allowed(
    postgres_dsn: str, kafka_bootstrap: str
) -> None:
    async with running_api(postgres_dsn, kafka_bootstrap, webhook_allow_private=False) as strict:
        loopback = await strict.post(
            "/v1/subscriptions", json=subscription_body(url="http://127.0.0.1:8080/hook")
        )
        metadata = await strict.post(
            "/v1/subscriptions", json=subscription_body(url="http://169.254.169.254/latest")
        )
        local_name = await strict.post(
            "/v1/subscriptions", json=subscription_body(url="https://localhost/hook")
        )
        public = await strict.post(
            "/v1/subscriptions", json=subscription_body(url="https://8.8.8.8/hook")
        )

    for refused in (loopback, metadata, local_name):
        assert problem_fields(refused) == ["url"]
    assert public.status_code == 201, public.text


async def test_a_nul_byte_in_a_query_parameter_is_a_422_naming_it(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/v1/subscriptions?agency_id=%00l")

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["field"] == "agency_id"
