"""Staff identity shared by every service: roles, staff JWT verification, development tokens.

Staff tokens are RS256 / ES256 JWTs issued by the province's identity provider (or, in
development, by ``python -m intake issue-token``) and verified against PEM public keys and/or
a JWKS URL. Claims: ``sub``, ``role``, ``agency_id`` (officers and leaders), optional ``name``
and ``email`` (the staff directory notify reads its recipients from), ``iss``, ``aud``, ``exp``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import Field

from paht_common.roles import Role
from paht_common.settings import BaseServiceSettings

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


@dataclass(frozen=True)
class Staff:
    """An authenticated staff member, as the token names them."""

    subject: str
    role: Role
    agency_id: str | None
    name: str | None = None
    email: str | None = None


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
        name, email = claims.get("name"), claims.get("email")
        return Staff(
            subject=str(claims["sub"]),
            role=role,
            agency_id=str(agency) if agency else None,
            name=name if isinstance(name, str) and name else None,
            email=email if isinstance(email, str) and email else None,
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
    name: str | None = None,
    email: str | None = None,
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
    if name:
        claims["name"] = name
    if email:
        claims["email"] = email
    return jwt.encode(claims, private_key, algorithm="ES256")


class StaffTokenSettings(BaseServiceSettings):
    """Where a service finds the keys that verify staff tokens (``<PREFIX>_JWT_*``)."""

    jwt_public_keys: str = ""
    """PEM public keys (concatenated) of staff JWTs; with no JWKS URL either, the dev pair."""
    jwks_url: str = ""
    """JWKS (RFC 7517) of the identity provider that signs staff JWTs; tried with the PEM keys."""
    jwks_refresh_seconds: float = Field(300, gt=0)
    """How often the JWKS is fetched again (an unknown ``kid`` also triggers a fetch)."""
    jwt_dev_key_dir: Path = Path(".paht/dev-jwt")
    jwt_issuer: str = "paht-dev"
    jwt_audience: str = "paht"

    def secret_fields(self) -> dict[str, str]:
        """Production needs real staff token keys: PEM keys or a JWKS URL."""
        secrets = super().secret_fields()
        if not self.jwt_public_keys and not self.jwks_url:
            prefix = str(self.model_config.get("env_prefix", ""))
            secrets[f"{prefix}JWT_PUBLIC_KEYS"] = ""  # or <PREFIX>_JWKS_URL
        return secrets


def staff_verifier(settings: StaffTokenSettings) -> JwtVerifier:
    """Verifier for staff JWTs: PEM keys and/or a JWKS URL, else the development key pair.

    With a JWKS URL the caller must ``await verifier.start()`` (and ``stop()``) around serving.
    """
    if settings.jwt_public_keys:
        keys = load_public_keys(settings.jwt_public_keys)
    elif settings.jwks_url:
        keys = []
    else:
        _, public = dev_key_pair(settings.jwt_dev_key_dir)
        keys = [public]
    return JwtVerifier(
        keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        jwks_url=settings.jwks_url,
        jwks_refresh_seconds=settings.jwks_refresh_seconds,
    )
