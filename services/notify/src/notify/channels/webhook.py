"""Standard Webhooks channel: a signed HTTP POST per attempt, classified by status code."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime
from math import floor

import httpx
from standardwebhooks import Webhook

from notify.domain import (
    WEBHOOK,
    AttemptResult,
    ClaimedDelivery,
    classify_http_status,
    is_private_hostname,
    is_public_address,
    parse_retry_after,
)
from paht_common.clock import Clock

logger = logging.getLogger(__name__)

USER_AGENT = "PAHT-Notify/1.0"
ERROR_EXCERPT_BYTES = 256
DNS_TIMEOUT_SECONDS = 5.0


def signed_headers(secret: str, *, msg_id: str, timestamp: datetime, body: str) -> dict[str, str]:
    """webhook-id, webhook-timestamp and webhook-signature (v1, HMAC-SHA256) for one attempt."""
    at = timestamp.astimezone(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(floor(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
    }


async def private_destination(url: str) -> str | None:
    """Why ``url`` points inside the network (literal address, local name or DNS answer), or None.

    Resolution errors propagate as OSError. The check cannot stop DNS rebinding between this
    lookup and the connection; production deployments send through an egress proxy.
    """
    parsed = httpx.URL(url)
    host = parsed.host
    if is_private_hostname(host):
        return f"{host} is not a public address"
    try:
        is_public_address(host)
        return None  # a literal public address
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(DNS_TIMEOUT_SECONDS):
        infos = await loop.getaddrinfo(host, parsed.port or 443, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if not is_public_address(address):
            return f"{host} resolves to non-public address {address}"
    return None


class WebhookChannel:
    """POSTs the frozen body, signed afresh on every attempt with the subscription's secret."""

    name = WEBHOOK

    def __init__(
        self, client: httpx.AsyncClient, *, timeout: float, allow_private: bool, clock: Clock
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._allow_private = allow_private
        self._clock = clock

    async def send(self, delivery: ClaimedDelivery) -> AttemptResult:
        """One attempt; transport errors and timeouts become ``retry``, never exceptions."""
        if delivery.url is None or delivery.secret is None:
            return AttemptResult("failed", error="subscription has no url or secret")
        if not self._allow_private:
            try:
                blocked = await private_destination(delivery.url)
            except (OSError, TimeoutError) as exc:
                return AttemptResult("retry", error=f"cannot resolve host: {exc!r}")
            if blocked is not None:
                return AttemptResult("failed", error=f"blocked destination: {blocked}")
        headers = signed_headers(
            delivery.secret,
            msg_id=str(delivery.id),
            timestamp=self._clock.now(),
            body=delivery.body,
        )
        headers["content-type"] = "application/json"
        headers["user-agent"] = USER_AGENT
        try:
            return await self._post(delivery.url, delivery.body.encode("utf-8"), headers)
        except TimeoutError:
            return AttemptResult("retry", error=f"timed out after {self._timeout:g} s")
        except httpx.TimeoutException as exc:
            return AttemptResult("retry", error=f"timed out: {type(exc).__name__}")
        except httpx.InvalidURL as exc:
            return AttemptResult("failed", error=f"invalid url: {exc}")
        except httpx.HTTPError as exc:
            return AttemptResult("retry", error=f"{type(exc).__name__}: {exc}")

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> AttemptResult:
        # httpx timeouts are per phase; the outer limit bounds a receiver that drips bytes
        async with (
            asyncio.timeout(self._timeout),
            self._client.stream("POST", url, content=content, headers=headers) as response,
        ):
            verdict = classify_http_status(response.status_code)
            retry_after = parse_retry_after(
                response.headers.get("retry-after"), now=self._clock.now()
            )
            error = None
            if verdict != "delivered":
                excerpt = await _excerpt(response)
                error = f"HTTP {response.status_code}" + (f": {excerpt}" if excerpt else "")
        return AttemptResult(
            verdict, status_code=response.status_code, retry_after=retry_after, error=error
        )


async def _excerpt(response: httpx.Response) -> str:
    """Start of an error response's body for last_error; reading it never changes the verdict."""
    chunk = b""
    try:
        async for part in response.aiter_raw():
            chunk += part
            if len(chunk) >= ERROR_EXCERPT_BYTES:
                break
    except httpx.HTTPError:
        pass
    return chunk[:ERROR_EXCERPT_BYTES].decode("utf-8", errors="replace").strip()
