"""Keep-alive: the webhook and Web Push channels reuse one connection for successive sends.

A local aiohttp receiver notes the client port of every request: one port for several
deliveries means one TCP connection. The client is the service's ``egress.guarded_client``.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notify.channels.egress import guarded_client
from notify.channels.webhook import DRAIN_BYTES, WebhookChannel
from notify.channels.webpush import WebPushChannel
from notify.domain import WEB_PUSH, WEBHOOK, ClaimedDelivery
from notify.settings import NotifySettings
from notify.vapid import VapidSigner
from paht_common.clock import SystemClock

pytestmark = pytest.mark.integration

SENDS = 5


class CountingReceiver:
    """Answers every POST with ``status`` and ``body``; notes each request's client port."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        self.ports: list[int] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.ports.append(peer[1] if peer else -1)
        return web.Response(status=self.status, body=self.body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/endpoint"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def receiving(status: int, body: bytes) -> CountingReceiver:
    receiver = CountingReceiver(status, body)
    await receiver.start()
    return receiver


@pytest.fixture
def settings() -> NotifySettings:
    return NotifySettings(
        database_url="postgresql://unused@127.0.0.1:1/unused",
        webhook_allow_private=True,
        webhook_allow_http=True,
        push_allow_http=True,
    )


@pytest.fixture
async def client(settings: NotifySettings) -> AsyncIterator[httpx.AsyncClient]:
    async with guarded_client(settings) as http:
        yield http


def webhook_delivery(url: str) -> ClaimedDelivery:
    return ClaimedDelivery(
        id=uuid.uuid4(),
        subscription_id=uuid.uuid4(),
        channel=WEBHOOK,
        event_type="report.breached",
        body='{"type":"report.breached"}',
        attempts=1,
        url=url,
        secret="whsec_" + base64.b64encode(os.urandom(32)).decode(),
    )


def push_delivery(url: str) -> ClaimedDelivery:
    browser = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = browser.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return ClaimedDelivery(
        id=uuid.uuid4(),
        subscription_id=uuid.uuid4(),
        channel=WEB_PUSH,
        event_type="report.breached",
        body='{"title":"BN-2025-000001"}',
        attempts=1,
        url=url,
        secret=None,
        p256dh=base64.urlsafe_b64encode(point).decode().rstrip("="),
        auth=base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="),
    )


def webhook_channel(client: httpx.AsyncClient) -> WebhookChannel:
    return WebhookChannel(
        client, timeout=5.0, allow_private=True, allow_http=True, clock=SystemClock()
    )


@pytest.mark.parametrize(("status", "body"), [(200, b'{"ok":true}'), (204, b"")])
async def test_webhooks_to_one_receiver_share_one_connection(
    client: httpx.AsyncClient, status: int, body: bytes
) -> None:
    receiver = await receiving(status, body)
    channel = webhook_channel(client)
    try:
        results = [await channel.send(webhook_delivery(receiver.url)) for _ in range(SENDS)]
    finally:
        await receiver.stop()

    assert [r.verdict for r in results] == ["delivered"] * SENDS
    assert len(receiver.ports) == SENDS
    assert len(set(receiver.ports)) == 1


async def test_push_messages_to_one_push_service_share_one_connection(
    client: httpx.AsyncClient,
) -> None:
    receiver = await receiving(201, b"")
    vapid = VapidSigner(
        ec.generate_private_key(ec.SECP256R1()),
        subject="mailto:paht-ops@paht.example.vn",
        clock=SystemClock(),
    )
    channel = WebPushChannel(client, vapid, clock=SystemClock(), timeout=5.0, allow_http=True)
    try:
        results = [await channel.send(push_delivery(receiver.url)) for _ in range(SENDS)]
    finally:
        await receiver.stop()

    assert [r.verdict for r in results] == ["delivered"] * SENDS
    assert len(receiver.ports) == SENDS
    assert len(set(receiver.ports)) == 1


async def test_an_answer_body_over_the_drain_bound_is_still_delivered(
    client: httpx.AsyncClient,
) -> None:
    receiver = await receiving(200, b"x" * (DRAIN_BYTES * 16))
    channel = webhook_channel(client)
    try:
        results = [await channel.send(webhook_delivery(receiver.url)) for _ in range(2)]
    finally:
        await receiver.stop()

    assert [(r.verdict, r.status_code) for r in results] == [("delivered", 200)] * 2
    assert len(receiver.ports) == 2
