"""problem+json answers: Problem, HTTP errors and unreachable dependencies."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request

from paht_common.problems import PROBLEM_JSON, Problem, install_problem_handlers


def app_raising(error: Exception) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/boom")
    async def boom(request: Request) -> dict[str, str]:
        await request.body()
        raise error

    return app


async def post(app: FastAPI) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post("/boom", content=b"{}")


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.PostgresConnectionError("gone"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.TooManyConnectionsError("too many"),
        ConnectionRefusedError(111, "refused"),
    ],
    ids=type,
)
async def test_an_unreachable_dependency_is_503_with_retry_after(error: Exception) -> None:
    response = await post(app_raising(error))

    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["retry-after"] == "5"
    assert response.json()["title"] == "Service unavailable"


async def test_a_problem_keeps_its_status_field_and_headers() -> None:
    problem = Problem(413, "Payload too large", "at most 1 byte", field="body", headers={"X": "1"})

    response = await post(app_raising(problem))

    assert response.status_code == 413
    assert response.headers["x"] == "1"
    assert response.json() == {
        "type": "about:blank",
        "title": "Payload too large",
        "status": 413,
        "detail": "at most 1 byte",
        "field": "body",
    }


async def test_any_other_error_stays_a_500() -> None:
    response = await post(app_raising(ValueError("bug")))

    assert response.status_code == 500
