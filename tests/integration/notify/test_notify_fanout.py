"""Notify's fan-out end to end: events through Kafka, the real app over ASGI, real peers.

Staff subscribe with their own tokens (a browser of the local push service, an address on
the local SMTP server); agencies and the upstream app register webhooks on a local Standard
Webhooks receiver. What each peer received is then checked against who each alert is for.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import unicodedata
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from standardwebhooks import Webhook

from notify import directory, handlers
from notify.api import MIGRATIONS, build_app
from notify.settings import NotifySettings
from paht_common.db import apply_migrations, create_pool, ensure_database, with_database
from paht_common.events import (
    ClockView,
    Envelope,
    Payload,
    ReportRouted,
    ReportSubmitted,
    ReportTransitioned,
    SlaClocksChanged,
    SlaThresholdReached,
    new_envelope,
)
from paht_common.roles import Role
from paht_common.staff_auth import Staff, dev_key_pair, issue_token
from paht_common.testing import random_id
from paht_common.topics import REPORT_EVENTS, ROUTING_EVENTS, SLA_EVENTS
from paht_devenv.kafka import publish_event
from paht_devenv.peers.push_service import BrowserSubscription, PushRequest, PushService
from paht_devenv.peers.smtp_server import SmtpServer

pytestmark = pytest.mark.integration

ADMIN = "test-notify-fanout-admin-7d2e"
ADMIN_HEADER = {"Authorization": f"Bearer {ADMIN}"}
WORKSPACE = "https://workspace.bacninh.gov.vn"
APP = "demo-app"
WITHIN = 60.0
"""Generous bound on waiting for Kafka, the dispatcher and the peers."""


# --- peers ---


@dataclass
class Hook:
    """One webhook endpoint of the receiver: its secret and the replies it gives in turn."""

    secret: str
    replies: list[int]
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(webhook-id, verified payload) of every request, in arrival order."""


class HookReceiver:
    """A Standard Webhooks receiver: verifies each request with ``standardwebhooks``."""

    def __init__(self) -> None:
        self.base_url = ""
        self.hooks: dict[str, Hook] = {}
        self.unverified = 0
        self._runner: web.AppRunner | None = None

    def endpoint(self, *replies: int) -> tuple[str, str]:
        """A new endpoint answering ``replies`` in order (the last one repeats): url, secret."""
        name = uuid.uuid4().hex
        secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        self.hooks[name] = Hook(secret, list(replies) or [204])
        return f"{self.base_url}/hooks/{name}", secret

    def at(self, url: str) -> Hook:
        return self.hooks[url.rsplit("/", 1)[1]]

    async def _handle(self, request: web.Request) -> web.Response:
        hook = self.hooks.get(request.match_info["name"])
        if hook is None:
            return web.Response(status=404)
        raw = await request.read()
        try:
            payload = Webhook(hook.secret).verify(raw, dict(request.headers))
        except Exception:
            self.unverified += 1
            return web.Response(status=400)
        hook.received.append((request.headers["webhook-id"], payload))
        status = hook.replies.pop(0) if len(hook.replies) > 1 else hook.replies[0]
        return web.Response(status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# --- the app and its people ---


@dataclass
class Person:
    """A staff member with their token and the channels they subscribed."""

    subject: str
    role: str
    agency_id: str | None
    header: dict[str, str]
    browser: BrowserSubscription | None = None
    push_subscription: uuid.UUID | None = None
    email: str | None = None
    email_subscription: uuid.UUID | None = None


@dataclass
class World:
    """The running app, its database and the peers it talks to."""

    api: httpx.AsyncClient
    db: asyncpg.Pool
    push: PushService
    smtp: SmtpServer
    hooks: HookReceiver
    key_dir: Path
    vapid_key: str

    def token(self, subject: str, role: str, agency_id: str | None, **claims: str) -> str:
        private, _ = dev_key_pair(self.key_dir)
        return issue_token(
            private,
            subject=subject,
            role=role,
            agency_id=agency_id,
            issuer="paht-dev",
            audience="paht",
            **claims,  # type: ignore[arg-type]
        )

    async def person(
        self, role: str, agency_id: str | None, *, push: bool = True, email: bool = False
    ) -> Person:
        """A staff member who subscribes their browser (and their token's email address)."""
        subject = random_id("u-")
        address = f"{subject}@bacninh.gov.vn"
        token = self.token(subject, role, agency_id, name="Nguyễn Thị Hà", email=address)
        who = Person(subject, role, agency_id, {"Authorization": f"Bearer {token}"})
        if push:
            who.browser = self.push.subscribe(application_server_key=self.vapid_key)
            response = await self.api.post(
                "/v1/push-subscriptions", json=who.browser.to_json(), headers=who.header
            )
            assert response.status_code == 201, response.text
            who.push_subscription = uuid.UUID(response.json()["id"])
        if email:
            response = await self.api.post("/v1/email-subscriptions", json={}, headers=who.header)
            assert response.status_code == 201, response.text
            who.email = address
            who.email_subscription = uuid.UUID(response.json()["id"])
        return who

    async def webhook(
        self,
        header: dict[str, str],
        *replies: int,
        agency_id: str | None = None,
        app_id: str | None = None,
    ) -> tuple[str, uuid.UUID]:
        """Register a receiver endpoint; returns its url and subscription id."""
        url, secret = self.hooks.endpoint(*replies)
        body: dict[str, Any] = {"channel": "webhook", "url": url, "secret": secret}
        owner = {"agency_id": agency_id, "app_id": app_id}
        body.update({k: v for k, v in owner.items() if v is not None})
        response = await self.api.post("/v1/subscriptions", json=body, headers=header)
        assert response.status_code == 201, response.text
        return url, uuid.UUID(response.json()["id"])

    async def deliveries(self, report_id: uuid.UUID) -> list[asyncpg.Record]:
        return await self.db.fetch(
            "SELECT * FROM deliveries WHERE report_id = $1 ORDER BY created_at", report_id
        )

    async def wait_for(
        self, condition: Callable[[], Awaitable[bool]], *, within: float = WITHIN
    ) -> None:
        """Poll ``condition`` until it holds; fail the test after ``within`` seconds."""
        deadline = time.monotonic() + within
        while True:
            if await condition():
                return
            if time.monotonic() > deadline:
                pytest.fail(f"condition not met within {within} s")
            await asyncio.sleep(0.1)

    async def settled(
        self, report_id: uuid.UUID, count: int, *, status: str = "delivered"
    ) -> list[asyncpg.Record]:
        """The report's deliveries once there are ``count`` of them, all with ``status``."""

        async def done() -> bool:
            rows = await self.deliveries(report_id)
            return len(rows) >= count and all(r["status"] == status for r in rows)

        await self.wait_for(done)
        return await self.deliveries(report_id)


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jwt")


@pytest.fixture
async def world(
    postgres_dsn: str,
    kafka_bootstrap: str,
    key_dir: Path,
    tmp_path: Path,
) -> AsyncIterator[World]:
    name = random_id("db_")
    await ensure_database(postgres_dsn, name)
    dsn = with_database(postgres_dsn, name)
    hooks = HookReceiver()
    await hooks.start()
    try:
        with SmtpServer() as smtp:
            async with PushService() as push:
                settings = NotifySettings(
                    database_url=dsn,
                    kafka_bootstrap=kafka_bootstrap,
                    consumer_group=random_id("notify-"),
                    jwt_dev_key_dir=key_dir,
                    vapid_key_file=tmp_path / "vapid" / "private.pem",
                    admin_token=ADMIN,
                    webhook_allow_private=True,
                    webhook_allow_http=True,
                    push_allow_http=True,
                    smtp_host=smtp.host,
                    smtp_port=smtp.port,
                    mail_from="PAHT <no-reply@bacninh.gov.vn>",
                    retry_schedule_seconds=(0.2, 0.2, 0.2),
                    retry_jitter=0,
                    delivery_timeout_seconds=5,
                    lease_seconds=10,
                    breaker_threshold=2,
                    breaker_probe_seconds=3600,
                    workspace_url=WORKSPACE,
                    sla_url="http://127.0.0.1:9",  # no calendar: nobody's alerts are held
                )
                app = build_app(settings)
                async with (
                    app.router.lifespan_context(app),
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app), base_url="http://notify"
                    ) as api,
                ):
                    pool = await create_pool(dsn, min_size=1, max_size=3)
                    try:
                        key = (await api.get("/v1/push/vapid-public-key")).json()["public_key"]
                        yield World(api, pool, push, smtp, hooks, key_dir, key)
                    finally:
                        await pool.close()
    finally:
        await hooks.stop()


# --- events ---


@dataclass
class Report:
    """A report's id and number, and builders of the events that happen to it."""

    agency_id: str
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    number: str = field(default_factory=lambda: f"BN-2025-{uuid.uuid4().int % 10**6:06d}")

    def submitted(self) -> Envelope[Payload]:
        return _wrap(
            ReportSubmitted(
                report_id=self.id,
                number=self.number,
                category="Môi trường",
                commune_code="07627",
                lat=None,
                lon=None,
                channel="app",
                urgency="normal",
                source_app=APP,
                submitted_at=datetime.now(UTC),
            ),
            "/intake",
        )

    def routed(self) -> Envelope[Payload]:
        return _wrap(
            ReportRouted(
                report_id=self.id,
                number=self.number,
                agency_id=self.agency_id,
                agency_name="UBND xã Đại Sơn",
                category="Môi trường",
                commune_code="07627",
                urgency="normal",
                rule_id="r-1",
                routed_at=datetime.now(UTC),
            ),
            "/routing",
        )

    def clocks(self) -> Envelope[Payload]:
        now = datetime.now(UTC)
        return _wrap(
            SlaClocksChanged(
                report_id=self.id,
                trigger="routed",
                number=self.number,
                agency_id=self.agency_id,
                category="Môi trường",
                policy_id="bn-default",
                calendar_version="2025.1",
                clocks=[
                    ClockView(
                        kind="acknowledgement",
                        status="running",
                        amount=8,
                        unit="working_hours",
                        started_at=now,
                        due_at=now + timedelta(hours=8),
                    ),
                    ClockView(
                        kind="resolution",
                        status="running",
                        amount=10,
                        unit="working_days",
                        started_at=now,
                        due_at=now + timedelta(days=14),
                    ),
                ],
            ),
            "/sla",
        )

    def threshold(self, percent: int, level: str | None = None) -> Envelope[Payload]:
        return _wrap(
            SlaThresholdReached(
                report_id=self.id,
                number=self.number,
                agency_id=self.agency_id,
                clock="resolution",
                percent=percent,
                due_at=datetime.now(UTC) + timedelta(hours=1),
                escalation_level=level,
            ),
            "/sla",
        )

    def transitioned(self, action: str, to_state: str) -> Envelope[Payload]:
        return _wrap(
            ReportTransitioned(
                report_id=self.id,
                action=action,
                from_state="in_progress",
                to_state=to_state,
                actor_role="officer",
                agency_id=self.agency_id,
                reason="Cần phối hợp với Sở Tài nguyên",
                at=datetime.now(UTC),
            ),
            "/intake",
        )


def _wrap(payload: Payload, source: str) -> Envelope[Payload]:
    return new_envelope(payload, source=source, province="bn")


TOPICS = {
    ReportSubmitted: REPORT_EVENTS,
    ReportTransitioned: REPORT_EVENTS,
    ReportRouted: ROUTING_EVENTS,
    SlaClocksChanged: SLA_EVENTS,
    SlaThresholdReached: SLA_EVENTS,
}


async def publish(bootstrap: str, *events: Envelope[Payload]) -> None:
    for event in events:
        await publish_event(bootstrap, TOPICS[type(event.payload)], event)


async def introduce(world: World, bootstrap: str, report: Report) -> None:
    """Submit and route a report, and wait until notify knows its app and agency."""
    await publish(bootstrap, report.submitted(), report.routed())

    async def known() -> bool:
        row = await world.db.fetchrow(
            "SELECT source_app, agency_id FROM reports WHERE report_id = $1", report.id
        )
        return row is not None and row["source_app"] == APP and row["agency_id"] is not None

    await world.wait_for(known)


def pushes(world: World, who: Person, report: Report) -> list[tuple[PushRequest, dict[str, Any]]]:
    """Messages ``who``'s browser received about ``report``, with their decrypted JSON."""
    assert who.browser is not None
    received = []
    for message in world.push.inbox(who.browser.id):
        assert message.plaintext is not None
        body = json.loads(message.plaintext.decode("utf-8"))
        if body["report_id"] == str(report.id):
            received.append((message, body))
    return received


def topic_of(report: Report) -> str:
    return base64.urlsafe_b64encode(report.id.bytes).decode().rstrip("=")


# --- 1, 2, 3: who hears about what, on which channel, once ---


async def test_each_alert_reaches_exactly_its_recipients_once_per_channel(
    world: World, kafka_bootstrap: str
) -> None:
    agency, other = random_id("ubnd-"), random_id("so-")
    a1 = await world.person("officer", agency, email=True)
    a2 = await world.person("officer", agency)
    a3 = await world.person("officer", agency, email=True)  # no sla.warning by push
    leader = await world.person("leader", agency)
    officer_b = await world.person("officer", other)
    coordinator = await world.person("coordinator", None)
    supervisor = await world.person("supervisor", None)
    response = await world.api.put(
        "/v1/preferences",
        json={"kinds": {"sla.warning": {"web_push": False, "email": True}}},
        headers=a3.header,
    )
    assert response.status_code == 200, response.text
    agency_hook, agency_hook_id = await world.webhook(leader.header, agency_id=agency)
    app_hook, app_hook_id = await world.webhook(ADMIN_HEADER, app_id=APP)
    other_hook, _ = await world.webhook(ADMIN_HEADER, agency_id=other)
    report = Report(agency)
    await introduce(world, kafka_bootstrap, report)

    await publish(
        kafka_bootstrap,
        report.clocks(),
        report.threshold(50),
        report.threshold(100),
        report.threshold(120, "coordinator"),
        report.transitioned("request_extension", "extension_requested"),
        report.transitioned("return", "returned"),
        report.transitioned("publish", "published"),
    )

    push_expected = {
        a1.subject: ["report.assigned", "sla.warning", "sla.breached"],
        a2.subject: ["report.assigned", "sla.warning", "sla.breached"],
        a3.subject: ["report.assigned", "sla.breached"],
        leader.subject: ["sla.breached", "report.extension_requested"],
        coordinator.subject: ["sla.escalated", "report.extension_requested", "report.returned"],
        officer_b.subject: [],
        supervisor.subject: [],
    }
    email_expected = {
        a1.subject: ["report.assigned", "sla.warning", "sla.breached"],
        a3.subject: ["report.assigned", "sla.warning", "sla.breached"],
    }
    # agency systems hear of an escalation as a breach
    agency_hook_expected = ["report.assigned", "sla.warning", "sla.breached", "sla.breached"]
    total = (
        sum(map(len, push_expected.values()))
        + sum(map(len, email_expected.values()))
        + len(agency_hook_expected)
        + 1
    )
    rows = await world.settled(report.id, total)

    people = [a1, a2, a3, leader, officer_b, coordinator, supervisor]
    subscription_of = {p.push_subscription: (p.subject, "web_push") for p in people}
    subscription_of.update({a1.email_subscription: (a1.subject, "email")})
    subscription_of.update({a3.email_subscription: (a3.subject, "email")})
    subscription_of.update({agency_hook_id: ("agency", "webhook"), app_hook_id: ("app", "webhook")})
    by_owner = Counter((subscription_of[r["subscription_id"]], r["event_type"]) for r in rows)
    expected_rows = Counter(
        {((s, "web_push"), k): 1 for s, kinds in push_expected.items() for k in kinds}
        | {((s, "email"), k): 1 for s, kinds in email_expected.items() for k in kinds}
        | {(("app", "webhook"), "report.published"): 1}
    )
    expected_rows.update((("agency", "webhook"), k) for k in agency_hook_expected)
    assert by_owner == expected_rows
    assert {r["status"] for r in rows} == {"delivered"}
    assert len(rows) == len({r["id"] for r in rows}) == total

    # Web Push: decrypted, once per alert, Vietnamese intact, one Topic for the report
    titles = {
        "report.assigned": f"Phản ánh mới {report.number}",
        "sla.warning": f"Sắp đến hạn: {report.number}",
        "sla.breached": f"Quá hạn: {report.number}",
        "sla.escalated": f"Chuyển cấp: {report.number} quá hạn",
        "report.extension_requested": f"Đề nghị gia hạn: {report.number}",
        "report.returned": f"Phản ánh bị trả lại: {report.number}",
    }
    urgencies = {"sla.breached": "high", "sla.escalated": "high", "sla.warning": "normal"}
    for who in people:
        received = pushes(world, who, report)
        assert sorted(b["kind"] for _, b in received) == sorted(push_expected[who.subject])
        for message, body in received:
            assert body["title"] == titles[body["kind"]]
            assert unicodedata.is_normalized("NFC", body["title"] + body["body"])
            assert body["url"] == f"{WORKSPACE}/reports/{report.id}"
            assert message.topic == topic_of(report)
            assert message.urgency == urgencies.get(body["kind"], "normal")
    assert world.push.requests_for(officer_b.browser.id) == []  # type: ignore[union-attr]
    assert world.push.requests_for(supervisor.browser.id) == []  # type: ignore[union-attr]

    # email: one message per alert to each subscribed address, in Vietnamese
    for who in (a1, a3):
        mails = [m for m in world.smtp.messages if m.rcpt_tos == (who.email,)]
        subjects = sorted(str(m.message["Subject"]) for m in mails)
        assert subjects == sorted(f"[PAHT] {titles[k]}" for k in email_expected[who.subject])
        for mail in mails:
            text = mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            assert text.startswith("Kính gửi Nguyễn Thị Hà,")
            assert f"{WORKSPACE}/reports/{report.id}" in text
    assert {m.rcpt_tos for m in world.smtp.messages} == {(a1.email,), (a3.email,)}

    # webhooks: verified, once each, only the agency's and the submitting app's
    agency_received = world.hooks.at(agency_hook).received
    assert sorted(p["type"] for _, p in agency_received) == sorted(agency_hook_expected)
    assert {p["data"]["report_id"] for _, p in agency_received} == {str(report.id)}
    assert len({i for i, _ in agency_received}) == len(agency_received)
    # the app id is shared with other tests' reports that the consumer may replay
    about_report = [
        p for _, p in world.hooks.at(app_hook).received if p["data"]["report_id"] == str(report.id)
    ]
    assert [p["type"] for p in about_report] == ["report.published"]
    assert world.hooks.at(other_hook).received == []
    assert world.hooks.unverified == 0


# --- 4: quiet hours hold non-urgent alerts (the handler, with a fake calendar) ---


class FixedWorkingTime:
    """Office hours resume at one fixed instant, whatever is asked."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    async def next_working_instant(self, at: datetime) -> datetime | None:
        return self.at


def browser_keys() -> tuple[str, str]:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    encode = base64.urlsafe_b64encode
    return encode(point).decode().rstrip("="), encode(os.urandom(16)).decode().rstrip("=")


@pytest.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(fresh_database, min_size=1, max_size=3)
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, MIGRATIONS)
        yield pool
    finally:
        await pool.close()


async def test_quiet_hours_hold_a_warning_but_not_a_breach(pool: asyncpg.Pool) -> None:
    agency = random_id("ubnd-")
    resume = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=9)
    ctx = handlers.FanOutContext(workspace_url=WORKSPACE, working_time=FixedWorkingTime(resume))
    subscriptions = {}
    async with pool.acquire() as conn:
        for name, quiet in (("quiet", True), ("awake", False)):
            member = Staff(random_id("u-"), Role.OFFICER, agency)
            p256dh, auth = browser_keys()
            record, _ = await handlers.subscribe_push(
                conn,
                member=member,
                endpoint=f"https://push.example.net/{name}",
                p256dh=p256dh,
                auth=auth,
            )
            subscriptions[record["id"]] = name
            await directory.replace_preferences(
                conn, user_id=member.subject, quiet_hours=quiet, choices={}
            )
    report = Report(agency)

    async def handle(event: Envelope[Payload]) -> dict[str, asyncpg.Record]:
        async with pool.acquire() as conn, conn.transaction():
            await handlers.handle_event(conn, event, ctx)
            rows = await conn.fetch("SELECT * FROM deliveries WHERE event_id = $1", event.event_id)
        return {subscriptions[r["subscription_id"]]: r for r in rows}

    warning = await handle(report.threshold(50))
    breach = await handle(report.threshold(100))

    assert warning["quiet"]["held_until"] == resume
    assert warning["quiet"]["next_attempt_at"] == resume
    assert (warning["quiet"]["status"], warning["quiet"]["attempts"]) == ("pending", 0)
    assert warning["awake"]["held_until"] is None
    assert warning["awake"]["next_attempt_at"] < resume
    for name in ("quiet", "awake"):
        assert breach[name]["urgency"] == "high"
        assert breach[name]["held_until"] is None
        assert breach[name]["next_attempt_at"] < resume


# --- 5: gone subscriptions, open circuits, retries by hand ---


@pytest.mark.parametrize("gone", [410, 404])
async def test_a_push_subscription_the_push_service_says_is_gone_is_deactivated(
    world: World, kafka_bootstrap: str, gone: int
) -> None:
    agency = random_id("ubnd-")
    leaving = await world.person("officer", agency)
    staying = await world.person("officer", agency)
    assert leaving.browser is not None
    assert leaving.push_subscription is not None
    world.push.unsubscribe(leaving.browser.id, status=gone)
    report = Report(agency)
    await introduce(world, kafka_bootstrap, report)

    await publish(kafka_bootstrap, report.clocks())

    async def gone_recorded() -> bool:
        row = await world.db.fetchrow(
            "SELECT active FROM subscriptions WHERE id = $1", leaving.push_subscription
        )
        return row is not None and not row["active"]

    await world.wait_for(gone_recorded)
    response = await world.api.get(
        f"/v1/subscriptions/{leaving.push_subscription}", headers=leaving.header
    )
    assert response.status_code == 200
    assert response.json()["active"] is False

    await publish(kafka_bootstrap, report.threshold(50))

    async def warned() -> bool:
        return "sla.warning" in {b["kind"] for _, b in pushes(world, staying, report)}

    await world.wait_for(warned)
    rows = await world.deliveries(report.id)
    warnings = [r for r in rows if r["event_type"] == "sla.warning"]
    assert [r["subscription_id"] for r in warnings] == [staying.push_subscription]
    assert len(world.push.requests_for(leaving.browser.id)) == 1


async def test_a_dead_endpoint_opens_its_circuit_while_others_keep_receiving(
    world: World, kafka_bootstrap: str
) -> None:
    agency = random_id("ubnd-")
    leader = await world.person("leader", agency, push=False)
    dead, dead_id = await world.webhook(leader.header, 500, agency_id=agency)
    alive, _ = await world.webhook(leader.header, agency_id=agency)
    report = Report(agency)
    await introduce(world, kafka_bootstrap, report)

    await publish(kafka_bootstrap, report.clocks())

    async def circuit_open() -> bool:
        row = await world.db.fetchrow(
            "SELECT circuit_open_until FROM subscriptions WHERE id = $1", dead_id
        )
        return row is not None and row["circuit_open_until"] is not None

    await world.wait_for(circuit_open)
    assert len(world.hooks.at(dead).received) == 2  # breaker_threshold

    await publish(kafka_bootstrap, report.threshold(50), report.threshold(100))

    async def alive_has_all() -> bool:
        return len(world.hooks.at(alive).received) == 3

    await world.wait_for(alive_has_all)
    assert sorted(p["type"] for _, p in world.hooks.at(alive).received) == [
        "report.assigned",
        "sla.breached",
        "sla.warning",
    ]
    assert len(world.hooks.at(dead).received) == 2
    waiting = [r for r in await world.deliveries(report.id) if r["subscription_id"] == dead_id]
    assert len(waiting) == 3
    assert {r["status"] for r in waiting} == {"pending"}
    assert sorted(r["attempts"] for r in waiting) == [0, 0, 2]
    response = await world.api.get(f"/v1/subscriptions/{dead_id}", headers=leader.header)
    assert response.json()["consecutive_failures"] == 2


async def test_the_leader_retries_a_failed_delivery_with_the_same_webhook_id(
    world: World, kafka_bootstrap: str
) -> None:
    agency = random_id("ubnd-")
    leader = await world.person("leader", agency, push=False)
    officer = await world.person("officer", agency, push=False)
    hook, _ = await world.webhook(leader.header, 400, 204, agency_id=agency)
    report = Report(agency)
    await introduce(world, kafka_bootstrap, report)
    await publish(kafka_bootstrap, report.clocks())
    [failed] = await world.settled(report.id, 1, status="failed")
    assert failed["last_status_code"] == 400

    refused = await world.api.post(f"/v1/deliveries/{failed['id']}/retry", headers=officer.header)
    retried = await world.api.post(f"/v1/deliveries/{failed['id']}/retry", headers=leader.header)

    assert refused.status_code == 403
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "pending"
    [delivered] = await world.settled(report.id, 1)
    assert delivered["id"] == failed["id"]
    ids = [webhook_id for webhook_id, _ in world.hooks.at(hook).received]
    assert ids == [str(failed["id"]), str(failed["id"])]
    again = await world.api.post(f"/v1/deliveries/{failed['id']}/retry", headers=leader.header)
    assert again.status_code == 409
