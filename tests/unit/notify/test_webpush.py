"""Web Push without a network: subscription keys, topics, statuses, encryption, VAPID tokens."""

from __future__ import annotations

import base64
import os
import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from notify.channels.webpush import (
    MAX_MESSAGE_BYTES,
    classify_push_status,
    encrypt_payload,
    push_headers,
)
from notify.domain import (
    WEB_PUSH,
    ClaimedDelivery,
    as_push_topic,
    report_topic,
    validate_push_keys,
)
from notify.settings import NotifySettings
from notify.vapid import (
    VapidSigner,
    application_server_key,
    endpoint_origin,
    load_vapid_key,
    parse_private_key,
    private_pem,
    read_or_create_key_file,
)
from paht_common.testing import FakeClock

NOW = datetime(2025, 3, 4, 2, 0, tzinfo=UTC)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def browser_keys() -> tuple[str, str]:
    """(p256dh, auth) as PushSubscription.toJSON().keys gives them."""
    key = ec.generate_private_key(ec.SECP256R1())
    return application_server_key(key.public_key()), b64url(os.urandom(16))


# subscription keys


def test_browser_keys_are_accepted() -> None:
    p256dh, auth = browser_keys()
    validate_push_keys(p256dh, auth)


def test_padded_base64url_is_accepted() -> None:
    p256dh, auth = browser_keys()
    validate_push_keys(p256dh + "=", auth + "==")


@pytest.mark.parametrize(
    ("p256dh", "message"),
    [
        (b64url(os.urandom(64)), "got 64 bytes"),
        (b64url(os.urandom(66)), "got 66 bytes"),
        (b64url(b"\x02" + os.urandom(32)), "got 33 bytes"),  # a compressed point
        (b64url(b"\x05" + os.urandom(64)), "starting 0x04"),
        ("", "must be base64url"),
    ],
)
def test_p256dh_of_the_wrong_shape_is_refused(p256dh: str, message: str) -> None:
    _, auth = browser_keys()
    with pytest.raises(ValueError, match=message):
        validate_push_keys(p256dh, auth)


def test_p256dh_in_standard_base64_is_refused() -> None:
    p256dh, auth = browser_keys()
    while "-" not in p256dh and "_" not in p256dh:
        p256dh, auth = browser_keys()
    standard = p256dh.replace("-", "+").replace("_", "/")
    with pytest.raises(ValueError, match=r"keys\.p256dh must be base64url"):
        validate_push_keys(standard, auth)


@pytest.mark.parametrize("text", ["not base64url!", "a b", "AAAAA"])
def test_text_that_is_not_base64url_is_refused(text: str) -> None:
    _, auth = browser_keys()
    with pytest.raises(ValueError, match=r"keys\.p256dh must be base64url"):
        validate_push_keys(text, auth)


def test_65_bytes_off_the_curve_are_refused() -> None:
    _, auth = browser_keys()
    off_curve = b"\x04" + (1).to_bytes(32, "big") + (1).to_bytes(32, "big")
    with pytest.raises(ValueError, match="not a point on the P-256 curve"):
        validate_push_keys(b64url(off_curve), auth)


@pytest.mark.parametrize("size", [0, 8, 15, 17, 32])
def test_auth_must_be_16_bytes(size: int) -> None:
    p256dh, _ = browser_keys()
    auth = b64url(os.urandom(size))
    with pytest.raises(ValueError, match=r"keys\.auth") as caught:
        validate_push_keys(p256dh, auth)
    if auth:
        assert auth not in str(caught.value)


def test_auth_that_is_not_base64url_is_refused_without_echoing_it() -> None:
    p256dh, _ = browser_keys()
    auth = "secret+value/xy=="
    with pytest.raises(ValueError, match=r"keys\.auth must be base64url") as caught:
        validate_push_keys(p256dh, auth)
    assert auth not in str(caught.value)


# topics


def test_a_valid_topic_is_kept() -> None:
    assert as_push_topic("report-42_assigned") == "report-42_assigned"
    assert as_push_topic("A" * 32) == "A" * 32


@pytest.mark.parametrize("topic", ["A" * 33, "sla.warning:42", "báo cáo", ""])
def test_other_topics_become_a_32_character_digest(topic: str) -> None:
    derived = as_push_topic(topic)
    assert len(derived) == 32
    assert set(derived) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert as_push_topic(topic) == derived


def test_report_topics_are_valid_stable_per_report_and_distinct_across_reports() -> None:
    report, other = uuid.uuid4(), uuid.uuid4()
    topic = report_topic(report)
    assert len(topic) == 22
    assert as_push_topic(topic) == topic  # already a valid RFC 8030 topic
    assert report_topic(report) == topic
    assert report_topic(other) != topic


# statuses


@pytest.mark.parametrize("code", [200, 201, 202])
def test_accepted_messages_are_delivered(code: int) -> None:
    assert classify_push_status(code) == "delivered"


@pytest.mark.parametrize("code", [404, 410])
def test_unknown_or_expired_subscriptions_are_gone(code: int) -> None:
    assert classify_push_status(code) == "gone"


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_retried(code: int) -> None:
    assert classify_push_status(code) == "retry"


@pytest.mark.parametrize("code", [400, 401, 403, 413, 415])
def test_other_client_errors_fail(code: int) -> None:
    assert classify_push_status(code) == "failed"


# encryption


def test_encryption_reproduces_the_rfc_8291_example() -> None:
    """RFC 8291 Appendix A: the same keys and salt give the published message, byte for byte."""
    sender = ec.derive_private_key(
        int.from_bytes(b64url_decode("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"), "big"),
        ec.SECP256R1(),
    )
    message = encrypt_payload(
        b"When I grow up, I want to be a watermelon",
        p256dh="BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        auth="BTBZMqHH6r4Tts7J_aSIgg",
        salt=b64url_decode("DGv6ra1nlYgDCS1FRnbzlw"),
        sender_key=sender,
    )
    assert b64url(message) == (
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmY"
        "WAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexS"
        "gSxsj_Qulcy4a-fN"
    )


def test_each_message_has_a_fresh_salt_and_sender_key() -> None:
    p256dh, auth = browser_keys()
    first = encrypt_payload(b"{}", p256dh=p256dh, auth=auth)
    second = encrypt_payload(b"{}", p256dh=p256dh, auth=auth)
    assert first[:16] != second[:16]
    assert first[21:86] != second[21:86]


def test_encrypted_size_is_86_byte_header_plus_body_plus_17() -> None:
    p256dh, auth = browser_keys()
    limit = MAX_MESSAGE_BYTES - 86 - 17
    assert len(encrypt_payload(b"x" * limit, p256dh=p256dh, auth=auth)) == MAX_MESSAGE_BYTES


def delivery(**overrides: object) -> ClaimedDelivery:
    p256dh, auth = browser_keys()
    fields: dict[str, object] = {
        "id": uuid.uuid4(),
        "subscription_id": uuid.uuid4(),
        "channel": WEB_PUSH,
        "event_type": "report.assigned",
        "body": "{}",
        "attempts": 1,
        "url": "https://push.example.net/send/abc",
        "secret": None,
        "p256dh": p256dh,
        "auth": auth,
    }
    fields.update(overrides)
    return ClaimedDelivery(**fields)  # type: ignore[arg-type]


def test_push_headers_carry_ttl_urgency_topic_and_coding() -> None:
    headers = push_headers(
        delivery(urgency="high", topic="sla.warning:42", ttl_seconds=3600), "vapid t=x, k=y"
    )
    assert headers["ttl"] == "3600"
    assert headers["urgency"] == "high"
    assert headers["topic"] == as_push_topic("sla.warning:42")
    assert headers["content-encoding"] == "aes128gcm"
    assert headers["content-type"] == "application/octet-stream"
    assert headers["authorization"] == "vapid t=x, k=y"


def test_push_headers_omit_an_unset_topic() -> None:
    assert "topic" not in push_headers(delivery(), "vapid t=x, k=y")


def test_the_auth_secret_is_not_in_a_delivery_repr() -> None:
    claimed = delivery()
    assert claimed.auth is not None
    assert claimed.auth not in repr(claimed)


# VAPID


@pytest.mark.parametrize(
    ("endpoint", "origin"),
    [
        ("https://fcm.googleapis.com/fcm/send/abc:def", "https://fcm.googleapis.com"),
        ("https://Push.Example.NET:443/x", "https://push.example.net"),
        ("https://push.example.net:8443/x?y=1", "https://push.example.net:8443"),
        ("http://127.0.0.1:8090/push/1", "http://127.0.0.1:8090"),
        ("http://[::1]:8090/push/1", "http://[::1]:8090"),
    ],
)
def test_the_audience_is_the_endpoint_origin(endpoint: str, origin: str) -> None:
    assert endpoint_origin(endpoint) == origin


@pytest.mark.parametrize("endpoint", ["ftp://push.example.net/x", "/push/1", "https:///x"])
def test_endpoints_without_an_http_origin_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="absolute http"):
        endpoint_origin(endpoint)


def signer(clock: FakeClock, key: ec.EllipticCurvePrivateKey | None = None) -> VapidSigner:
    private = key or ec.generate_private_key(ec.SECP256R1())
    return VapidSigner(private, subject="mailto:ops@paht.example.vn", clock=clock)


def token_and_key(header: str) -> tuple[str, str]:
    scheme, _, params = header.partition(" ")
    assert scheme == "vapid"
    parts = dict(p.strip().split("=", 1) for p in params.split(","))
    return parts["t"], parts["k"]


def test_the_header_is_an_es256_token_for_the_origin_with_the_public_key() -> None:
    clock = FakeClock(NOW)
    vapid = signer(clock)
    token, key = token_and_key(vapid.authorization("https://push.example.net/send/abc"))
    assert key == vapid.application_server_key
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    claims = jwt.decode(
        token,
        public,
        algorithms=["ES256"],
        audience="https://push.example.net",
        options={"verify_exp": False},
    )
    assert claims["sub"] == "mailto:ops@paht.example.vn"
    assert claims["exp"] == int((NOW + timedelta(hours=12)).timestamp())


def test_the_application_server_key_is_an_uncompressed_p256_point() -> None:
    raw = b64url_decode(signer(FakeClock(NOW)).application_server_key)
    assert len(raw) == 65
    assert raw[0] == 0x04


def test_one_token_per_origin_is_reused_until_shortly_before_it_expires() -> None:
    clock = FakeClock(NOW)
    vapid = signer(clock)
    first = vapid.authorization("https://push.example.net/a")
    assert vapid.authorization("https://push.example.net/b") == first
    assert vapid.authorization("https://other.example.net/a") != first
    clock.advance(timedelta(hours=10, minutes=59))
    assert vapid.authorization("https://push.example.net/c") == first
    clock.advance(timedelta(minutes=2))
    renewed = vapid.authorization("https://push.example.net/c")
    assert renewed != first
    token, _ = token_and_key(renewed)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert exp == int((clock.now() + timedelta(hours=12)).timestamp())


@pytest.mark.parametrize("subject", ["ops@paht.vn", "http://paht.vn", "mailto:", ""])
def test_the_subject_must_be_a_mailto_or_https_contact(subject: str) -> None:
    with pytest.raises(ValueError, match="mailto: address or an https: URL"):
        VapidSigner(ec.generate_private_key(ec.SECP256R1()), subject=subject, clock=FakeClock(NOW))


def test_a_pem_key_from_settings_is_used() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    settings = NotifySettings(vapid_private_key=private_pem(key))
    loaded = load_vapid_key(settings)
    assert application_server_key(loaded.public_key()) == application_server_key(key.public_key())


def test_a_pem_with_escaped_newlines_is_accepted() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    escaped = private_pem(key).replace("\n", "\\n")
    assert parse_private_key(escaped).private_numbers() == key.private_numbers()


def test_keys_that_are_not_p256_are_refused() -> None:
    with pytest.raises(ValueError, match="P-256"):
        parse_private_key(private_pem(ec.generate_private_key(ec.SECP384R1())))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ValueError, match="P-256"):
        parse_private_key(private_pem(rsa_key))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not an unencrypted PEM"):
        parse_private_key("not a key")


def test_the_development_key_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "vapid" / "private.pem"
    settings = NotifySettings(vapid_private_key="", vapid_key_file=path)
    first = load_vapid_key(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = read_or_create_key_file(path)
    assert second.private_numbers() == first.private_numbers()
    assert [p.name for p in path.parent.iterdir()] == ["private.pem"]


def test_production_never_generates_a_key(tmp_path: Path) -> None:
    path = tmp_path / "private.pem"
    settings = NotifySettings.model_construct(
        env="production", vapid_private_key="", vapid_key_file=path
    )
    with pytest.raises(ValueError, match="required in production"):
        load_vapid_key(settings)
    assert not path.exists()
