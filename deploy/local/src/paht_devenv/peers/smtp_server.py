"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 and a free port, recording each message.

    with SmtpServer() as server:
        ...  # submit to server.host:server.port
        assert server.messages[0].message["Subject"] == "..."

aiosmtpd serves from its own thread and event loop, so any test loop can talk to it. A message
is recorded before the server answers DATA, so it is there as soon as the client's send returns.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"
SERVER_NAME = "smtp.paht.test"


@dataclass(frozen=True)
class ReceivedMail:
    """One message the server accepted, with its envelope."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...]
    raw: bytes
    """The DATA exactly as received."""
    message: EmailMessage
    tls: bool
    """Whether the session was encrypted (implicit TLS or STARTTLS)."""
    login: str | None
    """The user the session authenticated as, if it did."""


class _Controller(Controller):
    """Binds port 0 and learns the port the system chose, so no other process can take it."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


def _over_tls(server: Any) -> bool:
    """True for a connection TLS wrapped from the start (aiosmtpd sets session.ssl on STARTTLS)."""
    transport = getattr(server, "transport", None)
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class _Handler:
    """aiosmtpd hooks; they run on the server's thread."""

    def __init__(self, owner: SmtpServer) -> None:
        self._owner = owner

    async def handle_RCPT(
        self,
        server: Any,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self._owner.reply_for(address)
        if reply is None:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            return "250 OK"
        return reply

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        reply = self._owner.data_reply
        if reply is not None:
            return reply
        raw = envelope.original_content or b""
        message = BytesParser(_class=EmailMessage, policy=policy.default).parsebytes(raw)
        auth = session.auth_data
        self._owner.record(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                mail_options=tuple(envelope.mail_options),
                raw=raw,
                message=message,
                tls=session.ssl is not None or _over_tls(server),
                login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
            )
        )
        return "250 2.0.0 Message accepted for delivery"


class SmtpServer:
    """An SMTP server on 127.0.0.1 that keeps what it receives and refuses on request.

    ``tls_context`` (a server context) enables STARTTLS, ``implicit_tls`` wraps the whole
    connection instead; ``credentials`` (user to password) require AUTH PLAIN/LOGIN, offered
    only over TLS when there is TLS.
    """

    def __init__(
        self,
        *,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        require_starttls: bool = False,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        if (implicit_tls or require_starttls) and tls_context is None:
            raise ValueError("implicit_tls and require_starttls need a tls_context")
        self.host = HOST
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self._refusals: dict[str, str] = {}
        self._data_reply: str | None = None
        self._credentials = dict(credentials or {})
        options: dict[str, Any] = {"server_hostname": SERVER_NAME, "enable_SMTPUTF8": True}
        if implicit_tls:
            options["ssl_context"] = tls_context
        elif tls_context is not None:
            options["tls_context"] = tls_context
            options["require_starttls"] = require_starttls
        if credentials is not None:
            options["authenticator"] = self._authenticate
            options["auth_required"] = True
            options["auth_require_tls"] = tls_context is not None
        self._controller = _Controller(_Handler(self), hostname=HOST, port=0, **options)

    @property
    def port(self) -> int:
        """The port it listens on (known once started)."""
        port: int = self._controller.port
        return port

    def start(self) -> SmtpServer:
        """Listen; returns once the server answers connections."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Close the listener and every session; the port is free again afterwards."""
        self._controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def messages(self) -> list[ReceivedMail]:
        """Messages accepted so far, oldest first (a copy)."""
        with self._lock:
            return list(self._messages)

    def refuse(self, recipient: str, reply: str) -> None:
        """Answer ``RCPT TO`` for ``recipient`` with ``reply`` (``"550 5.1.1 No such user"``)."""
        with self._lock:
            self._refusals[recipient.lower()] = reply

    def refuse_data(self, reply: str | None) -> None:
        """Answer every DATA with ``reply`` (e.g. ``"554 5.7.1 Spam"``); None accepts again."""
        with self._lock:
            self._data_reply = reply

    def reply_for(self, recipient: str) -> str | None:
        """The refusal set for ``recipient``, or None to accept it."""
        with self._lock:
            return self._refusals.get(recipient.lower())

    @property
    def data_reply(self) -> str | None:
        """The refusal set for DATA, or None to accept messages."""
        with self._lock:
            return self._data_reply

    def record(self, mail: ReceivedMail) -> None:
        """Keep an accepted message (called from the server's thread)."""
        with self._lock:
            self._messages.append(mail)

    def _authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self._credentials.get(data.login.decode()) == data.password.decode()
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)
