"""The Open311 facade driven as an outside client would: the ``georeport`` package from PyPI
(GeoReport v2 wrapper, requests + xmltodict) over real HTTP, in JSON and in XML.

georeport 0.3.1 lists services, reads a definition and reads requests; it has no call to
post a request or to resolve a token, so those two steps use httpx, form-encoded as the
spec says.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any

import httpx
import pytest
import xmltodict
from georeport import GeoReport

from paht_devenv.fuzz import serving

pytestmark = pytest.mark.integration

BASE = "/open311/v2"
CODE = re.compile(r"^[A-Z0-9_.]+$")


def as_list(value: Any) -> list[Any]:
    """xmltodict gives one child as a dict, several as a list."""
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_a_georeport_client_lists_defines_posts_resolves_and_reads(
    intake: Any, fmt: str
) -> None:
    async with serving(intake.app) as base_url:
        root = f"{base_url}{BASE}"
        client = GeoReport(root, jurisdiction=intake.settings.jurisdiction_id, output_format=fmt)
        services = as_list(await asyncio.to_thread(client.get_service_list))
        code = next(s["service_code"] for s in services if s["service_code"] == "INFRA.ROAD")
        definition = await asyncio.to_thread(client.get_service_definition, code)
        async with httpx.AsyncClient(base_url=root) as http:
            posted = await http.post(
                f"/requests.{fmt}",
                data={
                    "api_key": intake.api_key,
                    "jurisdiction_id": intake.settings.jurisdiction_id,
                    "service_code": code,
                    "lat": "21.1861",
                    "long": "106.0763",
                    "description": "Ổ gà lớn trước cổng trường",
                },
            )
            assert posted.status_code == 200, posted.text
            token = _first(posted, fmt)["token"]
            resolved = await http.get(f"/tokens/{token}.{fmt}")
            assert resolved.status_code == 200, resolved.text
            request_id = _first(resolved, fmt)["service_request_id"]
        one = await asyncio.to_thread(client.get_service_request, request_id)
        listed = as_list(
            await asyncio.to_thread(client.get_service_requests, service_request_id=request_id)
        )

    assert {s["type"] for s in services} == {"batch"}
    assert all(s["group"] and not CODE.match(s["group"]) for s in services), services
    assert definition["service_code"] == code
    attributes = as_list(
        definition["attributes"]["attribute"] if fmt == "xml" else definition["attributes"]
    )
    assert {a["code"] for a in attributes} == {"urgency", "commune_code"}
    assert one["service_request_id"] == request_id
    assert one["service_code"] == code
    assert [r["service_request_id"] for r in listed] == [request_id]


def _first(response: httpx.Response, fmt: str) -> dict[str, Any]:
    if fmt == "json":
        first: dict[str, Any] = response.json()[0]
        return first
    return dict(as_list(xmltodict.parse(response.content)["service_requests"]["request"])[0])


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_discovery_changeset_is_a_datetime_in_both_formats(intake: Any, fmt: str) -> None:
    response = await intake.client.get(f"{BASE}/discovery.{fmt}")

    assert response.status_code == 200
    if fmt == "json":
        document = response.json()
        changesets = [document["changeset"], document["endpoints"][0]["changeset"]]
    else:
        document = xmltodict.parse(response.content)["discovery"]
        changesets = [document["changeset"], document["endpoints"]["endpoint"]["changeset"]]
    for changeset in changesets:
        assert datetime.fromisoformat(changeset).tzinfo is not None, changeset
