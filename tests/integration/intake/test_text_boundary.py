"""Regressions of the NUL-byte 500s (issue #18): intake and its Open311 facade answer 4xx."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "url",
    ["/open311/v2/requests.json?service_code=%00x", "/open311/v2/services/%00x.json"],
)
async def test_open311_answers_a_nul_byte_with_its_own_errors_document(
    intake: Any, url: str
) -> None:
    response = await intake.client.get(url)

    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    (error,) = response.json()
    assert error["code"] == "invalid_parameter"


async def test_open311_xml_refusals_stay_xml(intake: Any) -> None:
    response = await intake.client.get("/open311/v2/requests.xml?status=%00")

    assert response.status_code == 400
    assert "<errors>" in response.text


async def test_the_v1_api_answers_a_nul_byte_with_a_problem(intake: Any) -> None:
    response = await intake.client.get("/v1/reports/%00")

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == "path"
