"""Open311 GeoReport v2 facade of the intake service (standards.md §3).

``intake.api`` mounts it under ``/open311/v2``; with ``python -m intake`` running, try
``curl http://127.0.0.1:8080/open311/v2/discovery.xml`` or
``curl -d api_key=… -d service_code=INFRA.ROAD -d lat=21.18 -d long=106.07
http://127.0.0.1:8080/open311/v2/requests.json``.

Every endpoint answers ``.xml`` (mandatory in the spec) and ``.json`` (Spark convention:
the JSON mirrors the XML, a list element becomes an array, an empty element ``null``).
Errors are ``errors[] {code, description}`` with HTTP 404 (unknown resource), 403 (missing or
bad ``api_key``) or 400 (anything else); FastAPI's own 422 never leaves these routes because
parameters are parsed here, by hand. Services are of type ``batch``: POST stores the report
and answers a token that ``/tokens/{token}`` resolves at once.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi import Path as FastApiPath
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.routing import Match
from starlette.types import Scope

from intake import media, repository
from intake.auth import AppAuthenticator
from intake.domain import (
    CLOSED_FOR_OPEN311,
    REJECT_REASON_LABELS_VI,
    STATE_LABELS_VI,
    RejectReason,
    State,
)
from intake.handlers import IdempotencyConflict, InputError, submit_report
from intake.schemas import ReportIn
from paht_common.clock import to_local_iso
from paht_common.db import Conn
from paht_common.http import DbConn

if TYPE_CHECKING:
    from intake.handlers import IntakeContext

logger = logging.getLogger(__name__)

PREFIX = "/open311/v2"
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
XML_TYPE = "text/xml; charset=utf-8"
JSON_TYPE = "application/json; charset=utf-8"
FORMATS = ("xml", "json")
# Last change of this facade's contract (paths, fields, service definitions); the discovery
# changeset adds the catalogue revision to it (catalogue_changeset).
FACADE_CHANGESET = "2026-01-15T00:00:00+07:00"
MAX_SPAN = timedelta(days=90)
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE = 1_000_000
MAX_IDS = 1000
MAX_FORM_FIELDS = 200
MAX_FIELD_BYTES = 100_000
"""Largest non-file part of a multipart POST."""
MAX_IDEMPOTENCY_KEY = 200
WRITE_SCOPE = "reports:write"
# Content flags that mean the description may carry someone's contact or identity.
PII_FLAGS = frozenset({"phone_number", "id_number", "email"})
OPEN_STATES = tuple(s.value for s in State if s not in CLOSED_FOR_OPEN311)
CLOSED_STATES = tuple(s.value for s in State if s in CLOSED_FOR_OPEN311)
ANSWERED_STATES = frozenset({State.PUBLISHED, State.RATED, State.CLOSED})

URGENCY_VALUES: tuple[tuple[str, str], ...] = (
    ("urgent", "Khẩn"),
    ("normal", "Bình thường"),
    ("complex", "Phức tạp"),
)
ATTRIBUTE_CODES = frozenset({"urgency", "commune_code"})
ACCEPTED_NOTICE = (
    "Phản ánh đã được tiếp nhận và đang chờ phân loại. Dùng mã token để tra cứu số phản ánh."
)

_W3C_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})$"
)
# '+' in an unencoded query string arrives as a space: "…T00:00:00 07:00".
_SPACE_FOR_PLUS = re.compile(r"^(.*T[0-9:.]+) (\d{2}:\d{2})$")
_NUMBER = re.compile(r"^[A-Z][A-Z0-9]*-\d{4}-\d{6,}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_ATTRIBUTE = re.compile(r"^attribute\[([^\[\]]*)\](\[\])?$")
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

# --- SQL (asyncpg, $n parameters only) -------------------------------------------------

_REQUEST_COLUMNS = """
r.id, r.number, r.category, c.name_vi AS service_name, r.description, r.public, r.flags,
r.state, r.agency_name, r.response_text, r.commune_code, r.lat, r.lon, r.address,
r.media_urls, r.acknowledgement_due_at, r.resolution_due_at, r.submitted_at, r.updated_at,
rj.reason AS reject_reason
"""
_REQUEST_FROM = """
FROM reports r
LEFT JOIN categories c ON c.code = r.category
LEFT JOIN LATERAL (
    SELECT t.reason FROM report_timeline t
    WHERE t.report_id = r.id AND r.state = 'rejected' AND t.to_state = 'rejected'
    ORDER BY t.id DESC LIMIT 1
) rj ON true
"""
REQUESTS_BY_ID = f"""
SELECT {_REQUEST_COLUMNS} {_REQUEST_FROM}
WHERE r.id = ANY($1::uuid[]) OR r.number = ANY($2::text[])
ORDER BY r.submitted_at DESC, r.id DESC
LIMIT $3
"""
_SEARCH_WHERE = """
WHERE ($1::text[] IS NULL OR r.category = ANY($1::text[]))
  AND ($2::text[] IS NULL OR r.state = ANY($2::text[]))
  AND ($3::timestamptz IS NULL OR r.submitted_at >= $3)
  AND ($4::timestamptz IS NULL OR r.submitted_at <= $4)
  AND ($5::timestamptz IS NULL OR r.updated_at > $5)
  AND ($6::timestamptz IS NULL OR r.updated_at < $6)
"""
SEARCH_NEWEST_FIRST = f"""
SELECT {_REQUEST_COLUMNS} {_REQUEST_FROM} {_SEARCH_WHERE}
ORDER BY r.submitted_at DESC, r.id DESC
LIMIT $7 OFFSET $8
"""
# Incremental sync pages through changes oldest first, so the last row is the next cursor.
SEARCH_UPDATED_FIRST = f"""
SELECT {_REQUEST_COLUMNS} {_REQUEST_FROM} {_SEARCH_WHERE}
ORDER BY r.updated_at ASC, r.id ASC
LIMIT $7 OFFSET $8
"""
UPSERT_TOKEN = """
INSERT INTO open311_tokens (token, report_id, created_at) VALUES ($1, $2, $3)
ON CONFLICT (report_id) DO UPDATE SET report_id = EXCLUDED.report_id
RETURNING token
"""
TOKEN = """
SELECT t.token, r.number FROM open311_tokens t JOIN reports r ON r.id = t.report_id
WHERE t.token = $1
"""


async def _fetch(conn: Conn, sql: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(sql, *args)]


# --- rendering ---------------------------------------------------------------------------

Scalar: TypeAlias = str | int | float | bool | None
Node: TypeAlias = Scalar | Sequence["Node"] | Mapping[str, "Node"]

# Element name of the items of each list element (the spec's "⇊" fields).
ITEM_NAMES: Mapping[str, str] = {
    "services": "service",
    "service_requests": "request",
    "errors": "error",
    "endpoints": "endpoint",
    "formats": "format",
    "attributes": "attribute",
    "values": "value",
}


def _xml_scalar(value: Scalar) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return _XML_ILLEGAL.sub("\ufffd", str(value))


def _fill(element: ET.Element, value: Node) -> None:
    if isinstance(value, Mapping):
        for name, child in value.items():
            _fill(ET.SubElement(element, name), child)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        item_name = ITEM_NAMES[element.tag]
        for child in value:
            _fill(ET.SubElement(element, item_name), child)
    else:
        element.text = _xml_scalar(value)


def to_xml(root: str, value: Node) -> bytes:
    """The document as UTF-8 XML with the spec's element names (root, then item names)."""
    element = ET.Element(root)
    _fill(element, value)
    body = ET.tostring(element, encoding="unicode", short_empty_elements=False)
    return ('<?xml version="1.0" encoding="utf-8"?>\n' + body).encode("utf-8")


def to_json(value: Node) -> bytes:
    """The document as UTF-8 JSON (the Spark convention drops the root element's name)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")


def render(
    fmt: str,
    root: str,
    value: Node,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An HTTP response carrying the document in the requested format."""
    if fmt == "json":
        return Response(to_json(value), status, dict(headers or {}), media_type=JSON_TYPE)
    return Response(to_xml(root, value), status, dict(headers or {}), media_type=XML_TYPE)


# --- errors ------------------------------------------------------------------------------


class Open311Error(Exception):
    """An error answered as ``errors[] {code, description}`` in the requested format."""

    def __init__(
        self, status: int, errors: list[tuple[str, str]], *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__("; ".join(f"{code}: {text}" for code, text in errors))
        self.status = status
        self.errors = errors
        self.headers = headers or {}


def bad_request(name: str, message: str, *, code: str = "invalid_parameter") -> Open311Error:
    """400 naming the parameter."""
    return Open311Error(400, [(code, f"{name}: {message}")])


def missing(name: str, message: str = "is required") -> Open311Error:
    """400 for a required parameter that is absent or empty."""
    return bad_request(name, message, code="missing_parameter")


def not_found(name: str, message: str) -> Open311Error:
    """404 naming what was not found."""
    return Open311Error(404, [("not_found", f"{name}: {message}")])


def error_response(fmt: str, exc: Open311Error) -> Response:
    """The spec's error document for an Open311Error."""
    errors: list[Node] = [{"code": code, "description": text} for code, text in exc.errors]
    return render(fmt, "errors", errors, status=exc.status, headers=exc.headers)


def boundary_refusal(scope: Scope, field: str, message: str) -> Response:
    """The text-boundary refusal (``paht_common.boundary``) as Open311's errors[] (400)."""
    fmt = "json" if str(scope.get("path", "")).lower().endswith(".json") else "xml"
    return error_response(fmt, bad_request(field, message))


def format_of(fmt: str) -> str:
    """'xml' or 'json'; an unknown suffix is an unknown resource (404)."""
    if fmt not in FORMATS:
        raise not_found("format", f"'.{fmt}' is not served; use .xml or .json")
    return fmt


def _format_for_errors(request: Request) -> str:
    fmt = request.path_params.get("fmt")
    if fmt is None:
        fmt = request.url.path.rpartition(".")[2] if "." in request.url.path else ""
    return "json" if str(fmt).lower() == "json" else "xml"


class Open311Route(APIRoute):
    """Route that answers Open311Error, and any request-validation error, in the spec's form."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Open311Error as exc:
                return error_response(_format_for_errors(request), exc)
            except RequestValidationError as exc:
                errors = [
                    ("invalid_parameter", f"{'.'.join(map(str, e['loc']))}: {e['msg']}")
                    for e in exc.errors()
                ]
                return error_response(_format_for_errors(request), Open311Error(400, errors))

        return guarded


# --- parameters --------------------------------------------------------------------------


class Params:
    """Request parameters; an empty value is the same as an absent one (spec §3.1)."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            self._values.setdefault(name, []).append(value)

    def names(self) -> list[str]:
        """Every parameter name given (with a value or not)."""
        return list(self._values)

    def one(self, name: str) -> str | None:
        """The single value of a parameter; 400 when given twice with different values."""
        values = {v.strip() for v in self._values.get(name, []) if v.strip()}
        if len(values) > 1:
            raise bad_request(name, "given more than once with different values")
        return values.pop() if values else None

    def many(self, name: str) -> list[str]:
        """Values of a comma list that may also be repeated, in order, without duplicates."""
        out: list[str] = []
        for value in self._values.get(name, []):
            for part in value.split(","):
                part = part.strip()
                if part and part not in out:
                    out.append(part)
        return out


def parse_datetime(name: str, value: str) -> datetime:
    """A W3C datetime that carries its offset (``Z`` or ``±HH:MM``), else 400."""
    fixed = _SPACE_FOR_PLUS.sub(r"\1+\2", value)
    if not _W3C_DATETIME.match(fixed):
        raise bad_request(
            name, "must be a W3C datetime with a time-zone offset, e.g. 2026-01-31T00:00:00+07:00"
        )
    try:
        return datetime.fromisoformat(fixed)
    except ValueError as exc:
        raise bad_request(name, f"not a valid datetime ({exc})") from exc


def parse_int(name: str, value: str | None, *, default: int, low: int, high: int) -> int:
    """An integer within [low, high], else 400."""
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", value):
        raise bad_request(name, f"must be an integer from {low} to {high}")
    number = int(value)
    if not low <= number <= high:
        raise bad_request(name, f"must be an integer from {low} to {high}")
    return number


def check_jurisdiction(params: Params, jurisdiction_id: str) -> None:
    """This endpoint serves one jurisdiction: another one is not found (404)."""
    given = params.one("jurisdiction_id")
    if given is not None and given.lower() != jurisdiction_id.lower():
        raise not_found("jurisdiction_id", f"this endpoint serves only {jurisdiction_id}")


@dataclass(frozen=True)
class RequestQuery:
    """Filters of GET /requests after validation (spec §3.3 #5 plus paging extensions)."""

    ids: tuple[uuid.UUID, ...] = ()
    numbers: tuple[str, ...] = ()
    by_id: bool = False
    service_codes: tuple[str, ...] | None = None
    states: tuple[str, ...] | None = None
    start: datetime | None = None
    end: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE


def parse_request_query(params: Params, *, now: datetime) -> RequestQuery:
    """Validate GET /requests parameters; service_request_id overrides every other filter."""
    wanted = params.many("service_request_id")
    if wanted:
        if len(wanted) > MAX_IDS:
            raise bad_request("service_request_id", f"at most {MAX_IDS} identifiers at once")
        ids: list[uuid.UUID] = []
        numbers: list[str] = []
        for value in wanted:
            try:
                ids.append(uuid.UUID(value))
            except ValueError:
                numbers.append(value)
        return RequestQuery(ids=tuple(ids), numbers=tuple(numbers), by_id=True)

    codes = tuple(params.many("service_code")) or None
    statuses = params.many("status")
    for status in statuses:
        if status not in ("open", "closed"):
            raise bad_request("status", f"'{status}' is not open or closed")
    states: tuple[str, ...] | None = None
    if set(statuses) == {"open"}:
        states = OPEN_STATES
    elif set(statuses) == {"closed"}:
        states = CLOSED_STATES

    start_raw, end_raw = params.one("start_date"), params.one("end_date")
    start = parse_datetime("start_date", start_raw) if start_raw else None
    end = parse_datetime("end_date", end_raw) if end_raw else None
    after_raw, before_raw = params.one("updated_after"), params.one("updated_before")
    updated_after = parse_datetime("updated_after", after_raw) if after_raw else None
    updated_before = parse_datetime("updated_before", before_raw) if before_raw else None
    if start is not None and end is not None:
        if end < start:
            raise bad_request("end_date", "is before start_date")
        if end - start > MAX_SPAN:
            raise bad_request("start_date", "start_date to end_date may span at most 90 days")
    elif start is not None:
        try:
            end = start + MAX_SPAN
        except OverflowError:  # 9999-12-31: the window ends past the calendar (was a 500)
            raise bad_request("start_date", "is too late for a 90-day window") from None
    elif end is not None:
        try:
            start = end - MAX_SPAN
        except OverflowError:
            raise bad_request("end_date", "is too early for a 90-day window") from None
    elif updated_after is None:
        # the spec's default window; an incremental sync is bounded by updated_after instead
        start = now - MAX_SPAN
    if updated_after and updated_before and updated_before <= updated_after:
        raise bad_request("updated_before", "must be after updated_after")

    page = parse_int("page", params.one("page"), default=1, low=1, high=MAX_PAGE)
    page_size = parse_int(
        "page_size",
        params.one("page_size"),
        default=DEFAULT_PAGE_SIZE,
        low=1,
        high=DEFAULT_PAGE_SIZE,
    )
    return RequestQuery(
        service_codes=codes,
        states=states,
        start=start,
        end=end,
        updated_after=updated_after,
        updated_before=updated_before,
        page=page,
        page_size=page_size,
    )


async def find_requests(conn: Conn, query: RequestQuery) -> list[dict[str, Any]]:
    """Rows for GET /requests: by identifier, or filtered and paged."""
    if query.by_id:
        return await _fetch(conn, REQUESTS_BY_ID, list(query.ids), list(query.numbers), MAX_IDS)
    sql = SEARCH_UPDATED_FIRST if query.updated_after is not None else SEARCH_NEWEST_FIRST
    return await _fetch(
        conn,
        sql,
        list(query.service_codes) if query.service_codes else None,
        list(query.states) if query.states else None,
        query.start,
        query.end,
        query.updated_after,
        query.updated_before,
        query.page_size,
        (query.page - 1) * query.page_size,
    )


# --- mapping to the spec's objects -------------------------------------------------------


def open311_status(state: State) -> str:
    """'closed' once an outcome exists (standards.md §3.7), else 'open' (REOPENED included)."""
    return "closed" if state in CLOSED_FOR_OPEN311 else "open"


def status_notes(state: State, reject_reason: str | None = None) -> str:
    """Vietnamese label of the state, with the rejection reason when rejected."""
    label = STATE_LABELS_VI[state]
    if state is State.REJECTED and reject_reason:
        try:
            return f"{label}: {REJECT_REASON_LABELS_VI[RejectReason(reject_reason)]}"
        except ValueError:
            return label
    return label


def _iso(value: datetime | None) -> str | None:
    return to_local_iso(value) if value is not None else None


def request_object(row: Mapping[str, Any]) -> dict[str, Node]:
    """One report as an Open311 request (§3.4 / §3.7); never the reporter's identity.

    Content (description, media) is shown only for public reports that were not rejected;
    a description flagged as carrying a phone number, an ID number or an email address is
    withheld too, since it most likely identifies the reporter.
    """
    state = State(row["state"])
    content_public = bool(row["public"]) and state is not State.REJECTED
    description_public = content_public and not (PII_FLAGS & set(row["flags"] or ()))
    media = list(row["media_urls"] or ())
    lat, lon = row["lat"], row["lon"]
    return {
        "service_request_id": row["number"],
        "status": open311_status(state),
        "status_notes": status_notes(state, row.get("reject_reason")),
        "service_name": row["service_name"] or row["category"],
        "service_code": row["category"],
        "description": row["description"] if description_public else None,
        "agency_responsible": row["agency_name"],
        "service_notice": (
            row["response_text"] if content_public and state in ANSWERED_STATES else None
        ),
        "requested_datetime": _iso(row["submitted_at"]),
        "updated_datetime": _iso(row["updated_at"]),
        "expected_datetime": _iso(row["resolution_due_at"] or row["acknowledgement_due_at"]),
        "address": row["address"],
        "address_id": row["commune_code"],
        "zipcode": None,
        "lat": float(lat) if lat is not None else None,
        "long": float(lon) if lon is not None else None,
        "media_url": media[0] if media and content_public else None,
    }


def _seeded_group(category: Mapping[str, Any]) -> str | None:
    description, name = str(category.get("description") or ""), str(category["name_vi"])
    suffix = f" – {name}"
    if description.endswith(suffix) and len(description) > len(suffix):
        return description[: -len(suffix)]
    if description == name:  # the seed describes a top-level category by its name alone
        return name
    return None


def group_names(categories: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Human-readable name of each group code: from a seeded "<group> – <name>" description
    of any of its categories, else from the category coded as the group."""
    names: dict[str, str] = {}
    listed = list(categories)
    for category in listed:
        seeded = _seeded_group(category)
        if seeded is not None:
            names.setdefault(str(category["group_code"]), seeded)
    for category in listed:
        if category["code"] == category["group_code"]:
            names.setdefault(str(category["group_code"]), str(category["name_vi"]))
    return names


def group_name(category: Mapping[str, Any], groups: Mapping[str, str] | None = None) -> str:
    """The group's Vietnamese name (never a code): seeded, from ``groups`` (``group_names``
    of the catalogue), else the category's own name."""
    return (
        _seeded_group(category)
        or (groups or {}).get(str(category["group_code"]))
        or str(category["name_vi"])
    )


def service_object(
    category: Mapping[str, Any], groups: Mapping[str, str] | None = None
) -> dict[str, Node]:
    """One category as an Open311 service (every service has a definition: metadata true)."""
    return {
        "service_code": category["code"],
        "service_name": category["name_vi"],
        "description": category.get("description") or category["name_vi"],
        "metadata": True,
        "type": "batch",
        "keywords": category.get("keywords") or "",
        "group": group_name(category, groups),
    }


def service_definition(code: str) -> dict[str, Node]:
    """Attributes every service accepts: urgency and the commune code, both optional."""
    return {
        "service_code": code,
        "attributes": [
            {
                "variable": True,
                "code": "urgency",
                "datatype": "singlevaluelist",
                "required": False,
                "datatype_description": None,
                "order": 1,
                "description": "Mức độ khẩn cấp của sự việc",
                "values": [{"key": key, "name": name} for key, name in URGENCY_VALUES],
            },
            {
                "variable": True,
                "code": "commune_code",
                "datatype": "string",
                "required": False,
                "datatype_description": "Mã xã, phường gồm 5 chữ số (đơn vị hành chính từ 2025)",
                "order": 2,
                "description": "Mã xã, phường nơi xảy ra sự việc (nếu biết)",
                "values": [],
            },
        ],
    }


def discovery_document(
    *, url: str, changeset: str, province_name: str, jurisdiction_id: str
) -> dict[str, Node]:
    """The Service Discovery document with this one GeoReport v2 endpoint."""
    return {
        "changeset": changeset,
        "contact": (
            f"Hệ thống thông tin phản ánh hiện trường tỉnh {province_name} "
            f"({jurisdiction_id}); liên hệ đơn vị đầu mối tiếp nhận, điều phối của tỉnh."
        ),
        "key_service": (
            "api_key (phạm vi reports:write) do đơn vị đầu mối của tỉnh cấp cho ứng dụng; "
            "các yêu cầu GET không cần api_key."
        ),
        "endpoints": [
            {
                "specification": SPECIFICATION,
                "url": url,
                "changeset": changeset,
                "type": "production",
                "formats": ["text/xml", "application/json"],
            }
        ],
    }


def catalogue_changeset(categories: Sequence[Mapping[str, Any]]) -> str:
    """The changeset as a datetime: the facade's release plus one second per catalogue
    revision (each category's version, plus one per category), so it grows when the
    catalogue changes and clients refresh cached service lists."""
    revision = sum(int(c.get("version") or 1) for c in categories) + len(categories)
    released = datetime.fromisoformat(FACADE_CHANGESET)
    return (released + timedelta(seconds=revision)).isoformat()


# --- POST /requests ----------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """A validated POST: the report to submit and where its commune code came from."""

    body: ReportIn
    commune_param: str


def _finite(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError as exc:
        raise bad_request(name, "must be a decimal number (WGS84)") from exc
    if not math.isfinite(number):
        raise bad_request(name, "must be a decimal number (WGS84)")
    return number


def _attributes(params: Params) -> dict[str, str]:
    found: dict[str, set[str]] = {}
    for name in params.names():
        match = _ATTRIBUTE.match(name)
        if match is None:
            if name.startswith("attribute"):
                raise bad_request(name, "use attribute[code]=value")
            continue
        code = match.group(1)
        if code not in ATTRIBUTE_CODES:
            raise bad_request(f"attribute[{code}]", "not an attribute of this service")
        value = params.one(name)
        if value is not None:
            found.setdefault(code, set()).add(value)
    out: dict[str, str] = {}
    for code, values in found.items():
        if len(values) > 1:
            raise bad_request(f"attribute[{code}]", "takes a single value")
        out[code] = values.pop()
    return out


def _location(params: Params, attributes: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    lat_raw, long_raw = params.one("lat"), params.one("long")
    address = params.one("address_string")
    address_id = params.one("address_id")
    commune = attributes.get("commune_code")
    if (lat_raw is None) != (long_raw is None):
        raise missing("lat/long", "lat and long must be sent together")
    if lat_raw is None and address is None and address_id is None:
        raise missing(
            "location", "give lat and long, address_string or address_id (the commune code)"
        )
    if address_id is not None and commune is not None and address_id != commune:
        raise bad_request("address_id", "differs from attribute[commune_code]")
    location: dict[str, Any] = {"address": address}
    if lat_raw is not None and long_raw is not None:
        location["lat"] = _finite("lat", lat_raw)
        location["lon"] = _finite("long", long_raw)
    location["commune_code"] = address_id or commune
    return location, "address_id" if address_id else "attribute[commune_code]"


def submission_from(params: Params, *, service_code: str, fallback_description: str) -> Submission:
    """The ReportIn for a POST (channel open311); 400 naming the Open311 parameter."""
    attributes = _attributes(params)
    urgency = attributes.get("urgency")
    if urgency is not None and urgency not in dict(URGENCY_VALUES):
        raise bad_request("attribute[urgency]", "must be one of urgent, normal, complex")
    location, commune_param = _location(params, attributes)
    # Vietnamese names are written family name first: last_name (family), then first_name.
    name_parts = [p for p in (params.one("last_name"), params.one("first_name")) if p]
    media_url = params.one("media_url")
    data: dict[str, Any] = {
        "category": service_code,
        "description": params.one("description") or fallback_description,
        "location": location,
        "reporter": {
            "name": " ".join(name_parts) or None,
            "phone": params.one("phone"),
            "email": params.one("email"),
        },
        "channel": "open311",
        "urgency": urgency or "normal",
        "media_urls": [media_url] if media_url else [],
    }
    try:
        body = ReportIn.model_validate(data)
    except ValidationError as exc:
        raise Open311Error(
            400,
            [
                ("invalid_parameter", f"{_param_of(e['loc'], commune_param)}: {_message(e)}")
                for e in exc.errors()
            ],
        ) from exc
    return Submission(body=body, commune_param=commune_param)


_PARAM_OF_LOC: Mapping[tuple[str, ...], str] = {
    ("category",): "service_code",
    ("description",): "description",
    ("location",): "location",
    ("location", "lat"): "lat",
    ("location", "lon"): "long",
    ("location", "address"): "address_string",
    ("reporter",): "first_name/last_name",
    ("reporter", "name"): "first_name/last_name",
    ("reporter", "phone"): "phone",
    ("reporter", "email"): "email",
    ("urgency",): "attribute[urgency]",
    ("media_urls",): "media_url",
}


def _param_of(loc: Sequence[int | str], commune_param: str) -> str:
    parts = tuple(str(p) for p in loc)
    if parts[:2] == ("location", "commune_code"):
        return commune_param
    return _PARAM_OF_LOC.get(parts[:2]) or _PARAM_OF_LOC.get(parts[:1]) or ".".join(parts)


def _message(error: Mapping[str, Any]) -> str:
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


MEDIA_PARTS = ("media[]", "media")
"""File parts of a multipart POST (the GeoReport v2.1 draft's ``media[]``)."""


async def _form(
    request: Request, *, max_files: int, max_bytes: int
) -> tuple[Params, dict[str, bytes]]:
    """Query parameters plus the body's fields, and the checked files of a multipart body.

    The v2 spec posts application/x-www-form-urlencoded; multipart/form-data (v2.1 draft)
    may also carry photos and videos as ``media[]`` parts.
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    query = request.query_params.multi_items()
    if media_type == "multipart/form-data":
        try:
            async with media.multipart_form(
                request,
                max_files=max_files + 1,
                max_fields=MAX_FORM_FIELDS,
                max_part_size=MAX_FIELD_BYTES,
            ) as form:
                pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
                files = [v for k, v in form.multi_items() if k in MEDIA_PARTS]
                blobs = await media.read_uploads(
                    files, field="media[]", max_files=max_files, max_bytes=max_bytes
                )
        except media.UploadError as exc:
            code = "body" if exc.field == "body" else "media"
            raise Open311Error(413 if exc.status == 413 else 400, [(code, exc.message)]) from exc
        return Params([*query, *pairs]), blobs
    if media_type not in ("", "application/x-www-form-urlencoded"):
        raise bad_request(
            "Content-Type",
            "send application/x-www-form-urlencoded; charset=utf-8 (or multipart/form-data)",
        )
    raw = await request.body()
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_request("body", "not a UTF-8 form of at most 200 fields") from exc
    return Params([*query, *pairs]), {}


# --- the router --------------------------------------------------------------------------

# Parameters are parsed by hand (so FastAPI never answers 422); these only document them.
# "4XX" also keeps FastAPI from advertising a 422 these routes never send.
_ERROR_LIST: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["code", "description"],
        "properties": {"code": {"type": "string"}, "description": {"type": "string"}},
    },
}
_ERRORS_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the document in the format of the path's suffix",
        "content": {
            "application/json": {},
            "text/xml": {"schema": {"type": "string", "description": "GeoReport v2 XML"}},
        },
    },
    "4XX": {
        "description": "errors[] {code, description} in the format of the path's suffix: 404 "
        "unknown resource or format, 403 missing or invalid api_key (POST), 429 rate limited, "
        "405 another method (Allow), 400 anything else",
        "content": {
            "application/json": {"schema": _ERROR_LIST},
            "text/xml": {"schema": {"type": "string", "description": "<errors><error>…"}},
        },
    },
}
Fmt = Annotated[
    str,
    FastApiPath(
        description="response format: json or xml (text/xml)",
        json_schema_extra={"enum": list(FORMATS)},
    ),
]
"""The ``{fmt}`` suffix: documented as an enum; anything else is a 404 errors[] (format_of)."""
_POST_FIELDS: dict[str, Any] = {
    "type": "object",
    "required": ["api_key", "service_code"],
    "properties": {
        name: {"type": "string"}
        for name in (
            "api_key",
            "jurisdiction_id",
            "service_code",
            "lat",
            "long",
            "address_string",
            "address_id",
            "attribute[urgency]",
            "attribute[commune_code]",
            "email",
            "device_id",
            "account_id",
            "first_name",
            "last_name",
            "phone",
            "description",
            "media_url",
        )
    },
}
_POST_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": _POST_FIELDS},
            "multipart/form-data": {
                "schema": {
                    **_POST_FIELDS,
                    "properties": {
                        **_POST_FIELDS["properties"],
                        "media[]": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "photos or videos (GeoReport v2.1 draft)",
                        },
                    },
                }
            },
        },
    },
    "parameters": [
        {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}}
    ],
}
_LIST_DOC: dict[str, Any] = {
    "parameters": [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in (
            "jurisdiction_id",
            "service_request_id",
            "service_code",
            "start_date",
            "end_date",
            "status",
            "updated_after",
            "updated_before",
            "page",
            "page_size",
        )
    ],
}


def open311_router(ctx: IntakeContext, apps: AppAuthenticator) -> APIRouter:
    """Router mounted under /open311/v2; ``apps`` holds the app's API key cache and the
    per-key rate limit it shares with /v1 (one budget per key across both APIs)."""
    router = APIRouter(prefix=PREFIX, tags=["open311"], route_class=Open311Route)
    settings = ctx.settings

    def query_params(request: Request) -> Params:
        params = Params(request.query_params.multi_items())
        check_jurisdiction(params, settings.jurisdiction_id)
        return params

    @router.get("/discovery.{fmt}", responses=_ERRORS_DOC)
    async def discovery(fmt: Fmt, request: Request, conn: DbConn) -> Response:
        """Service Discovery: this endpoint, its formats and how to get an api_key."""
        fmt = format_of(fmt)
        query_params(request)
        changeset = catalogue_changeset(await repository.categories(conn))
        url = str(request.base_url).rstrip("/") + PREFIX
        document = discovery_document(
            url=url,
            changeset=changeset,
            province_name=settings.province_name,
            jurisdiction_id=settings.jurisdiction_id,
        )
        return render(fmt, "discovery", document)

    @router.get("/services.{fmt}", responses=_ERRORS_DOC)
    async def services(fmt: Fmt, request: Request, conn: DbConn) -> Response:
        """The category catalogue as Open311 services."""
        fmt = format_of(fmt)
        query_params(request)
        catalogue = await repository.categories(conn)
        groups = group_names(catalogue)
        return render(fmt, "services", [service_object(c, groups) for c in catalogue])

    @router.get("/services/{service_code}.{fmt}", responses=_ERRORS_DOC)
    async def definition(service_code: str, fmt: Fmt, request: Request, conn: DbConn) -> Response:
        """The attributes a service accepts."""
        fmt = format_of(fmt)
        query_params(request)
        if await repository.category(conn, code=service_code) is None:
            raise not_found("service_code", f"no service {service_code!r}")
        return render(fmt, "service_definition", service_definition(service_code))

    @router.post("/requests.{fmt}", responses=_ERRORS_DOC, openapi_extra=_POST_DOC)
    async def create_request(fmt: Fmt, request: Request, conn: DbConn) -> Response:
        """Accept a report (type batch): answers a token, never the request id."""
        fmt = format_of(fmt)
        params, files = await _form(
            request, max_files=settings.max_media_files, max_bytes=settings.max_media_bytes
        )
        app_id = await _authorise(params)
        check_jurisdiction(params, settings.jurisdiction_id)
        service_code = params.one("service_code")
        if service_code is None:
            raise missing("service_code")
        category = await repository.category(conn, code=service_code)
        if category is None:
            raise not_found("service_code", f"no service {service_code!r}")
        submission = submission_from(
            params, service_code=service_code, fallback_description=category["name_vi"]
        )
        idempotency_key = request.headers.get("idempotency-key") or None
        if idempotency_key is not None and len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise bad_request("Idempotency-Key", f"at most {MAX_IDEMPOTENCY_KEY} characters")
        try:
            result = await submit_report(
                submission.body,
                app_id=app_id,
                idempotency_key=idempotency_key,
                ctx=ctx,
                files=files,
                files_field="media[]",
            )
        except media.UploadError as exc:  # a file that passed the sniff but will not decode
            raise Open311Error(400, [("media", exc.message)]) from exc
        except IdempotencyConflict as exc:
            raise Open311Error(
                400,
                [
                    (
                        "duplicate",
                        "Idempotency-Key: already used for a different request",
                    )
                ],
            ) from exc
        except InputError as exc:
            raise _input_error(exc, submission.commune_param) from exc
        # The token is written after the report: a crash in between leaves a report that the
        # client's retry (same Idempotency-Key) finds and tokenises; nobody saw a token yet.
        token = str(
            await conn.fetchval(
                UPSERT_TOKEN, secrets.token_urlsafe(18), result.report["id"], ctx.clock.now()
            )
        )
        headers = {} if result.created else {"Idempotent-Replayed": "true"}
        if result.created:
            logger.info(
                "open311 request accepted",
                extra={"report_id": str(result.report["id"]), "source_app": app_id},
            )
        answer: list[Node] = [{"token": token, "service_notice": ACCEPTED_NOTICE}]
        return render(fmt, "service_requests", answer, headers=headers)

    async def _authorise(params: Params) -> str:
        api_key = params.one("api_key")
        if api_key is None:
            raise Open311Error(403, [("api_key", "api_key: is required to create a request")])
        caller = await apps.keys.get(api_key)
        if caller is None:
            raise Open311Error(403, [("api_key", "api_key: unknown, revoked or expired")])
        if WRITE_SCOPE not in caller.scopes:
            raise Open311Error(403, [("api_key", f"api_key: lacks scope {WRITE_SCOPE}")])
        wait = apps.limiter.check(caller.key_id, caller.rate_per_minute)
        if wait:
            raise Open311Error(
                429,
                [("rate_limited", f"api_key: at most {caller.rate_per_minute} a minute")],
                headers={"Retry-After": str(int(wait))},
            )
        return caller.app_id

    @router.get("/tokens/{token}.{fmt}", responses=_ERRORS_DOC)
    async def token_lookup(token: str, fmt: Fmt, request: Request, conn: DbConn) -> Response:
        """The request id a token stands for."""
        fmt = format_of(fmt)
        query_params(request)
        row = await conn.fetchrow(TOKEN, token) if _TOKEN.match(token) else None
        if row is None:
            raise not_found("token", f"no token {token!r}")
        answer: list[Node] = [{"service_request_id": row["number"], "token": row["token"]}]
        return render(fmt, "service_requests", answer)

    @router.get("/requests.{fmt}", responses=_ERRORS_DOC, openapi_extra=_LIST_DOC)
    async def list_requests(fmt: Fmt, request: Request, conn: DbConn) -> Response:
        """Requests by id, or filtered by service, status and dates (newest first, paged)."""
        fmt = format_of(fmt)
        params = query_params(request)
        query = parse_request_query(params, now=ctx.clock.now())
        rows = await find_requests(conn, query)
        return render(fmt, "service_requests", [request_object(r) for r in rows])

    @router.get("/requests/{service_request_id}.{fmt}", responses=_ERRORS_DOC)
    async def one_request(
        service_request_id: str, fmt: Fmt, request: Request, conn: DbConn
    ) -> Response:
        """One request, by UUID or by number, as a one-element list."""
        fmt = format_of(fmt)
        query_params(request)
        ids: list[uuid.UUID] = []
        numbers: list[str] = []
        try:
            ids.append(uuid.UUID(service_request_id))
        except ValueError:
            if _NUMBER.match(service_request_id):
                numbers.append(service_request_id)
        rows = await _fetch(conn, REQUESTS_BY_ID, ids, numbers, 1) if ids or numbers else []
        if not rows:
            raise not_found("service_request_id", f"no request {service_request_id!r}")
        return render(fmt, "service_requests", [request_object(rows[0])])

    @router.api_route(
        "/{rest:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
        include_in_schema=False,
    )
    async def unknown(rest: str, request: Request) -> Response:
        """Anything else under the prefix, answered in the spec's error format."""
        allowed: set[str] = set()
        for route in router.routes:
            if isinstance(route, APIRoute) and route.endpoint is not unknown:
                match, _ = route.matches(request.scope)
                if match is Match.PARTIAL:
                    allowed |= route.methods
        if allowed:
            raise Open311Error(
                405,
                [("method_not_allowed", f"{request.method}: use {', '.join(sorted(allowed))}")],
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        raise not_found("path", f"no resource {PREFIX}/{rest}")

    return router


def _input_error(exc: InputError, commune_param: str) -> Open311Error:
    if exc.field == "category":
        return not_found("service_code", exc.message)
    name = {
        "location": "lat/long",
        "location.commune_code": commune_param,
    }.get(exc.field, exc.field)
    return bad_request(name, exc.message)
