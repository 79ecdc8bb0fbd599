"""Open311 facade without I/O: XML/JSON rendering, status mapping, datetimes, POST mapping."""

from __future__ import annotations

import json
import unicodedata
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from intake.domain import STATE_LABELS_VI, State
from intake.open311 import (
    Node,
    Open311Error,
    Params,
    catalogue_changeset,
    error_response,
    group_names,
    open311_status,
    parse_datetime,
    parse_request_query,
    render,
    request_object,
    service_definition,
    service_object,
    status_notes,
    submission_from,
    to_json,
    to_xml,
)

XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>'
NOW = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
# The spec's closed means "an outcome exists" (standards.md §3.7), written out here on purpose.
CLOSED = {State.PUBLISHED, State.RATED, State.CLOSED, State.REJECTED, State.MERGED}
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


def report_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "number": "BN-2026-000123",
        "category": "INFRA.ROAD",
        "service_name": "Đường, cầu hư hỏng",
        "description": "Ổ gà lớn trước cổng chợ",
        "public": True,
        "flags": [],
        "state": "submitted",
        "agency_name": None,
        "response_text": None,
        "commune_code": "07246",
        "lat": 21.1861,
        "lon": 106.0763,
        "address": "Đường Lý Thái Tổ, Bắc Ninh",
        "media_urls": ["https://media.example.vn/a.jpg", "https://media.example.vn/b.jpg"],
        "acknowledgement_due_at": None,
        "resolution_due_at": None,
        "submitted_at": NOW,
        "updated_at": NOW + timedelta(hours=1),
        "reject_reason": None,
    }
    row.update(overrides)
    return row


def form(**fields: str) -> Params:
    return Params(fields.items())


# --- XML and JSON rendering ---------------------------------------------------------------


def test_xml_starts_with_the_utf8_declaration() -> None:
    assert to_xml("services", []).startswith(XML_DECLARATION)


def test_xml_list_documents_use_the_spec_item_names() -> None:
    cases = {
        "services": "service",
        "service_requests": "request",
        "errors": "error",
    }
    for root, item in cases.items():
        tree = ET.fromstring(to_xml(root, [{"a": "1"}, {"a": "2"}]))
        assert tree.tag == root
        assert [child.tag for child in tree] == [item, item]


def test_xml_escapes_markup_and_keeps_vietnamese_as_utf8() -> None:
    text = "Đường & <cầu> \"hỏng\" 'nặng' ở Từ Sơn"
    raw = to_xml("service_requests", [{"description": text}])
    assert b"&amp;" in raw
    assert b"&lt;" in raw
    assert b"&gt;" in raw
    assert "Đường".encode() in raw  # real UTF-8, not character references
    assert ET.fromstring(raw).findtext("request/description") == text


def test_xml_renders_none_as_an_empty_element_and_booleans_in_lower_case() -> None:
    raw = to_xml("services", [{"description": None, "metadata": True, "flag": False}])
    service = ET.fromstring(raw).find("service")
    assert service is not None
    assert service.findtext("description") == ""
    assert service.findtext("metadata") == "true"
    assert service.findtext("flag") == "false"


def test_xml_replaces_characters_xml_cannot_carry() -> None:
    raw = to_xml("errors", [{"code": "x", "description": "a\x00b\x0bc"}])
    assert ET.fromstring(raw).findtext("error/description") == "a\ufffdb\ufffdc"


def test_json_keeps_vietnamese_and_markup_unescaped_and_round_trips() -> None:
    value: list[Node] = [
        {"description": "Rác <thải> & nước", "lat": 21.18, "metadata": True, "x": None}
    ]
    raw = to_json(value)
    assert "Rác <thải> & nước".encode() in raw
    assert json.loads(raw) == value


def test_service_definition_renders_nested_lists_with_spec_names() -> None:
    tree = ET.fromstring(to_xml("service_definition", service_definition("INFRA.ROAD")))
    assert tree.tag == "service_definition"
    assert tree.findtext("service_code") == "INFRA.ROAD"
    attributes = tree.findall("attributes/attribute")
    assert [a.findtext("code") for a in attributes] == ["urgency", "commune_code"]
    assert [a.findtext("order") for a in attributes] == ["1", "2"]
    assert [a.findtext("required") for a in attributes] == ["false", "false"]
    keys = [v.findtext("key") for v in attributes[0].findall("values/value")]
    assert keys == ["urgent", "normal", "complex"]
    names = [v.findtext("name") for v in attributes[0].findall("values/value")]
    assert all(names)


def test_render_sets_the_spec_content_types() -> None:
    assert render("json", "services", []).headers["content-type"] == (
        "application/json; charset=utf-8"
    )
    assert render("xml", "services", []).headers["content-type"] == "text/xml; charset=utf-8"


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_error_document_has_code_and_description(fmt: str) -> None:
    response = error_response(fmt, Open311Error(403, [("api_key", "api_key: is required")]))
    assert response.status_code == 403
    body = bytes(response.body)
    if fmt == "json":
        assert json.loads(body) == [{"code": "api_key", "description": "api_key: is required"}]
    else:
        tree = ET.fromstring(body)
        assert tree.tag == "errors"
        assert tree.findtext("error/code") == "api_key"
        assert tree.findtext("error/description") == "api_key: is required"


def test_service_object_takes_the_group_name_from_the_seeded_description() -> None:
    service = service_object(
        {
            "code": "INFRA.ROAD",
            "group_code": "INFRA",
            "name_vi": "Đường, cầu hư hỏng",
            "description": "Hạ tầng – Đường, cầu hư hỏng",
            "keywords": "ổ gà, sụt lún",
        }
    )
    assert service == {
        "service_code": "INFRA.ROAD",
        "service_name": "Đường, cầu hư hỏng",
        "description": "Hạ tầng – Đường, cầu hư hỏng",
        "metadata": True,
        "type": "batch",
        "keywords": "ổ gà, sụt lún",
        "group": "Hạ tầng",
    }
    other = {"code": "X", "group_code": "OTHER", "name_vi": "Khác", "description": ""}
    assert service_object(other)["group"] == "Khác"  # a name, never the group's code
    assert service_object(other, {"OTHER": "Lĩnh vực khác"})["group"] == "Lĩnh vực khác"
    assert service_object(other)["description"] == "Khác"


def test_a_top_level_category_is_its_own_group_by_name() -> None:
    top = {"code": "ENV", "group_code": "ENV", "name_vi": "Môi trường", "description": "Môi trường"}
    assert service_object(top)["group"] == "Môi trường"
    assert group_names([top]) == {"ENV": "Môi trường"}


def test_the_changeset_is_a_datetime_that_grows_with_the_catalogue() -> None:
    one = catalogue_changeset([{"version": 1}])
    two = catalogue_changeset([{"version": 2}])
    assert datetime.fromisoformat(one) < datetime.fromisoformat(two)
    assert datetime.fromisoformat(one).utcoffset() is not None


# --- status mapping and the request object -------------------------------------------------


@pytest.mark.parametrize("state", list(State))
def test_every_state_maps_to_open_or_closed(state: State) -> None:
    expected = "closed" if state in CLOSED else "open"
    assert open311_status(state) == expected
    assert request_object(report_row(state=state.value))["status"] == expected


@pytest.mark.parametrize("state", list(State))
def test_status_notes_is_the_vietnamese_label(state: State) -> None:
    assert status_notes(state) == STATE_LABELS_VI[state]
    assert request_object(report_row(state=state.value))["status_notes"] == STATE_LABELS_VI[state]


def test_rejected_status_notes_carry_the_reason_label() -> None:
    assert status_notes(State.REJECTED, "not_in_scope") == (
        "Từ chối: Nội dung không thuộc phạm vi tiếp nhận"
    )
    assert status_notes(State.REJECTED, "no-such-reason") == "Từ chối"
    assert status_notes(State.ASSIGNED, "not_in_scope") == "Đã chuyển xử lý"


def test_request_object_has_exactly_the_spec_fields() -> None:
    obj = request_object(report_row())
    assert set(obj) == REQUEST_FIELDS
    assert obj["service_request_id"] == "BN-2026-000123"
    assert obj["service_code"] == "INFRA.ROAD"
    assert obj["service_name"] == "Đường, cầu hư hỏng"
    assert obj["address_id"] == "07246"
    assert obj["zipcode"] is None
    assert obj["lat"] == 21.1861
    assert obj["long"] == 106.0763
    assert obj["media_url"] == "https://media.example.vn/a.jpg"


def test_request_datetimes_carry_the_plus_seven_offset() -> None:
    due = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
    obj = request_object(report_row(resolution_due_at=due))
    assert obj["requested_datetime"] == "2026-03-01T10:00:00+07:00"
    assert obj["updated_datetime"] == "2026-03-01T11:00:00+07:00"
    assert obj["expected_datetime"] == "2026-03-04T17:00:00+07:00"


def test_expected_datetime_falls_back_to_the_acknowledgement_deadline() -> None:
    ack = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    assert request_object(report_row(acknowledgement_due_at=ack))["expected_datetime"] == (
        "2026-03-02T08:00:00+07:00"
    )
    assert request_object(report_row())["expected_datetime"] is None


def test_content_of_non_public_or_rejected_reports_is_withheld() -> None:
    for row in (report_row(public=False), report_row(state="rejected")):
        obj = request_object(row)
        assert obj["description"] is None
        assert obj["media_url"] is None


def test_description_flagged_with_contact_details_is_withheld() -> None:
    obj = request_object(report_row(flags=["phone_number"]))
    assert obj["description"] is None
    assert obj["media_url"] == "https://media.example.vn/a.jpg"


def test_published_public_response_is_the_service_notice() -> None:
    row = report_row(state="published", agency_name="UBND phường Kinh Bắc", response_text="Đã vá")
    obj = request_object(row)
    assert obj["agency_responsible"] == "UBND phường Kinh Bắc"
    assert obj["service_notice"] == "Đã vá"
    assert request_object({**row, "state": "in_progress"})["service_notice"] is None


# --- parameters ----------------------------------------------------------------------------


def test_datetimes_need_an_offset() -> None:
    assert parse_datetime("start_date", "2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_datetime("start_date", "2026-01-01T07:00:00+07:00") == datetime(
        2026, 1, 1, tzinfo=UTC
    )
    # an unencoded '+' arrives as a space
    assert parse_datetime("start_date", "2026-01-01T07:00:00 07:00") == datetime(
        2026, 1, 1, tzinfo=UTC
    )
    for bad in ("2026-01-01T00:00:00", "2026-01-01", "yesterday", "2026-13-01T00:00:00Z"):
        with pytest.raises(Open311Error) as caught:
            parse_datetime("start_date", bad)
        assert caught.value.status == 400
        assert "start_date" in caught.value.errors[0][1]


def test_request_query_defaults_to_the_last_90_days_and_1000_results() -> None:
    query = parse_request_query(form(), now=NOW)
    assert query.start == NOW - timedelta(days=90)
    assert query.end is None
    assert (query.page, query.page_size) == (1, 1000)


def test_request_query_refuses_a_span_over_90_days() -> None:
    with pytest.raises(Open311Error) as caught:
        parse_request_query(
            form(start_date="2026-01-01T00:00:00Z", end_date="2026-04-02T00:00:00Z"), now=NOW
        )
    assert caught.value.status == 400
    query = parse_request_query(
        form(start_date="2026-01-01T00:00:00Z", end_date="2026-03-31T00:00:00Z"), now=NOW
    )
    assert query.end == datetime(2026, 3, 31, tzinfo=UTC)


def test_service_request_id_overrides_every_other_filter() -> None:
    rid = uuid.uuid4()
    query = parse_request_query(
        form(service_request_id=f"BN-2026-000001,{rid}", status="nonsense", page="0"), now=NOW
    )
    assert query.by_id
    assert query.ids == (rid,)
    assert query.numbers == ("BN-2026-000001",)


@pytest.mark.parametrize(
    ("name", "value"),
    [("page", "0"), ("page", "x"), ("page_size", "0"), ("page_size", "1001"), ("status", "done")],
)
def test_bad_paging_or_status_is_400(name: str, value: str) -> None:
    with pytest.raises(Open311Error) as caught:
        parse_request_query(form(**{name: value}), now=NOW)
    assert caught.value.status == 400
    assert name in caught.value.errors[0][1]


def test_empty_parameters_behave_like_absent_ones() -> None:
    assert parse_request_query(form(start_date="", status="", page=""), now=NOW) == (
        parse_request_query(form(), now=NOW)
    )


# --- POST mapping ----------------------------------------------------------------------


def test_submission_maps_open311_fields_to_a_report() -> None:
    nfd_family = unicodedata.normalize("NFD", "Nguyễn")
    submission = submission_from(
        form(
            lat="21.1861",
            long="106.0763",
            address_string="Đường Lý Thái Tổ",
            description="Ổ gà lớn",
            first_name="Văn An",
            last_name=nfd_family,
            phone="0912345678",
            email="an@example.vn",
            media_url="https://media.example.vn/a.jpg",
            **{"attribute[urgency]": "urgent", "attribute[commune_code]": "07246"},
        ),
        service_code="INFRA.ROAD",
        fallback_description="Đường, cầu hư hỏng",
    )
    body = submission.body
    assert body.channel == "open311"
    assert body.category == "INFRA.ROAD"
    assert body.urgency == "urgent"
    assert (body.location.lat, body.location.lon) == (21.1861, 106.0763)
    assert body.location.commune_code == "07246"
    assert body.location.address == "Đường Lý Thái Tổ"
    assert body.reporter.name == "Nguyễn Văn An"
    assert body.reporter.name == unicodedata.normalize("NFC", body.reporter.name)
    assert [str(u) for u in body.media_urls] == ["https://media.example.vn/a.jpg"]


def test_submission_without_description_uses_the_service_name() -> None:
    submission = submission_from(
        form(address_id="07246"), service_code="INFRA.ROAD", fallback_description="Đường hỏng"
    )
    assert submission.body.description == "Đường hỏng"
    assert submission.body.location.commune_code == "07246"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({}, "location"),
        ({"lat": "21.1"}, "lat/long"),
        ({"lat": "abc", "long": "106.0"}, "lat"),
        ({"lat": "nan", "long": "106.0"}, "lat"),
        ({"lat": "95", "long": "106.0"}, "lat"),
        ({"lat": "21.1", "long": "190"}, "long"),
        ({"address_id": "12"}, "address_id"),
        ({"address_string": "x", "description": "<b>đậm</b>"}, "description"),
        ({"address_string": "x", "description": "x" * 4001}, "description"),
        ({"address_string": "x", "email": "not-an-email"}, "email"),
        ({"address_string": "x", "phone": "abc"}, "phone"),
        ({"address_string": "x", "media_url": "ftp://x"}, "media_url"),
        ({"address_string": "x", "attribute[urgency]": "asap"}, "attribute[urgency]"),
        ({"address_string": "x", "attribute[colour]": "red"}, "attribute[colour]"),
    ],
)
def test_invalid_submission_is_400_naming_the_parameter(fields: dict[str, str], named: str) -> None:
    with pytest.raises(Open311Error) as caught:
        submission_from(form(**fields), service_code="INFRA.ROAD", fallback_description="x")
    assert caught.value.status == 400
    assert any(text.startswith(named + ":") for _, text in caught.value.errors), caught.value.errors


@pytest.mark.parametrize("start", ["9999-12-31T23:59:59+14:00", "9999-12-31T00:00:00Z"])
def test_a_start_date_too_late_for_a_window_is_a_400_not_a_500(start: str) -> None:
    with pytest.raises(Open311Error) as caught:
        parse_request_query(Params([("start_date", start)]), now=NOW)
    assert caught.value.status == 400


def test_an_end_date_too_early_for_a_window_is_a_400_not_a_500() -> None:
    with pytest.raises(Open311Error) as caught:
        parse_request_query(Params([("end_date", "0001-01-01T00:00:00Z")]), now=NOW)
    assert caught.value.status == 400
