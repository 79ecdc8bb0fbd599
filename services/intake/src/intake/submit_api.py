"""POST /v1/reports as a plain ASGI endpoint, and the problem+json answers of every route.

Submitting is what upstream apps do all day, so its route skips FastAPI: FastAPI's
middleware, routing and dependency layers cost more CPU per request than checking the
report (``bench/bench_intake.py``). ``IntakeApp`` hands the request straight to
``SubmitEndpoint``; errors are answered by ``error_response``, as the FastAPI routes
answer theirs. The route is still described in the OpenAPI document (``documentation``).
"""

import logging
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from intake import media
from intake.auth import AppAuthenticator, AuthError
from intake.domain import STATE_LABELS_VI, State
from intake.handlers import IdempotencyConflict, InputError, IntakeContext, submit_report
from intake.schemas import Accepted, ReportIn
from intake.settings import IntakeSettings
from paht_common.clock import to_local_iso
from paht_common.problems import (
    UNAVAILABLE_ERRORS,
    Problem,
    problem_response,
    problem_responses,
    unavailable_response,
)

logger = logging.getLogger(__name__)

PATH = "/v1/reports"
FORM_PART_BYTES = 1_000_000
"""Largest non-file part of a multipart submission (the report JSON)."""
REPORT_HEADERS: list[dict[str, Any]] = [
    {
        "name": "X-API-Key",
        "in": "header",
        "required": True,
        "description": "the upstream app's API key (scope reports:write)",
        "schema": {"type": "string"},
    },
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "a retry with the same key returns the original report",
        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    },
]
REPORT_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ReportIn"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["report"],
                "properties": {
                    "report": {
                        "type": "string",
                        "description": "the report as JSON, exactly the application/json body",
                    },
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "photos or videos: JPEG, PNG, WebP, MP4, QuickTime",
                    },
                },
            },
            "encoding": {"report": {"contentType": "application/json"}},
        },
    },
}
PROBLEM_TEXT = {
    400: "malformed parameter",
    401: "missing or invalid credentials",
    403: "the credentials do not allow this",
    404: "no such report (or not visible to the caller)",
    409: "conflicts with the current state",
    413: "body larger than the limit",
    415: "unsupported media type (the problem names the field)",
    422: "invalid field (the problem names it)",
    429: "rate limit exceeded; see Retry-After",
}
_UPLOAD_TITLES = {413: "File too large", 415: "Unsupported media type", 422: "Invalid files"}


def error_response(exc: Exception) -> Response | None:
    """The problem+json answer to an error a route may raise; None for a fault of ours."""
    if isinstance(exc, Problem):
        return exc.response()
    if isinstance(exc, AuthError):
        title = "Unauthorized" if exc.status == 401 else "Forbidden"
        return problem_response(exc.status, title, exc.detail, field=exc.field)
    if isinstance(exc, media.UploadError):
        title = _UPLOAD_TITLES.get(exc.status, "Invalid files")
        return problem_response(exc.status, title, exc.message, field=exc.field)
    if isinstance(exc, InputError):
        return problem_response(
            exc.status,
            "Invalid report",
            f"{exc.field}: {exc.message}",
            errors=[{"field": exc.field, "message": exc.message}],
        )
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return unavailable_response(exc)
    return None


def parse_report(raw: bytes, *, prefix: str = "") -> ReportIn:
    """A submission from JSON bytes; 422 problem+json naming every field at fault."""
    try:
        return ReportIn.model_validate_json(raw)
    except ValidationError as exc:
        errors = []
        for e in exc.errors():
            path = ".".join(str(p) for p in e["loc"]) if e["type"] != "json_invalid" else ""
            field = ".".join(p for p in (prefix, path) if p) or "body"
            errors.append({"field": field, "message": e["msg"], "type": e["type"]})
        raise Problem(
            422,
            "Invalid request",
            "; ".join(f"{e['field']}: {e['message']}" for e in errors),
            field=errors[0]["field"],
            errors=errors,
        ) from exc


def accepted_body(report: dict[str, Any]) -> dict[str, Any]:
    """The ``Accepted`` answer as a plain dict (answered without re-validation)."""
    state = State(report["state"])
    rid = str(report["id"])
    return {
        "id": rid,
        "number": report["number"],
        "status": state.value,
        "status_label": STATE_LABELS_VI[state],
        "submitted_at": to_local_iso(report["submitted_at"]),
        "links": {"self": f"{PATH}/{rid}", "timeline": f"{PATH}/{rid}/timeline"},
    }


class _Disconnected(Exception):
    """The client went away before its body arrived; there is no one to answer."""


class SubmitEndpoint:
    """POST /v1/reports: validate a report, hand it to the group-commit writer, answer."""

    def __init__(
        self, *, settings: IntakeSettings, ctx: IntakeContext, apps: AppAuthenticator
    ) -> None:
        self._settings = settings
        self._ctx = ctx
        self._apps = apps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body, headers = await self._accept(scope, receive)
        except (_Disconnected, ClientDisconnect):
            return
        except Exception as exc:
            response = error_response(exc)
            if response is None:
                raise  # the server answers 500 and logs it, as for any route
            await response(scope, receive, send)
            return
        headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _accept(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        api_key = idempotency_key = None
        content_type = "application/json"
        for name, value in scope["headers"]:
            if name == b"x-api-key" and api_key is None:
                api_key = value.decode("latin-1")
            elif name == b"idempotency-key" and idempotency_key is None:
                idempotency_key = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
        caller = await self._apps.authenticate(api_key)
        caller.require("reports:write")
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
            raise Problem(
                422,
                "Invalid request",
                "Idempotency-Key: 1 to 200 characters",
                field="Idempotency-Key",
            )
        mime = content_type.split(";", 1)[0].strip().lower()
        blobs: dict[str, bytes] = {}
        if mime == "multipart/form-data":
            report, blobs = await self._from_form(Request(scope, receive))
        elif mime == "application/json" or mime.endswith("+json"):
            report = parse_report(await _body(receive))
        else:
            raise Problem(
                415,
                "Unsupported media type",
                "send application/json, or multipart/form-data with a report part",
                field="Content-Type",
            )
        try:
            result = await submit_report(
                report,
                app_id=caller.app_id,
                idempotency_key=idempotency_key,
                ctx=self._ctx,
                files=blobs,
            )
        except IdempotencyConflict as exc:
            raise Problem(
                409,
                "Idempotency conflict",
                "this idempotency key or client_report_id was used with a different body",
                field="Idempotency-Key",
                report_id=str(exc.report_id),
            ) from exc
        headers = [(b"location", f"{PATH}/{result.report['id']}".encode())]
        if not result.created:
            headers.append((b"idempotent-replayed", b"true"))
        return (202 if result.created else 200), to_json(accepted_body(result.report)), headers

    async def _from_form(self, request: Request) -> tuple[ReportIn, dict[str, bytes]]:
        """The ``report`` JSON part and the ``files`` parts of a multipart submission."""
        settings = self._settings
        async with media.multipart_form(
            request,
            max_files=settings.max_media_files + 1,
            max_fields=20,
            max_part_size=FORM_PART_BYTES,
        ) as form:
            parts = form.getlist("report")
            if len(parts) != 1 or not isinstance(parts[0], str):
                raise Problem(
                    422,
                    "Invalid request",
                    "report: exactly one part holding the report as JSON",
                    field="report",
                )
            report = parse_report(parts[0].encode(), prefix="report")
            blobs = await media.read_uploads(
                form.getlist("files"),
                field="files",
                max_files=settings.max_media_files,
                max_bytes=settings.max_media_bytes,
            )
        return report, blobs


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def documentation() -> APIRoute:
    """The OpenAPI description of POST /v1/reports (served by SubmitEndpoint, not FastAPI)."""

    async def post_report(request: Request) -> Accepted:  # documents the route; not called
        """Accept a report (JSON, or multipart with photos/videos); a replay returns it.

        A replay is a request with the same Idempotency-Key or client_report_id: answered
        200 with the original report, or 409 when its body differs.
        """
        raise NotImplementedError

    return APIRoute(
        PATH,
        post_report,
        methods=["POST"],
        status_code=202,
        response_model=Accepted,
        tags=["reports"],
        responses={
            200: {"model": Accepted, "description": "idempotent replay of an accepted report"},
            **problem_responses(
                PROBLEM_TEXT,
                401,
                403,
                409,
                413,
                415,
                422,
                429,
                s409="idempotency key reused with another body",
                s415="a body that is neither JSON nor multipart, or an unsupported file",
            ),
        },
        openapi_extra={"requestBody": REPORT_REQUEST_BODY, "parameters": REPORT_HEADERS},
    )
