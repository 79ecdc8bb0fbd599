"""Unit tests of intake authentication: API keys, scopes, the rate limiter and staff JWTs."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from intake import auth
from intake.auth import (
    App,
    AuthError,
    JwtVerifier,
    RateLimiter,
    Staff,
    hash_key,
    issue_token,
    load_public_keys,
    new_api_key,
)
from intake.domain import Actor, Role

ISSUER = "paht-test"
AUDIENCE = "paht"


def ec_key() -> Any:
    return ec.generate_private_key(ec.SECP256R1())


def pem(public_key: Any) -> str:
    data: bytes = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data.decode()


def token(private_key: Any, *, role: str = "coordinator", **overrides: Any) -> str:
    kwargs: dict[str, Any] = {
        "subject": "alice",
        "role": role,
        "agency_id": None,
        "issuer": ISSUER,
        "audience": AUDIENCE,
    }
    kwargs.update(overrides)
    return issue_token(private_key, **kwargs)


def verifier(*private_keys: Any) -> JwtVerifier:
    return JwtVerifier([k.public_key() for k in private_keys], issuer=ISSUER, audience=AUDIENCE)


# --- API keys ----------------------------------------------------------------------------


def test_hash_key_is_sha256_and_stable():
    assert hash_key("paht_abc") == hash_key("paht_abc")
    assert len(hash_key("paht_abc")) == 32
    assert hash_key("paht_abc") != hash_key("paht_abd")


def test_new_api_keys_are_prefixed_long_and_unique():
    keys = {new_api_key() for _ in range(200)}

    assert len(keys) == 200
    assert all(k.startswith("paht_") and len(k) >= 40 for k in keys)


def test_app_without_the_scope_is_refused_with_403():
    caller = App(
        key_id=uuid.uuid4(),
        app_id="hue-s",
        scopes=frozenset({"reports:read"}),
        rate_per_minute=60,
    )

    caller.require("reports:read")
    with pytest.raises(AuthError) as refused:
        caller.require("reports:write")

    assert refused.value.status == 403
    assert refused.value.field == "X-API-Key"


# --- rate limiter ------------------------------------------------------------------------


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr(auth.time, "monotonic", fake)
    return fake


def test_rate_limiter_allows_a_burst_up_to_the_rate_then_asks_to_wait(clock):
    limiter = RateLimiter()
    key = uuid.uuid4()

    allowed = [limiter.check(key, 3) for _ in range(3)]
    refused = limiter.check(key, 3)

    assert allowed == [0.0, 0.0, 0.0]
    assert refused == 20  # one token per 60/3 s


def test_rate_limiter_refills_with_time(clock):
    limiter = RateLimiter()
    key = uuid.uuid4()
    for _ in range(2):
        limiter.check(key, 2)
    assert limiter.check(key, 2) > 0

    clock.now += 30.0

    assert limiter.check(key, 2) == 0.0
    assert limiter.check(key, 2) > 0


def test_refused_requests_do_not_consume_tokens(clock):
    limiter = RateLimiter()
    key = uuid.uuid4()
    limiter.check(key, 60)
    for _ in range(59):
        limiter.check(key, 60)
    for _ in range(10):
        assert limiter.check(key, 60) > 0

    clock.now += 1.0

    assert limiter.check(key, 60) == 0.0


def test_rate_limiter_keeps_keys_apart(clock):
    limiter = RateLimiter()
    busy, quiet = uuid.uuid4(), uuid.uuid4()
    limiter.check(busy, 1)

    assert limiter.check(busy, 1) > 0
    assert limiter.check(quiet, 1) == 0.0


def test_retry_after_is_a_whole_number_of_seconds_at_least_one(clock):
    limiter = RateLimiter()
    key = uuid.uuid4()
    limiter.check(key, 600)
    for _ in range(599):
        limiter.check(key, 600)

    wait = limiter.check(key, 600)

    assert wait == 1
    assert float(wait).is_integer()


# --- staff tokens ------------------------------------------------------------------------


def test_valid_token_gives_the_staff_member():
    key = ec_key()

    staff = verifier(key).verify(token(key, role="officer", agency_id="ubnd-kinh-bac"))

    assert staff == Staff(subject="alice", role=Role.OFFICER, agency_id="ubnd-kinh-bac")
    assert auth.actor_of(staff) == Actor(Role.OFFICER, "alice", "ubnd-kinh-bac")


def test_token_signed_by_any_configured_key_is_accepted():
    old, new = ec_key(), ec_key()

    staff = verifier(old, new).verify(token(new))

    assert staff.role is Role.COORDINATOR


def test_rsa_token_is_accepted():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {
        "sub": "bob",
        "role": "supervisor",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int(time.time()) + 60,
    }

    staff = verifier(key).verify(jwt.encode(claims, key, algorithm="RS256"))

    assert staff.role is Role.SUPERVISOR


def unsigned_token() -> str:
    return jwt.encode({"sub": "x", "role": "coordinator", "exp": 4_000_000_000}, None, "none")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda key: "garbage", "invalid token"),
        (lambda key: token(key, ttl_seconds=-60), "expired"),
        (lambda key: token(ec_key()), "invalid token"),
        (lambda key: token(key, issuer="someone-else"), "issuer"),
        (lambda key: token(key, audience="someone-else"), "audience"),
        (lambda key: unsigned_token(), "invalid token"),
        (
            lambda key: jwt.encode(
                {"sub": "x", "role": "coordinator", "exp": 4_000_000_000},
                "shared-secret",
                algorithm="HS256",
            ),
            "invalid token",
        ),
        (lambda key: token(key, role="reporter"), "not a staff role"),
        (lambda key: token(key, role="system"), "not a staff role"),
        (lambda key: token(key, role="mayor"), "unknown role"),
        (lambda key: token(key, role="officer"), "agency_id"),
        (lambda key: token(key, role="leader"), "agency_id"),
    ],
    ids=[
        "garbage",
        "expired",
        "foreign-key",
        "wrong-issuer",
        "wrong-audience",
        "alg-none",
        "hs256",
        "reporter-role",
        "system-role",
        "unknown-role",
        "officer-without-agency",
        "leader-without-agency",
    ],
)
def test_bad_token_is_refused_with_401(make, message):
    key = ec_key()

    with pytest.raises(AuthError) as refused:
        verifier(key).verify(make(key))

    assert refused.value.status == 401
    assert refused.value.field == "Authorization"
    assert message in refused.value.detail.lower()


def test_token_without_exp_is_refused():
    key = ec_key()
    claims = {"sub": "x", "role": "coordinator", "iss": ISSUER, "aud": AUDIENCE}

    with pytest.raises(AuthError) as refused:
        verifier(key).verify(jwt.encode(claims, key, algorithm="ES256"))

    assert refused.value.status == 401
    assert "exp" in refused.value.detail


def test_verifier_needs_a_key():
    with pytest.raises(ValueError, match="public key"):
        JwtVerifier([], issuer=ISSUER, audience=AUDIENCE)


def test_load_public_keys_reads_every_pem_block():
    first, second = ec_key(), ec_key()
    text = pem(first.public_key()) + "\n" + pem(second.public_key())

    keys = load_public_keys(text)

    assert len(keys) == 2
    staff = JwtVerifier(keys, issuer=ISSUER, audience=AUDIENCE).verify(token(second))
    assert staff.subject == "alice"


def test_load_public_keys_ignores_text_without_keys():
    assert load_public_keys("") == []
    assert load_public_keys("no keys here") == []
