"""What a recomputation has to write: stored rows against computed ones, pure.

The clocks and thresholds tables are a projection of a report's facts. Most events change
one or two of its rows, so the handler compares what it computed with what it loaded and
writes only the difference, with the same effect the full rewrite had: a clock row is
written as ``UPSERT_CLOCK`` would leave it, unfired thresholds no longer wanted go, wanted
ones are inserted or updated, fired ones are never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sla.domain import Clock, ThresholdInstant

ThresholdKey = tuple[str, int, str]
"""(clock, generation, mark) of a threshold row."""


@dataclass(frozen=True)
class ClockRow:
    """One row of ``clocks`` (without the report id)."""

    kind: str
    generation: int
    status: str
    amount: float
    unit: str
    agency_id: str | None
    started_at: datetime | None
    stopped_at: datetime | None
    due_at: datetime | None
    consumed_s: float
    breached: bool
    calendar_version: str

    @classmethod
    def of(cls, clock: Clock, *, breached: bool, calendar_version: str) -> ClockRow:
        """The row a computed clock is stored as."""
        return cls(
            kind=clock.kind,
            generation=clock.generation,
            status=clock.status,
            amount=clock.amount,
            unit=clock.unit.value,
            agency_id=clock.agency_id,
            started_at=clock.started_at,
            stopped_at=clock.stopped_at,
            due_at=clock.due_at,
            consumed_s=clock.consumed_s,
            breached=breached,
            calendar_version=calendar_version,
        )


@dataclass(frozen=True)
class ThresholdRow:
    """One row of ``thresholds`` (without the report id and the fired mark)."""

    clock: str
    generation: int
    mark: str
    percent: int
    level: str
    fire_at: datetime
    due_at: datetime

    @property
    def key(self) -> ThresholdKey:
        return (self.clock, self.generation, self.mark)

    @classmethod
    def of(cls, instant: ThresholdInstant) -> ThresholdRow:
        """The row a computed threshold instant is stored as."""
        return cls(
            clock=instant.clock,
            generation=instant.generation,
            mark=instant.mark.key,
            percent=instant.mark.percent,
            level=instant.mark.level,
            fire_at=instant.fire_at,
            due_at=instant.due_at,
        )


@dataclass(frozen=True)
class StoredThreshold:
    """A loaded threshold row and whether it has fired."""

    row: ThresholdRow
    fired: bool


@dataclass(frozen=True)
class ThresholdWrites:
    """Unfired rows to delete and rows to insert or update (unless fired meanwhile)."""

    stale: tuple[ThresholdKey, ...]
    upserts: tuple[ThresholdRow, ...]

    def __bool__(self) -> bool:
        return bool(self.stale or self.upserts)


def upserted(stored: ClockRow | None, computed: ClockRow) -> ClockRow:
    """The row ``UPSERT_CLOCK`` leaves behind when it writes ``computed`` over ``stored``."""
    if stored is None:
        return computed
    if (
        stored.status in ("stopped", "cancelled")
        and stored.status == computed.status
        and stored.generation == computed.generation
    ):
        return stored  # a finished clock keeps its due instant, verdict and calendar version
    carried = stored.breached and stored.generation == computed.generation
    return replace(computed, breached=computed.breached or carried)


def clocks_to_write(
    stored: Mapping[str, ClockRow], computed: Iterable[ClockRow]
) -> tuple[ClockRow, ...]:
    """The computed clock rows whose upsert would change the stored row."""
    return tuple(c for c in computed if upserted(stored.get(c.kind), c) != stored.get(c.kind))


def threshold_writes(
    stored: Sequence[StoredThreshold], wanted: Iterable[ThresholdRow]
) -> ThresholdWrites:
    """What turns the stored thresholds into the wanted ones (the first of a key wins)."""
    pending = {s.row.key: s.row for s in stored if not s.fired}
    fired = {s.row.key for s in stored if s.fired}
    first: dict[ThresholdKey, ThresholdRow] = {}
    for row in wanted:
        first.setdefault(row.key, row)
    stale = tuple(key for key in pending if key not in first)
    upserts = tuple(
        row for key, row in first.items() if key not in fired and pending.get(key) != row
    )
    return ThresholdWrites(stale=stale, upserts=upserts)
