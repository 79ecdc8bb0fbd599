"""The Web Push channel against a real local push service that verifies VAPID and decrypts.

The push service (``paht_devenv.peers.push_service``) holds each browser subscription's private
key and auth secret, as the browser would, so a delivered message proves the encryption, and its
VAPID checks (signature, audience, expiry, key binding) prove the Authorization header.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from notify.channels.webpush import MAX_MESSAGE_BYTES, WebPushChannel
from notify.domain import WEB_PUSH, ClaimedDelivery, render_body, report_topic
from notify.vapid import VapidSigner
from paht_common.clock import SystemClock
from paht_common.testing import FakeClock
from paht_devenv.peers.push_service import BrowserSubscription, PushService, Reply

pytestmark = pytest.mark.integration

SUBJECT = "mailto:paht-ops@paht.example.vn"
TIMEOUT = 5.0


@pytest.fixture
async def service() -> AsyncIterator[PushService]:
    async with PushService() as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


@pytest.fixture(scope="module")
def vapid() -> VapidSigner:
    return VapidSigner(
        ec.generate_private_key(ec.SECP256R1()), subject=SUBJECT, clock=SystemClock()
    )


@pytest.fixture
def channel(client: httpx.AsyncClient, vapid: VapidSigner) -> WebPushChannel:
    return WebPushChannel(client, vapid, clock=SystemClock(), timeout=TIMEOUT, allow_http=True)


def delivery_for(
    browser: BrowserSubscription | dict[str, Any], **overrides: Any
) -> ClaimedDelivery:
    """A claimed push delivery to a ``PushSubscription.toJSON()``-shaped subscription."""
    subscription = browser.to_json() if isinstance(browser, BrowserSubscription) else browser
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "subscription_id": uuid.uuid4(),
        "channel": WEB_PUSH,
        "event_type": "report.assigned",
        "body": assigned_body(),
        "attempts": 1,
        "url": subscription["endpoint"],
        "secret": None,
        "p256dh": subscription["keys"]["p256dh"],
        "auth": subscription["keys"]["auth"],
    }
    fields.update(overrides)
    return ClaimedDelivery(**fields)


def assigned_body(**data: Any) -> str:
    report = {"report_id": str(uuid.uuid4()), "number": "BN-2025-000042", **data}
    report.setdefault("title", "Đèn đường hỏng ở phường Suối Hoa")
    return render_body("report.assigned", datetime(2025, 3, 4, 2, 0, tzinfo=UTC), report)


async def test_the_browser_decrypts_exactly_the_body(
    service: PushService, channel: WebPushChannel, vapid: VapidSigner
) -> None:
    browser = service.subscribe(application_server_key=vapid.application_server_key)
    claimed = delivery_for(browser)

    result = await channel.send(claimed)

    assert result.verdict == "delivered", result.error
    assert result.status_code == 201
    [message] = service.inbox(browser.id)
    assert message.plaintext == claimed.body.encode("utf-8")
    assert message.vapid_key == vapid.application_server_key
    assert message.vapid_claims is not None
    assert message.vapid_claims["aud"] == service.origin
    assert message.vapid_claims["sub"] == SUBJECT
    assert message.headers["content-encoding"] == "aes128gcm"
    assert message.headers["content-type"] == "application/octet-stream"


async def test_ttl_urgency_and_topic_arrive(
    service: PushService, channel: WebPushChannel, vapid: VapidSigner
) -> None:
    browser = service.subscribe(application_server_key=vapid.application_server_key)
    topic = report_topic(uuid.uuid4())

    result = await channel.send(delivery_for(browser, urgency="high", topic=topic, ttl_seconds=600))

    assert result.verdict == "delivered", result.error
    [message] = service.inbox(browser.id)
    assert (message.ttl, message.urgency, message.topic) == (600, "high", topic)


async def test_a_topic_too_long_for_rfc_8030_is_sent_as_a_digest(
    service: PushService, channel: WebPushChannel
) -> None:
    browser = service.subscribe()

    result = await channel.send(delivery_for(browser, topic=f"sla.warning:{uuid.uuid4()}"))

    assert result.verdict == "delivered", result.error
    [message] = service.inbox(browser.id)
    assert message.topic is not None
    assert len(message.topic) == 32


async def test_a_newer_message_replaces_a_queued_one_with_the_same_topic(
    service: PushService, channel: WebPushChannel
) -> None:
    browser = service.subscribe()
    service.set_online(browser.id, False)
    warning, breached = report_topic(uuid.uuid4()), report_topic(uuid.uuid4())
    bodies = [assigned_body(percent=p) for p in (50, 75, 100)]

    for body, topic in zip(bodies, [warning, warning, breached], strict=True):
        result = await channel.send(delivery_for(browser, body=body, topic=topic))
        assert result.verdict == "delivered", result.error
    assert [m.plaintext for m in service.pending(browser.id)] == [
        bodies[1].encode(),
        bodies[2].encode(),
    ]
    service.set_online(browser.id, True)

    assert [m.topic for m in service.inbox(browser.id)] == [warning, breached]


@pytest.mark.parametrize("status", [410, 404])
async def test_an_unsubscribed_browser_is_gone(
    service: PushService, channel: WebPushChannel, status: int
) -> None:
    browser = service.subscribe()
    service.unsubscribe(browser.id, status=status)

    result = await channel.send(delivery_for(browser))

    assert result.verdict == "gone"
    assert result.status_code == status
    assert service.inbox(browser.id) == []


async def test_an_unknown_subscription_is_gone(
    service: PushService, channel: WebPushChannel
) -> None:
    subscription = service.subscribe().to_json()
    subscription["endpoint"] = f"{service.origin}/push/{uuid.uuid4().hex}"

    result = await channel.send(delivery_for(subscription))

    assert (result.verdict, result.status_code) == ("gone", 404)


async def test_429_is_retried_after_the_push_service_says(
    service: PushService, channel: WebPushChannel
) -> None:
    browser = service.subscribe()
    service.script(browser.id, Reply(429, headers={"Retry-After": "120"}))

    throttled = await channel.send(delivery_for(browser))
    accepted = await channel.send(delivery_for(browser))

    assert (throttled.verdict, throttled.status_code) == ("retry", 429)
    assert throttled.retry_after == 120.0
    assert accepted.verdict == "delivered"
    assert [r.status for r in service.requests_for(browser.id)] == [429, 201]


async def test_a_server_error_is_retried(service: PushService, channel: WebPushChannel) -> None:
    browser = service.subscribe()
    service.script(browser.id, Reply(500, body="upstream unavailable"))

    result = await channel.send(delivery_for(browser))

    assert (result.verdict, result.status_code, result.retry_after) == ("retry", 500, None)
    assert result.error is not None
    assert "upstream unavailable" in result.error


async def test_413_from_the_push_service_fails(
    service: PushService, channel: WebPushChannel
) -> None:
    browser = service.subscribe()
    service.script(browser.id, Reply(413))

    result = await channel.send(delivery_for(browser))

    assert (result.verdict, result.status_code) == ("failed", 413)
    assert result.error is not None
    assert "payload too large" in result.error


async def test_a_body_over_4_kb_encrypted_is_refused_before_sending(
    service: PushService, channel: WebPushChannel
) -> None:
    browser = service.subscribe()
    largest = MAX_MESSAGE_BYTES - 86 - 17  # aes128gcm header, delimiter and tag

    fits = await channel.send(delivery_for(browser, body="x" * largest))
    too_big = await channel.send(delivery_for(browser, body="x" * (largest + 1)))

    assert fits.verdict == "delivered", fits.error
    assert too_big.verdict == "failed"
    assert too_big.status_code is None
    assert too_big.error is not None
    assert "4096" in too_big.error
    assert len(service.requests_for(browser.id)) == 1


async def test_another_applications_key_is_refused(
    service: PushService, client: httpx.AsyncClient, vapid: VapidSigner
) -> None:
    browser = service.subscribe(application_server_key=vapid.application_server_key)
    other = VapidSigner(
        ec.generate_private_key(ec.SECP256R1()), subject=SUBJECT, clock=SystemClock()
    )
    forged = WebPushChannel(client, other, clock=SystemClock(), timeout=TIMEOUT, allow_http=True)

    result = await forged.send(delivery_for(browser))

    assert (result.verdict, result.status_code) == ("failed", 403)
    [request] = service.requests_for(browser.id)
    assert request.reason is not None
    assert "applicationServerKey" in request.reason
    assert service.inbox(browser.id) == []


class ClaimsSomeoneElsesKey(VapidSigner):
    """Signs with its own key but names another ``k``: a forgery of that key's token."""

    def __init__(self, claimed_key: str) -> None:
        super().__init__(
            ec.generate_private_key(ec.SECP256R1()), subject=SUBJECT, clock=SystemClock()
        )
        self._claimed = claimed_key

    def authorization(self, endpoint: str) -> str:
        token = super().authorization(endpoint).split("t=", 1)[1].split(",", 1)[0]
        return f"vapid t={token}, k={self._claimed}"


async def test_a_token_not_signed_by_k_is_refused(
    service: PushService, client: httpx.AsyncClient, vapid: VapidSigner
) -> None:
    browser = service.subscribe(application_server_key=vapid.application_server_key)
    forger = ClaimsSomeoneElsesKey(vapid.application_server_key)
    forged = WebPushChannel(client, forger, clock=SystemClock(), timeout=TIMEOUT, allow_http=True)

    result = await forged.send(delivery_for(browser))

    assert (result.verdict, result.status_code) == ("failed", 401)
    [request] = service.requests_for(browser.id)
    assert request.reason == "JWT signature does not verify with k"


@pytest.mark.parametrize(
    ("skew", "reason"),
    [(timedelta(hours=-13), "token expired"), (timedelta(hours=13), "more than 24 hours")],
)
async def test_tokens_expired_or_too_long_lived_are_refused(
    service: PushService, client: httpx.AsyncClient, skew: timedelta, reason: str
) -> None:
    browser = service.subscribe()
    clock = FakeClock(datetime.now(UTC) + skew)
    skewed = VapidSigner(ec.generate_private_key(ec.SECP256R1()), subject=SUBJECT, clock=clock)
    channel = WebPushChannel(client, skewed, clock=clock, timeout=TIMEOUT, allow_http=True)

    result = await channel.send(delivery_for(browser))

    assert (result.verdict, result.status_code) == ("failed", 401)
    [request] = service.requests_for(browser.id)
    assert request.reason is not None
    assert reason in request.reason


async def test_a_push_service_that_does_not_answer_in_time_is_retried(
    service: PushService, client: httpx.AsyncClient, vapid: VapidSigner
) -> None:
    browser = service.subscribe()
    service.script(browser.id, Reply(delay=60))
    impatient = WebPushChannel(client, vapid, clock=SystemClock(), timeout=0.5, allow_http=True)

    result = await impatient.send(delivery_for(browser))

    assert result.verdict == "retry"
    assert result.error is not None
    assert "timed out" in result.error


async def test_an_unreachable_push_service_is_retried(
    client: httpx.AsyncClient, vapid: VapidSigner
) -> None:
    async with PushService() as stopped:
        browser = stopped.subscribe()
    channel = WebPushChannel(client, vapid, clock=SystemClock(), timeout=TIMEOUT, allow_http=True)

    result = await channel.send(delivery_for(browser))

    assert result.verdict == "retry"
    assert result.error is not None
    assert "ConnectError" in result.error


async def test_plain_http_endpoints_are_refused_unless_allowed(
    service: PushService, client: httpx.AsyncClient, vapid: VapidSigner
) -> None:
    browser = service.subscribe()
    strict = WebPushChannel(client, vapid, clock=SystemClock(), timeout=TIMEOUT)

    result = await strict.send(delivery_for(browser))

    assert result.verdict == "failed"
    assert result.error == "push endpoint must be https, not http"
    assert service.requests_for(browser.id) == []


async def test_invalid_subscription_keys_fail_without_revealing_auth(
    service: PushService, channel: WebPushChannel
) -> None:
    browser = service.subscribe()
    bad_auth = browser.auth[:-2]

    result = await channel.send(delivery_for(browser, auth=bad_auth))

    assert result.verdict == "failed"
    assert result.error is not None
    assert "keys.auth" in result.error
    assert bad_auth not in result.error
    assert service.requests_for(browser.id) == []


async def test_a_message_encrypted_for_another_browser_does_not_open(
    service: PushService, channel: WebPushChannel
) -> None:
    browser, stranger = service.subscribe(), service.subscribe()
    keys = stranger.to_json()["keys"]

    result = await channel.send(delivery_for(browser, p256dh=keys["p256dh"], auth=keys["auth"]))

    assert (result.verdict, result.status_code) == ("failed", 400)
    [request] = service.requests_for(browser.id)
    assert request.reason is not None
    assert request.reason.startswith("cannot decrypt")


async def test_the_push_service_requires_ttl_and_vapid(
    service: PushService, client: httpx.AsyncClient, vapid: VapidSigner
) -> None:
    browser = service.subscribe()
    headers = {
        "content-encoding": "aes128gcm",
        "authorization": vapid.authorization(service.origin),
    }

    no_ttl = await client.post(browser.endpoint, content=b"x" * 100, headers=headers)
    no_vapid = await client.post(browser.endpoint, content=b"x" * 100, headers={"ttl": "60"})

    assert (no_ttl.status_code, no_ttl.text) == (
        400,
        "TTL header (non-negative integer seconds) is required",
    )
    assert (no_vapid.status_code, no_vapid.text) == (401, "missing Authorization (VAPID required)")
