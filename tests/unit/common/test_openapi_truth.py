"""paht_common's HTTP contract helpers: complete Allow on 405, RFC 3339 and ISO date
parameters only, and an OpenAPI document that says what the handlers answer."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from paht_common.boundary import PARAMETER_PATTERN, IsoDate, Rfc3339DateTime
from paht_common.problems import PROBLEM_JSON, install_problem_handlers


class Body(BaseModel):
    name: str


def app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/things/{thing_id}")
    async def read(thing_id: str, since: Rfc3339DateTime | None = None) -> dict[str, str]:
        return {"id": thing_id, "since": since.isoformat() if since else ""}

    @app.put("/things/{thing_id}")
    async def replace(thing_id: str, body: Body) -> dict[str, str]:
        return {"id": thing_id}

    @app.delete("/things/{thing_id}", status_code=204)
    async def remove(thing_id: str) -> None:
        return None

    @app.get("/days/{day}")
    async def day(day: IsoDate) -> dict[str, str]:
        return {"day": day.isoformat()}

    return app


@pytest.fixture
async def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://t")


async def test_a_405_allows_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    response = await client.post("/things/a")

    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["allow"] == "DELETE, GET, PUT"


@pytest.mark.parametrize("since", ["1", "1700000000", "2026-01-01", "2026-01-01T08:00"])
async def test_a_date_time_parameter_is_rfc_3339_only(
    client: httpx.AsyncClient, since: str
) -> None:
    response = await client.get("/things/a", params={"since": since})

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "since"


async def test_an_rfc_3339_date_time_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.get("/things/a", params={"since": "2026-01-01T08:00:00+07:00"})

    assert response.status_code == 200
    assert response.json()["since"] == "2026-01-01T08:00:00+07:00"


@pytest.mark.parametrize(("day", "status"), [("0", 422), ("20260101", 422), ("2026-01-02", 200)])
async def test_a_date_parameter_is_a_full_date_only(
    client: httpx.AsyncClient, day: str, status: int
) -> None:
    response = await client.get(f"/days/{day}")

    assert response.status_code == status, response.text
    if status == 200:
        assert date.fromisoformat(response.json()["day"]) == date(2026, 1, 2)


def test_the_openapi_document_says_what_the_handlers_answer() -> None:
    document = app().openapi()
    put = document["paths"]["/things/{thing_id}"]["put"]
    get = document["paths"]["/things/{thing_id}"]["get"]

    assert list(put["responses"]["422"]["content"]) == [PROBLEM_JSON]
    assert list(put["responses"]["400"]["content"]) == [PROBLEM_JSON]
    assert "Retry-After" in get["responses"]["503"]["headers"]
    thing_id = next(p for p in get["parameters"] if p["name"] == "thing_id")
    assert thing_id["schema"]["pattern"] == PARAMETER_PATTERN
    assert "HTTPValidationError" not in document["components"]["schemas"]
