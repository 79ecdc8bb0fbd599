"""Every page a person is pointed at works with the internet blocked.

The system is started the way `make run` starts it; headless Debian Chromium (driven by
Playwright, ``executable_path`` = the Debian binary, no downloaded browser) opens every URL
`make run` prints, every URL the README shows and every link of each front page, with every
request to a host other than 127.0.0.1 aborted. A page passes when no request failed or was
aborted, no response was an error and its content is there (Swagger UI lists every operation,
ReDoc renders them, the AsyncAPI page lists every topic). Prometheus is queried by `service`.

``PAHT_SCREENSHOT_DIR=docs/screenshots`` keeps the screenshots of the docs pages there (the
committed ones were made so); by default they go to a temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Error,
    Page,
    Request,
    Response,
    Route,
    async_playwright,
)

from paht_common.asyncapi import document as asyncapi_document
from paht_devenv.__main__ import _banner
from paht_devenv.environment import SERVICES, Environment, Ports, throwaway_environment

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
LOCAL_URL = re.compile(r"http://127\.0\.0\.1:(\d+)(/[^\s|`),]*)?")
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
DEBIAN_PROMETHEUS_UI_ERRORS = frozenset({"Unexpected token 'export'"})
"""Debian's prometheus 2.42 web UI loads one ES module as a classic script; the UI still
renders and queries. Tolerated on the Prometheus page only, and only this message."""


@pytest.fixture(scope="module")
def system() -> Iterator[Environment]:
    """Everything started the way `make run` starts it, on free ports in a temp dir."""
    with throwaway_environment("paht-offline-", with_prometheus=True) as env:
        env.start_all()
        yield env


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("PAHT_SCREENSHOT_DIR")
    directory = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@dataclass
class Offline:
    """A browser context in which only 127.0.0.1 answers; what was aborted is recorded."""

    context: BrowserContext
    aborted: list[str] = field(default_factory=list)

    async def only_localhost(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            self.aborted.append(route.request.url)
            await route.abort("internetdisconnected")


@pytest.fixture(scope="module")
async def offline() -> AsyncIterator[Offline]:
    chromium = shutil.which("chromium")
    assert chromium is not None, "chromium not found: install the Debian package chromium"
    async with async_playwright() as playwright:
        browser: Browser = await playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox"]
        )
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        handle = Offline(context)
        await context.route("**/*", handle.only_localhost)
        yield handle
        await browser.close()


def service_ports(env: Environment) -> dict[int, str]:
    return {port: name for name, port in env.ports.services.items()}


def banner_urls(env: Environment) -> list[str]:
    return [match.group(0) for match in LOCAL_URL.finditer(_banner(env))]


def readme_urls(env: Environment) -> list[str]:
    """The README's links (written for the default ports), on this environment's ports."""
    defaults = Ports()
    actual = {port: env.ports.services[name] for name, port in defaults.services.items()}
    actual[defaults.prometheus] = env.ports.prometheus
    found = LOCAL_URL.findall(README.read_text(encoding="utf-8"))
    return sorted({f"http://127.0.0.1:{actual[int(port)]}{path or '/'}" for port, path in found})


def operation_count(openapi: dict[str, Any]) -> int:
    return sum(len(HTTP_METHODS & set(item)) for item in openapi["paths"].values())


async def check_content(page: Page, url: str, name: str, shots: Path) -> list[str]:
    """What is missing from the page at url (empty when its content is all there)."""
    path = urlsplit(url).path
    base = url[: -len(path)] if path != "/" else url.rstrip("/")
    if name == "prometheus":
        await page.screenshot(path=shots / "prometheus.png")
        return [] if "Prometheus" in await page.title() else ["no Prometheus UI"]
    if path == "/docs":
        openapi = await (await page.request.get(f"{base}/openapi.json")).json()
        await page.wait_for_selector(".opblock", timeout=20_000)
        shown = await page.locator(".opblock").count()
        await page.screenshot(path=shots / f"{name}-swagger-ui.png")
        expected = operation_count(openapi)
        return [] if shown == expected else [f"Swagger UI lists {shown} of {expected} operations"]
    if path == "/redoc":
        await page.wait_for_selector("[data-section-id^='operation/'] h2", timeout=20_000)
        await page.screenshot(path=shots / f"{name}-redoc.png")
        title = await page.locator(".api-info h1").inner_text()
        return [] if f"PAHT {name}".lower() in title.lower() else [f"ReDoc title {title!r}"]
    if path == "/asyncapi":
        rows = await page.locator("tbody tr").count()
        expected = len(asyncapi_document()["channels"])
        await page.screenshot(path=shots / f"{name}-asyncapi.png")
        return [] if rows == expected else [f"{rows} of {expected} topics listed"]
    if path == "/":
        await page.screenshot(path=shots / f"{name}-front-page.png")
        heading = await page.locator("h1").inner_text()
        return [] if f"PAHT {name}" in heading else [f"front page heading {heading!r}"]
    text = await page.locator("body").inner_text()
    return [] if text.strip() else ["empty page"]


async def open_offline(offline: Offline, url: str, name: str, shots: Path) -> list[str]:
    """Problems seen opening url: failed or aborted requests, error responses, missing content."""
    problems: list[str] = []

    def failed(request: Request) -> None:
        problems.append(f"request failed: {request.url} ({request.failure})")

    def answered(response: Response) -> None:
        if response.status >= 400:
            problems.append(f"{response.status} from {response.url}")

    page = await offline.context.new_page()
    page.on("requestfailed", failed)
    page.on("response", answered)

    def script_error(error: Error) -> None:
        if not (name == "prometheus" and error.message in DEBIAN_PROMETHEUS_UI_ERRORS):
            problems.append(f"script error: {error}")

    page.on("pageerror", script_error)
    try:
        response = await page.goto(url, wait_until="networkidle", timeout=30_000)
        if response is None or not response.ok:
            problems.append(f"navigation answered {response and response.status}")
        problems += await check_content(page, url, name, shots)
    finally:
        await page.close()
    return problems


def name_of(env: Environment, url: str) -> str:
    port = urlsplit(url).port
    return "prometheus" if port == env.ports.prometheus else service_ports(env)[port or 0]


async def open_all(
    env: Environment, offline: Offline, urls: list[str], shots: Path
) -> dict[str, list[str]]:
    results = {url: await open_offline(offline, url, name_of(env, url), shots) for url in urls}
    return {url: problems for url, problems in results.items() if problems}


async def test_every_url_make_run_prints_opens_with_content_offline(
    system: Environment, offline: Offline, screenshots: Path
) -> None:
    urls = banner_urls(system)

    problems = await open_all(system, offline, urls, screenshots)

    assert len(urls) >= 2 * len(SERVICES) + 3
    assert problems == {}
    assert offline.aborted == []


async def test_every_url_the_readme_shows_opens_with_content_offline(
    system: Environment, offline: Offline, screenshots: Path
) -> None:
    urls = readme_urls(system)

    problems = await open_all(system, offline, urls, screenshots)

    assert len(urls) >= 4 * len(SERVICES) + 2
    assert problems == {}
    assert offline.aborted == []


@pytest.mark.parametrize("service", SERVICES)
async def test_every_front_page_link_opens_with_content_offline(
    system: Environment, offline: Offline, screenshots: Path, service: str
) -> None:
    home = f"http://127.0.0.1:{system.ports.services[service]}/"
    page = await offline.context.new_page()
    await page.goto(home, wait_until="networkidle")
    hrefs = await page.locator("a").evaluate_all("links => links.map(a => a.href)")
    await page.close()

    problems = await open_all(system, offline, sorted(set(hrefs)), screenshots)

    assert {"/docs", "/redoc", "/asyncapi", "/healthz", "/readyz", "/metrics"} <= {
        urlsplit(href).path for href in hrefs
    }
    assert problems == {}
    assert offline.aborted == []


async def prometheus_query(client: httpx.AsyncClient, url: str, query: str) -> list[Any]:
    body = (await client.get(url, params={"query": query})).json()
    assert body["status"] == "success", body
    result: list[Any] = body["data"]["result"]
    return result


async def test_prometheus_finds_each_service_by_its_service_label(system: Environment) -> None:
    url = f"http://127.0.0.1:{system.ports.prometheus}/api/v1/query"
    async with asyncio.timeout(90), httpx.AsyncClient(timeout=10) as client:
        while True:
            outboxes = await prometheus_query(
                client, url, "count by (service, outbox) (paht_outbox_backlog)"
            )
            found = {(r["metric"].get("service"), r["metric"].get("outbox")) for r in outboxes}
            if len(found) >= len(SERVICES):
                break
            await asyncio.sleep(1)
        by_service = {
            service: await prometheus_query(client, url, f'up{{service="{service}"}}')
            for service in SERVICES
        }
        exported = await prometheus_query(
            client, url, '{__name__=~".+", exported_service=~".+"} or {exported_job=~".+"}'
        )

    assert found == {(service, service) for service in SERVICES}
    assert {s: [r["value"][1] for r in rows] for s, rows in by_service.items()} == dict.fromkeys(
        SERVICES, ["1"]
    )
    assert exported == []
