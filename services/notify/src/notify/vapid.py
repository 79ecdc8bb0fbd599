"""VAPID (RFC 8292): the application server's P-256 key and the push services' Authorization."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid.jwt import sign as sign_jwt

from notify.settings import NotifySettings
from paht_common.clock import Clock

logger = logging.getLogger(__name__)

TOKEN_LIFETIME = timedelta(hours=12)
MAX_TOKEN_LIFETIME = timedelta(hours=24)
"""RFC 8292 §2: a push service may reject an ``exp`` more than 24 hours ahead."""
RENEW_BEFORE = timedelta(hours=1)
"""A cached token is replaced once it has less than this left (clock skew at the receiver)."""
MAX_CACHED_ORIGINS = 1024
DEFAULT_PORTS = {"https": 443, "http": 80}


def b64url(data: bytes) -> str:
    """Base64url without padding, as Web Push keys and JWTs are written."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def parse_private_key(pem: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key in a PEM string (``\\n`` escapes accepted); ValueError if not one."""
    text = pem.strip().replace("\\n", "\n")
    try:
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError):
        raise ValueError("VAPID private key is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("VAPID private key must be an EC key on P-256 (prime256v1)")
    return key


def private_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """PKCS#8 PEM of a private key, the form NOTIFY_VAPID_PRIVATE_KEY takes."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def read_or_create_key_file(path: Path) -> ec.EllipticCurvePrivateKey:
    """The key in ``path``; a new one is generated there (mode 0600) when the file is missing.

    Concurrent first starts agree on one key: the file appears atomically with its content.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(private_pem(key))
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(temporary, path)
                logger.info(
                    "generated development VAPID key %s (application server key %s)",
                    path,
                    application_server_key(key.public_key()),
                )
        finally:
            temporary.unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        logger.warning("VAPID key file %s is readable by other users; chmod 600 it", path)
    return parse_private_key(path.read_text(encoding="ascii"))


def load_vapid_key(settings: NotifySettings) -> ec.EllipticCurvePrivateKey:
    """The configured key: NOTIFY_VAPID_PRIVATE_KEY, else the development key file.

    Production never falls back to a generated key.
    """
    if settings.vapid_private_key.strip():
        return parse_private_key(settings.vapid_private_key)
    if settings.env == "production":
        raise ValueError("NOTIFY_VAPID_PRIVATE_KEY is required in production")
    return read_or_create_key_file(settings.vapid_key_file)


def application_server_key(public_key: ec.EllipticCurvePublicKey) -> str:
    """Uncompressed point, base64url: what ``PushManager.subscribe`` takes and VAPID ``k`` is."""
    raw = public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(raw)


def endpoint_origin(endpoint: str) -> str:
    """``scheme://host[:port]`` of a push endpoint (default ports omitted): the JWT ``aud``."""
    parts = urlsplit(endpoint)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in DEFAULT_PORTS or not host:
        raise ValueError("push endpoint must be an absolute http(s) URL")
    port = parts.port  # ValueError for a malformed port
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}"


def check_subject(subject: str) -> str:
    """The ``sub`` claim if it is a mailto: or https: contact; ValueError otherwise."""
    lowered = subject.lower()
    if not (lowered.startswith("mailto:") and "@" in subject) and not (
        lowered.startswith("https://") and len(subject) > len("https://")
    ):
        raise ValueError("VAPID subject must be a mailto: address or an https: URL")
    return subject


class VapidSigner:
    """Signs ``Authorization: vapid`` headers with one key, caching a token per push origin."""

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        *,
        subject: str,
        clock: Clock,
        lifetime: timedelta = TOKEN_LIFETIME,
    ) -> None:
        if not RENEW_BEFORE < lifetime <= MAX_TOKEN_LIFETIME:
            raise ValueError("VAPID token lifetime must be between 1 and 24 hours")
        self._key = private_key
        self._subject = check_subject(subject)
        self._clock = clock
        self._lifetime = lifetime
        self._public = application_server_key(private_key.public_key())
        self._cache: dict[str, tuple[str, datetime]] = {}

    @property
    def application_server_key(self) -> str:
        """The public key browsers subscribe with (base64url uncompressed P-256 point)."""
        return self._public

    def authorization(self, endpoint: str) -> str:
        """``vapid t=<jwt>, k=<key>`` for a push endpoint (or its origin); ValueError if bad."""
        origin = endpoint_origin(endpoint)
        now = self._clock.now()
        cached = self._cache.get(origin)
        if cached is not None and cached[1] - now > RENEW_BEFORE:
            return cached[0]
        expires = now + self._lifetime
        claims = {"aud": origin, "exp": int(expires.timestamp()), "sub": self._subject}
        token = str(sign_jwt(claims, self._key))
        header = f"vapid t={token}, k={self._public}"
        if len(self._cache) >= MAX_CACHED_ORIGINS:
            self._cache = {o: c for o, c in self._cache.items() if c[1] - now > RENEW_BEFORE}
            if len(self._cache) >= MAX_CACHED_ORIGINS:
                self._cache.clear()
        self._cache[origin] = (header, expires)
        return header


def vapid_signer(settings: NotifySettings, clock: Clock) -> VapidSigner:
    """The signer the service runs with (key from settings or the development key file)."""
    return VapidSigner(load_vapid_key(settings), subject=settings.vapid_subject, clock=clock)
