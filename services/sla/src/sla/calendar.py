"""Pure business calendar for SLA deadlines: Vietnamese holidays, swaps and office hours.

No I/O. Instants are aware datetimes; office hours are local wall-clock times in
Asia/Ho_Chi_Minh (domain.md §10). 1 working day is 8 working hours of office time.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from holidays import HolidayBase, country_holidays
from holidays.version import __version__ as HOLIDAYS_VERSION

from paht_common.clock import LOCAL_TZ

__all__ = [
    "DEFAULT_SEASONS",
    "SEED_OVERRIDES",
    "TZ",
    "BusinessCalendar",
    "CalendarError",
    "CalendarOverride",
    "DayInfo",
    "OfficePeriod",
    "OverrideKind",
    "Season",
    "Unit",
]

TZ: ZoneInfo = LOCAL_TZ

HOURS_PER_WORKING_DAY = 8
MAX_DAYS_SPAN = 366

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_US_PER_HOUR = 3_600_000_000
# A calendar whose overrides close the office for longer than this is treated as broken
# rather than walked forever.
_MAX_IDLE_DAYS = 366
# A leap year, so that 29/2 must be covered by a season as well.
_LEAP_YEAR = 2000
_MAKE_UP_DAY = "Ngày làm việc bù"
_SUBSTITUTE_DATE_FORMAT = "%d/%m/%Y"


class Unit(StrEnum):
    """Unit of a deadline amount; MINUTES and CALENDAR_DAYS run on the 24/7 clock."""

    WORKING_HOURS = "working_hours"
    WORKING_DAYS = "working_days"
    CALENDAR_DAYS = "calendar_days"
    MINUTES = "minutes"


class OverrideKind(StrEnum):
    """What an override does to its day."""

    DAY_OFF = "day_off"
    WORKING_DAY = "working_day"


class CalendarError(ValueError):
    """Invalid calendar configuration or invalid input to a calendar computation."""


@dataclass(frozen=True)
class OfficePeriod:
    """One office interval in local wall-clock time, start < end, within one day."""

    start: time
    end: time


@dataclass(frozen=True)
class Season:
    """Office hours valid from (month, day) start to (month, day) end inclusive; may wrap."""

    name: str
    start: tuple[int, int]
    end: tuple[int, int]
    periods: tuple[OfficePeriod, ...]
    weekdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})

    def covers(self, month_day: tuple[int, int]) -> bool:
        """Return True when the (month, day) falls inside this season."""
        if self.start <= self.end:
            return self.start <= month_day <= self.end
        return month_day >= self.start or month_day <= self.end


@dataclass(frozen=True)
class CalendarOverride:
    """An admin-entered exception for one day, with the announcing document."""

    day: date
    kind: OverrideKind
    reason: str
    document: str = ""


@dataclass(frozen=True)
class DayInfo:
    """Whether a local date is a working day, and its Vietnamese holiday or override name."""

    day: date
    working: bool
    name: str | None


DEFAULT_SEASONS: tuple[Season, ...] = (
    Season(
        name="Cả năm",
        start=(1, 1),
        end=(12, 31),
        periods=(
            OfficePeriod(time(8, 0), time(12, 0)),
            OfficePeriod(time(13, 0), time(17, 0)),
        ),
    ),
)

_SWAP_2026_SOURCE = "domain.md §10.3 [S39] 24h.com.vn/…c46a1724830.html"

SEED_OVERRIDES: tuple[CalendarOverride, ...] = (
    CalendarOverride(
        day=date(2026, 1, 2),
        kind=OverrideKind.DAY_OFF,
        reason="Ngày nghỉ (thay cho ngày 10/01/2026)",
        document=_SWAP_2026_SOURCE,
    ),
    CalendarOverride(
        day=date(2026, 1, 10),
        kind=OverrideKind.WORKING_DAY,
        reason="Ngày làm việc bù (cho ngày nghỉ 02/01/2026)",
        document=_SWAP_2026_SOURCE,
    ),
)


def _require_aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise CalendarError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _to_us(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _validate_month_day(season: Season, month_day: tuple[int, int]) -> None:
    try:
        month, day = month_day
        date(_LEAP_YEAR, month, day)
    except (TypeError, ValueError) as exc:
        raise CalendarError(f"season {season.name!r}: invalid (month, day) {month_day!r}") from exc


def _sorted_periods(season: Season) -> tuple[OfficePeriod, ...]:
    if not season.periods:
        raise CalendarError(f"season {season.name!r} has no office periods")
    if not season.weekdays or not season.weekdays <= frozenset(range(7)):
        raise CalendarError(f"season {season.name!r}: weekdays must be a non-empty subset of 0..6")
    for period in season.periods:
        if period.start.tzinfo is not None or period.end.tzinfo is not None:
            raise CalendarError(f"season {season.name!r}: office times must be local wall-clock")
        if period.start >= period.end:
            raise CalendarError(
                f"season {season.name!r}: period {period.start}–{period.end} has start >= end"
            )
    ordered = tuple(sorted(season.periods, key=lambda p: (p.start, p.end)))
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after.start < before.end:
            raise CalendarError(
                f"season {season.name!r}: periods {before.start}–{before.end} and "
                f"{after.start}–{after.end} overlap"
            )
    return ordered


def _fingerprint(seasons: Sequence[Season], overrides: Sequence[CalendarOverride]) -> str:
    canonical = {
        "seasons": sorted(
            (
                {
                    "name": s.name,
                    "start": list(s.start),
                    "end": list(s.end),
                    "periods": sorted([p.start.isoformat(), p.end.isoformat()] for p in s.periods),
                    "weekdays": sorted(s.weekdays),
                }
                for s in seasons
            ),
            key=lambda item: json.dumps(item, sort_keys=True),
        ),
        "overrides": [
            {
                "day": o.day.isoformat(),
                "kind": str(o.kind),
                "reason": o.reason,
                "document": o.document,
            }
            for o in sorted(overrides, key=lambda o: o.day)
        ],
    }
    blob = json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


class BusinessCalendar:
    """Working-time arithmetic over holidays.VN plus overrides and seasonal office hours."""

    def __init__(
        self,
        *,
        seasons: Sequence[Season] = DEFAULT_SEASONS,
        overrides: Sequence[CalendarOverride] = SEED_OVERRIDES,
        revision: int = 0,
    ) -> None:
        if revision < 0:
            raise CalendarError(f"revision must be >= 0, got {revision}")
        if not seasons:
            raise CalendarError("at least one season is required")
        periods_by_season: dict[Season, tuple[OfficePeriod, ...]] = {}
        for season in seasons:
            _validate_month_day(season, season.start)
            _validate_month_day(season, season.end)
            periods_by_season[season] = _sorted_periods(season)
        self._season_periods = periods_by_season
        self._season_by_month_day: dict[tuple[int, int], Season] = {}
        day = date(_LEAP_YEAR, 1, 1)
        while day.year == _LEAP_YEAR:
            month_day = (day.month, day.day)
            covering = [s for s in seasons if s.covers(month_day)]
            if len(covering) != 1:
                names = ", ".join(repr(s.name) for s in covering) or "none"
                raise CalendarError(
                    f"{day.day}/{day.month} must be covered by exactly one season, got {names}"
                )
            self._season_by_month_day[month_day] = covering[0]
            day += timedelta(days=1)

        self._overrides: dict[date, CalendarOverride] = {}
        for override in overrides:
            try:
                OverrideKind(override.kind)
            except ValueError as exc:
                raise CalendarError(f"unknown override kind {override.kind!r}") from exc
            if override.day in self._overrides:
                raise CalendarError(f"more than one override for {override.day.isoformat()}")
            self._overrides[override.day] = override

        self._revision = revision
        self._version = (
            f"vn-holidays-{HOLIDAYS_VERSION};rev-{revision};h-{_fingerprint(seasons, overrides)}"
        )
        self._holidays_by_year: dict[int, HolidayBase] = {}
        self._info_cache: dict[int, DayInfo] = {}
        self._periods_us_cache: dict[int, tuple[tuple[int, int], ...]] = {}

    @property
    def version(self) -> str:
        """Identifier stored with each deadline; changes whenever seasons or overrides change."""
        return self._version

    def is_working_day(self, d: date) -> bool:
        """Return True when d is a working day (overrides first, then holidays.VN and weekdays)."""
        return self.day_info(d).working

    def day_info(self, d: date) -> DayInfo:
        """Return whether d is a working day and its Vietnamese holiday or override name."""
        if isinstance(d, datetime):
            raise CalendarError(f"expected a local date, got datetime {d.isoformat()}")
        key = d.toordinal()
        info = self._info_cache.get(key)
        if info is None:
            info = self._compute_info(d)
            self._info_cache[key] = info
        return info

    def days(self, start: date, end: date) -> list[DayInfo]:
        """List every day from start to end inclusive; at most 366 days."""
        if end < start:
            raise CalendarError(f"end {end.isoformat()} is before start {start.isoformat()}")
        count = (end - start).days + 1
        if count > MAX_DAYS_SPAN:
            raise CalendarError(f"at most {MAX_DAYS_SPAN} days can be listed, asked for {count}")
        return [self.day_info(start + timedelta(days=i)) for i in range(count)]

    def periods_on(self, d: date) -> tuple[OfficePeriod, ...]:
        """Return the office periods of d, or () when d is not a working day."""
        if not self.day_info(d).working:
            return ()
        return self._season_periods[self._season_by_month_day[(d.month, d.day)]]

    def add(self, start: datetime, amount: float, unit: Unit) -> datetime:
        """Return the aware UTC deadline reached by adding amount of unit to start."""
        start_utc = _require_aware(start, "start")
        try:
            unit = Unit(unit)
        except ValueError as exc:
            raise CalendarError(f"unknown unit {unit!r}") from exc
        if not math.isfinite(amount) or amount < 0:
            raise CalendarError(f"amount must be a finite number >= 0, got {amount!r}")
        try:
            if unit is Unit.CALENDAR_DAYS:
                return start_utc + timedelta(days=amount)
            if unit is Unit.MINUTES:
                return start_utc + timedelta(minutes=amount)
            if amount == 0:
                return start_utc
            return self._add_office_time(start_utc, amount, unit)
        except CalendarError:
            raise
        except (OverflowError, ValueError) as exc:  # beyond datetime.max
            message = f"{amount} {unit} from {start.isoformat()} is past year 9999"
            raise CalendarError(message) from exc

    def _add_office_time(self, start_utc: datetime, amount: float, unit: Unit) -> datetime:
        hours = amount * HOURS_PER_WORKING_DAY if unit is Unit.WORKING_DAYS else amount
        remaining = round(hours * _US_PER_HOUR)
        cursor = _to_us(start_utc)
        # the hot path of every deadline: the day loop of _periods_from is inlined here, a
        # generator costs about a third of the throughput (bench/bench_calendar.py)
        ordinal = start_utc.astimezone(TZ).toordinal()
        cache = self._periods_us_cache
        idle = 0
        while True:
            periods = cache.get(ordinal)
            if periods is None:
                periods = self._load_periods_us(ordinal)
            if not periods:
                idle += 1
                if idle > _MAX_IDLE_DAYS:
                    raise CalendarError(f"no office time within {_MAX_IDLE_DAYS} days")
            for begin, end in periods:
                if end <= cursor:
                    continue
                if begin > cursor:
                    cursor = begin
                available = end - cursor
                if remaining <= available:
                    return _EPOCH + timedelta(microseconds=cursor + remaining)
                remaining -= available
                cursor = end
                idle = 0
            ordinal += 1

    def next_office_instant(self, at: datetime) -> datetime:
        """Return the first instant at or after ``at`` inside office hours (aware UTC)."""
        cursor = _to_us(_require_aware(at, "at"))
        for begin, end in self._periods_from(at):
            if end > cursor:
                return _EPOCH + timedelta(microseconds=max(begin, cursor))
        raise AssertionError("unreachable: _periods_from never ends")

    def _periods_from(self, start: datetime) -> Iterator[tuple[int, int]]:
        """Office periods (epoch microseconds) from the local day of ``start`` on, in order;
        CalendarError after ``_MAX_IDLE_DAYS`` days in a row without office time."""
        ordinal = start.astimezone(TZ).toordinal()
        cache = self._periods_us_cache
        idle = 0
        while True:
            periods = cache.get(ordinal)
            if periods is None:
                periods = self._load_periods_us(ordinal)
            if periods:
                idle = 0
                yield from periods
            else:
                idle += 1
                if idle > _MAX_IDLE_DAYS:
                    raise CalendarError(f"no office time within {_MAX_IDLE_DAYS} days")
            ordinal += 1

    def working_seconds_between(self, a: datetime, b: datetime) -> float:
        """Return the office time in seconds between instants a and b (0 when b <= a)."""
        a_us = _to_us(_require_aware(a, "a"))
        b_utc = _require_aware(b, "b")
        b_us = _to_us(b_utc)
        if b_us <= a_us:
            return 0.0
        ordinal = a.astimezone(TZ).toordinal()
        last = b_utc.astimezone(TZ).toordinal()
        cache = self._periods_us_cache
        total = 0
        while ordinal <= last:
            periods = cache.get(ordinal)
            if periods is None:
                periods = self._load_periods_us(ordinal)
            for begin, end in periods:
                overlap = min(end, b_us) - max(begin, a_us)
                if overlap > 0:
                    total += overlap
            ordinal += 1
        return total / 1_000_000

    def _load_periods_us(self, ordinal: int) -> tuple[tuple[int, int], ...]:
        d = date.fromordinal(ordinal)
        bounds = tuple(
            (
                _to_us(datetime.combine(d, p.start, tzinfo=TZ)),
                _to_us(datetime.combine(d, p.end, tzinfo=TZ)),
            )
            for p in self.periods_on(d)
        )
        self._periods_us_cache[ordinal] = bounds
        return bounds

    def _national(self, year: int) -> HolidayBase:
        national = self._holidays_by_year.get(year)
        if national is None:
            national = country_holidays("VN", years=year, language="vi")
            self._holidays_by_year[year] = national
        return national

    def _compute_info(self, d: date) -> DayInfo:
        override = self._overrides.get(d)
        if override is not None:
            return DayInfo(d, override.kind is OverrideKind.WORKING_DAY, override.reason)
        national = self._national(d.year)
        name: str | None = national.get(d)
        if d in national.weekend_workdays:
            return DayInfo(d, True, self._make_up_name(d))
        if name is not None:
            return DayInfo(d, False, name)
        season = self._season_by_month_day[(d.month, d.day)]
        return DayInfo(d, d.weekday() in season.weekdays, None)

    def _make_up_name(self, d: date) -> str:
        # holidays.VN names the weekday off "Ngày nghỉ (thay cho ngày <this Saturday>)";
        # the day off may fall in the next year (2014-12-27 pays for 2015-01-02).
        marker = d.strftime(_SUBSTITUTE_DATE_FORMAT)
        for year in (d.year, d.year + 1):
            for day_off, name in sorted(self._national(year).items()):
                if marker in name:
                    return f"{_MAKE_UP_DAY} (cho ngày nghỉ {day_off:{_SUBSTITUTE_DATE_FORMAT}})"
        return _MAKE_UP_DAY
