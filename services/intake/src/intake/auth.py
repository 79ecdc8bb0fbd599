"""Who is calling: upstream apps by API key (hashed, scoped, rate-limited), staff by JWT."""

from __future__ import annotations

import hashlib
import math
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from intake.domain import Actor, Role

STAFF_ROLES = {Role.COORDINATOR, Role.OFFICER, Role.LEADER, Role.SUPERVISOR}
ALGORITHMS = ["RS256", "ES256"]


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


class JwtVerifier:
    """Verifies staff tokens against configured public keys (RS256 / ES256)."""

    def __init__(self, public_keys: list[Any], *, issuer: str, audience: str) -> None:
        if not public_keys:
            raise ValueError("at least one public key is required")
        self._keys = public_keys
        self._issuer = issuer
        self._audience = audience

    def verify(self, token: str) -> Staff:
        """Staff from a bearer token; AuthError 401 when invalid."""
        last: Exception | None = None
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key=key,
                    algorithms=ALGORITHMS,
                    issuer=self._issuer,
                    audience=self._audience,
                    options={"require": ["exp", "sub", "role"]},
                )
                break
            except jwt.InvalidSignatureError as exc:
                last = exc
            except jwt.PyJWTError as exc:
                raise AuthError(401, f"invalid token: {exc}", field="Authorization") from exc
        else:
            raise AuthError(401, f"invalid token: {last}", field="Authorization")
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
