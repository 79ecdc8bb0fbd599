"""The target policy end to end: refused subscriptions, DNS rebinding stopped at connect time.

The receiver is an aiohttp server on 127.0.0.1; names are answered by a resolver the test
controls, so a public answer at subscription time can turn into 127.0.0.1 at send time.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiohttp import web

from notify.api import build_app
from notify.channels.egress import check_target, guarded_client, resolve
from notify.channels.webhook import WebhookChannel
from notify.domain import ClaimedDelivery, RetryPolicy, decide
from notify.settings import NotifySettings
from paht_common.clock import SystemClock
from paht_common.db import ensure_database, with_database
from paht_common.testing import random_id

pytestmark = pytest.mark.integration

PUBLIC = "93.184.216.34"
METADATA_URL = "http://169.254.169.254/latest/meta-data/"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


class Rebinding:
    """A resolver whose answers change: ``answers[n]`` for the n-th lookup (the last repeats)."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        answer = self.answers[min(len(self.lookups), len(self.answers) - 1)]
        self.lookups.append(host)
        return [answer]


def delivery_to(url: str) -> ClaimedDelivery:
    return ClaimedDelivery(
        id=uuid.uuid4(),
        subscription_id=uuid.uuid4(),
        channel="webhook",
        event_type="report.assigned",
        body='{"type":"report.assigned"}',
        attempts=1,
        url=url,
        secret=new_secret(),
    )


def settings(**overrides: Any) -> NotifySettings:
    overrides.setdefault("webhook_allow_http", True)
    return NotifySettings(delivery_timeout_seconds=5.0, **overrides)


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[list[web.Request], int]]:
    seen: list[web.Request] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        seen.append(request)
        status = int(request.query.get("status", "204"))
        headers = {"Location": METADATA_URL} if 300 <= status < 400 else {}
        return web.Response(status=status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield seen, runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def send(config: NotifySettings, url: str, resolver: Rebinding | None = None) -> Any:
    async with guarded_client(config, resolver=resolver or resolve) as client:
        channel = WebhookChannel(
            client,
            timeout=config.delivery_timeout_seconds,
            allow_private=config.webhook_allow_private,
            allow_http=config.webhook_allow_http,
            clock=SystemClock(),
        )
        return await channel.send(delivery_to(url))


async def test_dns_rebinding_to_loopback_is_refused_when_the_connection_is_made() -> None:
    async with receiver() as (seen, port):
        url = f"http://hooks.rebind.test:{port}/hooks/a"
        dns = Rebinding(PUBLIC, "127.0.0.1")
        strict = settings(webhook_allow_private=False)
        await check_target(url, allow_http=True, allow_private=False, resolver=dns)

        result = await send(strict, url, dns)

    assert dns.lookups == ["hooks.rebind.test", "hooks.rebind.test"]
    assert result.verdict == "failed"
    assert result.error == (
        "blocked destination: hooks.rebind.test resolves to 127.0.0.1, a loopback address"
    )
    assert seen == []
    decision = decide(result, attempts=1, policy=RetryPolicy(schedule=(5.0,)))
    assert (decision.status, decision.error) == ("failed", result.error)  # never retried


async def test_the_same_name_reaches_the_local_receiver_when_private_targets_are_allowed() -> None:
    async with receiver() as (seen, port):
        url = f"http://hooks.rebind.test:{port}/hooks/a"
        dns = Rebinding(PUBLIC, "127.0.0.1")
        relaxed = settings(webhook_allow_private=True)
        await check_target(url, allow_http=True, allow_private=True, resolver=dns)

        result = await send(relaxed, url, dns)

    assert result.verdict == "delivered", result.error
    [request] = seen
    assert request.path == "/hooks/a"
    assert request.headers["Host"] == f"hooks.rebind.test:{port}"
    assert "webhook-signature" in request.headers


async def test_metadata_behind_a_name_is_refused_even_with_private_targets_allowed() -> None:
    async with receiver() as (seen, port):
        url = f"http://hooks.rebind.test:{port}/hooks/a"

        result = await send(settings(webhook_allow_private=True), url, Rebinding("169.254.169.254"))

    assert result.verdict == "failed"
    assert "169.254.169.254, a cloud metadata address" in (result.error or "")
    assert seen == []


async def test_a_literal_private_url_is_refused_before_connecting() -> None:
    async with receiver() as (seen, port):
        result = await send(settings(), f"http://127.0.0.1:{port}/hooks/a")
        https_only = await send(
            settings(webhook_allow_private=True, webhook_allow_http=False),
            f"http://127.0.0.1:{port}/hooks/a",
        )

    assert result.verdict == "failed"
    assert result.error == "blocked destination: 127.0.0.1 is a loopback address"
    assert https_only.error == "blocked destination: url must use https"
    assert seen == []


async def test_a_redirect_is_a_failed_attempt_and_is_never_followed() -> None:
    async with receiver() as (seen, port):
        result = await send(
            settings(webhook_allow_private=True), f"http://127.0.0.1:{port}/hooks/a?status=302"
        )

    assert result.verdict == "retry"
    assert result.status_code == 302
    assert len(seen) == 1


async def test_with_an_egress_proxy_every_request_goes_to_the_proxy() -> None:
    async with receiver() as (seen, port):
        proxied = settings(webhook_proxy_url=f"http://127.0.0.1:{port}")

        result = await send(proxied, "http://hooks.example.vn/hooks/a")

    assert result.verdict == "delivered", result.error
    [request] = seen
    assert request.headers["Host"] == "hooks.example.vn"


# -- POST /v1/subscriptions -----------------------------------------------------------------


@asynccontextmanager
async def running_api(
    postgres_dsn: str, kafka_bootstrap: str, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    name = random_id("db_")
    await ensure_database(postgres_dsn, name)
    config = NotifySettings(
        database_url=with_database(postgres_dsn, name),
        kafka_bootstrap=kafka_bootstrap,
        consumer_group=random_id("notify-"),
        **overrides,
    )
    app = build_app(config)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://notify",
            headers={"Authorization": f"Bearer {config.admin_token}"},  # may register any webhook
        ) as api,
    ):
        yield api


@pytest.fixture(scope="module")
async def strict_api(postgres_dsn: str, kafka_bootstrap: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(postgres_dsn, kafka_bootstrap) as client:
        yield client


async def subscribe(api: httpx.AsyncClient, url: str) -> tuple[httpx.Response, str]:
    agency = random_id("ubnd-")
    body = {"agency_id": agency, "channel": "webhook", "url": url, "secret": new_secret()}
    return await api.post("/v1/subscriptions", json=body), agency


@pytest.mark.parametrize(
    "url",
    [
        METADATA_URL,
        "https://169.254.169.254/latest/meta-data/",
        "https://2852039166/latest/meta-data/",
        "https://0xA9FEA9FE/",
        "https://[::ffff:169.254.169.254]/",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://127.0.0.1/hook",
        "https://10.0.0.5/hook",
        "https://printer.local/hook",
        "http://8.8.8.8/hook",
    ],
)
async def test_a_refused_target_is_a_422_naming_the_url_and_nothing_is_stored(
    strict_api: httpx.AsyncClient, url: str
) -> None:
    response, agency = await subscribe(strict_api, url)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["field"] == "url"
    assert error["type"] == "private_destination"
    listed = await strict_api.get("/v1/subscriptions", params={"agency_id": agency})
    assert listed.json() == []


async def test_the_metadata_address_is_refused_even_in_local_development(
    postgres_dsn: str, kafka_bootstrap: str
) -> None:
    async with running_api(
        postgres_dsn, kafka_bootstrap, webhook_allow_private=True, webhook_allow_http=True
    ) as relaxed:
        metadata, _ = await subscribe(relaxed, METADATA_URL)
        local, _ = await subscribe(relaxed, "http://127.0.0.1:8080/hook")

    assert metadata.status_code == 422, metadata.text
    assert "cloud metadata" in metadata.json()["errors"][0]["message"]
    assert local.status_code == 201, local.text


async def test_a_public_https_target_is_accepted(strict_api: httpx.AsyncClient) -> None:
    response, _ = await subscribe(strict_api, "https://8.8.8.8/hook")

    assert response.status_code == 201, response.text
