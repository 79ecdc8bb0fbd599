"""Email channel: one SMTP conversation per attempt, a multipart text + HTML message in UTF-8.

The Message-ID depends on the delivery id alone, so a resend after a crash (the server took
the message but the outcome was never recorded) carries the same id and mail clients can
recognise the duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Literal

import aiosmtplib
from email_validator import EmailNotValidError, validate_email

from notify.domain import EMAIL, AttemptResult, ClaimedDelivery, EmailContent, Verdict
from notify.settings import NotifySettings
from paht_common.clock import Clock, SystemClock

logger = logging.getLogger(__name__)

DELIVERY_ID_HEADER = "X-PAHT-Delivery-Id"
ERROR_MAX_CHARS = 256

TlsMode = Literal["none", "starttls", "tls"]


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to submit mail."""

    host: str
    port: int
    tls: TlsMode
    mail_from: str
    """``From`` header, a bare address or ``Name <address>``; its address is the envelope sender."""
    username: str = ""
    """Log in when not empty."""
    password: str = field(default="", repr=False)
    timeout: float = 15.0
    """Limit on one whole attempt (connect, TLS, login, send)."""
    tls_context: ssl.SSLContext | None = field(default=None, compare=False)
    """Trust and TLS options for ``starttls`` / ``tls``; None: the system's CAs."""

    def __post_init__(self) -> None:
        sender_domain(self.mail_from)  # fail at start-up rather than on every attempt

    @classmethod
    def from_settings(cls, settings: NotifySettings) -> SmtpConfig:
        """The SMTP settings of the notify service."""
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            tls=settings.smtp_tls,
            mail_from=settings.mail_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout=settings.smtp_timeout_seconds,
        )


def sender_domain(mail_from: str) -> str:
    """Domain of the ``From`` address (ASCII, for Message-IDs); ValueError if there is none."""
    _, address = parseaddr(mail_from)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"mail_from needs an address with a domain, got {mail_from!r}")
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"mail_from has an invalid domain: {domain!r}") from None


def envelope_address(address: str) -> str:
    """The address to give the SMTP server: an internationalised domain in its ASCII form.

    A non-ASCII local part stays as it is and needs a server with SMTPUTF8.
    """
    if address.isascii():
        return address
    try:
        checked = validate_email(address, check_deliverability=False, globally_deliverable=False)
    except EmailNotValidError:
        return address  # the server gives the verdict
    return str(checked.ascii_email or checked.normalized)


def message_id(delivery: ClaimedDelivery, domain: str) -> str:
    """``<delivery-id@domain>``: the same for every attempt of a delivery."""
    return f"<{delivery.id}@{domain}>"


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def build_message(
    delivery: ClaimedDelivery,
    content: EmailContent,
    *,
    mail_from: str,
    recipient: str,
    now: datetime,
) -> EmailMessage:
    """multipart/alternative (text, then HTML) in UTF-8; ValueError on an unusable header."""
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = recipient
    # a header cannot hold line breaks; a subject that has some is still one line of text
    message["Subject"] = " ".join(_nfc(content.subject).split())
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(delivery, sender_domain(mail_from))
    message[DELIVERY_ID_HEADER] = str(delivery.id)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
    message.set_content(_nfc(content.text), charset="utf-8", cte="quoted-printable")
    message.add_alternative(
        _nfc(content.html), subtype="html", charset="utf-8", cte="quoted-printable"
    )
    return message


def classify_smtp_reply(code: int) -> Verdict:
    """RFC 5321 reply classes: 2xx done, 5xx permanent, 4xx (and anything odd) transient."""
    if 200 <= code < 300:
        return "delivered"
    if 500 <= code < 600:
        return "failed"
    return "retry"


def _reply_error(code: int, message: str) -> str:
    return f"SMTP {code} {' '.join(message.split())}"[:ERROR_MAX_CHARS]


def _transport_error(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _reply_error(exc.code, exc.message)
    return f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS]


class EmailChannel:
    """Submits each attempt to the configured SMTP server over a fresh connection.

    ``status_code`` of a result is the SMTP reply code. Only the recipient's or the message's
    own refusal (5xx to RCPT or DATA) or an unusable delivery fails it; trouble reaching or
    logging in to the server, and every 4xx, is retried.
    """

    name = EMAIL

    def __init__(self, config: SmtpConfig, *, clock: Clock | None = None) -> None:
        self._config = config
        self._clock: Clock = clock or SystemClock()
        self._sender = parseaddr(config.mail_from)[1]
        self._local_hostname: str | None = None
        """EHLO name, looked up (getfqdn) on the first connection only."""

    async def send(self, delivery: ClaimedDelivery) -> AttemptResult:
        """One attempt; remote failures and timeouts become results, never exceptions."""
        if not delivery.email:
            return AttemptResult("failed", error="subscription has no email address")
        try:
            content = EmailContent.from_body(delivery.body)
        except ValueError as exc:
            return AttemptResult("failed", error=f"malformed email body: {exc}")
        recipient = envelope_address(delivery.email)
        try:
            message = build_message(
                delivery,
                content,
                mail_from=self._config.mail_from,
                recipient=recipient,
                now=self._clock.now(),
            )
        except ValueError as exc:
            return AttemptResult("failed", error=f"cannot build the message: {exc}")
        smtp = self._client()
        result: AttemptResult | None = None
        try:
            async with asyncio.timeout(self._config.timeout):
                result = await self._connect(smtp)
                if result is None:
                    result = await self._submit(smtp, message, recipient)
                    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                        await smtp.quit()
        except TimeoutError:
            # the outcome stands if the limit struck while saying goodbye
            if result is None:
                result = AttemptResult("retry", error=f"timed out after {self._config.timeout:g} s")
        finally:
            smtp.close()
        return result

    def _client(self) -> aiosmtplib.SMTP:
        config = self._config
        return aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            use_tls=config.tls == "tls",
            start_tls=config.tls == "starttls",
            tls_context=config.tls_context,
            timeout=config.timeout,
            local_hostname=self._local_hostname,
        )

    async def _connect(self, smtp: aiosmtplib.SMTP) -> AttemptResult | None:
        """Connect (with TLS as configured) and log in; a retry result when that fails."""
        try:
            await smtp.connect()
            self._local_hostname = smtp.local_hostname
            if self._config.username:
                await smtp.login(self._config.username, self._config.password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            # a configuration problem, not this delivery's: keep it until someone fixes it
            logger.warning("SMTP login as %s refused: %s", self._config.username, exc.code)
            return AttemptResult("retry", status_code=exc.code, error=_transport_error(exc))
        except (aiosmtplib.SMTPException, OSError) as exc:
            code = exc.code if isinstance(exc, aiosmtplib.SMTPResponseException) else None
            return AttemptResult("retry", status_code=code, error=_transport_error(exc))
        return None

    async def _submit(
        self, smtp: aiosmtplib.SMTP, message: EmailMessage, recipient: str
    ) -> AttemptResult:
        """MAIL, RCPT and DATA for one recipient, the answer mapped onto a verdict."""
        try:
            await smtp.send_message(message, sender=self._sender, recipients=[recipient])
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            verdict = classify_smtp_reply(refused.code)
            return AttemptResult(
                verdict, status_code=refused.code, error=_reply_error(refused.code, refused.message)
            )
        except aiosmtplib.SMTPDataError as exc:
            verdict = classify_smtp_reply(exc.code)
            return AttemptResult(verdict, status_code=exc.code, error=_transport_error(exc))
        except aiosmtplib.SMTPResponseException as exc:
            # MAIL FROM or EHLO refused: the server's or our configuration's fault, not the
            # recipient's, so even a 5xx is worth another attempt later
            return AttemptResult("retry", status_code=exc.code, error=_transport_error(exc))
        except aiosmtplib.SMTPNotSupported as exc:
            # e.g. a non-ASCII mailbox and a server without SMTPUTF8: no retry will help
            return AttemptResult("failed", error=_transport_error(exc))
        except (aiosmtplib.SMTPException, OSError) as exc:
            return AttemptResult("retry", error=_transport_error(exc))
        except ValueError as exc:
            return AttemptResult("failed", error=f"unusable address: {exc}"[:ERROR_MAX_CHARS])
        return AttemptResult("delivered", status_code=250)
