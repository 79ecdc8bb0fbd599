"""Staff tokens verified against a JWKS served over real HTTP (a local asyncio responder)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from intake.auth import AuthError, JwksError, JwtVerifier, UnknownKeyId, parse_jwks
from intake.domain import Role
from intake.settings import IntakeSettings
from paht_common.staff_auth import staff_verifier

ISSUER = "https://sso.bacninh.gov.vn"
AUDIENCE = "paht"


class JwksServer:
    """A minimal HTTP/1.1 server answering every GET with the current JWKS document."""

    def __init__(self) -> None:
        self.document: Any = {"keys": []}
        self.status = 200
        self.hits = 0
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.hits += 1
            body = json.dumps(self.document).encode()
            head = (
                f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    def publish(self, *jwks: dict[str, Any]) -> None:
        self.document = {"keys": list(jwks)}


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    running = JwksServer()
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def make_verifier(server: JwksServer) -> AsyncIterator[Callable[..., JwtVerifier]]:
    """JwtVerifier on the test server's JWKS; stopped after the test."""
    made: list[JwtVerifier] = []

    def make(*, public_keys: list[Any] | None = None, **options: Any) -> JwtVerifier:
        options.setdefault("jwks_url", server.url)
        verifier = JwtVerifier(public_keys or [], issuer=ISSUER, audience=AUDIENCE, **options)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        await verifier.stop()


def rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> Any:
    return ec.generate_private_key(ec.SECP256R1())


def jwk(private_key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    """The public JWK of a private key, with its kid."""
    algorithm = RSAAlgorithm if isinstance(private_key, rsa.RSAPrivateKey) else ECAlgorithm
    data = algorithm.to_jwk(private_key.public_key(), as_dict=True)
    assert isinstance(data, dict)
    return {**data, "kid": kid, **extra}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "an",
        "role": "coordinator",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return base


def signed(private_key: Any, kid: str | None, algorithm: str = "ES256", **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**overrides), private_key, algorithm=algorithm, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand (what an attacker sends): HS256 with ``secret``, or unsigned."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}"
    if secret is None:
        return signing_input + "."
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


async def eventually(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    """Poll until ``condition`` holds; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        await asyncio.sleep(0.01)


# --- verification ------------------------------------------------------------------------


async def test_rs256_and_es256_tokens_verify_against_the_jwks(server, make_verifier):
    rsa_private, ec_private = rsa_key(), ec_key()
    server.publish(jwk(rsa_private, "rsa-1", use="sig"), jwk(ec_private, "ec-1", alg="ES256"))
    verifier = make_verifier()

    await verifier.start()

    assert verifier.has_keys()
    assert await verifier.ready()
    by_rsa = verifier.verify(signed(rsa_private, "rsa-1", "RS256", role="supervisor"))
    by_ec = verifier.verify(
        signed(ec_private, "ec-1", role="officer", agency_id="ubnd-07627", sub="binh")
    )
    assert by_rsa.role is Role.SUPERVISOR
    assert (by_ec.subject, by_ec.role, by_ec.agency_id) == ("binh", Role.OFFICER, "ubnd-07627")


async def test_the_kid_selects_the_key(server, make_verifier):
    first, second = ec_key(), ec_key()
    server.publish(jwk(first, "a"), jwk(second, "b"))
    verifier = make_verifier()
    await verifier.start()
    fetched = server.hits

    assert verifier.verify(signed(second, "b")).subject == "an"
    with pytest.raises(AuthError) as refused:
        verifier.verify(signed(first, "b"))  # key a's signature under key b's id

    assert refused.value.status == 401
    assert "signature" in refused.value.detail.lower()
    await asyncio.sleep(0.05)
    assert server.hits == fetched  # a known kid never triggers a fetch


async def test_a_token_without_kid_is_tried_against_every_key_of_its_algorithm(
    server, make_verifier
):
    first, second = ec_key(), ec_key()
    server.publish(jwk(first, "a"), jwk(second, "b"))
    verifier = make_verifier()
    await verifier.start()

    assert verifier.verify(signed(second, None)).role is Role.COORDINATOR


async def test_unknown_kid_triggers_a_refetch_and_then_verifies(server, make_verifier):
    old, new = ec_key(), ec_key()
    server.publish(jwk(old, "2026-01"))
    verifier = make_verifier()
    await verifier.start()
    assert server.hits == 1
    server.publish(jwk(old, "2026-01"), jwk(new, "2026-02"))
    token = signed(new, "2026-02")

    with pytest.raises(UnknownKeyId) as refused:
        verifier.verify(token)
    assert refused.value.status == 401
    assert refused.value.field == "Authorization"
    assert "2026-02" in refused.value.detail
    await eventually(lambda: server.hits == 2)
    await eventually(verifier_accepts(verifier, token))

    assert verifier.verify(token).subject == "an"


def verifier_accepts(verifier: JwtVerifier, token: str) -> Callable[[], bool]:
    def accepted() -> bool:
        try:
            verifier.verify(token)
        except AuthError:
            return False
        return True

    return accepted


async def test_verify_fresh_waits_for_the_refetch_of_an_unknown_kid(server, make_verifier):
    old, new = rsa_key(), rsa_key()
    server.publish(jwk(old, "k1"))
    verifier = make_verifier()
    await verifier.start()
    server.publish(jwk(new, "k2"))

    staff = await verifier.verify_fresh(signed(new, "k2", "RS256"))

    assert staff.role is Role.COORDINATOR
    assert server.hits == 2
    with pytest.raises(UnknownKeyId):  # k1 left the set with that fetch
        verifier.verify(signed(old, "k1", "RS256"))


async def test_unknown_kids_refetch_at_most_once_per_interval(server, make_verifier):
    known = ec_key()
    server.publish(jwk(known, "known"))
    verifier = make_verifier(unknown_kid_refetch_seconds=30)
    await verifier.start()

    with pytest.raises(UnknownKeyId):
        await verifier.verify_fresh(signed(ec_key(), "forged-1"))
    with pytest.raises(UnknownKeyId) as second:
        await verifier.verify_fresh(signed(ec_key(), "forged-2"))
    with pytest.raises(UnknownKeyId):
        verifier.verify(signed(ec_key(), "forged-3"))
    await asyncio.sleep(0.05)

    assert server.hits == 2  # the start, then one refetch for the three unknown kids
    assert "fetched again" not in second.value.detail


async def test_periodic_refresh_picks_up_a_new_key_set(server, make_verifier):
    old, new = ec_key(), ec_key()
    server.publish(jwk(old, "old"))
    verifier = make_verifier(jwks_refresh_seconds=0.05, unknown_kid_refetch_seconds=3600)
    await verifier.start()
    server.publish(jwk(new, "new"))

    await eventually(lambda: server.hits >= 3)  # so the second fetch has been applied

    assert verifier.verify(signed(new, "new")).subject == "an"
    with pytest.raises(UnknownKeyId):
        verifier.verify(signed(old, "old"))


@pytest.mark.parametrize(
    "make",
    [
        lambda key, secret: hand_made({"alg": "none", "typ": "JWT", "kid": "ec"}, None),
        lambda key, secret: hand_made({"alg": "HS256", "typ": "JWT", "kid": "hs"}, secret),
        # algorithm confusion: HMAC keyed with the published public key
        lambda key, secret: hand_made(
            {"alg": "HS256", "typ": "JWT", "kid": "ec"},
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        ),
        lambda key, secret: hand_made({"alg": "ES384", "typ": "JWT", "kid": "ec"}, secret),
    ],
    ids=["alg-none", "hs256-with-jwks-secret", "hs256-with-public-key", "es384"],
)
async def test_algorithms_other_than_rs256_and_es256_are_refused(server, make_verifier, make):
    key, secret = ec_key(), b"a-shared-secret-long-enough-for-hs256"
    server.publish(jwk(key, "ec"), {"kty": "oct", "kid": "hs", "k": b64(secret)})
    verifier = make_verifier()
    await verifier.start()
    fetched = server.hits

    with pytest.raises(AuthError) as refused:
        await verifier.verify_fresh(make(key, secret))

    assert refused.value.status == 401
    assert "not allowed" in refused.value.detail
    assert server.hits == fetched


async def test_expired_token_is_refused(server, make_verifier):
    key = rsa_key()
    server.publish(jwk(key, "r"))
    verifier = make_verifier()
    await verifier.start()

    with pytest.raises(AuthError) as refused:
        verifier.verify(signed(key, "r", "RS256", exp=int(time.time()) - 60))

    assert refused.value.status == 401
    assert "expired" in refused.value.detail.lower()


async def test_wrong_issuer_is_refused(server, make_verifier):
    key = ec_key()
    server.publish(jwk(key, "e"))
    verifier = make_verifier()
    await verifier.start()

    with pytest.raises(AuthError, match="issuer"):
        verifier.verify(signed(key, "e", iss="https://elsewhere.example"))


async def test_pem_keys_and_jwks_are_both_tried(server, make_verifier):
    pem_signed, jwks_signed = ec_key(), rsa_key()
    server.publish(jwk(jwks_signed, "sso"))
    verifier = make_verifier(public_keys=[pem_signed.public_key()])
    await verifier.start()

    assert verifier.verify(signed(pem_signed, None)).subject == "an"
    assert verifier.verify(signed(pem_signed, "pem-kid-the-jwks-lacks")).subject == "an"
    assert verifier.verify(signed(jwks_signed, "sso", "RS256")).subject == "an"


# --- availability of the key set ---------------------------------------------------------


async def test_start_survives_an_unreachable_jwks_and_retries_in_the_background(
    server, make_verifier
):
    key = ec_key()
    server.status = 503
    verifier = make_verifier(jwks_retry_seconds=0.05)

    await verifier.start()

    assert not verifier.has_keys()
    assert not await verifier.ready()
    with pytest.raises(AuthError) as refused:
        verifier.verify(signed(key, "e"))
    assert refused.value.status == 401
    assert "not available yet" in refused.value.detail
    server.status = 200
    server.publish(jwk(key, "e"))
    await eventually(verifier.has_keys)
    assert verifier.verify(signed(key, "e")).role is Role.COORDINATOR


async def test_a_failed_refresh_keeps_the_keys_it_had(server, make_verifier):
    key = ec_key()
    server.publish(jwk(key, "e"))
    verifier = make_verifier()
    await verifier.start()
    server.document = {"not": "a key set"}

    with pytest.raises(JwksError, match="'keys' array"):
        await verifier.refresh()

    assert verifier.verify(signed(key, "e")).subject == "an"


async def test_refresh_reports_a_connection_failure(make_verifier):
    verifier = make_verifier(jwks_url="http://127.0.0.1:9/jwks.json")

    with pytest.raises(JwksError, match="127.0.0.1:9"):
        await verifier.refresh()


async def test_start_and_stop_are_no_ops_without_a_jwks_url():
    key = ec_key()
    verifier = JwtVerifier([key.public_key()], issuer=ISSUER, audience=AUDIENCE)

    await verifier.start()
    await verifier.refresh()
    await verifier.stop()

    assert verifier.has_keys()
    assert verifier.verify(signed(key, "any")).subject == "an"


async def test_stop_ends_the_background_refresh(server, make_verifier):
    server.publish(jwk(ec_key(), "e"))
    verifier = make_verifier(jwks_refresh_seconds=0.02)
    await verifier.start()
    await eventually(lambda: server.hits >= 3)

    await verifier.stop()
    hits = server.hits
    await asyncio.sleep(0.1)

    assert server.hits == hits


# --- parsing ---------------------------------------------------------------------------


def test_parse_jwks_keeps_only_public_rs256_and_es256_signing_keys():
    signing, encrypting, private = rsa_key(), rsa_key(), ec_key()
    private_jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(private))
    document = {
        "keys": [
            jwk(signing, "sig"),
            jwk(encrypting, "enc", use="enc"),
            {**private_jwk, "kid": "private"},
            {"kty": "oct", "kid": "hs", "k": b64(b"secret")},
            jwk(ec.generate_private_key(ec.SECP384R1()), "p384"),
            {"kty": "RSA", "kid": "broken"},
            "not a key",
        ]
    }

    keys = parse_jwks(document)

    assert [k.key_id for k in keys] == ["sig"]


@pytest.mark.parametrize(
    "document",
    [[], {"keys": []}, {"keys": "x"}, {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "text"],
    ids=["list", "empty", "not-an-array", "only-hmac", "string"],
)
def test_parse_jwks_refuses_a_set_without_usable_keys(document):
    with pytest.raises(JwksError):
        parse_jwks(document)


# --- settings and wiring -----------------------------------------------------------------


def test_verifier_needs_pem_keys_or_a_jwks_url():
    with pytest.raises(ValueError, match="JWKS"):
        JwtVerifier([], issuer=ISSUER, audience=AUDIENCE)


async def test_staff_verifier_uses_the_jwks_and_not_the_dev_key_pair(server, tmp_path):
    key = ec_key()
    server.publish(jwk(key, "e"))
    settings = IntakeSettings(
        jwks_url=server.url, jwt_dev_key_dir=tmp_path, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    verifier = staff_verifier(settings)
    try:
        assert not verifier.has_keys()
        await verifier.start()
        assert verifier.verify(signed(key, "e")).subject == "an"
    finally:
        await verifier.stop()
    assert not (tmp_path / "private.pem").exists()


def production(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    monkeypatch.setenv("PAHT_ENV", "production")
    monkeypatch.setenv("INTAKE_DEV_API_KEY", "")
    monkeypatch.setenv("INTAKE_ADMIN_TOKEN", "9f2c4e6a8b0d1f3a5c7e9b1d")
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_production_accepts_a_jwks_url_instead_of_pem_keys(monkeypatch):
    production(monkeypatch, INTAKE_JWKS_URL="https://sso.bacninh.gov.vn/jwks.json")

    settings = IntakeSettings()

    assert settings.jwks_url == "https://sso.bacninh.gov.vn/jwks.json"
    assert settings.jwt_public_keys == ""


def test_production_refuses_neither_pem_keys_nor_jwks(monkeypatch):
    production(monkeypatch)

    with pytest.raises(ValidationError, match="INTAKE_JWT_PUBLIC_KEYS"):
        IntakeSettings()


def test_production_refuses_the_development_admin_token(monkeypatch):
    production(monkeypatch, INTAKE_JWKS_URL="https://sso.bacninh.gov.vn/jwks.json")
    monkeypatch.delenv("INTAKE_ADMIN_TOKEN")

    with pytest.raises(ValidationError, match="INTAKE_ADMIN_TOKEN"):
        IntakeSettings()


def test_jwks_refresh_must_be_positive(monkeypatch):
    monkeypatch.setenv("INTAKE_JWKS_REFRESH_SECONDS", "0")

    with pytest.raises(ValidationError, match="jwks_refresh_seconds"):
        IntakeSettings()
