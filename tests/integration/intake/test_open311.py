"""Open311 GeoReport v2 conformance of the intake facade, against real PostgreSQL and Kafka.

Written from the contract (standards.md §3, the GeoReport v2 and Service Discovery specs):
element names, status codes, content types and field meanings are spelled out here rather
than imported from the implementation.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from PIL import Image

from intake import repository
from intake.api import MIGRATIONS, build_app
from intake.auth import dev_key_pair, hash_key, issue_token
from intake.seed import seed
from intake.settings import IntakeSettings
from paht_common.runtime import migrate

pytestmark = pytest.mark.integration

API_KEY = "test-key-123"
BASE = "/open311/v2"
JSON_TYPE = "application/json; charset=utf-8"
XML_TYPE = "text/xml; charset=utf-8"
XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>'
# Inside the Bắc Ninh bounding box; 07246 is one of its wards (2025 units).
LAT, LONG, COMMUNE = "21.1861", "106.0763", "07246"
REQUEST_FIELDS = {
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
}


@dataclass
class Facade:
    """The running intake app, an HTTP client on it, and the database behind it."""

    client: httpx.AsyncClient
    settings: IntakeSettings
    db: asyncpg.Connection

    async def submit(self, fmt: str = "json", **fields: str) -> str:
        """POST a request and return its token."""
        data = {"api_key": API_KEY, "service_code": "INFRA.ROAD", "lat": LAT, "long": LONG}
        data.update(fields)
        response = await self.client.post(f"{BASE}/requests.{fmt}", data=data)
        assert response.status_code == 200, response.text
        return str(json.loads(response.content)[0]["token"])

    async def report(self, **fields: str) -> str:
        """POST a request and return its service_request_id (resolved through its token)."""
        token = await self.submit(**fields)
        response = await self.client.get(f"{BASE}/tokens/{token}.json")
        assert response.status_code == 200, response.text
        return str(response.json()[0]["service_request_id"])

    async def report_id(self, number: str) -> uuid.UUID:
        value = await self.db.fetchval("SELECT id FROM reports WHERE number = $1", number)
        assert isinstance(value, uuid.UUID)
        return value

    async def staff_action(self, number: str, action: dict[str, Any]) -> None:
        private, _ = dev_key_pair(self.settings.jwt_dev_key_dir)
        token = issue_token(
            private,
            subject="coordinator-1",
            role="coordinator",
            agency_id=None,
            issuer=self.settings.jwt_issuer,
            audience=self.settings.jwt_audience,
        )
        rid = await self.report_id(number)
        response = await self.client.post(
            f"/v1/reports/{rid}/actions",
            json=action,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text

    async def requests(self, fmt: str = "json", **params: str) -> httpx.Response:
        return await self.client.get(f"{BASE}/requests.{fmt}", params=params)

    async def numbers(self, **params: str) -> list[str]:
        response = await self.requests(**params)
        assert response.status_code == 200, response.text
        return [r["service_request_id"] for r in response.json()]


@pytest.fixture
async def facade(
    fresh_database: str, kafka_bootstrap: str, tmp_path: Path
) -> AsyncIterator[Facade]:
    settings = IntakeSettings(
        database_url=fresh_database,
        kafka_bootstrap=kafka_bootstrap,
        jwt_dev_key_dir=tmp_path,
        dev_api_key=API_KEY,
    )
    await migrate(settings, MIGRATIONS)
    await seed(settings)
    app = build_app(settings)
    db = await asyncpg.connect(fresh_database)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test"
            ) as client,
        ):
            yield Facade(client=client, settings=settings, db=db)
    finally:
        await db.close()


def xml_of(response: httpx.Response, root: str) -> ET.Element:
    assert response.headers["content-type"] == XML_TYPE
    assert response.content.startswith(XML_DECLARATION)
    tree = ET.fromstring(response.content)
    assert tree.tag == root
    return tree


def json_of(response: httpx.Response) -> Any:
    assert response.headers["content-type"] == JSON_TYPE
    return json.loads(response.content)


def assert_errors(response: httpx.Response, fmt: str, status: int) -> list[dict[str, str]]:
    """The spec's error document: errors[] of error {code, description}."""
    assert response.status_code == status, response.text
    if fmt == "json":
        errors = json_of(response)
        assert isinstance(errors, list)
        assert errors
        assert all(set(e) == {"code", "description"} for e in errors)
        return [{"code": str(e["code"]), "description": e["description"]} for e in errors]
    tree = xml_of(response, "errors")
    items = tree.findall("error")
    assert items
    assert all([c.tag for c in item] == ["code", "description"] for item in items)
    return [
        {"code": item.findtext("code") or "", "description": item.findtext("description") or ""}
        for item in items
    ]


# --- discovery and services ----------------------------------------------------------------


async def test_discovery_json_announces_the_georeport_v2_endpoint(facade: Facade) -> None:
    response = await facade.client.get(f"{BASE}/discovery.json")
    assert response.status_code == 200
    document = json_of(response)
    assert {"changeset", "contact", "key_service", "endpoints"} <= set(document)
    assert document["contact"]
    assert document["key_service"]
    [endpoint] = document["endpoints"]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["url"] == "http://test/open311/v2"
    assert endpoint["type"] == "production"
    assert endpoint["changeset"]
    assert set(endpoint["formats"]) == {"text/xml", "application/json"}


async def test_discovery_xml_uses_the_spec_element_names(facade: Facade) -> None:
    tree = xml_of(await facade.client.get(f"{BASE}/discovery.xml"), "discovery")
    assert tree.findtext("changeset")
    assert tree.findtext("contact")
    assert tree.findtext("key_service")
    endpoint = tree.find("endpoints/endpoint")
    assert endpoint is not None
    assert endpoint.findtext("specification") == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint.findtext("url") == "http://test/open311/v2"
    assert endpoint.findtext("type") == "production"
    formats = [f.text for f in endpoint.findall("formats/format")]
    assert set(formats) == {"text/xml", "application/json"}


async def test_services_json_lists_the_category_catalogue(facade: Facade) -> None:
    response = await facade.client.get(f"{BASE}/services.json")
    assert response.status_code == 200
    services = {s["service_code"]: s for s in json_of(response)}
    assert len(services) > 10
    road = services["INFRA.ROAD"]
    assert road == {
        "service_code": "INFRA.ROAD",
        "service_name": "Đường, cầu hư hỏng",
        "description": "Hạ tầng – Đường, cầu hư hỏng",
        "metadata": True,
        "type": "batch",
        "keywords": "ổ gà, sụt lún, nứt, cầu",
        "group": "Hạ tầng",
    }
    assert all(s["type"] == "batch" and s["metadata"] is True for s in services.values())


async def test_services_xml_uses_the_spec_element_names(facade: Facade) -> None:
    tree = xml_of(await facade.client.get(f"{BASE}/services.xml"), "services")
    items = tree.findall("service")
    assert items
    assert {c.tag for c in items[0]} == {
        "service_code",
        "service_name",
        "description",
        "metadata",
        "type",
        "keywords",
        "group",
    }
    road = next(s for s in items if s.findtext("service_code") == "INFRA.ROAD")
    assert road.findtext("service_name") == "Đường, cầu hư hỏng"
    assert road.findtext("metadata") == "true"
    assert road.findtext("type") == "batch"
    assert road.findtext("group") == "Hạ tầng"


async def test_service_definition_json_has_urgency_and_commune_code(facade: Facade) -> None:
    response = await facade.client.get(f"{BASE}/services/INFRA.ROAD.json")
    assert response.status_code == 200
    definition = json_of(response)
    assert definition["service_code"] == "INFRA.ROAD"
    attributes = {a["code"]: a for a in definition["attributes"]}
    urgency, commune = attributes["urgency"], attributes["commune_code"]
    assert urgency["variable"] is True
    assert urgency["datatype"] == "singlevaluelist"
    assert urgency["required"] is False
    assert urgency["order"] == 1
    assert [v["key"] for v in urgency["values"]] == ["urgent", "normal", "complex"]
    assert all(v["name"] for v in urgency["values"])
    assert commune["datatype"] == "string"
    assert commune["required"] is False
    assert commune["order"] == 2
    assert commune["description"]
    orders = [a["order"] for a in definition["attributes"]]
    assert len(set(orders)) == len(orders)
    assert all(isinstance(o, int) and o > 0 for o in orders)


async def test_service_definition_xml_uses_the_spec_element_names(facade: Facade) -> None:
    response = await facade.client.get(f"{BASE}/services/ENVIRONMENT.WASTE.xml")
    tree = xml_of(response, "service_definition")
    assert tree.findtext("service_code") == "ENVIRONMENT.WASTE"
    attributes = tree.findall("attributes/attribute")
    assert [a.findtext("code") for a in attributes] == ["urgency", "commune_code"]
    first = attributes[0]
    for name in ("variable", "code", "datatype", "required", "datatype_description", "order"):
        assert first.find(name) is not None, name
    assert [v.findtext("key") for v in first.findall("values/value")] == [
        "urgent",
        "normal",
        "complex",
    ]


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_unknown_service_definition_is_404(facade: Facade, fmt: str) -> None:
    response = await facade.client.get(f"{BASE}/services/NO.SUCH_SERVICE.{fmt}")
    assert_errors(response, fmt, 404)


# --- POST and tokens -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_post_without_api_key_is_403(facade: Facade, fmt: str) -> None:
    response = await facade.client.post(
        f"{BASE}/requests.{fmt}", data={"service_code": "INFRA.ROAD", "lat": LAT, "long": LONG}
    )
    errors = assert_errors(response, fmt, 403)
    assert "api_key" in errors[0]["description"]


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_post_with_an_invalid_api_key_is_403(facade: Facade, fmt: str) -> None:
    response = await facade.client.post(
        f"{BASE}/requests.{fmt}",
        data={"api_key": "wrong", "service_code": "INFRA.ROAD", "lat": LAT, "long": LONG},
    )
    assert_errors(response, fmt, 403)


async def test_post_with_a_read_only_api_key_is_403(facade: Facade) -> None:
    await repository.insert_key(
        facade.db,
        key_id=uuid.uuid4(),
        app_id="reader",
        key_hash=hash_key("read-only-key"),
        scopes=["reports:read"],
        rate_per_minute=600,
    )
    response = await facade.client.post(
        f"{BASE}/requests.json",
        data={"api_key": "read-only-key", "service_code": "INFRA.ROAD", "lat": LAT, "long": LONG},
    )
    assert_errors(response, "json", 403)


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_post_without_service_code_is_400(facade: Facade, fmt: str) -> None:
    response = await facade.client.post(
        f"{BASE}/requests.{fmt}", data={"api_key": API_KEY, "lat": LAT, "long": LONG}
    )
    errors = assert_errors(response, fmt, 400)
    assert "service_code" in errors[0]["description"]


async def test_post_with_an_empty_service_code_is_like_no_service_code(facade: Facade) -> None:
    response = await facade.client.post(
        f"{BASE}/requests.json",
        data={"api_key": API_KEY, "service_code": "", "lat": LAT, "long": LONG},
    )
    errors = assert_errors(response, "json", 400)
    assert "service_code" in errors[0]["description"]


async def test_post_with_an_unknown_service_code_is_404(facade: Facade) -> None:
    response = await facade.client.post(
        f"{BASE}/requests.json",
        data={"api_key": API_KEY, "service_code": "NO.SUCH", "lat": LAT, "long": LONG},
    )
    errors = assert_errors(response, "json", 404)
    assert "service_code" in errors[0]["description"]


@pytest.mark.parametrize(
    ("fmt", "lat"), [("json", "abc"), ("xml", "abc"), ("json", "95"), ("json", "10.5")]
)
async def test_post_with_a_bad_lat_is_400_naming_it(facade: Facade, fmt: str, lat: str) -> None:
    response = await facade.client.post(
        f"{BASE}/requests.{fmt}",
        data={"api_key": API_KEY, "service_code": "INFRA.ROAD", "lat": lat, "long": LONG},
    )
    errors = assert_errors(response, fmt, 400)
    assert any(e["description"].startswith("lat") for e in errors), errors


async def test_post_without_any_location_is_400(facade: Facade) -> None:
    response = await facade.client.post(
        f"{BASE}/requests.json", data={"api_key": API_KEY, "service_code": "INFRA.ROAD"}
    )
    assert_errors(response, "json", 400)


async def test_post_with_html_description_is_400(facade: Facade) -> None:
    response = await facade.client.post(
        f"{BASE}/requests.json",
        data={
            "api_key": API_KEY,
            "service_code": "INFRA.ROAD",
            "address_string": "Phố Nguyễn Đăng Đạo",
            "description": "<script>alert(1)</script>",
        },
    )
    errors = assert_errors(response, "json", 400)
    assert errors[0]["description"].startswith("description")


async def test_post_answers_a_token_and_never_the_request_id(facade: Facade) -> None:
    response = await facade.client.post(
        f"{BASE}/requests.json",
        data={
            "api_key": API_KEY,
            "service_code": "INFRA.ROAD",
            "lat": LAT,
            "long": LONG,
            "description": "Ổ gà lớn giữa đường",
            "attribute[urgency]": "urgent",
            "attribute[commune_code]": COMMUNE,
        },
    )
    assert response.status_code == 200, response.text
    [answer] = json_of(response)
    assert answer["token"]
    assert "service_request_id" not in answer
    assert answer["service_notice"]

    token_response = await facade.client.get(f"{BASE}/tokens/{answer['token']}.json")
    assert token_response.status_code == 200
    [resolved] = json_of(token_response)
    assert resolved["token"] == answer["token"]
    number = resolved["service_request_id"]
    assert number.startswith("BN-")
    row = await facade.db.fetchrow(
        "SELECT channel, urgency, commune_code FROM reports WHERE number = $1", number
    )
    assert row is not None
    assert dict(row) == {"channel": "open311", "urgency": "urgent", "commune_code": COMMUNE}


async def test_post_and_token_in_xml(facade: Facade) -> None:
    response = await facade.client.post(
        f"{BASE}/requests.xml",
        data={
            "api_key": API_KEY,
            "service_code": "ENVIRONMENT.WASTE",
            "address_string": "Ngõ 12 phố Hàng Mã, phường Kinh Bắc",
            "address_id": COMMUNE,
            "description": "Rác & phế thải <đổ trộm> bên hồ",
        },
    )
    assert response.status_code == 200, response.text
    request = xml_of(response, "service_requests").find("request")
    assert request is not None
    token = request.findtext("token")
    assert token
    assert request.find("service_request_id") is None

    resolved = xml_of(await facade.client.get(f"{BASE}/tokens/{token}.xml"), "service_requests")
    assert resolved.findtext("request/token") == token
    number = resolved.findtext("request/service_request_id")
    assert number

    detail = xml_of(await facade.client.get(f"{BASE}/requests/{number}.xml"), "service_requests")
    assert detail.findtext("request/description") == "Rác & phế thải <đổ trộm> bên hồ"
    assert detail.findtext("request/address_id") == COMMUNE


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_unknown_token_is_404(facade: Facade, fmt: str) -> None:
    response = await facade.client.get(f"{BASE}/tokens/AAAAAAAAAAAAAAAAAAAAAAAA.{fmt}")
    assert_errors(response, fmt, 404)


async def test_idempotent_replay_returns_the_same_token_and_a_conflict_is_400(
    facade: Facade,
) -> None:
    data = {"api_key": API_KEY, "service_code": "INFRA.ROAD", "lat": LAT, "long": LONG}
    headers = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = await facade.client.post(f"{BASE}/requests.json", data=data, headers=headers)
    again = await facade.client.post(f"{BASE}/requests.json", data=data, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()[0]["token"] == again.json()[0]["token"]
    assert await facade.db.fetchval("SELECT count(*) FROM reports") == 1

    conflict = await facade.client.post(
        f"{BASE}/requests.json", data={**data, "description": "khác"}, headers=headers
    )
    errors = assert_errors(conflict, "json", 400)
    assert errors[0]["code"] == "duplicate"


# --- one request -----------------------------------------------------------------------


async def test_request_by_number_and_by_uuid_is_a_one_element_list(facade: Facade) -> None:
    number = await facade.report(
        description="Cống bị tắc",
        address_string="Đường Ngô Gia Tự",
        media_url="https://media.example.vn/cong.jpg",
    )
    rid = await facade.report_id(number)
    by_number = await facade.client.get(f"{BASE}/requests/{number}.json")
    by_uuid = await facade.client.get(f"{BASE}/requests/{rid}.json")
    assert by_number.status_code == by_uuid.status_code == 200
    assert json_of(by_number) == json_of(by_uuid)
    [request] = json_of(by_number)
    assert set(request) == REQUEST_FIELDS
    assert request["service_request_id"] == number
    assert request["status"] == "open"
    assert request["status_notes"] == "Chờ tiếp nhận"
    assert request["service_code"] == "INFRA.ROAD"
    assert request["service_name"] == "Đường, cầu hư hỏng"
    assert request["description"] == "Cống bị tắc"
    assert request["address"] == "Đường Ngô Gia Tự"
    assert request["lat"] == float(LAT)
    assert request["long"] == float(LONG)
    assert request["media_url"] == "https://media.example.vn/cong.jpg"
    assert request["requested_datetime"].endswith("+07:00")
    assert request["updated_datetime"].endswith("+07:00")
    requested = datetime.fromisoformat(request["requested_datetime"])
    assert abs(requested - datetime.now(UTC)) < timedelta(minutes=5)


async def test_request_xml_has_the_spec_elements(facade: Facade) -> None:
    number = await facade.report()
    tree = xml_of(await facade.client.get(f"{BASE}/requests/{number}.xml"), "service_requests")
    [request] = tree.findall("request")
    assert {c.tag for c in request} == REQUEST_FIELDS
    assert request.findtext("service_request_id") == number
    assert request.findtext("status") == "open"


async def test_requests_never_show_the_reporter(facade: Facade) -> None:
    number = await facade.report(
        first_name="Thị Hoa",
        last_name="Trần",
        email="hoa.tran@example.vn",
        phone="0912345678",
        device_id="device-xyz-1",
        account_id="acct-77",
        description="Đèn đường không sáng",
    )
    for fmt in ("json", "xml"):
        body = (await facade.client.get(f"{BASE}/requests/{number}.{fmt}")).content.decode()
        listing = (await facade.requests(fmt)).content.decode()
        for secret in ("Hoa", "Trần", "hoa.tran@example.vn", "0912345678", "device-xyz", "acct"):
            assert secret not in body
            assert secret not in listing
    stored = await facade.db.fetchrow(
        "SELECT p.name, p.phone, p.email FROM reporters p JOIN reports r ON r.id = p.report_id "
        "WHERE r.number = $1",
        number,
    )
    assert stored is not None
    assert stored["phone"] == "0912345678"
    assert stored["email"] == "hoa.tran@example.vn"
    assert stored["name"] in ("Trần Thị Hoa", "Thị Hoa Trần")


async def test_non_public_report_hides_its_description(facade: Facade) -> None:
    number = await facade.report(description="Nội dung nhạy cảm")
    await facade.db.execute("UPDATE reports SET public = false WHERE number = $1", number)
    [request] = json_of(await facade.client.get(f"{BASE}/requests/{number}.json"))
    assert request["description"] is None


async def test_expected_datetime_is_the_sla_due_time_at_plus_seven(facade: Facade) -> None:
    number = await facade.report()
    await facade.db.execute(
        "UPDATE reports SET acknowledgement_due_at = $2, resolution_due_at = $3 WHERE number = $1",
        number,
        datetime(2030, 1, 2, 1, 0, tzinfo=UTC),
        datetime(2030, 1, 9, 10, 30, tzinfo=UTC),
    )
    [request] = json_of(await facade.client.get(f"{BASE}/requests/{number}.json"))
    assert request["expected_datetime"] == "2030-01-09T17:30:00+07:00"


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize(
    "rid", ["BN-2026-999999", "00000000-0000-4000-8000-000000000000", "nonsense"]
)
async def test_unknown_request_is_404(facade: Facade, fmt: str, rid: str) -> None:
    response = await facade.client.get(f"{BASE}/requests/{rid}.{fmt}")
    assert_errors(response, fmt, 404)


# --- listing and filters ---------------------------------------------------------------


async def test_requests_lists_json_and_xml(facade: Facade) -> None:
    first = await facade.report()
    second = await facade.report(service_code="INFRA.LIGHTING")
    assert await facade.numbers() == [second, first]  # newest first
    tree = xml_of(await facade.requests("xml"), "service_requests")
    assert [r.findtext("service_request_id") for r in tree.findall("request")] == [second, first]


async def test_filter_by_service_code_accepts_a_comma_list(facade: Facade) -> None:
    road = await facade.report(service_code="INFRA.ROAD")
    light = await facade.report(service_code="INFRA.LIGHTING")
    waste = await facade.report(service_code="ENVIRONMENT.WASTE")
    assert await facade.numbers(service_code="INFRA.LIGHTING") == [light]
    assert set(await facade.numbers(service_code="INFRA.ROAD,ENVIRONMENT.WASTE")) == {road, waste}


async def test_filter_by_status_and_closed_request_notes(facade: Facade) -> None:
    open_one = await facade.report()
    rejected = await facade.report(description="Tranh chấp đất đai giữa hai hộ")
    await facade.staff_action(rejected, {"type": "screen"})
    await facade.staff_action(rejected, {"type": "reject", "reason_code": "not_in_scope"})

    assert await facade.numbers(status="closed") == [rejected]
    assert await facade.numbers(status="open") == [open_one]
    assert set(await facade.numbers(status="open,closed")) == {open_one, rejected}

    [request] = json_of(await facade.client.get(f"{BASE}/requests/{rejected}.json"))
    assert request["status"] == "closed"
    assert request["status_notes"] == "Từ chối: Nội dung không thuộc phạm vi tiếp nhận"
    assert request["description"] is None  # rejected content is not published


async def test_status_other_than_open_or_closed_is_400(facade: Facade) -> None:
    assert_errors(await facade.requests(status="pending"), "json", 400)


async def test_service_request_id_overrides_every_other_filter(facade: Facade) -> None:
    a = await facade.report()
    b = await facade.report(service_code="INFRA.LIGHTING")
    rid_b = await facade.report_id(b)
    found = await facade.numbers(
        service_request_id=f"{a},{rid_b},BN-2026-999999",
        status="closed",
        service_code="ENVIRONMENT.WASTE",
        start_date="2000-01-01T00:00:00Z",
        end_date="2000-01-02T00:00:00Z",
    )
    assert set(found) == {a, b}


async def test_default_window_is_the_last_90_days(facade: Facade) -> None:
    old = await facade.report()
    recent = await facade.report()
    await facade.db.execute(
        "UPDATE reports SET submitted_at = now() - interval '100 days' WHERE number = $1", old
    )
    assert await facade.numbers() == [recent]
    now = datetime.now(UTC)
    window = {
        "start_date": (now - timedelta(days=110)).isoformat(),
        "end_date": (now - timedelta(days=95)).isoformat(),
    }
    assert await facade.numbers(**window) == [old]


async def test_date_range_with_offsets_filters_on_requested_datetime(facade: Facade) -> None:
    number = await facade.report()
    await facade.db.execute(
        "UPDATE reports SET submitted_at = '2026-02-01T10:00:00+07:00' WHERE number = $1", number
    )
    inside = {"start_date": "2026-02-01T09:00:00+07:00", "end_date": "2026-02-01T11:00:00+07:00"}
    after = {"start_date": "2026-02-01T04:00:00Z", "end_date": "2026-02-02T00:00:00Z"}
    assert await facade.numbers(**inside) == [number]
    assert await facade.numbers(**after) == []


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_date_range_over_90_days_is_400(facade: Facade, fmt: str) -> None:
    response = await facade.requests(
        fmt, start_date="2026-01-01T00:00:00+07:00", end_date="2026-04-02T00:00:00+07:00"
    )
    assert_errors(response, fmt, 400)


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize("name", ["start_date", "end_date", "updated_after"])
async def test_datetime_without_an_offset_is_400(facade: Facade, fmt: str, name: str) -> None:
    response = await facade.requests(fmt, **{name: "2026-01-01T00:00:00"})
    errors = assert_errors(response, fmt, 400)
    assert name in errors[0]["description"]


async def test_page_and_page_size(facade: Facade) -> None:
    numbers = [await facade.report() for _ in range(5)]
    newest_first = list(reversed(numbers))
    assert await facade.numbers(page_size="2") == newest_first[:2]
    assert await facade.numbers(page_size="2", page="2") == newest_first[2:4]
    assert await facade.numbers(page_size="2", page="3") == newest_first[4:]
    assert await facade.numbers(page_size="2", page="4") == []
    assert await facade.numbers(page="1") == newest_first


@pytest.mark.parametrize(
    "params",
    [{"page": "0"}, {"page": "x"}, {"page_size": "0"}, {"page_size": "1001"}, {"page": "-1"}],
)
async def test_bad_paging_is_400_not_a_framework_422(
    facade: Facade, params: dict[str, str]
) -> None:
    assert_errors(await facade.requests(**params), "json", 400)


async def test_updated_after_returns_only_changed_requests(facade: Facade) -> None:
    stale = await facade.report()
    fresh = await facade.report()
    await facade.db.execute(
        "UPDATE reports SET updated_at = now() - interval '2 hours' WHERE number = $1", stale
    )
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert await facade.numbers(updated_after=since) == [fresh]
    # an incremental sync is not cut off by the default 90-day window on requested_datetime
    await facade.db.execute(
        "UPDATE reports SET submitted_at = now() - interval '200 days' WHERE number = $1", fresh
    )
    assert await facade.numbers(updated_after=since) == [fresh]


# --- errors and jurisdiction ----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/discovery.yaml", "/services.html", "/requests.csv", "/services/INFRA.ROAD.txt"],
)
async def test_unknown_format_is_404(facade: Facade, path: str) -> None:
    response = await facade.client.get(BASE + path)
    assert response.status_code == 404
    xml_of(response, "errors")


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_unknown_path_is_404_in_the_spec_format(facade: Facade, fmt: str) -> None:
    assert_errors(await facade.client.get(f"{BASE}/nothing/here.{fmt}"), fmt, 404)


async def test_wrong_method_is_answered_in_the_spec_format(facade: Facade) -> None:
    response = await facade.client.delete(f"{BASE}/requests.json")
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    assert_errors(response, "json", 405)


async def test_jurisdiction_id_is_optional_and_checked(facade: Facade) -> None:
    ok = await facade.client.get(f"{BASE}/services.json", params={"jurisdiction_id": ""})
    assert ok.status_code == 200
    ours = await facade.client.get(
        f"{BASE}/services.json", params={"jurisdiction_id": facade.settings.jurisdiction_id}
    )
    assert ours.status_code == 200
    other = await facade.client.get(f"{BASE}/services.xml", params={"jurisdiction_id": "sfgov.org"})
    assert_errors(other, "xml", 404)


# --- multipart media[] (GeoReport v2.1 draft) --------------------------------------------


def jpeg_bytes(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (shade, shade, 255 - shade)).save(out, format="JPEG")
    return out.getvalue()


async def test_multipart_post_attaches_media_to_the_request(facade: Facade) -> None:
    photos = [jpeg_bytes(10), jpeg_bytes(200)]
    fields = {"api_key": API_KEY, "service_code": "INFRA.ROAD", "lat": LAT, "long": LONG}

    response = await facade.client.post(
        f"{BASE}/requests.json",
        data=fields,
        files=[("media[]", (f"{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)],
    )

    assert response.status_code == 200, response.text
    token = response.json()[0]["token"]
    number = (await facade.client.get(f"{BASE}/tokens/{token}.json")).json()[0][
        "service_request_id"
    ]
    report_id = await facade.report_id(number)
    shas = await facade.db.fetch(
        "SELECT sha256 FROM report_media WHERE report_id = $1 ORDER BY position", report_id
    )
    assert [r["sha256"] for r in shas] == [hashlib.sha256(p).hexdigest() for p in photos]


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_multipart_post_with_a_text_file_is_400_naming_media(
    facade: Facade, fmt: str
) -> None:
    fields = {"api_key": API_KEY, "service_code": "INFRA.ROAD", "lat": LAT, "long": LONG}
    before = await facade.db.fetchval("SELECT count(*) FROM reports")

    response = await facade.client.post(
        f"{BASE}/requests.{fmt}",
        data=fields,
        files=[("media[]", ("x.jpg", b"not an image", "image/jpeg"))],
    )

    [error] = assert_errors(response, fmt, 400)
    assert error["code"] == "media"
    assert "media[][0]" in error["description"]
    assert await facade.db.fetchval("SELECT count(*) FROM reports") == before


async def test_multipart_post_without_files_is_like_a_form_post(facade: Facade) -> None:
    fields = {"api_key": API_KEY, "service_code": "INFRA.ROAD", "lat": LAT, "long": LONG}

    response = await facade.client.post(
        f"{BASE}/requests.json", data=fields, files=[("unrelated", ("a.txt", b"x", "text/plain"))]
    )

    assert response.status_code == 200, response.text
    assert set(response.json()[0]) == {"token", "service_notice"}


async def test_a_malformed_multipart_post_is_400(facade: Facade) -> None:
    body = (
        b"--b\r\nContent-Disposition: form-data; name=api_key\r\nBad[Header]: 1\r\n\r\n"
        + API_KEY.encode()
        + b"\r\n--b--\r\n"
    )

    response = await facade.client.post(
        f"{BASE}/requests.json",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )

    [error] = assert_errors(response, "json", 400)
    assert error["code"] == "body"
