"""Signatures a receiver verifies with the reference standardwebhooks library."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from notify.channels.webhook import signed_headers

BODY = json.dumps(
    {
        "type": "report.assigned",
        "data": {"agency_id": "ubnd-09277", "note": "Ổ gà đường Lý Thái Tổ"},
    },
    ensure_ascii=False,
    separators=(",", ":"),
)


def new_secret(size: int = 32) -> str:
    return "whsec_" + base64.b64encode(os.urandom(size)).decode()


@pytest.mark.parametrize("size", [24, 32, 64])
def test_signature_verifies_with_the_reference_library(size: int) -> None:
    secret = new_secret(size)
    headers = signed_headers(secret, msg_id="msg-1", timestamp=datetime.now(UTC), body=BODY)

    assert Webhook(secret).verify(BODY.encode("utf-8"), headers) == json.loads(BODY)


def test_headers_follow_the_standard() -> None:
    at = datetime(2025, 3, 4, 9, 15, 30, tzinfo=timezone(timedelta(hours=7)))

    headers = signed_headers(new_secret(), msg_id="msg-1", timestamp=at, body=BODY)

    assert headers["webhook-id"] == "msg-1"
    assert headers["webhook-timestamp"] == str(int(at.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")


def test_a_local_time_signs_the_same_instant_as_utc() -> None:
    secret = new_secret()
    utc = datetime.now(UTC).replace(microsecond=0)
    local = utc.astimezone(timezone(timedelta(hours=7)))

    assert signed_headers(secret, msg_id="m", timestamp=utc, body=BODY) == signed_headers(
        secret, msg_id="m", timestamp=local, body=BODY
    )


def test_tampered_body_fails_verification() -> None:
    secret = new_secret()
    headers = signed_headers(secret, msg_id="msg-1", timestamp=datetime.now(UTC), body=BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace("Ổ gà", "Ổ voi").encode(), headers)


def test_another_secret_fails_verification() -> None:
    headers = signed_headers(new_secret(), msg_id="msg-1", timestamp=datetime.now(UTC), body=BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY.encode(), headers)


def test_the_webhook_id_is_signed() -> None:
    secret = new_secret()
    headers = signed_headers(secret, msg_id="msg-1", timestamp=datetime.now(UTC), body=BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.encode(), {**headers, "webhook-id": "msg-2"})
