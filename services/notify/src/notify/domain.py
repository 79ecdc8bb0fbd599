"""Notification rules, pure: which events notify, what the body says, when to retry."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from paht_common.clock import to_local_iso
from paht_common.events import (
    ClockView,
    Envelope,
    Payload,
    SlaClocksChanged,
    SlaThresholdReached,
)

WEBHOOK = "webhook"
WEB_PUSH = "web_push"
EMAIL = "email"
CHANNELS = (WEBHOOK, WEB_PUSH, EMAIL)

REPORT_ASSIGNED = "report.assigned"
SLA_WARNING = "sla.warning"
SLA_BREACHED = "sla.breached"

SECRET_PREFIX = "whsec_"
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64

PushUrgency = Literal["very-low", "low", "normal", "high"]
"""RFC 8030 Urgency of a Web Push message."""

Verdict = Literal["delivered", "retry", "failed", "gone"]
"""What one attempt means: done, try again later, give up, or the endpoint is gone for good."""

DeliveryStatus = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True)
class Notification:
    """A notification to send to every active subscription of an agency."""

    event_type: str
    agency_id: str
    report_id: uuid.UUID
    body: str


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a dispatcher holds the lease of, with its subscription's target."""

    id: uuid.UUID
    subscription_id: uuid.UUID
    channel: str
    event_type: str
    body: str
    attempts: int
    """Attempts so far, this one included: the fencing token for recording its outcome."""
    url: str | None
    """Webhook URL, or the push service endpoint of a Web Push subscription."""
    secret: str | None = field(repr=False)
    """Standard Webhooks signing secret (webhook channel only)."""
    p256dh: str | None = None
    """Web Push: the browser's P-256 public key, base64url (RFC 8291 ``keys.p256dh``)."""
    auth: str | None = field(default=None, repr=False)
    """Web Push: the browser's 16-byte authentication secret, base64url (``keys.auth``)."""
    email: str | None = None
    """Email: the recipient address."""
    urgency: PushUrgency = "normal"
    topic: str | None = None
    """Web Push ``Topic``: a newer message with the same topic replaces a pending one."""
    ttl_seconds: int = 86_400
    """Web Push ``TTL``: how long the push service keeps an undelivered message."""


@dataclass(frozen=True)
class EmailContent:
    """What an email delivery's frozen ``body`` holds (as JSON): subject, plain text, HTML."""

    subject: str
    text: str
    html: str

    def to_body(self) -> str:
        """The JSON stored as the delivery's body."""
        return json.dumps(
            {"subject": self.subject, "text": self.text, "html": self.html}, ensure_ascii=False
        )

    @classmethod
    def from_body(cls, body: str) -> EmailContent:
        """Parse a stored body; ValueError when it is not an email body."""
        data = json.loads(body)
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("subject", "text", "html")
        ):
            raise ValueError("not an email body: expected subject, text and html strings")
        return cls(subject=data["subject"], text=data["text"], html=data["html"])


@dataclass(frozen=True)
class AttemptResult:
    """What a channel observed on one attempt."""

    verdict: Verdict
    status_code: int | None = None
    retry_after: float | None = None
    """Seconds the receiver asked us to wait (Retry-After), if any."""
    error: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Delays between attempts; after the last delay the next failure is final."""

    schedule: tuple[float, ...]
    max_retry_after: float = 86_400.0
    jitter: float = 0.0
    """Upper bound of the random stretch applied to each delay, as a fraction."""

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1


@dataclass(frozen=True)
class Decision:
    """Outcome of an attempt, ready to be recorded."""

    outcome: Verdict
    status_code: int | None
    error: str | None
    retry_in: float | None = None
    """Seconds until the next attempt when the outcome is ``retry``."""

    @property
    def status(self) -> DeliveryStatus:
        if self.outcome == "delivered":
            return "delivered"
        return "pending" if self.outcome == "retry" else "failed"


def delivery_id(event_id: uuid.UUID, subscription_id: uuid.UUID) -> uuid.UUID:
    """Deterministic delivery id (the webhook-id): the same event and subscription, the same id."""
    return uuid.uuid5(event_id, str(subscription_id))


def notification_for(envelope: Envelope[Payload]) -> Notification | None:
    """The notification an SLA event causes, or None when agencies need not hear about it."""
    payload = envelope.payload
    if isinstance(payload, SlaClocksChanged):
        if payload.trigger != "routed" or payload.agency_id is None:
            return None
        event_type = REPORT_ASSIGNED
        data = assigned_data(payload)
        agency_id = payload.agency_id
    elif isinstance(payload, SlaThresholdReached):
        if payload.agency_id is None:
            return None
        event_type = SLA_BREACHED if payload.percent >= 100 else SLA_WARNING
        data = threshold_data(payload)
        agency_id = payload.agency_id
    else:
        return None
    return Notification(
        event_type=event_type,
        agency_id=agency_id,
        report_id=payload.report_id,
        body=render_body(event_type, envelope.occurred_at, data),
    )


def render_body(event_type: str, occurred_at: datetime, data: dict[str, Any]) -> str:
    """Standard Webhooks JSON body, UTF-8 text kept as is (Vietnamese is not escaped)."""
    document = {"type": event_type, "timestamp": to_local_iso(occurred_at), "data": data}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def _local(value: datetime | None) -> str | None:
    return None if value is None else to_local_iso(value)


def _clock_data(clock: ClockView) -> dict[str, Any]:
    data = clock.model_dump(mode="json")
    data["started_at"] = _local(clock.started_at)
    data["due_at"] = _local(clock.due_at)
    return data


def _due_at(clocks: list[ClockView], kind: str) -> str | None:
    return next((_local(c.due_at) for c in clocks if c.kind == kind), None)


def assigned_data(payload: SlaClocksChanged) -> dict[str, Any]:
    """``data`` of report.assigned: the report, its agency and its SLA clocks (times in +07:00)."""
    return {
        "report_id": str(payload.report_id),
        "number": payload.number,
        "agency_id": payload.agency_id,
        "category": payload.category,
        "clocks": [_clock_data(c) for c in payload.clocks],
        "acknowledge_due_at": _due_at(payload.clocks, "acknowledgement"),
        "resolution_due_at": _due_at(payload.clocks, "resolution"),
    }


def threshold_data(payload: SlaThresholdReached) -> dict[str, Any]:
    """``data`` of sla.warning / sla.breached (times in +07:00)."""
    return {
        "report_id": str(payload.report_id),
        "number": payload.number,
        "agency_id": payload.agency_id,
        "clock": payload.clock,
        "percent": payload.percent,
        "due_at": to_local_iso(payload.due_at),
        "escalation_level": payload.escalation_level,
    }


def webhook_secret_bytes(secret: str) -> bytes:
    """Key bytes of a ``whsec_<base64>`` secret; ValueError (without the secret) if malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"secret must start with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("secret must be whsec_ followed by standard base64") from None
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise ValueError(
            f"secret must encode {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes, got {len(key)}"
        )
    return key


def classify_http_status(status_code: int) -> Verdict:
    """Standard Webhooks status semantics: 2xx done, 410 gone, 408/429/5xx retry, 4xx give up.

    Anything else (1xx, 3xx: redirects are never followed) is a failed attempt worth retrying.
    """
    if 200 <= status_code < 300:
        return "delivered"
    if status_code == 410:
        return "gone"
    if status_code in (408, 429) or status_code >= 500:
        return "retry"
    if 400 <= status_code < 500:
        return "failed"
    return "retry"


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent or bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - now).total_seconds(), 0.0)


def decide(
    result: AttemptResult, *, attempts: int, policy: RetryPolicy, jitter: float = 0.0
) -> Decision:
    """Decision after attempt number ``attempts`` (1-based); ``jitter`` is a sample in [0, 1].

    Retries follow the schedule, never sooner than the receiver's Retry-After (capped); when
    the schedule is exhausted the delivery fails.
    """
    if result.verdict != "retry":
        return Decision(result.verdict, result.status_code, result.error)
    if attempts > len(policy.schedule):
        reason = result.error or f"HTTP {result.status_code}"
        return Decision(
            "failed", result.status_code, f"gave up after {attempts} attempts: {reason}"
        )
    delay = policy.schedule[attempts - 1] * (1 + policy.jitter * jitter)
    if result.retry_after is not None:
        delay = max(delay, min(result.retry_after, policy.max_retry_after))
    return Decision("retry", result.status_code, result.error, retry_in=delay)


def validate_email_address(value: str) -> str:
    """The normalised form of one bare address (no display name); ValueError saying why not.

    Syntax only, no DNS lookup (email-validator): local part at most 64 characters, whole
    address at most 254 octets, valid domain labels; the domain is lowercased, the local part
    NFC-normalised, an internationalised domain kept in Unicode. Special-use domains
    (localhost, .local, .test, ...), quoted local parts and IP-literal domains are refused.
    """
    from email_validator import EmailNotValidError, validate_email

    try:
        checked = validate_email(value, check_deliverability=False, strict=True)
    except EmailNotValidError as exc:
        raise ValueError(f"invalid email address: {exc}") from None
    return str(checked.normalized)


PUSH_P256DH_BYTES = 65
PUSH_AUTH_BYTES = 16
PUSH_TOPIC_MAX_CHARS = 32
"""RFC 8030 §5.4: a Topic is at most 32 characters of the base64url alphabet."""
_BASE64URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _base64url_bytes(value: str, *, name: str) -> bytes:
    """Bytes of base64url text (padding optional); ValueError naming the field, not the value."""
    text = value.rstrip("=")
    if not text or any(c not in _BASE64URL_CHARS for c in text) or len(text) % 4 == 1:
        raise ValueError(f"{name} must be base64url (A-Z a-z 0-9 - _, no + or /)")
    if len(value) - len(text) > 2 or ("=" in value and len(value) % 4):
        raise ValueError(f"{name} has malformed base64url padding")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def validate_push_keys(p256dh: str, auth: str) -> None:
    """Check a PushSubscription's keys; ValueError saying which is wrong (never echoing auth)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    point = _base64url_bytes(p256dh, name="keys.p256dh")
    if len(point) != PUSH_P256DH_BYTES or point[0] != 0x04:
        raise ValueError(
            f"keys.p256dh must be an uncompressed P-256 point ({PUSH_P256DH_BYTES} bytes "
            f"starting 0x04), got {len(point)} bytes"
        )
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise ValueError("keys.p256dh is not a point on the P-256 curve") from None
    secret = _base64url_bytes(auth, name="keys.auth")
    if len(secret) != PUSH_AUTH_BYTES:
        raise ValueError(f"keys.auth must encode {PUSH_AUTH_BYTES} bytes, got {len(secret)}")


def as_push_topic(value: str) -> str:
    """``value`` when it is a valid Topic, else a 32-character base64url digest of it."""
    import hashlib

    if 0 < len(value) <= PUSH_TOPIC_MAX_CHARS and all(c in _BASE64URL_CHARS for c in value):
        return value
    digest = hashlib.sha256(value.encode("utf-8")).digest()[:24]
    return base64.urlsafe_b64encode(digest).decode("ascii")


def report_topic(report_id: uuid.UUID) -> str:
    """Web Push Topic of every push about a report (22 base64url characters): a newer alert
    about the report replaces one a push service still holds for an offline device."""
    return base64.urlsafe_b64encode(report_id.bytes).decode("ascii").rstrip("=")
