"""The text rule at every service's door: NUL, controls, bad UTF-8 in URLs are a 4xx."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from paht_common.boundary import free_text_problem, parameter_problem, url_problem
from paht_common.problems import PROBLEM_JSON, install_problem_handlers


def app() -> FastAPI:
    application = FastAPI()
    install_problem_handlers(application)

    @application.get("/v1/things/{name}")
    async def thing(name: str, q: str = "") -> dict[str, str]:
        return {"name": name, "q": q}

    @application.get("/v1/store")
    async def store(text: str) -> dict[str, str]:
        # what asyncpg raises when PostgreSQL refuses the text
        raise asyncpg.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8")

    return application


@pytest.fixture
async def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://t")


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/v1/things/x?q=%00l", "q"),
        ("/v1/things/x?q=a%1Fb", "q"),
        ("/v1/things/x?q=%7F", "q"),
        ("/v1/things/%00x", "path"),
        ("/v1/things/x%0A", "path"),
        ("/v1/things/x?q=%FF%FE", "query"),
        ("/v1/things/x?%00=1", "query"),
        ("/v1/things/%FF%FE", "path"),
        ("/v1/things/%ED%A0%80", "path"),
    ],
)
async def test_urls_breaking_the_text_rule_are_422_naming_the_field(
    client: httpx.AsyncClient, url: str, field: str
) -> None:
    response = await client.get(url)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["field"] == field


async def test_vietnamese_text_and_ordinary_escapes_pass(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/things/ph%C6%B0%E1%BB%9Dng", params={"q": "Bắc Ninh 1+1"})

    assert response.status_code == 200
    assert response.json() == {"name": "phường", "q": "Bắc Ninh 1+1"}


async def test_a_database_refusing_text_is_a_422_not_a_500(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/store", params={"text": "ok"})

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON


def test_free_text_keeps_tabs_and_newlines_but_not_other_controls() -> None:
    assert free_text_problem("dòng 1\n\tdòng 2\r\n") is None
    assert free_text_problem("a\x00b") == "contains the control character U+0000 at 1"
    assert free_text_problem("\ud800") is not None


def test_parameters_refuse_every_control_and_lone_surrogates() -> None:
    assert parameter_problem("a\tb") is not None
    assert parameter_problem("x\udfff") is not None
    assert parameter_problem("Sở Xây dựng") is None


def test_a_url_without_query_or_escapes_is_fine() -> None:
    assert url_problem({"type": "http", "path": "/v1/x", "raw_path": b"/v1/x"}) is None


async def test_an_escaped_replacement_character_is_text_not_invalid_utf8(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/things/a%EF%BF%BDb")

    assert response.status_code == 200, response.text
    assert response.json()["name"] == "a\ufffdb"
