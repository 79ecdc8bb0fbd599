"""Dispatching deliveries to a real HTTP receiver that verifies Standard Webhooks signatures.

The receiver is an aiohttp server on a free local port; PostgreSQL and Kafka are the harness's.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
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
from aiokafka import AIOKafkaProducer
from standardwebhooks import Webhook

from notify import handlers
from notify.api import build_app
from notify.channels.webhook import WebhookChannel
from notify.dispatcher import Dispatcher
from notify.domain import AttemptResult, ClaimedDelivery, RetryPolicy
from notify.settings import NotifySettings
from paht_common.clock import SystemClock
from paht_common.db import apply_migrations, create_pool
from paht_common.events import ClockView, Envelope, Payload, SlaClocksChanged, new_envelope
from paht_common.kafka import encode, header_list, key_bytes
from paht_common.testing import cancel_as_woken, random_id
from paht_common.topics import SLA_EVENTS

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "notify" / "migrations"
FAST_RETRIES = RetryPolicy(schedule=(0.2, 0.2, 0.2))


@dataclass(frozen=True)
class Reply:
    """What the receiver answers to one request."""

    status: int = 204
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    path: str
    webhook_id: str
    at: float
    payload: Any
    verified: bool
    raw: bytes


class Receiver:
    """A webhook endpoint per path: verifies each request, then answers from its script."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._secrets: dict[str, str] = {}
        self._scripts: dict[str, list[Reply]] = {}
        self._arrived: dict[str, asyncio.Event] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def endpoint(self, *replies: Reply) -> tuple[str, str]:
        """A new path answering ``replies`` in order (the last one repeats); returns url, secret."""
        path = f"/hooks/{uuid.uuid4().hex}"
        self._secrets[path] = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        self._scripts[path] = list(replies) or [Reply()]
        self._arrived[path] = asyncio.Event()
        return self.base_url + path, self._secrets[path]

    async def first_request(self, url: str, *, within: float) -> Received:
        """The first request to ``url``, waiting up to ``within`` seconds for it."""
        await asyncio.wait_for(self._arrived[url.removeprefix(self.base_url)].wait(), within)
        return self.at(url)[0]

    def at(self, url: str) -> list[Received]:
        path = url.removeprefix(self.base_url)
        return [r for r in self.requests if r.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        secret = self._secrets.get(request.path)
        try:
            payload = Webhook(secret).verify(raw, dict(request.headers)) if secret else None
            verified = secret is not None
        except Exception:
            payload, verified = None, False
        self.requests.append(
            Received(
                path=request.path,
                webhook_id=request.headers.get("webhook-id", ""),
                at=time.monotonic(),
                payload=payload,
                verified=verified,
                raw=raw,
            )
        )
        if request.path in self._arrived:
            self._arrived[request.path].set()
        script = self._scripts.get(request.path, [Reply(404)])
        reply = script.pop(0) if len(script) > 1 else script[0]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(status=reply.status, headers=reply.headers)

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


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(fresh_database, min_size=1, max_size=10)
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, MIGRATIONS)
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


DispatcherFactory = Callable[..., Awaitable[Dispatcher]]


@pytest.fixture
async def start_dispatcher(
    pool: asyncpg.Pool, http: httpx.AsyncClient
) -> AsyncIterator[DispatcherFactory]:
    """Starts dispatchers (default: fast retries) and stops them after the test."""
    tasks: list[asyncio.Task[None]] = []

    async def start(
        *, on: asyncpg.Pool | None = None, send_timeout: float = 5.0, **options: Any
    ) -> Dispatcher:
        channel = WebhookChannel(
            http, timeout=send_timeout, allow_private=True, allow_http=True, clock=SystemClock()
        )
        options.setdefault("policy", FAST_RETRIES)
        options.setdefault("lease_seconds", send_timeout + 5)
        options.setdefault("shutdown_grace", 0)
        dispatcher = Dispatcher(on or pool, {"webhook": channel}, **options)
        tasks.append(asyncio.create_task(dispatcher.run()))
        await asyncio.sleep(0.2)  # let it LISTEN and go idle
        return dispatcher

    try:
        yield start
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class CountingChannel(WebhookChannel):
    """The webhook channel, counting the attempts it makes."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        super().__init__(
            http, timeout=5.0, allow_private=True, allow_http=True, clock=SystemClock()
        )
        self.sent = 0

    async def send(self, delivery: ClaimedDelivery) -> AttemptResult:
        self.sent += 1
        return await super().send(delivery)


async def subscribe(pool: asyncpg.Pool, agency_id: str, url: str, secret: str) -> uuid.UUID:
    async with pool.acquire() as conn:
        record = await handlers.create_subscription(
            conn, agency_id=agency_id, url=url, secret=secret
        )
    subscription_id: uuid.UUID = record["id"]
    return subscription_id


def routed_event(agency_id: str) -> Envelope[Payload]:
    now = datetime.now(UTC)
    payload = SlaClocksChanged(
        report_id=uuid.uuid4(),
        trigger="routed",
        number=f"BN-2025-{random_id('')[:6]}",
        agency_id=agency_id,
        category="URBAN_ORDER",
        policy_id="bn-default",
        calendar_version="2025.1",
        clocks=[
            ClockView(
                kind="acknowledgement",
                status="running",
                amount=8,
                unit="working_hours",
                started_at=now,
                due_at=now + timedelta(hours=20),
            ),
            ClockView(
                kind="resolution",
                status="running",
                amount=5,
                unit="working_days",
                started_at=now,
                due_at=now + timedelta(days=7),
            ),
        ],
    )
    return new_envelope(payload, source="/sla", province="bn")


async def notify(pool: asyncpg.Pool, agency_id: str, events: int = 1) -> list[Envelope[Payload]]:
    """Handle ``events`` routed events for an agency, all in one transaction."""
    envelopes = [routed_event(agency_id) for _ in range(events)]
    async with pool.acquire() as conn, conn.transaction():
        for envelope in envelopes:
            await handlers.handle_event(conn, envelope)
    return envelopes


async def wait_for(
    pool: asyncpg.Pool, sql: str, *args: Any, within: float = 10.0
) -> list[asyncpg.Record]:
    """Poll until ``sql`` returns rows; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch(sql, *args)
        if rows:
            return rows
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for: {sql} {args}")
        await asyncio.sleep(0.05)


async def settled(
    pool: asyncpg.Pool, subscription_id: uuid.UUID, count: int = 1, within: float = 10.0
) -> list[asyncpg.Record]:
    """The subscription's deliveries once ``count`` of them are delivered or failed."""
    return await wait_for(
        pool,
        """
        SELECT * FROM deliveries WHERE subscription_id = $1 AND
            (SELECT count(*) FROM deliveries
             WHERE subscription_id = $1 AND status <> 'pending') >= $2
        ORDER BY created_at, id
        """,
        subscription_id,
        count,
        within=within,
    )


async def test_delivers_a_signed_webhook_as_soon_as_it_is_queued(
    pool: asyncpg.Pool, receiver: Receiver, start_dispatcher: DispatcherFactory
) -> None:
    agency = random_id("ubnd-")
    url, secret = receiver.endpoint(Reply(200))
    subscription = await subscribe(pool, agency, url, secret)
    # a poll interval longer than the test: only the insert trigger's NOTIFY can wake it
    await start_dispatcher(poll_interval=3600.0)

    [event] = await notify(pool, agency)
    [row] = await settled(pool, subscription, within=60.0)

    [request] = receiver.at(url)
    assert request.verified
    assert request.webhook_id == str(row["id"])
    assert request.raw == row["body"].encode("utf-8")
    assert request.payload["type"] == "report.assigned"
    assert request.payload["data"]["report_id"] == str(event.payload.report_id)
    assert request.payload["data"]["acknowledge_due_at"].endswith("+07:00")
    assert row["status"] == "delivered"
    assert row["attempts"] == 1
    assert row["last_status_code"] == 200
    assert row["delivered_at"] is not None
    assert row["next_attempt_at"] is None


async def test_listens_again_after_losing_its_listener_connection(
    pool: asyncpg.Pool, receiver: Receiver, start_dispatcher: DispatcherFactory
) -> None:
    agency = random_id("ubnd-")
    url, secret = receiver.endpoint(Reply(200))
    subscription = await subscribe(pool, agency, url, secret)
    await start_dispatcher(poll_interval=3600.0)  # only a NOTIFY can wake it in this test
    async with pool.acquire() as conn:
        [victim] = await conn.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", victim["pid"])
    await wait_for(  # the positive signal: a new connection LISTENs again
        pool,
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
        "AND query LIKE 'LISTEN%' AND pid <> $1",
        victim["pid"],
        within=60.0,
    )

    await notify(pool, agency)
    [row] = await settled(pool, subscription, within=60.0)

    assert row["status"] == "delivered"


async def test_dispatcher_stops_when_cancelled_at_the_moment_it_is_woken(
    pool: asyncpg.Pool, http: httpx.AsyncClient
) -> None:
    channel = WebhookChannel(
        http, timeout=5.0, allow_private=True, allow_http=True, clock=SystemClock()
    )
    dispatcher = Dispatcher(
        pool,
        {"webhook": channel},
        policy=FAST_RETRIES,
        lease_seconds=10,
        poll_interval=30.0,
        shutdown_grace=0,
    )

    task = await cancel_as_woken(dispatcher.run, dispatcher._wake)

    assert task.done()  # on Python 3.11, wait_for would return the wake-up and loop on
    assert task.cancelled()


async def test_retries_after_a_503_then_succeeds(
    pool: asyncpg.Pool, receiver: Receiver, start_dispatcher: DispatcherFactory
) -> None:
    agency = random_id("ubnd-")
    url, secret = receiver.endpoint(Reply(503), Reply(202))
    subscription = await subscribe(pool, agency, url, secret)
    await start_dispatcher()

    await notify(pool, agency)
    [row] = await settled(pool, subscription)

    requests = receiver.at(url)
    assert [r.verified for r in requests] == [True, True]
    assert requests[0].webhook_id == requests[1].webhook_id == str(row["id"])
    assert requests[1].at - requests[0].at >= 0.2
    assert row["status"] == "delivered"
    assert row["attempts"] == 2
    assert row["last_status_code"] == 202
    assert row["last_error"] is None


async def test_honours_retry_after(
    pool: asyncpg.Pool, receiver: Receiver, start_dispatcher: DispatcherFactory
) -> None:
    agency = random_id("ubnd-")
    url, secret = receiver.endpoint(Reply(429, headers={"Retry-After": "2"}), Reply(200))
    subscription = await subscribe(pool, agency, url, secret)
    await start_dispatcher()

    await notify(pool, agency)
    [row] = await settled(pool, subscription)

    first, second = receiver.at(url)
    assert second.at - first.at >= 1.9
    assert row["status"] == "delivered"
    assert row["attempts"] == 2


async def test_records_the_pending_retry_after_a_failed_attempt(
    pool: asyncpg.Pool, receiver: Receiver, start_dispatcher: DispatcherFactory
) -> None:
    agency = random_id("ubnd-")
    url, secret = receiver.endpoint(Reply(500))
    subscription = await subscribe(pool, agency, url, secret)
    await start_dispatcher(policy=RetryPolicy(schedule=(60.0,)))

    await notify(pool, agency)
    [row] = await wait_for(
        pool,
        "SELECT * FROM deliveries WHERE subscription_id = $1 AND last_status_code IS NOT NULL",
        subscription,
    )

    assert row["status"] == "pending"
    assert row["attempts"] == 1
    assert row["last_status_code"] == 500
    assert row["last_error"] == "HTTP 500"
    assert row["next_attempt_at"] > datetime.now(UTC) + timedelta(seconds=50)


async def test_gives_up_as_failed_when_the_schedule_is_exhausted(
    pool: asyncpg.Pool, receiver: Receiver, start_dispatcher: DispatcherFactory
) -> None:
    agency = random_id("ubnd-")
    url, secret = receiver.endpoint(Reply(502))
    subscription = await subscribe(pool, agency, url, secret)
    await start_dispatcher(policy=RetryPolicy(schedule=(0.1, 0.1)))

    await notify(pool, agency)
    [row] = await settled(pool, subscription)

    assert len(receiver.at(url)) == 3
    assert row["status"] == "failed"
    assert row["attempts"] == 3
    assert row["last_error"] == "gave up after 3 attempts: HTTP 502"


async def test_410_disables_the_subscription(
    pool: asyncpg.Pool, receiver: Receiver, start_dispatcher: DispatcherFactory
) -> None:
    agency = random_id("ubnd-")
    url, secret = receiver.endpoint(Reply(410))
    subscription = await subscribe(pool, agency, url, secret)
    await start_dispatcher(max_in_flight_per_subscription=1)

    await notify(pool, agency, events=3)
    rows = await settled(pool, subscription, count=3)

    assert len(receiver.at(url)) == 1
    assert all(r["status"] == "failed" for r in rows)
    assert sorted(r["last_status_code"] or 0 for r in rows) == [0, 0, 410]
    cancelled = [r for r in rows if r["last_status_code"] is None]
    assert {r["last_error"] for r in cancelled} == {
        "subscription deactivated: endpoint answered 410 Gone"
    }
    async with pool.acquire() as conn:
        active = await conn.fetchval("SELECT active FROM subscriptions WHERE id = $1", subscription)
    assert active is False
    [later] = await notify(pool, agency)
    async with pool.acquire() as conn:
        queued = await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE event_id = $1", later.event_id
        )
    assert queued == 0


async def test_other_client_errors_fail_without_retry(
    pool: asyncpg.Pool, receiver: Receiver, start_dispatcher: DispatcherFactory
) -> None:
    agency = random_id("ubnd-")
    url, secret = receiver.endpoint(Reply(400))
    subscription = await subscribe(pool, agency, url, secret)
    await start_dispatcher()

    await notify(pool, agency)
    [row] = await settled(pool, subscription)
    await asyncio.sleep(0.5)

    assert len(receiver.at(url)) == 1
    assert row["status"] == "failed"
    assert row["attempts"] == 1
    assert row["last_status_code"] == 400


async def test_timeouts_and_refused_connections_are_retried(
    pool: asyncpg.Pool, receiver: Receiver, start_dispatcher: DispatcherFactory
) -> None:
    agency = random_id("ubnd-")
    slow_url, slow_secret = receiver.endpoint(Reply(200, delay=3.0), Reply(200))
    slow = await subscribe(pool, agency, slow_url, slow_secret)
    closed = await subscribe(pool, agency, "http://127.0.0.1:9/hook", slow_secret)
    await start_dispatcher(send_timeout=0.5, policy=RetryPolicy(schedule=(0.2, 60.0)))

    await notify(pool, agency)
    [slow_row] = await settled(pool, slow)
    [closed_row] = await wait_for(
        pool,
        "SELECT * FROM deliveries WHERE subscription_id = $1 AND attempts = 2 AND "
        "next_attempt_at > now() + interval '30 seconds'",
        closed,
    )

    assert slow_row["status"] == "delivered"
    assert slow_row["attempts"] == 2
    assert len(receiver.at(slow_url)) == 2
    assert closed_row["status"] == "pending"
    assert closed_row["last_status_code"] is None
    assert "ConnectError" in closed_row["last_error"]


async def test_a_slow_endpoint_does_not_hold_up_the_others(
    pool: asyncpg.Pool, receiver: Receiver, start_dispatcher: DispatcherFactory
) -> None:
    slow_agency, fast_agency = random_id("ubnd-"), random_id("ubnd-")
    slow_url, slow_secret = receiver.endpoint(Reply(200, delay=2.0))
    fast_url, fast_secret = receiver.endpoint(Reply(200))
    slow = await subscribe(pool, slow_agency, slow_url, slow_secret)
    fast = await subscribe(pool, fast_agency, fast_url, fast_secret)
    await start_dispatcher(send_timeout=10.0, max_in_flight=4, max_in_flight_per_subscription=2)
    await notify(pool, slow_agency, events=6)
    async with asyncio.timeout(60):  # the slow endpoint now holds its two slots
        while len(receiver.at(slow_url)) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    await notify(pool, fast_agency)
    await settled(pool, fast, within=60.0)
    async with pool.acquire() as conn:
        slow_done_before_fast = await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE subscription_id = $1 AND status <> 'pending'",
            slow,
        )

    assert slow_done_before_fast == 0  # the fast one went while the slow ones were held
    assert len(receiver.at(slow_url)) == 2  # at most its own slots, still waiting
    rows = await settled(pool, slow, count=6, within=20.0)
    assert all(r["status"] == "delivered" for r in rows)


async def test_two_dispatchers_never_send_the_same_delivery_twice(
    pool: asyncpg.Pool,
    fresh_database: str,
    receiver: Receiver,
    http: httpx.AsyncClient,
) -> None:
    agency = random_id("ubnd-")
    subscriptions = []
    for _ in range(3):
        url, secret = receiver.endpoint(Reply(200, delay=0.02))
        subscriptions.append(await subscribe(pool, agency, url, secret))
    await notify(pool, agency, events=40)
    options: dict[str, Any] = {
        "policy": FAST_RETRIES,
        "lease_seconds": 10.0,
        "batch_size": 5,
        "max_in_flight": 8,
        "max_in_flight_per_subscription": 4,
    }
    other_pool = await create_pool(fresh_database, min_size=1, max_size=10)
    channels = [CountingChannel(http), CountingChannel(http)]
    tasks = [
        asyncio.create_task(Dispatcher(on, {"webhook": channel}, **options).run())
        for on, channel in zip((pool, other_pool), channels, strict=True)
    ]
    try:
        for subscription in subscriptions:
            await settled(pool, subscription, count=40)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await other_pool.close()

    assert all(channel.sent > 0 for channel in channels)  # both took part

    posts = Counter(r.webhook_id for r in receiver.requests)
    assert len(posts) == 120
    assert set(posts.values()) == {1}
    assert all(r.verified for r in receiver.requests)
    async with pool.acquire() as conn:
        statuses = await conn.fetch(
            "SELECT status, attempts, count(*) FROM deliveries GROUP BY 1, 2"
        )
    assert [tuple(s) for s in statuses] == [("delivered", 1, 120)]


async def test_a_send_interrupted_by_a_crash_is_retried_after_its_lease(
    pool: asyncpg.Pool, receiver: Receiver, start_dispatcher: DispatcherFactory
) -> None:
    agency = random_id("ubnd-")
    url, secret = receiver.endpoint(Reply(200, delay=5.0), Reply(200))
    subscription = await subscribe(pool, agency, url, secret)
    http = httpx.AsyncClient(trust_env=False)
    crashing = Dispatcher(
        pool,
        {
            "webhook": WebhookChannel(
                http, timeout=1.0, allow_private=True, allow_http=True, clock=SystemClock()
            )
        },
        policy=FAST_RETRIES,
        lease_seconds=2.0,
        shutdown_grace=0,
    )
    task = asyncio.create_task(crashing.run())
    await notify(pool, agency)
    await wait_for(pool, "SELECT 1 FROM deliveries WHERE attempts = 1")
    await asyncio.sleep(0.3)
    task.cancel()  # dies mid-send: the lease is committed, the outcome never recorded
    await asyncio.gather(task, return_exceptions=True)
    await http.aclose()
    crashed_at = time.monotonic()

    await start_dispatcher(lease_seconds=2.0, send_timeout=1.0)
    [row] = await settled(pool, subscription)

    first, second = receiver.at(url)
    assert first.webhook_id == second.webhook_id  # at-least-once: the receiver dedupes on it
    assert second.at - crashed_at >= 1.0
    assert row["status"] == "delivered"
    assert row["attempts"] == 2


async def test_service_delivers_a_kafka_event_to_the_webhook_once(
    fresh_database: str, kafka_bootstrap: str, receiver: Receiver
) -> None:
    settings = NotifySettings(
        database_url=fresh_database,
        kafka_bootstrap=kafka_bootstrap,
        consumer_group=random_id("notify-"),
        retry_schedule_seconds=(0.2,),
        webhook_allow_private=True,  # the receiver listens on 127.0.0.1 over http
        webhook_allow_http=True,
        admin_token="test-delivery-admin-token",
    )
    app = build_app(settings)
    agency = random_id("ubnd-")
    url, secret = receiver.endpoint(Reply(200))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://notify",
                headers={"Authorization": "Bearer test-delivery-admin-token"},
            ) as api,
        ):
            created = await api.post(
                "/v1/subscriptions",
                json={"agency_id": agency, "channel": "webhook", "url": url, "secret": secret},
            )
            assert created.status_code == 201, created.text
            event = routed_event(agency)
            message = encode(event)

            for _ in range(2):  # the second copy is a redelivery the inbox drops
                await producer.send_and_wait(
                    SLA_EVENTS,
                    value=message.value,
                    key=key_bytes(message),
                    headers=header_list(message),
                )
            request = await receiver.first_request(url, within=60.0)
            assert request.verified
            assert request.payload["data"]["number"] == event.payload.number  # type: ignore[attr-defined]

            await asyncio.sleep(1.0)
            listed = await api.get(
                "/v1/deliveries", params={"report_id": str(event.payload.report_id)}
            )
    finally:
        await producer.stop()

    assert listed.status_code == 200
    [delivery] = listed.json()
    assert delivery["id"] == request.webhook_id
    assert delivery["subscription_id"] == created.json()["id"]
    assert delivery["status"] == "delivered"
    assert delivery["event_type"] == "report.assigned"
    assert delivery["attempts"] == 1
    assert len(receiver.at(url)) == 1
