"""Who is calling: upstream apps by API key (hashed, scoped, rate-limited), staff by JWT.

Staff tokens are verified by ``paht_common.staff_auth`` (shared with notify); its names are
re-exported here for intake's modules.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from intake.domain import Actor
from paht_common.db import ChannelListener
from paht_common.problems import Problem
from paht_common.staff_auth import (
    AuthError,
    JwksError,
    JwtVerifier,
    Staff,
    UnknownKeyId,
    dev_key_pair,
    issue_token,
    load_public_keys,
    parse_jwks,
)

__all__ = [
    "ApiKeyCache",
    "App",
    "AppAuthenticator",
    "AuthError",
    "JwksError",
    "JwtVerifier",
    "RateLimiter",
    "Staff",
    "UnknownKeyId",
    "actor_of",
    "dev_key_pair",
    "hash_key",
    "issue_token",
    "load_public_keys",
    "new_api_key",
    "parse_jwks",
]

logger = logging.getLogger(__name__)


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


def actor_of(member: Staff) -> Actor:
    """The domain actor for an authenticated staff member."""
    return Actor(role=member.role, subject=member.subject, agency_id=member.agency_id)


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
