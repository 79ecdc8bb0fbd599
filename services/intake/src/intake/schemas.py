"""Request and response models of the intake API."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

from intake.domain import RuleViolation, normalize_description

Channel = Literal["app", "web", "hotline", "zalo", "email", "facebook", "open311", "other"]
UrgencyIn = Literal["urgent", "normal", "complex"]
_PHONE_RE = re.compile(r"^\+?[0-9][0-9 .-]{7,18}[0-9]$")
_CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*$")


def _no_control(value: str | None) -> str | None:
    if value is not None and any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError("must not contain control characters")
    return value


def _nfc(value: str | None) -> str | None:
    _no_control(value)
    return None if value is None else unicodedata.normalize("NFC", value).strip() or None


class Location(BaseModel):
    """Where the problem is: WGS84 point and/or commune code and/or address."""

    model_config = ConfigDict(extra="forbid")

    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    commune_code: Annotated[str | None, Field(pattern=r"^\d{5}$")] = None
    address: Annotated[str | None, Field(max_length=500)] = None

    @field_validator("address")
    @classmethod
    def _address_nfc(cls, value: str | None) -> str | None:
        return _nfc(value)

    @model_validator(mode="after")
    def _complete(self) -> Location:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon must be given together")
        if self.lat is None and self.commune_code is None and self.address is None:
            raise ValueError("give lat/lon, commune_code or address")
        return self


class Reporter(BaseModel):
    """The citizen's contact; stored apart, only the coordinator sees it."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str | None, Field(max_length=200)] = None
    phone: Annotated[str | None, Field(max_length=20)] = None
    email: EmailStr | None = None
    anonymous: bool = False

    @field_validator("name")
    @classmethod
    def _name_nfc(cls, value: str | None) -> str | None:
        return _nfc(value)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is not None and not _PHONE_RE.match(value):
            raise ValueError("not a phone number")
        return value


class ReportIn(BaseModel):
    """A new report from an upstream app."""

    model_config = ConfigDict(extra="forbid")

    category: Annotated[
        str,
        Field(
            min_length=1,
            max_length=100,
            pattern=_CODE_RE.pattern,
            description="service_code of a category",
        ),
    ]
    description: Annotated[str, Field(max_length=20_000)]
    location: Location
    reporter: Reporter = Field(default_factory=Reporter)
    channel: Channel = "app"
    client_report_id: Annotated[str | None, Field(min_length=1, max_length=100)] = None
    urgency: UrgencyIn = "normal"
    media_urls: Annotated[list[AnyHttpUrl], Field(max_length=10)] = Field(default_factory=list)

    @field_validator("client_report_id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        return _no_control(value)

    @field_validator("category")
    @classmethod
    def _category_code(cls, value: str) -> str:
        if not _CODE_RE.match(value):
            raise ValueError("not a category code (e.g. INFRA.ROAD)")
        return value

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        try:
            return normalize_description(value)
        except RuleViolation as exc:
            raise ValueError(exc.message) from exc


class MediaVisibilityIn(BaseModel):
    """Whether a report's file is released to the public (coordinator only)."""

    model_config = ConfigDict(extra="forbid")

    public: StrictBool = Field(
        description="true: anyone may read the file while the report is published and public"
    )


class Accepted(BaseModel):
    """Answer to a submission (also to its idempotent replays)."""

    id: str
    number: str
    status: str
    status_label: str
    submitted_at: str
    links: dict[str, str]
