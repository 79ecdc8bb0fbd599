"""Email addresses, the message an email delivery becomes, and what the channel refuses early."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from notify.channels.email import (
    DELIVERY_ID_HEADER,
    EmailChannel,
    SmtpConfig,
    build_message,
    classify_smtp_reply,
    envelope_address,
    sender_domain,
)
from notify.domain import EMAIL, ClaimedDelivery, EmailContent, validate_email_address

NOW = datetime(2025, 3, 4, 2, 15, 30, tzinfo=UTC)
MAIL_FROM = "Hệ thống PAHT Bắc Ninh <no-reply@paht.bacninh.gov.vn>"
SUBJECT = "Phản ánh BN-2025-000123 đã được giao cho Sở Xây dựng"
TEXT = "Kính gửi Sở Xây dựng,\nPhản ánh về ổ gà trên đường Lý Thái Tổ cần xử lý trước 17:00."
HTML = "<p>Kính gửi <b>Sở Xây dựng</b>,</p><p>Phản ánh về ổ gà trên đường Lý Thái Tổ.</p>"


def delivery(
    *, body: str | None = None, email: str | None = "can.bo@xaydung.bacninh.gov.vn"
) -> ClaimedDelivery:
    return ClaimedDelivery(
        id=uuid.uuid4(),
        subscription_id=uuid.uuid4(),
        channel=EMAIL,
        event_type="report.assigned",
        body=EmailContent(SUBJECT, TEXT, HTML).to_body() if body is None else body,
        attempts=1,
        url=None,
        secret=None,
        email=email,
    )


def build(item: ClaimedDelivery, content: EmailContent | None = None) -> EmailMessage:
    return build_message(
        item,
        content or EmailContent.from_body(item.body),
        mail_from=MAIL_FROM,
        recipient="can.bo@xaydung.bacninh.gov.vn",
        now=NOW,
    )


def on_the_wire(message: EmailMessage) -> EmailMessage:
    """The message as a receiver parses it from the bytes an SMTP client sends."""
    raw = message.as_bytes(policy=policy.SMTP)
    assert raw.isascii()
    return BytesParser(_class=EmailMessage, policy=policy.default).parsebytes(raw)


def text_of(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


# --- addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("can.bo@xaydung.bacninh.gov.vn", "can.bo@xaydung.bacninh.gov.vn"),
        ("Can.Bo@XayDung.BacNinh.GOV.VN", "Can.Bo@xaydung.bacninh.gov.vn"),
        ("phan.anh+bn@gmail.com", "phan.anh+bn@gmail.com"),
        ("cán.bộ@sở-xây-dựng.vn", "cán.bộ@sở-xây-dựng.vn"),
        ("x" * 64 + "@b.vn", "x" * 64 + "@b.vn"),
    ],
)
def test_accepts_and_normalises_addresses(value: str, expected: str) -> None:
    assert validate_email_address(value) == expected


def test_normalises_a_decomposed_local_part_to_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "cán.bộ") + "@b.vn"

    address = validate_email_address(decomposed)

    assert address == "cán.bộ@b.vn"
    assert unicodedata.is_normalized("NFC", address)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "@-sign"),
        ("can.bo", "@-sign"),
        ("a@@b.vn", "invalid characters"),
        ("a@b@c.vn", "invalid characters"),
        ("can bo@b.vn", "SPACE"),
        (" can.bo@b.vn", "SPACE"),
        ("can.bo@b.vn\n", "U+000A"),
        ("can\x00bo@b.vn", "U+0000"),
        ("Cán bộ <can.bo@b.vn>", "display name"),
        ("x" * 65 + "@b.vn", "too long before the @-sign"),
        ("a@" + ".".join(["b" * 50] * 5) + ".vn", "too long after the @-sign"),
        ("x" * 64 + "@" + ".".join(["b" * 62] * 3) + ".vn", "too long (2 characters"),
        ("a@-b.vn", "hyphen"),
        ("a@b..vn", "two periods"),
        ("a@localhost", "period"),
        ("a@paht.localhost", "special-use"),
        ("a@[127.0.0.1]", "bracketed IP"),
        ('"can bo"@b.vn', "Quoting"),
    ],
)
def test_refuses_what_is_not_one_bare_address(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match="invalid email address") as caught:
        validate_email_address(value)
    assert reason in str(caught.value)


def test_envelope_address_uses_the_ascii_form_of_an_international_domain() -> None:
    assert envelope_address("can.bo@sở-xây-dựng.vn") == "can.bo@xn--s-xy-dng-kza1887e3fa.vn"
    assert envelope_address("can.bo@b.vn") == "can.bo@b.vn"
    assert envelope_address("cán.bộ@b.vn") == "cán.bộ@b.vn"


def test_sender_domain_needs_an_address_with_a_domain() -> None:
    assert sender_domain(MAIL_FROM) == "paht.bacninh.gov.vn"
    assert sender_domain("no-reply@Sở.vn") == "xn--s-lym.vn"
    with pytest.raises(ValueError, match="mail_from"):
        sender_domain("PAHT")
    with pytest.raises(ValueError, match="mail_from"):
        SmtpConfig(host="127.0.0.1", port=25, tls="none", mail_from="no-reply@")


# --- the message -------------------------------------------------------------------------


def test_message_carries_the_vietnamese_subject_text_and_html_unchanged() -> None:
    received = on_the_wire(build(delivery()))

    assert received["Subject"] == SUBJECT
    assert text_of(received, "plain") == TEXT + "\n"  # a MIME text part ends with a line break
    assert text_of(received, "html") == HTML + "\n"
    assert received["From"].addresses[0].display_name == "Hệ thống PAHT Bắc Ninh"
    assert received["To"] == "can.bo@xaydung.bacninh.gov.vn"


def test_message_text_is_nfc_even_when_the_body_is_decomposed() -> None:
    content = EmailContent(
        unicodedata.normalize("NFD", SUBJECT),
        unicodedata.normalize("NFD", TEXT),
        unicodedata.normalize("NFD", HTML),
    )

    received = on_the_wire(build(delivery(), content))

    assert received["Subject"] == SUBJECT
    assert text_of(received, "plain") == TEXT + "\n"
    assert text_of(received, "html") == HTML + "\n"


def test_message_is_multipart_alternative_with_text_then_html_in_utf8() -> None:
    received = on_the_wire(build(delivery()))

    assert received.get_content_type() == "multipart/alternative"
    parts = list(received.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)


def test_message_id_depends_on_the_delivery_alone() -> None:
    item = delivery()
    later = ClaimedDelivery(**{**item.__dict__, "attempts": 3})

    first, resend, other = build(item), build(later), build(delivery())

    assert first["Message-ID"] == f"<{item.id}@paht.bacninh.gov.vn>"
    assert resend["Message-ID"] == first["Message-ID"]
    assert other["Message-ID"] != first["Message-ID"]
    assert first[DELIVERY_ID_HEADER] == str(item.id)
    assert first["Auto-Submitted"] == "auto-generated"


def test_a_subject_with_line_breaks_stays_one_header_line() -> None:
    content = EmailContent("Phản ánh mới\r\nBcc: ke.la@example.com", TEXT, HTML)

    received = on_the_wire(build(delivery(), content))

    assert received["Subject"] == "Phản ánh mới Bcc: ke.la@example.com"
    assert received["Bcc"] is None


# --- replies and early refusals ----------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "verdict"),
    [(250, "delivered"), (421, "retry"), (450, "retry"), (550, "failed"), (554, "failed")],
)
def test_smtp_reply_classes(code: int, verdict: str) -> None:
    assert classify_smtp_reply(code) == verdict


def config() -> SmtpConfig:
    # nothing listens here; these attempts must end before connecting
    return SmtpConfig(
        host="127.0.0.1", port=9, tls="none", mail_from=MAIL_FROM, password="s3cret-smtp"
    )


async def test_malformed_body_fails_without_connecting() -> None:
    result = await EmailChannel(config()).send(delivery(body='{"subject": "thiếu phần còn lại"}'))

    assert result.verdict == "failed"
    assert result.error is not None
    assert result.error.startswith("malformed email body")


async def test_body_that_is_not_json_fails_without_connecting() -> None:
    result = await EmailChannel(config()).send(delivery(body="Xin chào"))

    assert result.verdict == "failed"
    assert result.error is not None
    assert result.error.startswith("malformed email body")


async def test_delivery_without_address_fails_without_connecting() -> None:
    result = await EmailChannel(config()).send(delivery(email=None))

    assert (result.verdict, result.error) == ("failed", "subscription has no email address")


def test_config_repr_hides_the_password() -> None:
    assert "s3cret-smtp" not in repr(config())
