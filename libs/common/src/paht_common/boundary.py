"""One boundary rule for text entering any service through a URL.

Every path and query string is checked before routing: valid UTF-8 (percent-escapes
included), no C0 control character (NUL above all: PostgreSQL refuses it in text, and it
would surface as a 500), no DEL, no lone surrogate. A refusal is a 422 naming the parameter.
Free text in bodies is checked by the services' own schemas (``free_text_problem``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import date
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote_to_bytes

from pydantic import AwareDatetime, BeforeValidator
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from paht_common.problems import problem_response

PARAMETER_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
"""Characters no path segment or query parameter may hold."""
FREE_TEXT_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
"""Characters free text may not hold (tab, line feed and carriage return are allowed)."""

RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$"
)
"""An RFC 3339 date-time (section 5.6): date, time with seconds, and an offset."""


def _rfc3339_only(value: Any) -> Any:
    if isinstance(value, str) and RFC3339.match(value) is None:
        raise ValueError("must be an RFC 3339 date-time such as 2026-03-01T08:00:00+07:00")
    if isinstance(value, int | float):  # pydantic would read a number as a Unix time
        raise ValueError("must be an RFC 3339 date-time, not a number")
    return value


Rfc3339DateTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]
"""A date-time parameter that takes RFC 3339 text only (no Unix epoch, no bare date)."""

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _iso_date_only(value: Any) -> Any:
    if isinstance(value, str) and ISO_DATE.match(value) is None:
        raise ValueError("must be a date such as 2026-03-01 (RFC 3339 full-date)")
    if isinstance(value, int | float):  # pydantic would read a number as a Unix time
        raise ValueError("must be a date such as 2026-03-01, not a number")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date_only)]
"""A date parameter that takes YYYY-MM-DD only (no Unix epoch)."""

PARAMETER_PATTERN = r"^[^\x00-\x1f\x7f]*$"
"""JSON Schema ``pattern`` of the parameter rule (what ``PARAMETER_FORBIDDEN`` refuses)."""
FREE_TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
"""``pattern`` of free text (what ``FREE_TEXT_FORBIDDEN`` refuses; also a pydantic pattern)."""

Responder = Callable[[Scope, str, str], Awaitable[Response] | Response]
"""Builds the refusal for a request: (scope, field, message)."""


def free_text_problem(value: str) -> str | None:
    """Why ``value`` is not acceptable free text, or None."""
    found = FREE_TEXT_FORBIDDEN.search(value)
    if found is None:
        return None
    return f"contains the control character U+{ord(found.group()):04X} at {found.start()}"


def parameter_problem(value: str) -> str | None:
    """Why ``value`` is not acceptable in a path or query parameter, or None."""
    found = PARAMETER_FORBIDDEN.search(value)
    if found is None:
        return None
    return f"contains the control character U+{ord(found.group()):04X} at {found.start()}"


def url_problem(scope: Scope) -> tuple[str, str] | None:
    """(field, message) of the first thing wrong with a request's path or query, or None."""
    path = str(scope.get("path", ""))
    raw_path: bytes = scope.get("raw_path") or b""
    if "\ufffd" in path and b"%" in raw_path:
        # U+FFFD is what the server put for bytes that are not UTF-8, or the client's own
        try:
            unquote_to_bytes(raw_path).decode("utf-8")
        except UnicodeDecodeError:
            return "path", "is not valid UTF-8 after percent-decoding"
    reason = parameter_problem(path)
    if reason is not None:
        return "path", reason
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return None
    try:
        pairs = parse_qsl(
            raw.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        return "query", "is not valid UTF-8 after percent-decoding"
    for name, value in pairs:
        reason = parameter_problem(name) or parameter_problem(value)
        if reason is not None:
            shown = name if parameter_problem(name) is None else "query"
            return shown, reason
    return None


def _problem(_: Scope, field: str, message: str) -> Response:
    return problem_response(
        422,
        "Invalid request",
        f"{field}: {message}",
        field=field,
        errors=[{"field": field, "message": message, "type": "invalid_text"}],
    )


class TextBoundary:
    """ASGI middleware refusing URLs that break the text rule (see the module docstring).

    ``responders`` maps a path prefix to its own refusal format (Open311's errors[]).
    """

    def __init__(self, app: ASGIApp, responders: Mapping[str, Responder] | None = None) -> None:
        self.app = app
        self.responders = dict(responders or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = url_problem(scope)
            if problem is not None:
                response = self._responder(str(scope.get("path", "")))(scope, *problem)
                if not isinstance(response, Response):
                    response = await response
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _responder(self, path: str) -> Responder:
        for prefix, responder in self.responders.items():
            if path.startswith(prefix):
                return responder
        return _problem
