"""Standard Webhooks channel: a signed HTTP POST per attempt, classified by status code."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from math import floor

import httpx
from standardwebhooks import Webhook

from notify.channels.egress import TargetRefused, check_url
from notify.domain import (
    WEBHOOK,
    AttemptResult,
    ClaimedDelivery,
    classify_http_status,
    parse_retry_after,
)
from paht_common.clock import Clock

logger = logging.getLogger(__name__)

USER_AGENT = "PAHT-Notify/1.0"
ERROR_EXCERPT_BYTES = 256
DRAIN_BYTES = 4096
"""A 2xx body is read up to this size so the connection can serve the next delivery."""
DRAIN_SECONDS = 1.0


def signed_headers(secret: str, *, msg_id: str, timestamp: datetime, body: str) -> dict[str, str]:
    """webhook-id, webhook-timestamp and webhook-signature (v1, HMAC-SHA256) for one attempt."""
    at = timestamp.astimezone(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(floor(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
    }


class WebhookChannel:
    """POSTs the frozen body, signed afresh on every attempt with the subscription's secret.

    Send through ``egress.guarded_client``: the channel checks the URL before every attempt,
    the client checks the address it connects to.
    """

    name = WEBHOOK

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        timeout: float,
        allow_private: bool,
        allow_http: bool,
        clock: Clock,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._allow_private = allow_private
        self._allow_http = allow_http
        self._clock = clock

    async def send(self, delivery: ClaimedDelivery) -> AttemptResult:
        """One attempt: transport errors give ``retry``, a refused target ``failed``; no raising."""
        if delivery.url is None or delivery.secret is None:
            return AttemptResult("failed", error="subscription has no url or secret")
        try:
            check_url(delivery.url, allow_http=self._allow_http, allow_private=self._allow_private)
        except TargetRefused as exc:
            return AttemptResult("failed", error=f"blocked destination: {exc.reason}")
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
        except TargetRefused as exc:  # from the guarded client, at connect time
            return AttemptResult("failed", error=f"blocked destination: {exc.reason}")
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
            asyncio.timeout(self._timeout) as limit,
            self._client.stream("POST", url, content=content, headers=headers) as response,
        ):
            verdict = classify_http_status(response.status_code)
            retry_after = parse_retry_after(
                response.headers.get("retry-after"), now=self._clock.now()
            )
            error = None
            if verdict == "delivered":
                limit.reschedule(None)  # answered: reading the body never makes it a retry
                await drain(response)
            else:
                body = await excerpt(response)
                error = f"HTTP {response.status_code}" + (f": {body}" if body else "")
        return AttemptResult(
            verdict, status_code=response.status_code, retry_after=retry_after, error=error
        )


async def drain(response: httpx.Response) -> None:
    """Read an accepted answer's body (at most ``DRAIN_BYTES``, ``DRAIN_SECONDS``).

    A response read to its end hands its connection back to the pool (keep-alive); one left
    unread, or longer than the bound, makes httpcore close the connection instead. Errors
    here never change the verdict.
    """
    read = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for part in response.aiter_raw():
                read += len(part)
                if read > DRAIN_BYTES:
                    break
    except (TimeoutError, httpx.HTTPError):
        pass


async def excerpt(response: httpx.Response) -> str:
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
