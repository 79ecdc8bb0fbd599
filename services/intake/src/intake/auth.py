"""Who is calling: upstream apps by API key (hashed, scoped, rate-limited), staff by JWT."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from intake.domain import Actor, Role
from paht_common.db import ChannelListener
from paht_common.problems import Problem

STAFF_ROLES = {Role.COORDINATOR, Role.OFFICER, Role.LEADER, Role.SUPERVISOR}
ALGORITHMS = ["RS256", "ES256"]
JWKS_FETCH_TIMEOUT = 5.0
JWKS_RETRY_SECONDS = 5.0
"""Retry interval while the JWKS cannot be fetched."""
UNKNOWN_KID_REFETCH_SECONDS = 30.0
"""Least time between two JWKS fetches triggered by tokens naming an unknown ``kid``."""

logger = logging.getLogger(__name__)


class AuthError(Exception):
    """Missing or invalid credentials (401) or insufficient rights (403)."""

    def __init__(self, status: int, detail: str, *, field: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field


def hash_key(key: str) -> bytes:
    """SHA-256 of an API key (keys are random, so no salt or slow hash is needed)."""
    return hashlib.sha256(key.encode()).digest()


def new_api_key() -> str:
    """A fresh random API key."""
    return "paht_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class App:
    """An authenticated upstream application."""

    key_id: uuid.UUID
    app_id: str
    scopes: frozenset[str]
    rate_per_minute: int
    expires_at: datetime | None = None

    def require(self, scope: str) -> None:
        """AuthError 403 unless the key carries the scope."""
        if scope not in self.scopes:
            raise AuthError(403, f"API key lacks scope {scope}", field="X-API-Key")


@dataclass
class RateLimiter:
    """Token bucket per API key, in this process (each worker limits on its own)."""

    buckets: dict[uuid.UUID, tuple[float, float]] = field(default_factory=dict)

    def check(self, key_id: uuid.UUID, per_minute: int) -> float:
        """0 when allowed (and consumes a token), else seconds to wait."""
        now = time.monotonic()
        capacity = float(per_minute)
        tokens, last = self.buckets.get(key_id, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * per_minute / 60.0)
        if tokens >= 1.0:
            self.buckets[key_id] = (tokens - 1.0, now)
            return 0.0
        self.buckets[key_id] = (tokens, now)
        return math.ceil((1.0 - tokens) * 60.0 / per_minute)


@dataclass(frozen=True)
class Staff:
    """An authenticated staff member."""

    subject: str
    role: Role
    agency_id: str | None

    def actor(self) -> Actor:
        """The domain actor for this staff member."""
        return Actor(role=self.role, subject=self.subject, agency_id=self.agency_id)


class UnknownKeyId(AuthError):
    """A token names a ``kid`` the JWKS lacks (a JWKS fetch may have been requested)."""


def _algorithm_of(public_key: Any) -> str | None:
    """The one algorithm a PEM public key verifies here (PyJWT raises on a mismatch)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ES256"
    return None


class JwksError(Exception):
    """The JWKS could not be fetched or holds no usable RS256 / ES256 signing key."""


def parse_jwks(document: object) -> tuple[jwt.PyJWK, ...]:
    """The RS256 / ES256 public signing keys of a JWK Set (RFC 7517); JwksError if none."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError("not a JWK Set: expected an object with a 'keys' array")
    # private keys ("d") have no business in a published set: never verify with them
    usable = [k for k in document["keys"] if isinstance(k, dict) and "d" not in k]
    try:
        found = jwt.PyJWKSet.from_dict({"keys": usable}).keys
    except jwt.PyJWTError as exc:
        raise JwksError(f"unusable JWK Set: {exc}") from exc
    keys = tuple(
        k for k in found if k.algorithm_name in ALGORITHMS and k.public_key_use in (None, "sig")
    )
    if not keys:
        raise JwksError("the JWK Set holds no RS256 or ES256 signing key")
    return keys


class JwtVerifier:
    """Verifies staff tokens (RS256 / ES256) against PEM public keys and/or a JWKS URL.

    ``start()`` fetches the JWKS and keeps it fresh in the background; ``verify`` never does
    I/O. A token whose ``kid`` the JWKS lacks schedules one fetch (at most one per
    ``unknown_kid_refetch_seconds``) and is refused meanwhile; ``verify_fresh`` waits for it.
    """

    def __init__(
        self,
        public_keys: list[Any],
        *,
        issuer: str,
        audience: str,
        jwks_url: str = "",
        jwks_refresh_seconds: float = 300.0,
        jwks_retry_seconds: float = JWKS_RETRY_SECONDS,
        unknown_kid_refetch_seconds: float = UNKNOWN_KID_REFETCH_SECONDS,
    ) -> None:
        if not public_keys and not jwks_url:
            raise ValueError("at least one public key (or a JWKS URL) is required")
        self._keys = public_keys
        self._issuer = issuer
        self._audience = audience
        self._jwks_url = jwks_url
        self._refresh_seconds = jwks_refresh_seconds
        self._retry_seconds = jwks_retry_seconds
        self._refetch_interval = unknown_kid_refetch_seconds
        self._jwks: tuple[jwt.PyJWK, ...] = ()
        self._jwks_failing = False
        self._client: httpx.AsyncClient | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._refetch: asyncio.Task[None] | None = None
        self._last_refetch = -math.inf

    def has_keys(self) -> bool:
        """Whether a token can be verified now (PEM keys, or a JWKS fetched at least once)."""
        return bool(self._keys or self._jwks)

    async def ready(self) -> bool:
        """``has_keys()`` as a readiness check."""
        return self.has_keys()

    async def start(self) -> None:
        """Fetch the JWKS and keep it fresh in the background; a no-op without a JWKS URL.

        A failed first fetch is logged, not raised: the service starts, refuses staff tokens
        with 401 until keys arrive, and retries every ``jwks_retry_seconds``.
        """
        if not self._jwks_url or self._refresher is not None:
            return
        try:
            await self.refresh()
        except JwksError as exc:
            logger.warning("JWKS fetch failed, retrying in the background: %s", exc)
        self._refresher = asyncio.create_task(self._keep_fresh(), name="jwks-refresh")

    async def stop(self) -> None:
        """Stop the background fetches and close the HTTP client (idempotent)."""
        tasks = [t for t in (self._refresher, self._refetch) if t is not None]
        self._refresher = self._refetch = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def refresh(self) -> None:
        """Fetch the JWKS now and use its keys; JwksError (old keys kept) when that fails."""
        if not self._jwks_url:
            return
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=JWKS_FETCH_TIMEOUT,
                headers={"Accept": "application/jwk-set+json, application/json"},
            )
        try:
            response = await self._client.get(self._jwks_url)
            response.raise_for_status()
            keys = parse_jwks(response.json())
        except (httpx.HTTPError, ValueError, JwksError) as exc:
            self._jwks_failing = True
            raise JwksError(f"JWKS from {self._jwks_url}: {type(exc).__name__}: {exc}") from exc
        self._jwks = keys
        self._jwks_failing = False
        logger.info("JWKS loaded: %s signing keys", len(keys))

    async def _keep_fresh(self) -> None:
        while True:
            failing = self._jwks_failing or not self._jwks
            await asyncio.sleep(self._retry_seconds if failing else self._refresh_seconds)
            try:
                await self.refresh()
            except JwksError as exc:
                logger.warning("JWKS refresh failed: %s", exc)

    def _request_refetch(self) -> asyncio.Task[None] | None:
        """The fetch an unknown kid triggers: shared while in flight, else rate-limited."""
        if not self._jwks_url:
            return None
        if self._refetch is not None and not self._refetch.done():
            return self._refetch
        now = time.monotonic()
        if now - self._last_refetch < self._refetch_interval:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None  # a caller without an event loop: the periodic refresh will do
        self._last_refetch = now
        self._refetch = loop.create_task(self._refetch_quietly(), name="jwks-refetch")
        return self._refetch

    async def _refetch_quietly(self) -> None:
        try:
            await self.refresh()
        except JwksError as exc:
            logger.warning("JWKS refetch for an unknown kid failed: %s", exc)

    def _claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(401, f"invalid token: {exc}", field="Authorization") from exc
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthError(
                401,
                f"invalid token: algorithm {alg!r} is not allowed (RS256, ES256)",
                field="Authorization",
            )
        kid = header.get("kid")
        candidates: list[tuple[Any, list[str]]] = [
            (key, [alg]) for key in self._keys if _algorithm_of(key) == alg
        ]
        candidates += [
            (k.key, [k.algorithm_name])
            for k in self._jwks
            if k.algorithm_name == alg and (kid is None or k.key_id in (kid, None))
        ]
        last: Exception | None = None
        for key, algorithms in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key=key,
                    algorithms=algorithms,
                    issuer=self._issuer,
                    audience=self._audience,
                    options={"require": ["exp", "sub", "role"]},
                )
                return claims
            except (jwt.InvalidSignatureError, jwt.InvalidKeyError) as exc:
                last = exc  # signed by another key: try the next one
            except jwt.PyJWTError as exc:
                raise AuthError(401, f"invalid token: {exc}", field="Authorization") from exc
        if not self.has_keys():
            raise AuthError(
                401,
                "invalid token: the staff token keys are not available yet (the identity "
                "provider's key set could not be fetched); retry shortly",
                field="Authorization",
            )
        if self._jwks_url and kid is not None and all(k.key_id != kid for k in self._jwks):
            scheduled = self._request_refetch() is not None
            raise UnknownKeyId(
                401,
                f"invalid token: unknown key id {kid!r}"
                + ("; the key set is being fetched again, retry shortly" if scheduled else ""),
                field="Authorization",
            )
        reason = last if last is not None else f"no key verifies {alg}"
        raise AuthError(401, f"invalid token: {reason}", field="Authorization")

    def verify(self, token: str) -> Staff:
        """Staff from a bearer token; AuthError 401 when invalid (never does I/O)."""
        claims = self._claims(token)
        try:
            role = Role(claims["role"])
        except ValueError as exc:
            raise AuthError(401, "unknown role in token", field="Authorization") from exc
        if role not in STAFF_ROLES:
            raise AuthError(401, "token role is not a staff role", field="Authorization")
        agency = claims.get("agency_id")
        if role in (Role.OFFICER, Role.LEADER) and not agency:
            raise AuthError(401, "agency roles need an agency_id claim", field="Authorization")
        return Staff(
            subject=str(claims["sub"]), role=role, agency_id=str(agency) if agency else None
        )

    async def verify_fresh(self, token: str) -> Staff:
        """``verify``, but an unknown ``kid`` first waits for the (rate-limited) JWKS fetch."""
        try:
            return self.verify(token)
        except UnknownKeyId:
            fetch = self._request_refetch()
            if fetch is None:
                raise
            await asyncio.shield(fetch)
            return self.verify(token)


def load_public_keys(pem_text: str) -> list[Any]:
    """Public keys from concatenated PEM blocks."""
    keys: list[Any] = []
    marker = "-----END PUBLIC KEY-----"
    for block in pem_text.split(marker):
        if "-----BEGIN PUBLIC KEY-----" in block:
            keys.append(serialization.load_pem_public_key((block + marker).encode()))
    return keys


def dev_key_pair(directory: Path) -> tuple[Any, Any]:
    """The development signing key pair (ES256), created on first use."""
    private_path = directory / "private.pem"
    if not private_path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        private_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        private_path.chmod(0o600)
    private = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    return private, private.public_key()


def issue_token(
    private_key: Any,
    *,
    subject: str,
    role: str,
    agency_id: str | None,
    issuer: str,
    audience: str,
    ttl_seconds: int = 8 * 3600,
) -> str:
    """A signed ES256 staff token (development and tests)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "role": role,
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if agency_id:
        claims["agency_id"] = agency_id
    return jwt.encode(claims, private_key, algorithm="ES256")


class ApiKeyCache:
    """Recently seen API keys by hash, so a request costs no key query.

    Entries (unknown keys too) live ``ttl`` seconds. Once ``listen`` has run, every change
    to the key table (a NOTIFY from its trigger) drops them all, and while that LISTEN
    connection is down nothing is served from the cache; ``ttl`` is then only a backstop.
    """

    MAX_ENTRIES = 10_000
    CHANNEL = "api_keys"

    def __init__(self, ttl: float, load: Callable[[bytes], Awaitable[App | None]]) -> None:
        self._ttl = ttl
        self._load = load
        self._entries: dict[bytes, tuple[App | None, float]] = {}
        self._listener: ChannelListener | None = None

    async def listen(self, pool: asyncpg.Pool) -> None:
        """Follow the key table's change notifications through ``pool``."""
        self._listener = ChannelListener(pool, self.CHANNEL, self.invalidate)
        await self._listener.ensure()

    async def stop(self) -> None:
        """Stop listening."""
        if self._listener is not None:
            await self._listener.stop()

    async def get(self, key: str) -> App | None:
        """The active key's app, or None when unknown, revoked or expired."""
        key_hash = hash_key(key)
        trusted = self._listener is None or await self._listener.ensure()
        now = time.monotonic()
        entry = self._entries.get(key_hash)
        if trusted and entry is not None and entry[1] > now:
            return entry[0]
        app = await self._load(key_hash)
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        lifetime = self._ttl
        if app is not None and app.expires_at is not None:
            # expiry is a moment, not a change that sends a NOTIFY: never cache past it
            lifetime = min(lifetime, (app.expires_at - datetime.now(UTC)).total_seconds())
        if lifetime > 0 and trusted:
            self._entries[key_hash] = (app, now + lifetime)
        return app

    def invalidate(self) -> None:
        """Forget every cached key (after a create, rotate or revoke)."""
        self._entries.clear()


@dataclass
class AppAuthenticator:
    """Upstream apps by ``X-API-Key``: the cached key, then its rate limit."""

    keys: ApiKeyCache
    limiter: RateLimiter = field(default_factory=RateLimiter)

    async def authenticate(self, x_api_key: str | None) -> App:
        """The caller; AuthError 401 for a missing or unknown key, Problem 429 over its rate."""
        if not x_api_key:
            raise AuthError(401, "X-API-Key header is required", field="X-API-Key")
        caller = await self.keys.get(x_api_key)
        if caller is None:
            raise AuthError(401, "unknown, revoked or expired API key", field="X-API-Key")
        wait = self.limiter.check(caller.key_id, caller.rate_per_minute)
        if wait:
            raise Problem(
                429,
                "Too many requests",
                f"rate limit of {caller.rate_per_minute} requests per minute",
                headers={"Retry-After": str(int(wait))},
                field="X-API-Key",
            )
        return caller
