"""SIGKILL of notify while its deliveries are in flight: every alert still arrives, by id once.

notify runs as a real process (``python -m notify``) on the harness's PostgreSQL and Kafka. The
push service and the webhook receiver hold their first answers long enough that the kill lands
mid-send; after a restart each lapsed lease is sent again. A peer may then see the same delivery
twice (at-least-once, same webhook-id / same push message), but the set of delivery ids each
recipient received is exactly the expected one, and the database has one row per (event,
subscription).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from paht_common.db import create_pool, ensure_database, with_database
from paht_common.events import (
    ClockView,
    Envelope,
    Payload,
    ReportRouted,
    ReportSubmitted,
    SlaClocksChanged,
    SlaThresholdReached,
    new_envelope,
)
from paht_common.staff_auth import dev_key_pair, issue_token
from paht_common.testing import random_id
from paht_common.topics import REPORT_EVENTS, ROUTING_EVENTS, SLA_EVENTS
from paht_devenv.kafka import publish_event
from paht_devenv.peers.push_service import BrowserSubscription, PushService, Reply
from paht_devenv.peers.smtp_server import SmtpServer
from paht_devenv.procs import ManagedProcess, free_port

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN = "test-notify-crash-admin-91c3"
WITHIN = 90.0
HELD_SECONDS = 30.0
"""How long the peers sit on their first answers: far longer than it takes to kill notify."""


class SlowReceiver:
    """Standard Webhooks receiver that holds the first request of each webhook-id."""

    def __init__(self) -> None:
        self.secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        self.webhook_ids: list[str] = []
        self.unverified = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            Webhook(self.secret).verify(raw, dict(request.headers))
        except Exception:
            self.unverified += 1
            return web.Response(status=400)
        webhook_id = request.headers["webhook-id"]
        first = webhook_id not in self.webhook_ids
        self.webhook_ids.append(webhook_id)
        if first:
            await asyncio.sleep(HELD_SECONDS)  # the peer is slow, not the test
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Notify:
    """The notify process, its database and the peers it sends to."""

    process: ManagedProcess
    base_url: str
    db: asyncpg.Pool
    push: PushService
    smtp: SmtpServer
    hooks: SlowReceiver
    key_dir: Path
    vapid_key: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    def header(self, subject: str, role: str, agency_id: str) -> dict[str, str]:
        private, _ = dev_key_pair(self.key_dir)
        token = issue_token(
            private,
            subject=subject,
            role=role,
            agency_id=agency_id,
            issuer="paht-dev",
            audience="paht",
            name="Trần Văn Đức",
            email=f"{subject}@bacninh.gov.vn",
        )
        return {"Authorization": f"Bearer {token}"}

    async def wait_ready(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2, trust_env=False) as c:

            async def ready() -> bool:
                try:
                    return (await c.get("/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(ready)


async def eventually(condition: Callable[[], Awaitable[bool]], *, within: float = WITHIN) -> None:
    """Poll ``condition`` until it holds; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.1)


@pytest.fixture
async def notify(postgres_dsn: str, kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Notify]:
    name = random_id("db_")
    await ensure_database(postgres_dsn, name)
    dsn = with_database(postgres_dsn, name)
    key_dir = tmp_path / "jwt"
    dev_key_pair(key_dir)
    port = free_port()
    hooks = SlowReceiver()
    await hooks.start()
    try:
        with SmtpServer() as smtp:
            async with PushService() as push:
                env = {
                    "NOTIFY_DATABASE_URL": dsn,
                    "NOTIFY_KAFKA_BOOTSTRAP": kafka_bootstrap,
                    "NOTIFY_HTTP_HOST": "127.0.0.1",
                    "NOTIFY_HTTP_PORT": str(port),
                    "NOTIFY_CONSUMER_GROUP": random_id("notify-"),
                    "NOTIFY_JWT_DEV_KEY_DIR": str(key_dir),
                    "NOTIFY_VAPID_KEY_FILE": str(tmp_path / "vapid" / "private.pem"),
                    "NOTIFY_ADMIN_TOKEN": ADMIN,
                    "NOTIFY_WEBHOOK_ALLOW_PRIVATE": "true",
                    "NOTIFY_WEBHOOK_ALLOW_HTTP": "true",
                    "NOTIFY_PUSH_ALLOW_HTTP": "true",
                    "NOTIFY_SMTP_HOST": smtp.host,
                    "NOTIFY_SMTP_PORT": str(smtp.port),
                    "NOTIFY_MAIL_FROM": "PAHT <no-reply@bacninh.gov.vn>",
                    "NOTIFY_RETRY_SCHEDULE_SECONDS": "[0.5, 0.5, 0.5, 0.5, 0.5]",
                    "NOTIFY_DELIVERY_TIMEOUT_SECONDS": "20",
                    "NOTIFY_LEASE_SECONDS": "21",
                    "NOTIFY_SLA_URL": "http://127.0.0.1:9",
                    "NOTIFY_WORKSPACE_URL": "https://workspace.bacninh.gov.vn",
                    "PYTHONUNBUFFERED": "1",
                }
                process = ManagedProcess(
                    name="notify",
                    argv=[sys.executable, "-m", "notify"],
                    run_dir=tmp_path / "run",
                    log_dir=tmp_path / "log",
                    env=env,
                    cwd=REPO_ROOT,
                )
                pool = await create_pool(dsn, min_size=1, max_size=3)
                service = Notify(
                    process, f"http://127.0.0.1:{port}", pool, push, smtp, hooks, key_dir
                )
                try:
                    process.start()
                    await service.wait_ready()
                    yield service
                finally:
                    await asyncio.to_thread(process.stop, 10)
                    await pool.close()
    finally:
        await hooks.stop()


def envelope(payload: Payload) -> Envelope[Payload]:
    return new_envelope(payload, source="/test", province="bn")


@dataclass
class Person:
    subject: str
    header: dict[str, str]
    browser: BrowserSubscription
    push_subscription: uuid.UUID
    email_subscription: uuid.UUID | None = None


async def test_sigkill_mid_fan_out_delivers_every_alert_once_by_delivery_id(
    notify: Notify, kafka_bootstrap: str
) -> None:
    agency = random_id("ubnd-")
    report_id, number = uuid.uuid4(), "BN-2025-004242"
    async with httpx.AsyncClient(base_url=notify.base_url, timeout=10, trust_env=False) as api:
        key = (await api.get("/v1/push/vapid-public-key")).json()["public_key"]

        async def person(role: str, *, email: bool = False) -> Person:
            subject = random_id("u-")
            header = notify.header(subject, role, agency)
            browser = notify.push.subscribe(application_server_key=key)
            # every first message to this browser is held, so the kill finds it in flight
            notify.push.script(browser.id, *[Reply(delay=HELD_SECONDS)] * 3)
            response = await api.post(
                "/v1/push-subscriptions", json=browser.to_json(), headers=header
            )
            assert response.status_code == 201, response.text
            who = Person(subject, header, browser, uuid.UUID(response.json()["id"]))
            if email:
                response = await api.post("/v1/email-subscriptions", json={}, headers=header)
                assert response.status_code == 201, response.text
                who.email_subscription = uuid.UUID(response.json()["id"])
            return who

        o1 = await person("officer", email=True)
        o2 = await person("officer")
        leader = await person("leader")
        response = await api.post(
            "/v1/subscriptions",
            json={
                "agency_id": agency,
                "channel": "webhook",
                "url": notify.hooks.url,
                "secret": notify.hooks.secret,
            },
            headers=leader.header,
        )
        assert response.status_code == 201, response.text
        hook_subscription = uuid.UUID(response.json()["id"])

    now = datetime.now(UTC)
    await publish_event(
        kafka_bootstrap,
        REPORT_EVENTS,
        envelope(
            ReportSubmitted(
                report_id=report_id,
                number=number,
                category="Giao thông",
                commune_code="07627",
                lat=None,
                lon=None,
                channel="app",
                urgency="normal",
                source_app="demo-app",
                submitted_at=now,
            )
        ),
    )
    await publish_event(
        kafka_bootstrap,
        ROUTING_EVENTS,
        envelope(
            ReportRouted(
                report_id=report_id,
                number=number,
                agency_id=agency,
                agency_name="UBND xã Đại Sơn",
                category="Giao thông",
                commune_code="07627",
                urgency="normal",
                rule_id="r-1",
                routed_at=now,
            )
        ),
    )
    sla_events = [
        envelope(
            SlaClocksChanged(
                report_id=report_id,
                trigger="routed",
                number=number,
                agency_id=agency,
                category="Giao thông",
                policy_id="bn-default",
                calendar_version="2025.1",
                clocks=[
                    ClockView(
                        kind="resolution",
                        status="running",
                        amount=10,
                        unit="working_days",
                        started_at=now,
                        due_at=now + timedelta(days=14),
                    )
                ],
            )
        ),
        *[
            envelope(
                SlaThresholdReached(
                    report_id=report_id,
                    number=number,
                    agency_id=agency,
                    clock="resolution",
                    percent=percent,
                    due_at=now + timedelta(days=1),
                )
            )
            for percent in (50, 100)
        ],
    ]
    for event in sla_events:
        await publish_event(kafka_bootstrap, SLA_EVENTS, event)

    expected = {
        (o1.push_subscription, "report.assigned"),
        (o1.push_subscription, "sla.warning"),
        (o1.push_subscription, "sla.breached"),
        (o1.email_subscription, "report.assigned"),
        (o1.email_subscription, "sla.warning"),
        (o1.email_subscription, "sla.breached"),
        (o2.push_subscription, "report.assigned"),
        (o2.push_subscription, "sla.warning"),
        (o2.push_subscription, "sla.breached"),
        (leader.push_subscription, "sla.breached"),
        (hook_subscription, "report.assigned"),
        (hook_subscription, "sla.warning"),
        (hook_subscription, "sla.breached"),
    }

    async def rows() -> list[asyncpg.Record]:
        return await notify.db.fetch(
            "SELECT id, event_id, subscription_id, channel, event_type, status, attempts, body"
            " FROM deliveries WHERE report_id = $1",
            report_id,
        )

    async def all_in_flight() -> bool:
        current = await rows()
        held = [r for r in current if r["channel"] != "email"]
        return len(current) == len(expected) and all(
            r["status"] == "pending" and r["attempts"] >= 1 for r in held
        )

    await eventually(all_in_flight)
    await asyncio.to_thread(notify.process.kill)
    assert not notify.process.running()
    notify.process.start()
    await notify.wait_ready()

    async def all_delivered() -> bool:
        current = await rows()
        return len(current) == len(expected) and all(r["status"] == "delivered" for r in current)

    await eventually(all_delivered)
    final = await rows()
    assert {(r["subscription_id"], r["event_type"]) for r in final} == expected
    assert len({(r["event_id"], r["subscription_id"]) for r in final}) == len(final)
    # the kill landed mid-send: every held delivery was sent again by the restarted process
    assert all(r["attempts"] >= 2 for r in final if r["channel"] != "email")
    ids_of: dict[uuid.UUID | None, set[str]] = {}
    for r in final:
        ids_of.setdefault(r["subscription_id"], set()).add(str(r["id"]))

    # webhook: the set of webhook-ids is exactly the expected delivery ids (a resend allowed)
    assert set(notify.hooks.webhook_ids) == ids_of[hook_subscription]
    assert notify.hooks.unverified == 0
    # push: each message the browser holds is one of its deliveries' frozen bodies
    for who in (o1, o2, leader):
        body_to_id = {
            r["body"]: str(r["id"]) for r in final if r["subscription_id"] == who.push_subscription
        }
        inbox = notify.push.inbox(who.browser.id)
        received = {body_to_id[m.plaintext.decode()] for m in inbox if m.plaintext is not None}
        assert received == ids_of[who.push_subscription]
        kinds = {json.loads(m.plaintext or b"{}")["kind"] for m in inbox}
        assert kinds == {k for s, k in expected if s == who.push_subscription}
    # email: Message-IDs derive from the delivery id, so a resend has the same one
    message_ids = {str(m.message["Message-ID"]) for m in notify.smtp.messages}
    assert len(message_ids) == len(ids_of[o1.email_subscription])
    assert all(any(i in mid for mid in message_ids) for i in ids_of[o1.email_subscription]), (
        message_ids,
        ids_of[o1.email_subscription],
    )
