"""The event contract: one typed, versioned payload model per event type, in one envelope.

On Kafka an envelope travels as a CloudEvents 1.0 binary-mode record (see ``kafka.py``):
``type`` = ``vn.<province>.fieldreport.<name>.v<version>``, ``subject`` = report id,
record key = report id. Payloads never carry reporter identity (PII stays in intake).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from paht_common.clock import utcnow

CE_TYPE_INFIX = ".fieldreport."


class Payload(BaseModel):
    """Base of every event payload: frozen, unknown fields refused, named in the past tense."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    NAME: ClassVar[str]
    """Entity and verb, e.g. ``report.submitted``."""
    VERSION: ClassVar[int] = 1

    report_id: uuid.UUID


Urgency = Literal["urgent", "normal", "complex"]


class ReportSubmitted(Payload):
    """A report was accepted by intake (state SUBMITTED)."""

    NAME: ClassVar[str] = "report.submitted"

    number: str
    category: str
    commune_code: str | None
    lat: float | None
    lon: float | None
    channel: str
    urgency: Urgency
    source_app: str
    submitted_at: AwareDatetime
    flags: list[str] = Field(default_factory=list)
    possible_duplicates: list[uuid.UUID] = Field(default_factory=list)


class ReportTransitioned(Payload):
    """A report moved through its lifecycle (or an action was recorded without a move)."""

    NAME: ClassVar[str] = "report.transitioned"

    action: str
    from_state: str
    to_state: str
    actor_role: str
    agency_id: str | None
    reason: str | None = None
    details: dict[str, str | int | float | bool | None | list[str]] = Field(default_factory=dict)
    at: AwareDatetime


class AddedMedia(BaseModel):
    """One file attached to a report: its digest and sniffed type (never its bytes or URL)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    content_type: str


class ReportMediaAdded(Payload):
    """The submitting app attached more photos or videos to a report (state unchanged)."""

    NAME: ClassVar[str] = "report.media_added"

    number: str
    count: int = Field(ge=1)
    """How many files this attachment added (``len(media)``)."""
    media: list[AddedMedia] = Field(min_length=1)
    added_at: AwareDatetime


class ReportRouted(Payload):
    """Routing chose the lead agency for a report."""

    NAME: ClassVar[str] = "report.routed"

    number: str
    agency_id: str
    agency_name: str
    category: str
    commune_code: str | None
    urgency: Urgency
    rule_id: str
    routed_at: AwareDatetime


class ClockView(BaseModel):
    """One SLA clock as other services see it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["screening", "acknowledgement", "resolution"]
    status: Literal["pending", "running", "paused", "stopped", "cancelled"]
    amount: float
    unit: str
    started_at: AwareDatetime | None
    due_at: AwareDatetime | None
    breached: bool = False


class SlaClocksChanged(Payload):
    """The SLA clocks of a report were (re)computed."""

    NAME: ClassVar[str] = "sla.clocks_changed"

    trigger: str
    """What caused the recomputation: routed, acknowledged, resolved, paused, resumed, …"""
    number: str
    agency_id: str | None
    category: str
    policy_id: str
    calendar_version: str
    clocks: list[ClockView]


class SlaThresholdReached(Payload):
    """A clock crossed a warning threshold (percent < 100) or breached (percent = 100)."""

    NAME: ClassVar[str] = "sla.threshold_reached"

    number: str
    agency_id: str | None
    clock: Literal["screening", "acknowledgement", "resolution"]
    percent: int
    due_at: AwareDatetime
    escalation_level: str | None = None


P = TypeVar("P", bound=Payload)


class Envelope(BaseModel, Generic[P]):
    """Metadata every event carries around its typed payload."""

    model_config = ConfigDict(frozen=True)

    event_id: uuid.UUID
    event_type: str
    version: int
    source: str
    occurred_at: AwareDatetime
    correlation_id: str
    payload: P

    @property
    def subject(self) -> str:
        """The report the event is about; also the Kafka record key."""
        return str(self.payload.report_id)


PAYLOAD_TYPES: dict[str, type[Payload]] = {
    f"{cls.NAME}.v{cls.VERSION}": cls
    for cls in (
        ReportSubmitted,
        ReportTransitioned,
        ReportMediaAdded,
        ReportRouted,
        SlaClocksChanged,
        SlaThresholdReached,
    )
}


def ce_type(province: str, payload_cls: type[Payload]) -> str:
    """CloudEvents type of a payload class, e.g. vn.bn.fieldreport.report.routed.v1."""
    return f"vn.{province}{CE_TYPE_INFIX}{payload_cls.NAME}.v{payload_cls.VERSION}"


def payload_class(event_type: str) -> type[Payload]:
    """Model for a CloudEvents type; KeyError when the type is unknown."""
    _, sep, tail = event_type.partition(CE_TYPE_INFIX)
    if not sep:
        raise KeyError(event_type)
    return PAYLOAD_TYPES[tail]


_ANY_ENVELOPE = Envelope[Any]  # parametrised once: doing it per call costs more than the rest


def new_envelope(
    payload: P,
    *,
    source: str,
    province: str,
    correlation_id: str | None = None,
    occurred_at: datetime | None = None,
    event_id: uuid.UUID | None = None,
) -> Envelope[P]:
    """Wrap a payload in a fresh envelope (new event id, time from the service clock)."""
    eid = event_id or uuid.uuid4()
    return _ANY_ENVELOPE(
        event_id=eid,
        event_type=ce_type(province, type(payload)),
        version=type(payload).VERSION,
        source=source,
        occurred_at=occurred_at or utcnow(),
        correlation_id=correlation_id or str(eid),
        payload=payload,
    )
