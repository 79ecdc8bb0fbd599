"""Regression of the NUL-byte 500 on the SLA API (issue #18)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from paht_common.testing import random_id
from sla.api import build_app
from sla.settings import SlaSettings

pytestmark = pytest.mark.integration


async def test_a_nul_byte_in_a_query_parameter_is_a_422_naming_it(
    fresh_database: str, kafka_bootstrap: str
) -> None:
    app_id = random_id("sla-text-")
    settings = SlaSettings(
        database_url=fresh_database, kafka_bootstrap=kafka_bootstrap, faust_app_id=app_id
    )
    app = build_app(settings)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c,
        ):
            response = await c.get("/v1/sla/overdue?agency=%00x")
    finally:
        shutil.rmtree(Path(f"{app_id}-data"), ignore_errors=True)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == "agency"
