"""A report flows intake → routing → sla → notify through real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from paht_devenv.environment import (
    DEV_API_KEY,
    DEV_NOTIFY_ADMIN_TOKEN,
    SERVICES,
    Environment,
    throwaway_environment,
)

pytestmark = pytest.mark.e2e

AGENCY = "ubnd-07627"  # UBND xã Đại Sơn in the Bắc Ninh seed
OTHER_AGENCY = "ubnd-07615"  # UBND xã Sơn Động
HEADERS = {"X-API-Key": DEV_API_KEY}
NOTIFY_ADMIN = {"Authorization": f"Bearer {DEV_NOTIFY_ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def system() -> Iterator[Environment]:
    """Everything started the way `make run` starts it, on free ports in a temp dir."""
    with throwaway_environment("paht-e2e-", with_prometheus=True) as env:
        env.start_all()
        yield env


@dataclass
class Receiver:
    """A webhook endpoint that verifies every signature and records what it got."""

    secret: str
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    posts_per_id: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bad_signatures: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def for_report(self, report_id: str) -> list[dict[str, Any]]:
        """Verified payloads about one report."""
        return [r for r in self.received if r["data"].get("report_id") == report_id]

    async def wait_for(
        self, report_id: str, *, count: int = 1, within: float = 60.0
    ) -> list[dict[str, Any]]:
        """Payloads about a report once ``count`` arrived (TimeoutError otherwise)."""
        async with asyncio.timeout(within):
            while len(self.for_report(report_id)) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.for_report(report_id)


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    """Standard Webhooks receiver on 127.0.0.1 (verifies with the standardwebhooks library)."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    rec = Receiver(secret=secret)
    verifier = Webhook(secret)

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verifier.verify(body, dict(request.headers))
        except Exception:
            rec.bad_signatures += 1
            return web.Response(status=400)
        webhook_id = request.headers["webhook-id"]
        rec.posts_per_id[webhook_id] += 1
        if rec.posts_per_id[webhook_id] == 1:
            payload = json.loads(body)
            payload["_webhook_id"] = webhook_id
            rec.received.append(payload)
            rec.arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


def base_url(env: Environment, service: str) -> str:
    """http://127.0.0.1:<port> of a service."""
    assert service in SERVICES
    return f"http://127.0.0.1:{env.ports.services[service]}"


async def subscribe(env: Environment, receiver: Receiver, agency_id: str) -> None:
    """Register the receiver as the agency's webhook."""
    async with httpx.AsyncClient(base_url=base_url(env, "notify"), timeout=10) as client:
        response = await client.post(
            "/v1/subscriptions",
            headers=NOTIFY_ADMIN,
            json={
                "agency_id": agency_id,
                "channel": "webhook",
                "url": receiver.url,
                "secret": receiver.secret,
            },
        )
    assert response.status_code == 201, response.text


def report_body(
    description: str, *, commune: str = "07627", category: str = "URBAN_ORDER.ENCROACHMENT"
) -> dict[str, Any]:
    """A valid submission in the demo province."""
    return {
        "category": category,
        "description": description,
        "location": {"commune_code": commune, "lat": 21.18, "lon": 106.07},
        "reporter": {"name": "Nguyễn Thị Bình", "phone": "0912345678"},
    }


@pytest.fixture(scope="module")
async def subscribed(system: Environment, receiver: Receiver) -> Receiver:
    """The receiver registered as the webhook of the agencies the tests report to."""
    for agency in (AGENCY, OTHER_AGENCY):
        await subscribe(system, receiver, agency)
    return receiver


async def submit(
    env: Environment, body: dict[str, object], *, key: str | None = None, attempts: int = 1
) -> str:
    """POST a report (retrying with the same Idempotency-Key, as upstream apps do)."""
    headers = dict(HEADERS)
    headers["Idempotency-Key"] = key or str(uuid.uuid4())
    last: Exception | None = None
    for _ in range(attempts):
        try:
            async with httpx.AsyncClient(base_url=base_url(env, "intake"), timeout=10) as c:
                response = await c.post("/v1/reports", json=body, headers=headers)
            if response.status_code in (200, 202):
                return str(response.json()["id"])
            last = AssertionError(f"{response.status_code}: {response.text}")
        except httpx.TransportError as exc:
            last = exc
        await asyncio.sleep(0.5)
    raise AssertionError(f"report not accepted: {last!r}")


async def test_every_service_is_healthy_and_ready(system: Environment) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for service in SERVICES:
            health = await client.get(base_url(system, service) + "/healthz")
            ready = await client.get(base_url(system, service) + "/readyz")
            metrics = await client.get(base_url(system, service) + "/metrics")
            assert health.status_code == 200, service
            assert ready.status_code == 200, (service, ready.text)
            assert metrics.status_code == 200, service
            assert "paht_" in metrics.text, service


async def test_report_reaches_agency_webhook_signed_with_agency_and_deadlines(
    system: Environment, subscribed: Receiver
) -> None:
    receiver = subscribed
    report_id = await submit(system, report_body("Lấn chiếm vỉa hè trước chợ Đại Sơn"))

    (delivery,) = await receiver.wait_for(report_id)

    assert receiver.bad_signatures == 0
    assert delivery["type"] == "report.assigned"
    data = delivery["data"]
    assert data["agency_id"] == AGENCY
    assert data["category"] == "URBAN_ORDER.ENCROACHMENT"
    ack_due = datetime.fromisoformat(data["acknowledge_due_at"])
    offset = ack_due.utcoffset()
    assert offset is not None
    assert offset.total_seconds() == 7 * 3600
    async with httpx.AsyncClient(timeout=10) as client:
        view = (await client.get(f"{base_url(system, 'intake')}/v1/reports/{report_id}")).json()
        sla = (await client.get(f"{base_url(system, 'sla')}/v1/sla/{report_id}")).json()
        routing = await client.get(f"{base_url(system, 'routing')}/v1/assignments/{report_id}")
        deliveries = await client.get(
            f"{base_url(system, 'notify')}/v1/deliveries",
            params={"report_id": report_id},
            headers=NOTIFY_ADMIN,
        )
    assert routing.status_code == 200
    assert routing.json()["current"]["agency_id"] == AGENCY
    ack_clock = next(c for c in sla["clocks"] if c["kind"] == "acknowledgement")
    assert ack_clock["status"] == "running"
    assert datetime.fromisoformat(ack_clock["due_at"]) == ack_due
    assert view["agency"]["id"] == AGENCY
    assert view["status"] == "assigned"
    assert [d["status"] for d in deliveries.json()] == ["delivered"]


async def test_prometheus_scrapes_every_service(system: Environment) -> None:
    url = f"http://127.0.0.1:{system.ports.prometheus}/api/v1/targets"
    async with asyncio.timeout(60), httpx.AsyncClient(timeout=10) as client:
        while True:
            targets = (await client.get(url)).json()["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in targets}
            if all(health.get(s) == "up" for s in SERVICES):
                break
            await asyncio.sleep(1)
    assert set(health) >= set(SERVICES)


@pytest.mark.parametrize("victim", ["intake", "routing", "sla", "notify"])
async def test_sigkill_of_a_service_loses_no_report_and_duplicates_no_webhook(
    system: Environment, subscribed: Receiver, victim: str
) -> None:
    receiver = subscribed
    bodies = [
        report_body(
            f"Rác thải tồn đọng số {i} ({victim})", commune="07615", category="ENVIRONMENT.WASTE"
        )
        for i in range(12)
    ]
    keys = [str(uuid.uuid4()) for _ in bodies]
    ids: list[str] = []
    restart: asyncio.Task[None] | None = None

    async def restart_later() -> None:
        await asyncio.sleep(3)
        await asyncio.to_thread(system.service(victim).start)

    for i, (body, key) in enumerate(zip(bodies, keys, strict=True)):
        if i == 4:
            system.service(victim).kill()
            restart = asyncio.create_task(restart_later())
        # while intake is down the upstream app retries with the same key until it is back
        ids.append(await submit(system, body, key=key, attempts=240))
    assert restart is not None
    await restart
    await asyncio.to_thread(system.wait_ready, victim)

    for report_id in ids:
        await receiver.wait_for(report_id, within=120)
    await asyncio.sleep(2)  # let any duplicate that would come, come

    assert len(set(ids)) == len(ids)
    for report_id in ids:
        assigned = [d for d in receiver.for_report(report_id) if d["type"] == "report.assigned"]
        assert len(assigned) == 1, (report_id, assigned)
    assert receiver.bad_signatures == 0
    if victim != "notify":
        # only a kill inside notify's HTTP send may repeat a POST (same webhook-id, which
        # Standard Webhooks receivers deduplicate); nothing else may ever send twice
        assert all(n == 1 for n in receiver.posts_per_id.values()), dict(receiver.posts_per_id)


async def test_down_and_up_keeps_every_report(system: Environment, subscribed: Receiver) -> None:
    receiver = subscribed
    report_id = await submit(
        system, report_body("Đèn đường hỏng trước trường học", category="INFRA.LIGHTING")
    )
    await receiver.wait_for(report_id)

    await asyncio.to_thread(system.stop_all)
    await asyncio.to_thread(system.start_all)

    async with httpx.AsyncClient(timeout=10) as client:
        view = await client.get(f"{base_url(system, 'intake')}/v1/reports/{report_id}")
    assert view.status_code == 200
    assert view.json()["agency"]["id"] == AGENCY
    later = await submit(system, report_body("Cây xanh gãy cành sau bão", category="INFRA.TREES"))
    await receiver.wait_for(later)
    assert len(receiver.for_report(report_id)) == 1
