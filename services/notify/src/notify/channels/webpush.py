"""Web Push channel: the body encrypted for one browser (RFC 8291), POSTed with VAPID (RFC 8030)."""

from __future__ import annotations

import asyncio
import base64

import http_ece  # type: ignore[import-untyped]
import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from notify.channels.egress import TargetRefused
from notify.channels.webhook import drain, excerpt
from notify.domain import (
    WEB_PUSH,
    AttemptResult,
    ClaimedDelivery,
    Verdict,
    as_push_topic,
    parse_retry_after,
    validate_push_keys,
)
from notify.vapid import VapidSigner
from paht_common.clock import Clock

USER_AGENT = "PAHT-Notify/1.0"
CONTENT_ENCODING = "aes128gcm"
MAX_MESSAGE_BYTES = 4096
"""RFC 8030 §7.2: push services must accept 4096 bytes of encrypted payload, may refuse more."""
RECORD_SIZE = 4096
ERROR_EXCERPT_BYTES = 256


def _b64url_decode(value: str) -> bytes:
    text = value.rstrip("=")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encrypt_payload(
    plaintext: bytes,
    *,
    p256dh: str,
    auth: str,
    salt: bytes | None = None,
    sender_key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    """aes128gcm message (RFC 8291) for one subscription, in a single record.

    ``salt`` and ``sender_key`` are fresh per message unless given (test vectors only).
    """
    key = sender_key if sender_key is not None else ec.generate_private_key(ec.SECP256R1())
    encrypted = http_ece.encrypt(
        plaintext,
        salt=salt,
        private_key=key,
        dh=_b64url_decode(p256dh),
        auth_secret=_b64url_decode(auth),
        rs=RECORD_SIZE,
        version=CONTENT_ENCODING,
    )
    return bytes(encrypted)


def classify_push_status(status_code: int) -> Verdict:
    """RFC 8030 answers: 2xx accepted, 404/410 subscription gone, 429/5xx back off, 4xx final.

    408 is retried like 429; 1xx and 3xx (redirects are never followed) are retried too.
    """
    if 200 <= status_code < 300:
        return "delivered"
    if status_code in (404, 410):
        return "gone"
    if status_code in (408, 429) or status_code >= 500:
        return "retry"
    if 400 <= status_code < 500:
        return "failed"
    return "retry"


def push_headers(delivery: ClaimedDelivery, authorization: str) -> dict[str, str]:
    """TTL, Urgency, Topic (when set), content coding and VAPID Authorization of one message."""
    headers = {
        "ttl": str(delivery.ttl_seconds),
        "urgency": delivery.urgency,
        "content-encoding": CONTENT_ENCODING,
        "content-type": "application/octet-stream",
        "authorization": authorization,
        "user-agent": USER_AGENT,
    }
    if delivery.topic:
        headers["topic"] = as_push_topic(delivery.topic)
    return headers


class WebPushChannel:
    """Encrypts the frozen body for the subscription's browser and hands it to its push service."""

    name = WEB_PUSH

    def __init__(
        self,
        client: httpx.AsyncClient,
        vapid: VapidSigner,
        *,
        clock: Clock,
        timeout: float,
        allow_http: bool = False,
    ) -> None:
        self._client = client
        self._vapid = vapid
        self._clock = clock
        self._timeout = timeout
        self._allow_http = allow_http

    async def send(self, delivery: ClaimedDelivery) -> AttemptResult:
        """One attempt; transport errors and timeouts become ``retry``, never exceptions."""
        if delivery.url is None or delivery.p256dh is None or delivery.auth is None:
            return AttemptResult("failed", error="subscription has no endpoint or keys")
        refused = self._refuse_endpoint(delivery.url)
        if refused is not None:
            return AttemptResult("failed", error=refused)
        try:
            validate_push_keys(delivery.p256dh, delivery.auth)
        except ValueError as exc:
            return AttemptResult("failed", error=f"invalid subscription keys: {exc}")
        try:
            content = encrypt_payload(
                delivery.body.encode("utf-8"), p256dh=delivery.p256dh, auth=delivery.auth
            )
            authorization = self._vapid.authorization(delivery.url)
        except (ValueError, http_ece.ECEException) as exc:
            return AttemptResult("failed", error=f"cannot prepare the push message: {exc!s}")
        if len(content) > MAX_MESSAGE_BYTES:
            return AttemptResult(
                "failed",
                error=f"encrypted payload is {len(content)} bytes, over the "
                f"{MAX_MESSAGE_BYTES}-byte Web Push limit; send ids, not content",
            )
        headers = push_headers(delivery, authorization)
        try:
            return await self._post(delivery.url, content, headers)
        except TargetRefused as exc:  # from the guarded client, at connect time
            return AttemptResult("failed", error=f"blocked destination: {exc.reason}")
        except TimeoutError:
            return AttemptResult("retry", error=f"timed out after {self._timeout:g} s")
        except httpx.TimeoutException as exc:
            return AttemptResult("retry", error=f"timed out: {type(exc).__name__}")
        except httpx.InvalidURL as exc:
            return AttemptResult("failed", error=f"invalid push endpoint: {exc}")
        except httpx.HTTPError as exc:
            return AttemptResult("retry", error=f"{type(exc).__name__}: {exc}")

    def _refuse_endpoint(self, url: str) -> str | None:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            return f"invalid push endpoint: {exc}"
        if parsed.scheme == "https" or (parsed.scheme == "http" and self._allow_http):
            return None if parsed.host else "push endpoint has no host"
        return f"push endpoint must be https, not {parsed.scheme or 'relative'}"

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> AttemptResult:
        async with (
            asyncio.timeout(self._timeout) as limit,
            self._client.stream("POST", url, content=content, headers=headers) as response,
        ):
            code = response.status_code
            verdict = classify_push_status(code)
            retry_after = parse_retry_after(
                response.headers.get("retry-after"), now=self._clock.now()
            )
            error = None
            if verdict == "delivered":
                limit.reschedule(None)  # accepted: reading the body never makes it a retry
                await drain(response)  # keeps the connection for the next message
            else:
                body = await excerpt(response)
                error = f"HTTP {code} ({_meaning(code)})" + (f": {body}" if body else "")
        return AttemptResult(verdict, status_code=code, retry_after=retry_after, error=error)


def _meaning(status_code: int) -> str:
    meanings = {
        404: "subscription not found",
        410: "subscription expired or unsubscribed",
        413: "payload too large",
        429: "too many requests",
        401: "VAPID authorization refused",
        403: "VAPID key does not match the subscription",
    }
    if status_code in meanings:
        return meanings[status_code]
    return "push service error" if status_code >= 500 else "unexpected answer"
