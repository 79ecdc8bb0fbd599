"""paht_common's HTTP contract helpers: complete Allow on 405, RFC 3339 and ISO date
parameters only, and an OpenAPI document that says what the handlers answer."""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path
from typing import Any

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


# --- the four services' documents (built, not started: no I/O) ---------------------------

SERVICE_KW: dict[str, Any] = {
    "database_url": "postgresql://nobody@127.0.0.1:1/none",
    "kafka_bootstrap": "127.0.0.1:1",
}


def intake_app(tmp_path: Path) -> FastAPI:
    from intake.api import build_app
    from intake.settings import IntakeSettings

    settings = IntakeSettings(
        **SERVICE_KW, jwt_dev_key_dir=tmp_path / "jwt", media_dir=tmp_path / "media"
    )
    return build_app(settings)


def notify_app(tmp_path: Path) -> FastAPI:
    from notify.api import build_app
    from notify.settings import NotifySettings

    settings = NotifySettings(
        **SERVICE_KW,
        jwt_dev_key_dir=tmp_path / "jwt",
        vapid_key_file=tmp_path / "vapid.pem",
        admin_token="unit-admin-token-0123456789",
    )
    return build_app(settings)


def sla_app(_: Path) -> FastAPI:
    from sla.api import build_app
    from sla.settings import SlaSettings

    return build_app(SlaSettings(**SERVICE_KW))


@pytest.mark.parametrize(
    ("build", "method", "path", "allow"),
    [
        (intake_app, "PUT", "/v1/admin/api-keys", "GET, POST"),
        (notify_app, "PUT", f"/v1/subscriptions/{uuid.uuid4()}", "DELETE, GET"),
        (sla_app, "POST", "/v1/calendar/overrides/2026-01-02", "DELETE, PUT"),
    ],
)
async def test_a_405_of_a_service_allows_every_method_of_the_path(
    tmp_path: Path, build: Any, method: str, path: str, allow: str
) -> None:
    transport = httpx.ASGITransport(app=build(tmp_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.request(method, path)

    assert response.status_code == 405
    assert response.headers["allow"] == allow


def test_intake_documents_open311_formats_actions_and_media_strictly(tmp_path: Path) -> None:
    document = intake_app(tmp_path).openapi()
    services = document["paths"]["/open311/v2/services.{fmt}"]["get"]
    fmt = next(p for p in services["parameters"] if p["name"] == "fmt")
    schemas = document["components"]["schemas"]
    media = document["paths"]["/v1/reports/{report_id}/media"]["post"]["requestBody"]
    media_schema = schemas[media["content"]["multipart/form-data"]["schema"]["$ref"].split("/")[-1]]
    actions = document["paths"]["/v1/reports/{report_id}/actions"]["post"]["requestBody"]
    mapping = actions["content"]["application/json"]["schema"]["discriminator"]["mapping"]
    since = next(
        p for p in document["paths"]["/v1/reports"]["get"]["parameters"] if p["name"] == "since"
    )

    assert fmt["schema"]["enum"] == ["xml", "json"]
    for status in ("200", "4XX"):
        assert {"application/json", "text/xml"} <= set(services["responses"][status]["content"])
    assert "files" in media_schema["required"]
    assert media_schema["properties"]["files"]["minItems"] == 1
    for ref in mapping.values():
        variant = schemas[ref.split("/")[-1]]
        assert "type" in variant["required"]
        assert "default" not in variant["properties"]["type"]
    assert since["schema"]["anyOf"][0]["format"] == "date-time"
    category = schemas["ReportIn"]["properties"]["category"]
    assert category["minLength"] == 1
    assert category["pattern"].startswith("^[A-Z]")


def test_notify_and_sla_bodies_are_as_strict_as_their_validation(tmp_path: Path) -> None:
    notify = notify_app(tmp_path).openapi()["components"]["schemas"]
    sla = sla_app(tmp_path).openapi()["components"]["schemas"]

    assert notify["SubscriptionIn"]["properties"]["secret"]["pattern"] == "^whsec_"
    assert "enum" in notify["PreferencesIn"]["properties"]["kinds"]["propertyNames"]
    category = sla["PolicyIn"]["properties"]["category"]["anyOf"][0]
    assert category["pattern"].startswith("^[A-Za-z0-9_]+")
