"""SLA clocks, pure: policies, and clock state recomputed from a report's event history.

Clocks are never mutated in place. Every lifecycle fact the SLA service hears about is kept
as a ``Fact``; the clocks are a function of the facts (sorted by time), so duplicates and
events that arrive out of order across topics give the same result (compute-on-read, as
ServiceNow and Signalen do). Thresholds (50 %, 75 %, breach, escalation) are instants
derived from the same computation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from sla.calendar import BusinessCalendar, Unit

ClockKind = Literal["screening", "acknowledgement", "resolution"]
ClockStatus = Literal["pending", "running", "paused", "stopped", "cancelled"]
CLOCK_KINDS: tuple[ClockKind, ...] = ("screening", "acknowledgement", "resolution")


class FactKind(StrEnum):
    """Lifecycle facts that drive clocks."""

    SUBMITTED = "submitted"
    ROUTED = "routed"
    ACKNOWLEDGED = "acknowledged"
    RETURNED = "returned"
    PAUSED = "paused"
    RESUMED = "resumed"
    EXTENDED = "extended"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    CANCELLED = "cancelled"
    # Appended last: the enum order is the tie-break rank stored with every fact.
    EXTENSION_REQUESTED = "extension_requested"


@dataclass(frozen=True)
class Fact:
    """One event as the SLA sees it; ``seq`` breaks ties between equal instants."""

    kind: FactKind
    at: datetime
    seq: int = 0
    agency_id: str | None = None
    extension_days: float = 0.0


@dataclass(frozen=True)
class Target:
    """Amount and unit of one clock."""

    amount: float
    unit: Unit


@dataclass(frozen=True)
class Policy:
    """Which clocks a report gets; first matching policy (by priority) wins."""

    id: str
    priority: int
    screening: Target
    acknowledgement: Target
    resolution: Target
    category: str | None = None
    urgency: str | None = None
    agency_id: str | None = None
    resolution_starts: Literal["assigned", "acknowledged"] = "acknowledged"
    on_reroute: Literal["restart", "continue"] = "restart"

    def matches(self, *, category: str, urgency: str, agency_id: str | None) -> bool:
        """True when every condition the policy sets holds for the report."""
        if self.category is not None and not (
            category == self.category or category.startswith(self.category + ".")
        ):
            return False
        if self.urgency is not None and self.urgency != urgency:
            return False
        return self.agency_id is None or self.agency_id == agency_id

    def target(self, kind: ClockKind) -> Target:
        """The target of one clock kind."""
        return {
            "screening": self.screening,
            "acknowledgement": self.acknowledgement,
            "resolution": self.resolution,
        }[kind]


def choose_policy(
    policies: Iterable[Policy], *, category: str, urgency: str, agency_id: str | None
) -> Policy:
    """First matching policy by (priority, id); LookupError when none matches."""
    matching = [
        p for p in policies if p.matches(category=category, urgency=urgency, agency_id=agency_id)
    ]
    if not matching:
        raise LookupError(f"no SLA policy for {category}/{urgency}")
    return min(matching, key=lambda p: (p.priority, p.id))


@dataclass(frozen=True)
class Clock:
    """Computed state of one clock; ``due_at`` moves with pauses and extensions."""

    kind: ClockKind
    status: ClockStatus
    generation: int
    amount: float
    unit: Unit
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    due_at: datetime | None = None
    agency_id: str | None = None
    # office (or wall) seconds already consumed up to ``resumed_at``
    consumed_s: float = 0.0
    resumed_at: datetime | None = None

    @property
    def total_s(self) -> float:
        """The clock's length in seconds of its own time base."""
        return target_seconds(Target(self.amount, self.unit))

    def breached_at(self, now: datetime) -> bool:
        """True when the clock ran (or has run) past its due instant.

        On time is "stopped at or before the due instant" (domain.md §4.4). Office time alone
        cannot tell that when the clock stops outside office hours after its due instant
        (due Friday 17:00, resolved Friday 18:00 consumes exactly the length), so a clock
        that used exactly its whole length is judged on the instant it stopped.
        """
        if self.status in ("pending", "cancelled"):
            return False
        if self.status == "running":
            return self.due_at is not None and now > self.due_at
        if self.consumed_s > self.total_s + 1e-6:
            return True
        if self.consumed_s < self.total_s - 1e-6 or self.due_at is None:
            return False
        end = self.stopped_at if self.status == "stopped" else now
        return end is not None and end > self.due_at


def target_seconds(target: Target) -> float:
    """Length of a target: office seconds for working units, wall seconds otherwise."""
    if target.unit is Unit.WORKING_HOURS:
        return target.amount * 3600.0
    if target.unit is Unit.WORKING_DAYS:
        return target.amount * 8 * 3600.0
    if target.unit is Unit.CALENDAR_DAYS:
        return target.amount * 86400.0
    return target.amount * 60.0


def is_office_time(unit: Unit) -> bool:
    """True for units counted in office time."""
    return unit in (Unit.WORKING_HOURS, Unit.WORKING_DAYS)


class ClockMath:
    """Elapsed and due computations of clocks on a business calendar."""

    def __init__(self, calendar: BusinessCalendar) -> None:
        self.calendar = calendar

    def elapsed(self, unit: Unit, a: datetime, b: datetime) -> float:
        """Seconds of the clock's time base between two instants."""
        if b <= a:
            return 0.0
        if is_office_time(unit):
            return self.calendar.working_seconds_between(a, b)
        return (b - a).total_seconds()

    def add(self, unit: Unit, start: datetime, seconds: float) -> datetime:
        """Instant when ``seconds`` of the clock's time base have passed after start."""
        if seconds <= 0:
            return start
        if is_office_time(unit):
            return self.calendar.add(start, seconds / 3600.0, Unit.WORKING_HOURS)
        return start + timedelta(seconds=seconds)

    def due(self, clock: Clock) -> datetime | None:
        """Due instant of a running clock."""
        if clock.status != "running" or clock.resumed_at is None:
            return clock.due_at
        return self.add(clock.unit, clock.resumed_at, clock.total_s - clock.consumed_s)

    def instant_of_fraction(self, clock: Clock, fraction: float) -> datetime | None:
        """When a running clock reaches ``fraction`` of its length (past instants allowed)."""
        if clock.status != "running" or clock.resumed_at is None:
            return None
        wanted = clock.total_s * fraction
        if wanted <= clock.consumed_s:
            return clock.resumed_at
        return self.add(clock.unit, clock.resumed_at, wanted - clock.consumed_s)

    def start(self, clock: Clock, at: datetime, *, agency_id: str | None, fresh: bool) -> Clock:
        """Start (fresh: from zero, new generation) or continue a clock at ``at``."""
        if fresh:
            started = replace(
                clock,
                status="running",
                generation=clock.generation + 1,
                started_at=at,
                stopped_at=None,
                consumed_s=0.0,
                resumed_at=at,
                agency_id=agency_id,
            )
        else:
            # Continuing a clock that is still running keeps what it counted up to ``at``.
            if clock.status == "running":
                clock = self.pause(clock, at)
            started = replace(
                clock,
                status="running",
                stopped_at=None,
                resumed_at=at,
                agency_id=agency_id,
                started_at=clock.started_at or at,
            )
        return replace(started, due_at=self.due(started))

    def pause(self, clock: Clock, at: datetime) -> Clock:
        """Stop counting; keep what was consumed."""
        if clock.status != "running" or clock.resumed_at is None:
            return clock
        consumed = clock.consumed_s + self.elapsed(clock.unit, clock.resumed_at, at)
        return replace(clock, status="paused", consumed_s=consumed, resumed_at=None)

    def resume(self, clock: Clock, at: datetime) -> Clock:
        """Count again from ``at``."""
        if clock.status != "paused":
            return clock
        resumed = replace(clock, status="running", resumed_at=at)
        return replace(resumed, due_at=self.due(resumed))

    def stop(self, clock: Clock, at: datetime) -> Clock:
        """Stop for good (met or missed); the due instant stays for on-time statistics."""
        if clock.status not in ("running", "paused"):
            return clock
        paused = self.pause(clock, at) if clock.status == "running" else clock
        return replace(paused, status="stopped", stopped_at=at)

    def cancel(self, clock: Clock, at: datetime) -> Clock:
        """The clock no longer applies (rejected, merged)."""
        if clock.status in ("stopped", "cancelled"):
            return clock
        return replace(clock, status="cancelled", stopped_at=at, resumed_at=None)

    def extend(self, clock: Clock, days: float) -> Clock:
        """Lengthen a clock by ``days`` working days (calendar days for wall-clock units)."""
        per_day = {
            Unit.WORKING_DAYS: 1.0,
            Unit.WORKING_HOURS: 8.0,
            Unit.CALENDAR_DAYS: 1.0,
            Unit.MINUTES: 24 * 60.0,
        }[clock.unit]
        extended = replace(clock, amount=clock.amount + days * per_day)
        return replace(extended, due_at=self.due(extended))


@dataclass
class ClockSet:
    """The three clocks of one report while facts are folded in."""

    clocks: dict[ClockKind, Clock] = field(default_factory=dict)
    # days asked for by the last extension request, granted by an approval without days
    requested_extension_days: float = 0.0

    def get(self, kind: ClockKind) -> Clock:
        return self.clocks[kind]

    def put(self, clock: Clock) -> None:
        self.clocks[clock.kind] = clock


def compute_clocks(facts: Sequence[Fact], policy: Policy, math: ClockMath) -> list[Clock]:
    """Clock states after folding every fact in time order (duplicates are harmless)."""
    state = ClockSet()
    for kind in CLOCK_KINDS:
        target = policy.target(kind)
        state.put(
            Clock(kind=kind, status="pending", generation=0, amount=target.amount, unit=target.unit)
        )
    seen: set[tuple[FactKind, datetime, int]] = set()
    for fact in sorted(facts, key=lambda f: (f.at, f.seq)):
        key = (fact.kind, fact.at, fact.seq)
        if key in seen:
            continue
        seen.add(key)
        _apply(state, fact, policy, math)
    return [state.get(kind) for kind in CLOCK_KINDS]


def _apply(state: ClockSet, fact: Fact, policy: Policy, math: ClockMath) -> None:
    screening, ack, res = (
        state.get("screening"),
        state.get("acknowledgement"),
        state.get("resolution"),
    )
    at = fact.at
    if fact.kind is FactKind.SUBMITTED:
        if screening.status == "pending":
            state.put(math.start(screening, at, agency_id=None, fresh=True))
    elif fact.kind is FactKind.ROUTED:
        state.put(math.stop(screening, at))
        first = ack.generation == 0
        if first or policy.on_reroute == "restart" or ack.status == "stopped":
            state.put(math.start(_reset(ack, policy), at, agency_id=fact.agency_id, fresh=True))
        else:
            state.put(math.start(ack, at, agency_id=fact.agency_id, fresh=False))
        if not first and policy.on_reroute == "continue" and res.status in ("paused", "running"):
            state.put(math.start(res, at, agency_id=fact.agency_id, fresh=False))
        elif policy.resolution_starts == "assigned":
            state.put(math.start(_reset(res, policy), at, agency_id=fact.agency_id, fresh=True))
        elif not first and res.status != "cancelled":
            state.put(_pending(res, policy))
    elif fact.kind is FactKind.ACKNOWLEDGED:
        state.put(math.stop(ack, at))
        if policy.resolution_starts == "acknowledged":
            if res.status == "pending":
                state.put(math.start(_reset(res, policy), at, agency_id=ack.agency_id, fresh=True))
            elif res.status == "paused":
                state.put(math.start(res, at, agency_id=ack.agency_id, fresh=False))
    elif fact.kind is FactKind.RETURNED:
        state.put(math.pause(ack, at))
        state.put(math.pause(res, at))
    elif fact.kind is FactKind.PAUSED:
        state.put(math.pause(res, at))
    elif fact.kind is FactKind.RESUMED:
        state.put(math.resume(res, at))
    elif fact.kind is FactKind.EXTENSION_REQUESTED:
        state.requested_extension_days = fact.extension_days
    elif fact.kind is FactKind.EXTENDED:
        days = fact.extension_days or state.requested_extension_days
        state.requested_extension_days = 0.0
        state.put(math.extend(res, days))
    elif fact.kind is FactKind.RESOLVED:
        state.put(math.stop(res, at))
    elif fact.kind is FactKind.REOPENED:
        state.put(math.start(_reset(res, policy), at, agency_id=res.agency_id, fresh=True))
    elif fact.kind is FactKind.CANCELLED:
        for clock in (screening, ack, res):
            state.put(math.cancel(clock, at))


def _reset(clock: Clock, policy: Policy) -> Clock:
    target = policy.target(clock.kind)
    return replace(clock, amount=target.amount, unit=target.unit)


def _pending(clock: Clock, policy: Policy) -> Clock:
    target = policy.target(clock.kind)
    return replace(
        clock,
        status="pending",
        amount=target.amount,
        unit=target.unit,
        started_at=None,
        stopped_at=None,
        due_at=None,
        consumed_s=0.0,
        resumed_at=None,
    )


@dataclass(frozen=True)
class Mark:
    """A threshold of a clock: a warning (< 100), the breach (100) or an escalation."""

    key: str
    percent: int
    level: str
    overdue: Target | None = None


@dataclass(frozen=True)
class ThresholdInstant:
    """When a mark of a given clock generation fires."""

    clock: ClockKind
    generation: int
    mark: Mark
    fire_at: datetime
    due_at: datetime


def threshold_instants(
    clocks: Sequence[Clock], marks: Sequence[Mark], math: ClockMath
) -> list[ThresholdInstant]:
    """Fire instants of every mark of every running clock."""
    out: list[ThresholdInstant] = []
    for clock in clocks:
        if clock.status != "running" or clock.due_at is None:
            continue
        for mark in marks:
            if mark.overdue is not None:
                fire_at = math.add(mark.overdue.unit, clock.due_at, target_seconds(mark.overdue))
            else:
                instant = math.instant_of_fraction(clock, mark.percent / 100.0)
                if instant is None:
                    continue
                fire_at = instant
            out.append(ThresholdInstant(clock.kind, clock.generation, mark, fire_at, clock.due_at))
    return out


DEFAULT_MARKS: tuple[Mark, ...] = (  # the same as build_marks([50, 75], ["8wh:…", "3wd:…"])
    Mark("50", 50, "officer"),
    Mark("75", 75, "officer"),
    Mark("100", 100, "agency_leader"),
    Mark("100+8wh", 100, "coordinator", Target(8, Unit.WORKING_HOURS)),
    Mark("100+3wd", 100, "province_leadership", Target(3, Unit.WORKING_DAYS)),
)


_ESCALATION_UNITS = {
    "wh": Unit.WORKING_HOURS,
    "wd": Unit.WORKING_DAYS,
    "cd": Unit.CALENDAR_DAYS,
    "min": Unit.MINUTES,
}


def build_marks(
    warning_percents: Sequence[int],
    escalations: Sequence[str],
    *,
    warning_level: str = "officer",
    breach_level: str = "agency_leader",
) -> tuple[Mark, ...]:
    """Marks from configuration: warnings (1..99 %), the breach, and escalations.

    An escalation is ``"<amount><unit>:<level>"`` counted after the due instant, with unit
    wh, wd, cd or min, e.g. ``"8wh:coordinator"``. ValueError names the bad entry.
    """
    marks: list[Mark] = []
    for percent in sorted(set(warning_percents)):
        if not 0 < percent < 100:
            raise ValueError(f"warning percent {percent} must be between 1 and 99")
        marks.append(Mark(str(percent), percent, warning_level))
    marks.append(Mark("100", 100, breach_level))
    for entry in escalations:
        span, sep, level = entry.partition(":")
        unit_key = span.lstrip("0123456789.")
        amount_text = span[: len(span) - len(unit_key)]
        if not sep or not level or unit_key not in _ESCALATION_UNITS or not amount_text:
            raise ValueError(f"escalation {entry!r} must look like '8wh:coordinator'")
        amount = float(amount_text)
        if amount <= 0:
            raise ValueError(f"escalation {entry!r} needs a positive span")
        marks.append(Mark(f"100+{span}", 100, level, Target(amount, _ESCALATION_UNITS[unit_key])))
    return tuple(marks)
