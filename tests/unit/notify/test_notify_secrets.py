"""Standard Webhooks secrets and webhook URLs accepted by POST /v1/subscriptions."""

from __future__ import annotations

import base64
import os

import pytest
from pydantic import ValidationError

from notify.api import SubscriptionIn
from notify.channels.egress import TargetRefused, check_host
from notify.domain import webhook_secret_bytes


def secret_of(size: int, *, padded: bool = True) -> str:
    encoded = base64.b64encode(os.urandom(size)).decode()
    return "whsec_" + (encoded if padded else encoded.rstrip("="))


@pytest.mark.parametrize("size", [24, 32, 64])
def test_secrets_of_24_to_64_bytes_are_accepted(size: int) -> None:
    assert len(webhook_secret_bytes(secret_of(size))) == size


def test_unpadded_base64_is_accepted() -> None:
    assert len(webhook_secret_bytes(secret_of(25, padded=False))) == 25


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (base64.b64encode(os.urandom(32)).decode(), "must start with 'whsec_'"),
        ("whsec_", "got 0"),
        ("whsec_not base64!!", "standard base64"),
        ("whsec_" + base64.urlsafe_b64encode(b"\xfb" * 30).decode(), "standard base64"),
        (secret_of(23), "got 23"),
        (secret_of(65), "got 65"),
    ],
)
def test_malformed_secrets_are_refused(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        webhook_secret_bytes(secret)


def valid_body(**overrides: str) -> dict[str, str]:
    body = {
        "agency_id": "so-xd",
        "channel": "webhook",
        "url": "https://hooks.example.vn/paht",
        "secret": secret_of(32),
    }
    body.update(overrides)
    return body


def error_fields(body: dict[str, str]) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        SubscriptionIn.model_validate(body)
    return [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()]


def test_a_valid_subscription_parses() -> None:
    subscription = SubscriptionIn.model_validate(valid_body())

    assert str(subscription.url) == "https://hooks.example.vn/paht"
    assert subscription.secret not in repr(subscription)


def test_a_bad_secret_is_reported_on_the_secret_field() -> None:
    assert error_fields(valid_body(secret="whsec_c2hvcnQ=")) == ["secret"]


@pytest.mark.parametrize(
    "url",
    ["ftp://hooks.example.vn/x", "not a url", "https://user:pw@hooks.example.vn/x", ""],
)
def test_non_http_urls_and_embedded_credentials_are_refused(url: str) -> None:
    assert error_fields(valid_body(url=url)) == ["url"]


def test_only_the_webhook_channel_exists_yet() -> None:
    assert error_fields(valid_body(channel="email")) == ["channel"]


def test_unknown_fields_are_refused() -> None:
    assert error_fields({**valid_body(), "note": "x"}) == ["note"]


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "api.localhost",
        "printer.local",
        "db.internal",
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "[::1]",
        "[fd00::1]",
        "[fe80::1]",
        "[::ffff:127.0.0.1]",
    ],
)
def test_internal_hosts_are_recognised(host: str) -> None:
    with pytest.raises(TargetRefused):
        check_host(host, allow_private=False)


@pytest.mark.parametrize("host", ["hooks.example.vn", "8.8.8.8", "[2001:4860:4860::8888]"])
def test_public_hosts_are_not_flagged(host: str) -> None:
    check_host(host, allow_private=False)
