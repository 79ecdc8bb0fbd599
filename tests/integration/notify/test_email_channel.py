"""The email channel against a real SMTP server (aiosmtpd on a free local port).

TLS uses a self-signed certificate for 127.0.0.1 made in the test; the client trusts it alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import ssl
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from notify.channels.email import DELIVERY_ID_HEADER, EmailChannel, SmtpConfig, TlsMode
from notify.domain import EMAIL, ClaimedDelivery, EmailContent
from paht_devenv.peers.smtp_server import SmtpServer

pytestmark = pytest.mark.integration

MAIL_FROM = "Hệ thống PAHT Bắc Ninh <no-reply@paht.bacninh.gov.vn>"
RECIPIENT = "can.bo@xaydung.bacninh.gov.vn"
SUBJECT = "Phản ánh BN-2025-000123 sắp quá hạn xử lý (80%)"
TEXT = (
    "Kính gửi Sở Xây dựng tỉnh Bắc Ninh,\n"
    "Phản ánh về ổ gà trên đường Lý Thái Tổ, phường Suối Hoa cần được xử lý trước 17:00."
)
HTML = (
    "<p>Kính gửi <b>Sở Xây dựng tỉnh Bắc Ninh</b>,</p>\n"
    "<p>Phản ánh về ổ gà trên đường Lý Thái Tổ, phường Suối Hoa.</p>"
)
USER, PASSWORD = "paht-notify", "mật-khẩu-SMTP-7f3a"


def delivery(email: str = RECIPIENT) -> ClaimedDelivery:
    return ClaimedDelivery(
        id=uuid.uuid4(),
        subscription_id=uuid.uuid4(),
        channel=EMAIL,
        event_type="sla.warning",
        body=EmailContent(SUBJECT, TEXT, HTML).to_body(),
        attempts=1,
        url=None,
        secret=None,
        email=email,
    )


def channel(
    port: int,
    *,
    tls: TlsMode = "none",
    username: str = "",
    password: str = "",
    tls_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> EmailChannel:
    return EmailChannel(
        SmtpConfig(
            host="127.0.0.1",
            port=port,
            tls=tls,
            mail_from=MAIL_FROM,
            username=username,
            password=password,
            timeout=timeout,
            tls_context=tls_context,
        )
    )


def body_text(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with SmtpServer() as running:
        yield running


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


# --- plain SMTP --------------------------------------------------------------------------


async def test_delivered_message_decodes_to_the_exact_vietnamese_content(
    server: SmtpServer,
) -> None:
    item = delivery()

    result = await channel(server.port).send(item)

    assert (result.verdict, result.status_code, result.error) == ("delivered", 250, None)
    [mail] = server.messages
    assert mail.mail_from == "no-reply@paht.bacninh.gov.vn"
    assert mail.rcpt_tos == (RECIPIENT,)
    message = mail.message
    assert message["Subject"] == SUBJECT
    assert body_text(message, "plain") == TEXT + "\n"  # a MIME text part ends with a line break
    assert body_text(message, "html") == HTML + "\n"
    assert message.get_content_type() == "multipart/alternative"
    assert message["From"].addresses[0].display_name == "Hệ thống PAHT Bắc Ninh"
    assert message["To"] == RECIPIENT
    assert message["Message-ID"] == f"<{item.id}@paht.bacninh.gov.vn>"
    assert message[DELIVERY_ID_HEADER] == str(item.id)
    assert not mail.tls


async def test_a_resend_of_the_same_delivery_carries_the_same_message_id(
    server: SmtpServer,
) -> None:
    item = delivery()
    email = channel(server.port)

    first = await email.send(item)
    again = await email.send(ClaimedDelivery(**{**item.__dict__, "attempts": 2}))

    assert (first.verdict, again.verdict) == ("delivered", "delivered")
    ids = [mail.message["Message-ID"] for mail in server.messages]
    assert ids == [f"<{item.id}@paht.bacninh.gov.vn>"] * 2


async def test_recipient_refused_with_4xx_is_retried(server: SmtpServer) -> None:
    server.refuse(RECIPIENT, "450 4.2.1 Mailbox temporarily unavailable")

    result = await channel(server.port).send(delivery())

    assert result.verdict == "retry"
    assert result.status_code == 450
    assert result.error == "SMTP 450 4.2.1 Mailbox temporarily unavailable"
    assert server.messages == []


async def test_recipient_refused_with_5xx_fails_with_the_servers_message(
    server: SmtpServer,
) -> None:
    server.refuse(RECIPIENT, f"550 5.1.1 <{RECIPIENT}>: Recipient address rejected")

    result = await channel(server.port).send(delivery())

    assert result.verdict == "failed"
    assert result.status_code == 550
    assert result.error == f"SMTP 550 5.1.1 <{RECIPIENT}>: Recipient address rejected"
    assert server.messages == []


async def test_message_refused_with_5xx_fails_and_with_4xx_is_retried(
    server: SmtpServer,
) -> None:
    email = channel(server.port)

    server.refuse_data("554 5.7.1 Message rejected as spam")
    refused = await email.send(delivery())
    server.refuse_data("451 4.3.0 Queue full, try later")
    deferred = await email.send(delivery())

    assert (refused.verdict, refused.status_code) == ("failed", 554)
    assert refused.error == "SMTP 554 5.7.1 Message rejected as spam"
    assert (deferred.verdict, deferred.status_code) == ("retry", 451)
    assert server.messages == []


async def test_international_domain_goes_to_the_server_in_ascii(server: SmtpServer) -> None:
    result = await channel(server.port).send(delivery("can.bo@sở-xây-dựng.vn"))

    assert result.verdict == "delivered"
    [mail] = server.messages
    assert mail.rcpt_tos == ("can.bo@xn--s-xy-dng-kza1887e3fa.vn",)


async def test_server_down_is_retried() -> None:
    with SmtpServer() as stopped:
        port = stopped.port

    result = await channel(port).send(delivery())

    assert result.verdict == "retry"
    assert result.error is not None
    assert "SMTPConnectError" in result.error


async def test_server_that_never_answers_is_retried_after_the_timeout() -> None:
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # no greeting, ever; returns when the client hangs up
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        result = await channel(port, timeout=0.5).send(delivery())
    finally:
        listener.close()
        await listener.wait_closed()

    assert accepted.is_set()
    assert result.verdict == "retry"
    assert result.error is not None
    assert "time" in result.error.lower()


# --- TLS and login -----------------------------------------------------------------------


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    with SmtpServer(
        tls_context=server_context(certificate),
        require_starttls=True,
        credentials={USER: PASSWORD},
    ) as running:
        yield running


async def test_starttls_and_login_deliver(
    tls_server: SmtpServer, certificate: tuple[Path, Path]
) -> None:
    email = channel(
        tls_server.port,
        tls="starttls",
        username=USER,
        password=PASSWORD,
        tls_context=trusting(certificate),
    )

    result = await email.send(delivery())

    assert result.verdict == "delivered"
    [mail] = tls_server.messages
    assert (mail.tls, mail.login) == (True, USER)
    assert mail.message["Subject"] == SUBJECT


async def test_wrong_password_is_retried_and_never_logged(
    tls_server: SmtpServer, certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    email = channel(
        tls_server.port,
        tls="starttls",
        username=USER,
        password="mật-khẩu-sai-91c2",
        tls_context=trusting(certificate),
    )

    with caplog.at_level(logging.DEBUG):
        result = await email.send(delivery())

    assert result.verdict == "retry"
    assert result.status_code == 535
    assert "mật-khẩu-sai-91c2" not in caplog.text
    assert "mật-khẩu-sai-91c2" not in (result.error or "")
    assert tls_server.messages == []


async def test_untrusted_certificate_is_retried(tls_server: SmtpServer) -> None:
    email = channel(tls_server.port, tls="starttls", username=USER, password=PASSWORD)

    result = await email.send(delivery())

    assert result.verdict == "retry"
    assert result.error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in result.error
    assert tls_server.messages == []


@pytest.fixture
def implicit_tls_server(certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    with SmtpServer(tls_context=server_context(certificate), implicit_tls=True) as running:
        yield running


async def test_implicit_tls_delivers(
    implicit_tls_server: SmtpServer, certificate: tuple[Path, Path]
) -> None:
    email = channel(implicit_tls_server.port, tls="tls", tls_context=trusting(certificate))

    result = await email.send(delivery())

    assert result.verdict == "delivered"
    [mail] = implicit_tls_server.messages
    assert mail.tls
    assert body_text(mail.message, "plain") == TEXT + "\n"
