"""API docs, the AsyncAPI page and a front page, served by each service itself and offline.

FastAPI's own /docs and /redoc load Swagger UI, ReDoc and Google Fonts from public CDNs,
which a provincial data centre cannot reach. ``install_docs(app, "routing")`` replaces them
with pages whose every asset comes from the same process: the Swagger UI and ReDoc bundles
(and a favicon) shipped inside the pinned ``fastapi-offline`` wheel (MIT), served under
``/static/docs``. ReDoc is rendered without Google Fonts and its bundle's one hard-wired
off-host image (the sidebar's Redocly logo) is pointed at the local favicon; Swagger UI runs
without the online validator badge.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Final

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute, Route

from paht_common import asyncapi
from paht_common.docs_html import About, Link, asyncapi_page, front_page

ASSETS_DIR: Final = Path(fastapi_offline.__file__).parent / "static"
"""swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and favicon.png."""
ASSETS_URL: Final = "/static/docs"
DOCS_URL: Final = "/docs"
REDOC_URL: Final = "/redoc"
ASYNCAPI_URL: Final = "/asyncapi"
ASYNCAPI_JSON_URL: Final = "/asyncapi.json"
REDOC_LOGO: Final = "https://cdn.redoc.ly/redoc/logo-mini.svg"

ABOUT: Final[dict[str, About]] = {
    "intake": About(
        name="intake",
        title_vi="Tiếp nhận phản ánh",
        title_en="Report intake",
        summary_vi=(
            "Nhận phản ánh của người dân từ ứng dụng, cổng thông tin, đường dây nóng và Zalo; "
            "cán bộ tiếp nhận, phân loại và giải quyết phản ánh; giao diện Open311 GeoReport "
            "v2 cho các ứng dụng sẵn có."
        ),
        summary_en=(
            "Receives citizens' reports from apps, portals, hotlines and Zalo; staff accept, "
            "classify and resolve them; an Open311 GeoReport v2 facade serves existing clients."
        ),
        extra_links=(
            Link(
                "/open311/v2/discovery.json",
                "Tài liệu khám phá Open311",
                "Open311 discovery document",
            ),
        ),
    ),
    "routing": About(
        name="routing",
        title_vi="Phân công xử lý",
        title_en="Routing",
        summary_vi=(
            "Chuyển mỗi phản ánh đến cơ quan chịu trách nhiệm theo lĩnh vực và xã, phường, "
            "và lưu lịch sử phân công."
        ),
        summary_en=(
            "Routes each report to the responsible agency by field and commune, and keeps "
            "the history of assignments."
        ),
    ),
    "sla": About(
        name="sla",
        title_vi="Thời hạn xử lý",
        title_en="Deadlines (SLA)",
        summary_vi=(
            "Tính thời hạn tiếp nhận và giải quyết theo thời gian làm việc (giờ hành chính, "
            "Tết âm lịch, ngày nghỉ bù, ngày làm bù); cảnh báo và chuyển cấp khi sắp hoặc "
            "đã quá hạn."
        ),
        summary_en=(
            "Counts acknowledgement and resolution deadlines in Vietnamese working time "
            "(office hours, lunar Tết, observed holidays, swapped working days) and warns and "
            "escalates as they near or pass."
        ),
    ),
    "notify": About(
        name="notify",
        title_vi="Thông báo",
        title_en="Notifications",
        summary_vi=(
            "Gửi cảnh báo cho cán bộ qua Web Push và email, và webhook có chữ ký "
            "(Standard Webhooks) đến hệ thống của cơ quan và ứng dụng."
        ),
        summary_en=(
            "Alerts agency staff by Web Push and email, and agencies' and upstream apps' "
            "systems by signed Standard Webhooks."
        ),
    ),
}
"""Front-page text of every service, keyed by the name ``install_docs`` is given."""

COMMON_LINKS: Final = (
    Link(DOCS_URL, "Tài liệu API (Swagger UI)", "API docs (Swagger UI)"),
    Link(REDOC_URL, "Tài liệu API (ReDoc)", "API reference (ReDoc)"),
    Link("/openapi.json", "Mô tả OpenAPI (JSON)", "OpenAPI document (JSON)"),
    Link(ASYNCAPI_URL, "Sự kiện Kafka (AsyncAPI)", "Kafka events (AsyncAPI)"),
    Link("/healthz", "Tình trạng tiến trình", "Health (process alive)"),
    Link("/readyz", "Sẵn sàng (cơ sở dữ liệu, Kafka)", "Readiness (database, Kafka)"),
    Link("/metrics", "Số đo cho Prometheus", "Prometheus metrics"),
)


def _without_cdn_docs(app: FastAPI) -> list[BaseRoute]:
    """The app's routes less the CDN-backed pages FastAPI added at construction."""
    cdn_pages = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    return [
        route
        for route in app.router.routes
        if not (isinstance(route, Route) and route.path in cdn_pages)
    ]


@functools.cache
def redoc_bundle() -> bytes:
    """ReDoc's standalone bundle with its Redocly logo image served from this process."""
    bundle = (ASSETS_DIR / "redoc.standalone.js").read_bytes()
    return bundle.replace(REDOC_LOGO.encode(), f"{ASSETS_URL}/favicon.png".encode())


def install_docs(app: FastAPI, service: str) -> None:
    """Serve /, /docs, /redoc, /asyncapi and their assets from this process (no CDN).

    Call once, right after constructing the app; ``service`` is a key of ``ABOUT``.
    """
    about = ABOUT[service]
    links = (*COMMON_LINKS, *about.extra_links)
    app.router.routes[:] = _without_cdn_docs(app)
    app.docs_url = DOCS_URL
    app.redoc_url = REDOC_URL
    oauth2_redirect = app.swagger_ui_oauth2_redirect_url or f"{DOCS_URL}/oauth2-redirect"
    openapi_url = app.openapi_url or "/openapi.json"
    icon = f"{ASSETS_URL}/favicon.png"

    @app.get(f"{ASSETS_URL}/redoc.standalone.js", include_in_schema=False)
    async def redoc_js() -> Response:
        return Response(redoc_bundle(), media_type="text/javascript")

    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get("/", include_in_schema=False)
    async def home() -> HTMLResponse:
        return HTMLResponse(front_page(about, links))

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(ASSETS_DIR / "favicon.png", media_type="image/png")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect,
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=icon,
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=icon,
            with_google_fonts=False,
        )

    @app.get(ASYNCAPI_URL, include_in_schema=False)
    async def asyncapi_html() -> HTMLResponse:
        return HTMLResponse(asyncapi_page(asyncapi.document(), json_href=ASYNCAPI_JSON_URL))

    @app.get(ASYNCAPI_JSON_URL, include_in_schema=False)
    async def asyncapi_json() -> JSONResponse:
        return JSONResponse(asyncapi.document())
