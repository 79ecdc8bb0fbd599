"""RFC 9457 problem+json errors: every 4xx names what is wrong and where."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

PROBLEM_JSON = "application/problem+json"
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.TooManyConnectionsError,
)
"""Errors of an unreachable dependency: answered 503 with Retry-After, not 500."""
TEXT_REFUSED_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.CharacterNotInRepertoireError,
    asyncpg.UntranslatableCharacterError,
)
"""PostgreSQL refusing text (NUL, invalid code points): the client's 4xx, never a 500."""
logger = logging.getLogger(__name__)

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "the field, header or parameter at fault"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
"""OpenAPI schema of the problem+json bodies every service answers."""


def problem_responses(
    texts: Mapping[int, str], *statuses: int, **overrides: str
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for problem+json answers: ``texts`` describes each status,
    ``overrides`` (keyed ``s409``) replace a description for one route."""
    return {
        status: {
            "description": overrides.get(f"s{status}", texts[status]),
            "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


UNAVAILABLE_DOC: dict[str, Any] = {
    "description": "the database or broker cannot be reached; retry later",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}},
}


UNREADABLE_BODY_DOC: dict[str, Any] = {
    "description": "the body cannot be read (not UTF-8 JSON, or not the declared media type)",
    "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}},
}


def document_problems(app: FastAPI) -> None:
    """Make the app's OpenAPI say what the handlers answer: FastAPI's generated 422 is
    problem+json, a body that cannot be parsed is a 400, every operation may answer 503
    (``unavailable_response``), and path and query strings follow the text rule
    (``paht_common.boundary``). Call it again after replacing ``app.openapi``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                if isinstance(operation, dict) and "responses" in operation:
                    _problem_content(operation["responses"])
                    _parameter_text_rule(operation.get("parameters", []))
                    if "requestBody" in operation and "4XX" not in operation["responses"]:
                        operation["responses"].setdefault("400", UNREADABLE_BODY_DOC)
        document.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
        document.get("components", {}).get("schemas", {}).pop("ValidationError", None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


NUL_ONLY_PATTERN = r"^[^\x00]*$"
"""An older, narrower rule some parameters declare; the boundary refuses more."""


def _parameter_text_rule(parameters: list[dict[str, Any]]) -> None:
    from paht_common.boundary import PARAMETER_PATTERN

    for parameter in parameters:
        if parameter.get("in") not in ("path", "query"):
            continue
        schema = parameter.get("schema", {})
        variants = [schema, *schema.get("anyOf", [])]
        for variant in [*variants, *(v["items"] for v in variants if "items" in v)]:
            if variant.get("type") != "string" or {"format", "enum", "const"} & set(variant):
                continue
            if variant.get("pattern", NUL_ONLY_PATTERN) == NUL_ONLY_PATTERN:
                variant["pattern"] = PARAMETER_PATTERN


def _problem_content(responses: dict[str, Any]) -> None:
    for response in responses.values():
        content = response.get("content") or {}
        schema = content.get("application/json", {}).get("schema", {})
        if str(schema.get("$ref", "")).endswith("/HTTPValidationError"):
            response["content"] = {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}
    if not any(str(status).startswith("5") for status in responses):
        responses["503"] = UNAVAILABLE_DOC


class Problem(HTTPException):
    """An error answered as problem+json with the given status.

    An HTTPException, so that FastAPI passes it through unchanged when it is raised while
    the body is being read (a body limit, for instance).
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(status_code=status, detail=detail or title, headers=headers)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_
        self.extra = extra

    def response(self) -> JSONResponse:
        """This problem as its problem+json response."""
        return problem_response(
            self.status,
            self.title,
            self.detail,
            type_=self.type,
            headers=dict(self.headers) if self.headers else None,
            **self.extra,
        )


def problem_response(
    status: int,
    title: str,
    detail: str = "",
    *,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


def install_problem_handlers(
    app: FastAPI, *, boundary_responders: Mapping[str, Any] | None = None
) -> None:
    """Map validation errors, HTTP errors and Problem to problem+json, and refuse URLs that
    break the text rule (``paht_common.boundary``; ``boundary_responders`` maps a path prefix
    to its own refusal format)."""
    from paht_common.boundary import TextBoundary

    app.add_middleware(TextBoundary, responders=boundary_responders)
    document_problems(app)

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": _field(e.get("loc", ())),
                "message": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem_response(422, "Invalid request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            # Starlette names the methods of the first route matching the path, not all
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return problem_response(
            exc.status_code, _title(exc.status_code), str(exc.detail), headers=headers
        )

    async def on_unavailable(_: Request, exc: Exception) -> JSONResponse:
        return unavailable_response(exc)

    for error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, on_unavailable)

    @app.exception_handler(Problem)
    async def on_problem(_: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    async def on_text_refused(request: Request, exc: Exception) -> JSONResponse:
        # the boundary rule should have stopped this text: a bug to fix, never the client's 500
        logger.error("database refused text of %s %s: %r", request.method, request.url.path, exc)
        return problem_response(
            422,
            "Invalid request",
            "the request holds text the database cannot store (a control character or an "
            "invalid code point)",
        )

    for error in TEXT_REFUSED_ERRORS:
        app.add_exception_handler(error, on_text_refused)


def allowed_methods(request: Request) -> str:
    """The ``Allow`` value of a request's path: the methods of every route serving it."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= set(route_methods)
    return ", ".join(sorted(methods))


def unavailable_response(exc: Exception) -> JSONResponse:
    """503 with Retry-After for an error of an unreachable dependency (logged)."""
    logger.warning("answering 503, a dependency is unavailable: %r", exc)
    return problem_response(
        503,
        "Service unavailable",
        "the database or broker cannot be reached; retry later (idempotently)",
        headers={"Retry-After": "5"},
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
