"""install_docs: the docs pages, the AsyncAPI page and the front page load nothing off-host."""

from __future__ import annotations

import re
import unicodedata

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from paht_common import asyncapi
from paht_common.docs import ABOUT, ASSETS_DIR, install_docs
from paht_common.http import ops_router

URL_ATTRIBUTE = re.compile(r"""(?:src|href|url)\s*[=:(]\s*["']?([^"' )>]+)""")


def client(service: str = "routing") -> TestClient:
    app = FastAPI(title=f"PAHT {service}")
    install_docs(app, service)
    app.include_router(ops_router({}))

    @app.get("/v1/things/{thing_id}", tags=["things"])
    async def get_thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    return TestClient(app)


def urls_in(html: str) -> list[str]:
    return URL_ATTRIBUTE.findall(html)


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc", "/asyncapi"])
def test_page_refers_only_to_urls_of_the_service_itself(path: str) -> None:
    response = client().get(path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    found = urls_in(response.text)
    assert found
    off_host = [url for url in found if not url.startswith(("/", "#"))]
    assert off_host == []


def test_swagger_ui_loads_its_bundle_and_css_from_the_shipped_assets() -> None:
    text = client().get("/docs").text

    assert '"/static/docs/swagger-ui-bundle.js"' in text
    assert '"/static/docs/swagger-ui.css"' in text
    assert "url: '/openapi.json'" in text
    assert '"validatorUrl": null' in text


def test_redoc_loads_its_bundle_locally_and_no_google_fonts() -> None:
    text = client().get("/redoc").text

    assert '"/static/docs/redoc.standalone.js"' in text
    assert "fonts.googleapis" not in text
    assert "fonts.gstatic" not in text


@pytest.mark.parametrize(
    ("asset", "media_type"),
    [
        ("swagger-ui-bundle.js", "javascript"),
        ("swagger-ui.css", "text/css"),
        ("favicon.png", "image/png"),
    ],
)
def test_every_asset_is_served_from_the_pinned_package(asset: str, media_type: str) -> None:
    response = client().get(f"/static/docs/{asset}")

    assert response.status_code == 200
    assert media_type in response.headers["content-type"]
    assert response.content == (ASSETS_DIR / asset).read_bytes()


def test_redoc_bundle_shows_its_logo_from_the_service_not_the_redocly_cdn() -> None:
    response = client().get("/static/docs/redoc.standalone.js")

    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert b"cdn.redoc.ly" in (ASSETS_DIR / "redoc.standalone.js").read_bytes()
    assert b"cdn.redoc.ly" not in response.content
    assert b'src:"/static/docs/favicon.png"' in response.content


def test_the_cdn_pages_fastapi_adds_are_replaced_not_duplicated() -> None:
    app = FastAPI()
    install_docs(app, "sla")

    paths = [getattr(route, "path", None) for route in app.router.routes]

    assert paths.count("/docs") == 1
    assert paths.count("/redoc") == 1
    assert paths.count("/docs/oauth2-redirect") == 1


def test_docs_pages_stay_out_of_the_openapi_document() -> None:
    paths = client().get("/openapi.json").json()["paths"]

    assert set(paths) == {"/v1/things/{thing_id}", "/healthz", "/readyz"}


@pytest.mark.parametrize("service", sorted(ABOUT))
def test_front_page_links_resolve_on_the_service(service: str) -> None:
    http = client(service)
    text = http.get("/").text
    links = [url for url in urls_in(text) if not url.startswith("/static/")]

    assert {"/docs", "/redoc", "/asyncapi", "/healthz", "/readyz", "/metrics"} <= set(links)
    local = [url for url in links if not url.startswith("/open311/")]
    assert {url: http.get(url).status_code for url in local} == dict.fromkeys(local, 200)


def test_front_page_speaks_vietnamese_and_english_in_nfc() -> None:
    text = client("sla").get("/").text

    assert unicodedata.is_normalized("NFC", text)
    assert ABOUT["sla"].summary_vi in text
    assert ABOUT["sla"].summary_en in text
    assert 'lang="vi"' in text
    assert 'lang="en"' in text


def test_intake_front_page_links_the_open311_discovery_document() -> None:
    text = client("intake").get("/").text

    assert 'href="/open311/v2/discovery.json"' in text


def test_asyncapi_page_shows_every_topic_and_message() -> None:
    document = asyncapi.document()
    text = client().get("/asyncapi").text

    for channel in document["channels"].values():
        assert f"<code>{channel['address']}</code>" in text
    for message in document["components"]["messages"].values():
        assert message["name"] in text
    assert client().get("/asyncapi.json").json() == document
