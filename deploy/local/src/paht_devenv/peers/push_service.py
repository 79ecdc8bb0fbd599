"""A real Web Push service for tests: HTTP/1.1 on 127.0.0.1, checking what a push service checks.

    async with PushService() as service:
        browser = service.subscribe(application_server_key=signer.application_server_key)
        subscription = browser.to_json()  # PushSubscription.toJSON(): endpoint, keys
        ...  # POST a message to subscription["endpoint"]
        assert service.inbox(browser.id)[0].plaintext == b"..."

Each ``POST /push/{id}`` is checked like a push service and a browser would: VAPID (RFC 8292:
ES256 signature against ``k``, ``aud`` = this origin, ``exp`` ahead but at most 24 h, ``sub``
mailto: or https:, ``k`` equal to the key the subscription was made with), ``TTL`` present,
``Urgency`` and ``Topic`` well formed, and the aes128gcm body (RFC 8291) decrypted with the
browser's private key and auth secret. Refusals answer 400/401/403/413 with the reason as text.
Answers can be scripted per subscription (410, 404, 429 with Retry-After, 500, delays). An
offline subscription queues accepted messages, a newer one replacing a queued one with the same
``Topic``; going online delivers the queue. Every request is recorded before it is answered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import h11
import http_ece  # type: ignore[import-untyped]
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

HOST = "127.0.0.1"
PATH_PREFIX = "/push/"
MAX_MESSAGE_BYTES = 4096
MAX_REQUEST_BYTES = 64 * 1024
MAX_TOKEN_LIFETIME_SECONDS = 24 * 3600
URGENCIES = ("very-low", "low", "normal", "high")
TOPIC_MAX_CHARS = 32
_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def b64url_encode(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Bytes of base64url text with or without padding; ValueError when it is not base64url."""
    bare = text.rstrip("=")
    if any(c not in _BASE64URL for c in bare):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None


@dataclass(frozen=True)
class Reply:
    """A scripted answer: its status (201 = accept as usual), extra headers, a delay first."""

    status: int = 201
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: str = ""


@dataclass(frozen=True)
class BrowserSubscription:
    """What ``PushManager.subscribe`` creates in a browser: an endpoint, a P-256 key, a secret."""

    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    auth_secret: bytes = field(repr=False)
    application_server_key: str | None = None
    """The VAPID public key the subscription is bound to; None accepts any signer."""

    @property
    def p256dh(self) -> str:
        """The browser's public key, base64url uncompressed point (``keys.p256dh``)."""
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return b64url_encode(raw)

    @property
    def auth(self) -> str:
        """The 16-byte authentication secret, base64url (``keys.auth``)."""
        return b64url_encode(self.auth_secret)

    def to_json(self) -> dict[str, Any]:
        """The ``PushSubscription.toJSON()`` a PWA posts to its server."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        }

    def decrypt(self, body: bytes) -> bytes:
        """Plaintext of an aes128gcm push message (RFC 8291); ValueError when it does not open."""
        if len(body) < 21 or body[20] != 65:
            raise ValueError("aes128gcm header must carry the sender's 65-byte key as keyid")
        record_size = int.from_bytes(body[16:20], "big")
        if len(body) - 86 > record_size:
            raise ValueError("a push message must be a single aes128gcm record")
        try:
            plaintext = http_ece.decrypt(
                body,
                private_key=self.private_key,
                auth_secret=self.auth_secret,
                version="aes128gcm",
            )
        except http_ece.ECEException as exc:
            raise ValueError(f"cannot decrypt: {exc.message}") from None
        except ValueError as exc:  # a keyid that is not a P-256 point
            raise ValueError(f"cannot decrypt: {exc}") from None
        return bytes(plaintext)


@dataclass(frozen=True)
class PushRequest:
    """One request the service received and how it answered."""

    subscription_id: str
    status: int
    reason: str | None
    """Why the service refused it (None when accepted or answered from the script)."""
    headers: dict[str, str]
    """Request headers, names lowercased."""
    body: bytes
    plaintext: bytes | None = None
    vapid_claims: dict[str, Any] | None = None
    vapid_key: str | None = None

    @property
    def accepted(self) -> bool:
        """True when the service took the message (201)."""
        return self.status == 201

    @property
    def ttl(self) -> int | None:
        """The TTL header as an integer."""
        value = self.headers.get("ttl")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def urgency(self) -> str:
        """The Urgency header (``normal`` when absent)."""
        return self.headers.get("urgency", "normal")

    @property
    def topic(self) -> str | None:
        """The Topic header, if any."""
        return self.headers.get("topic")


class Refused(Exception):
    """A request the push service answers with an error status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class _Queued:
    message: PushRequest
    expires_at: float


@dataclass
class _State:
    subscription: BrowserSubscription
    online: bool = True
    gone_status: int | None = None
    script: list[Reply] = field(default_factory=list)
    queue: list[_Queued] = field(default_factory=list)
    inbox: list[PushRequest] = field(default_factory=list)


def parse_vapid(header: str | None) -> tuple[str, str]:
    """(token, key) of ``vapid t=..., k=...``; Refused(401) when absent or malformed."""
    if header is None:
        raise Refused(401, "missing Authorization (VAPID required)")
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "vapid":
        raise Refused(401, f"Authorization scheme must be vapid, not {scheme!r}")
    params: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            params[name.strip().lower()] = value.strip()
    if "t" not in params or "k" not in params:
        raise Refused(401, "vapid Authorization needs t= and k=")
    return params["t"], params["k"]


def verify_vapid_token(token: str, key: str, *, audience: str, now: float) -> dict[str, Any]:
    """Claims of an ES256 VAPID JWT signed by ``key``; Refused(401) saying what is wrong."""
    try:
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
    except ValueError:
        raise Refused(401, "k is not a base64url P-256 public key") from None
    parts = token.split(".")
    if len(parts) != 3:
        raise Refused(401, "t is not a JWS compact token")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError:
        raise Refused(401, "t is not base64url JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "ES256":
        raise Refused(401, "JWT alg must be ES256")
    if len(signature) != 64:
        raise Refused(401, "ES256 signature must be 64 bytes (r || s)")
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        public.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Refused(401, "JWT signature does not verify with k") from None
    if not isinstance(claims, dict):
        raise Refused(401, "JWT claims must be an object")
    if claims.get("aud") != audience:
        raise Refused(401, f"aud must be {audience!r}, got {claims.get('aud')!r}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise Refused(401, "exp must be an integer")
    if exp <= now:
        raise Refused(401, "token expired")
    if exp > now + MAX_TOKEN_LIFETIME_SECONDS:
        raise Refused(401, "exp is more than 24 hours ahead")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.lower().startswith(("mailto:", "https:")):
        raise Refused(401, "sub must be a mailto: or https: contact")
    return claims


class PushService:
    """A local push service; ``async with`` starts it on a free port and stops it."""

    def __init__(self, *, host: str = HOST, clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self.port = 0
        self.requests: list[PushRequest] = []
        self._clock = clock
        self._states: dict[str, _State] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Condition()

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``: the ``aud`` VAPID tokens must name."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop open connections (pending scripted delays included)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> PushService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def subscribe(self, *, application_server_key: str | None = None) -> BrowserSubscription:
        """A new browser subscription, as ``PushManager.subscribe({applicationServerKey})``."""
        sub_id = uuid.uuid4().hex
        subscription = BrowserSubscription(
            id=sub_id,
            endpoint=f"{self.origin}{PATH_PREFIX}{sub_id}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth_secret=os.urandom(16),
            application_server_key=application_server_key,
        )
        self._states[sub_id] = _State(subscription)
        return subscription

    def script(self, sub_id: str, *replies: Reply) -> None:
        """Answer the next requests for ``sub_id`` with ``replies``, in order, then as usual."""
        self._states[sub_id].script.extend(replies)

    def unsubscribe(self, sub_id: str, *, status: int = 410) -> None:
        """From now on every message to ``sub_id`` is answered ``status`` (410 Gone, or 404)."""
        self._states[sub_id].gone_status = status

    def set_online(self, sub_id: str, online: bool) -> None:
        """Take the browser offline (messages queue) or online (the unexpired queue arrives)."""
        state = self._states[sub_id]
        state.online = online
        if online:
            now = self._clock()
            state.inbox += [q.message for q in state.queue if q.expires_at > now]
            state.queue.clear()

    def inbox(self, sub_id: str) -> list[PushRequest]:
        """Messages the browser has received, oldest first."""
        return list(self._states[sub_id].inbox)

    def pending(self, sub_id: str) -> list[PushRequest]:
        """Messages queued for an offline browser (one per Topic), oldest first."""
        return [q.message for q in self._states[sub_id].queue]

    def requests_for(self, sub_id: str) -> list[PushRequest]:
        """Every request for ``sub_id``, accepted or not, in arrival order."""
        return [r for r in self.requests if r.subscription_id == sub_id]

    async def wait_for_requests(self, sub_id: str, count: int) -> None:
        """Wait until ``sub_id`` has had ``count`` requests (bound it with asyncio.timeout)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.requests_for(sub_id)) >= count)

    async def _record(self, request: PushRequest) -> None:
        self.requests.append(request)
        async with self._changed:
            self._changed.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        connection = h11.Connection(h11.SERVER)
        try:
            while True:
                received = await _read_request(connection, reader)
                if received is None:
                    break
                request, body = received
                status, headers, text = await self._answer(request, body)
                payload = text.encode("utf-8")
                response_headers = [
                    *headers.items(),
                    ("content-type", "text/plain; charset=utf-8"),
                    ("content-length", str(len(payload))),
                ]
                writer.write(
                    connection.send(h11.Response(status_code=status, headers=response_headers))
                    or b""
                )
                writer.write(connection.send(h11.Data(data=payload)) or b"")
                writer.write(connection.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    break
                connection.start_next_cycle()
        except (h11.ProtocolError, ConnectionError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._connections.discard(task)

    async def _answer(self, request: h11.Request, body: bytes) -> tuple[int, dict[str, str], str]:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in request.headers
        }
        target = request.target.decode("latin-1")
        sub_id = target.removeprefix(PATH_PREFIX) if target.startswith(PATH_PREFIX) else ""
        if request.method != b"POST":
            return 405, {"allow": "POST"}, "push messages are POSTed"
        state = self._states.get(sub_id)
        if state is None:
            await self._record(PushRequest(sub_id, 404, "no such subscription", headers, body))
            return 404, {}, "no such subscription"
        if state.gone_status is not None:
            await self._record(
                PushRequest(sub_id, state.gone_status, "unsubscribed", headers, body)
            )
            return state.gone_status, {}, "subscription expired or unsubscribed"
        try:
            message = self._check(state, headers, body)
        except Refused as refused:
            await self._record(PushRequest(sub_id, refused.status, refused.reason, headers, body))
            return refused.status, {}, refused.reason
        reply = state.script.pop(0) if state.script else Reply()
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        if reply.status != 201:
            await self._record(replace(message, status=reply.status))
            return reply.status, dict(reply.headers), reply.body or "scripted answer"
        self._deliver(state, message)
        await self._record(message)
        location = f"/m/{uuid.uuid4().hex}"
        return 201, {"location": location, **reply.headers}, ""

    def _check(self, state: _State, headers: dict[str, str], body: bytes) -> PushRequest:
        subscription = state.subscription
        token, key = parse_vapid(headers.get("authorization"))
        claims = verify_vapid_token(token, key, audience=self.origin, now=self._clock())
        bound = subscription.application_server_key
        if bound is not None and key.rstrip("=") != bound.rstrip("="):
            raise Refused(403, "k is not the applicationServerKey of this subscription")
        ttl = headers.get("ttl")
        if ttl is None or not ttl.isdigit():
            raise Refused(400, "TTL header (non-negative integer seconds) is required")
        urgency = headers.get("urgency", "normal")
        if urgency not in URGENCIES:
            raise Refused(400, f"Urgency must be one of {', '.join(URGENCIES)}")
        topic = headers.get("topic")
        if topic is not None and not (
            0 < len(topic) <= TOPIC_MAX_CHARS and all(c in _BASE64URL for c in topic)
        ):
            raise Refused(400, "Topic must be 1 to 32 base64url characters")
        if headers.get("content-encoding", "").lower() != "aes128gcm":
            raise Refused(415, "Content-Encoding must be aes128gcm")
        if len(body) > MAX_MESSAGE_BYTES:
            raise Refused(413, f"payload over {MAX_MESSAGE_BYTES} bytes")
        try:
            plaintext = subscription.decrypt(body)
        except ValueError as exc:
            raise Refused(400, str(exc)) from None
        return PushRequest(
            subscription.id, 201, None, headers, body, plaintext, vapid_claims=claims, vapid_key=key
        )

    def _deliver(self, state: _State, message: PushRequest) -> None:
        if state.online:
            state.inbox.append(message)
            return
        ttl = message.ttl or 0
        if ttl == 0:
            return  # RFC 8030 §5.2: a zero TTL is not kept for an offline browser
        if message.topic is not None:
            state.queue = [q for q in state.queue if q.message.topic != message.topic]
        state.queue.append(_Queued(message, self._clock() + ttl))


async def _read_request(
    connection: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request, bytes] | None:
    """The next request and its body, or None when the client closed the connection."""
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await reader.read(65_536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_REQUEST_BYTES:
                raise h11.RemoteProtocolError("request body too large")
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            return request, bytes(body)
        else:
            return None
