"""Unit tests of the pure SLA business calendar; expected values worked out by hand."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

import pytest

from sla.calendar import (
    DEFAULT_SEASONS,
    SEED_OVERRIDES,
    TZ,
    BusinessCalendar,
    CalendarError,
    CalendarOverride,
    DayInfo,
    OfficePeriod,
    OverrideKind,
    Season,
    Unit,
)

WH = Unit.WORKING_HOURS
WD = Unit.WORKING_DAYS
HOUR = 3600.0

DEFAULT_PERIODS = (
    OfficePeriod(time(8, 0), time(12, 0)),
    OfficePeriod(time(13, 0), time(17, 0)),
)
# Vĩnh Phúc, QĐ 873/QĐ-UBND (domain.md §10.1).
SUMMER_PERIODS = (
    OfficePeriod(time(7, 0), time(11, 30)),
    OfficePeriod(time(13, 30), time(17, 0)),
)
WINTER_PERIODS = (
    OfficePeriod(time(7, 30), time(12, 0)),
    OfficePeriod(time(13, 0), time(16, 30)),
)
VINH_PHUC_SEASONS = (
    Season(name="Mùa hè", start=(4, 16), end=(10, 15), periods=SUMMER_PERIODS),
    Season(name="Mùa đông", start=(10, 16), end=(4, 15), periods=WINTER_PERIODS),
)


def vn(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """Return an aware Asia/Ho_Chi_Minh wall-clock instant."""
    return datetime(year, month, day, hour, minute, tzinfo=TZ)


@pytest.fixture(scope="module")
def cal() -> BusinessCalendar:
    return BusinessCalendar()


@pytest.fixture(scope="module")
def vinh_phuc() -> BusinessCalendar:
    return BusinessCalendar(seasons=VINH_PHUC_SEASONS)


# --- result shape


def test_result_is_aware_utc(cal: BusinessCalendar) -> None:
    result = cal.add(vn(2026, 3, 9, 8), 1, WH)
    assert result.tzinfo is UTC
    assert result == datetime(2026, 3, 9, 2, 0, tzinfo=UTC)  # 09:00 +07:00


def test_utc_start_is_read_as_the_same_instant(cal: BusinessCalendar) -> None:
    # 01:00Z is 08:00 in Hà Nội, the opening of Monday's office hours.
    assert cal.add(datetime(2026, 3, 9, 1, 0, tzinfo=UTC), 1, WH) == vn(2026, 3, 9, 9)


def test_calendar_error_is_a_value_error() -> None:
    assert issubclass(CalendarError, ValueError)


# --- office hours within a day


def test_four_hours_from_monday_opening_end_at_noon_not_after_lunch(
    cal: BusinessCalendar,
) -> None:
    assert cal.add(vn(2026, 3, 9, 8), 4, WH) == vn(2026, 3, 9, 12)


def test_eight_hours_from_monday_opening_end_at_monday_closing(cal: BusinessCalendar) -> None:
    assert cal.add(vn(2026, 3, 9, 8), 8, WH) == vn(2026, 3, 9, 17)


def test_lunch_break_does_not_count(cal: BusinessCalendar) -> None:
    # 11:00-12:00 is one hour, the second starts at 13:00.
    assert cal.add(vn(2026, 3, 9, 11), 2, WH) == vn(2026, 3, 9, 14)


def test_start_during_lunch_counts_from_afternoon_opening(cal: BusinessCalendar) -> None:
    assert cal.add(vn(2026, 3, 9, 12, 30), 1, WH) == vn(2026, 3, 9, 14)


def test_start_before_office_hours_counts_from_opening(cal: BusinessCalendar) -> None:
    assert cal.add(vn(2026, 3, 9, 6), 1, WH) == vn(2026, 3, 9, 9)


def test_start_after_office_hours_counts_from_next_morning(cal: BusinessCalendar) -> None:
    assert cal.add(vn(2026, 3, 9, 18), 1, WH) == vn(2026, 3, 10, 9)


def test_start_just_after_midnight_local_counts_from_that_morning(cal: BusinessCalendar) -> None:
    # 00:30 +07:00 on Tuesday is still Monday in UTC; the local date decides.
    assert cal.add(vn(2026, 3, 10, 0, 30), 1, WH) == vn(2026, 3, 10, 9)


def test_fractional_working_hours(cal: BusinessCalendar) -> None:
    assert cal.add(vn(2026, 3, 9, 8), 1.5, WH) == vn(2026, 3, 9, 9, 30)


# --- weekends and working days


def test_weekend_is_skipped(cal: BusinessCalendar) -> None:
    # Fri 13/3/2026 16:00-17:00 is one hour, the second is Mon 16/3 08:00-09:00.
    assert cal.add(vn(2026, 3, 13, 16), 2, WH) == vn(2026, 3, 16, 9)


def test_start_on_saturday_counts_from_monday_opening(cal: BusinessCalendar) -> None:
    assert cal.add(vn(2026, 3, 14, 10), 8, WH) == vn(2026, 3, 16, 17)


def test_one_working_day_is_eight_working_hours_not_same_time_next_day(
    cal: BusinessCalendar,
) -> None:
    # Tue 10:00: 10-12 and 13-17 give 6 h, Wed 08-10 the last 2 h.
    assert cal.add(vn(2026, 3, 10, 10), 1, WD) == vn(2026, 3, 11, 10)
    # From Tue 14:00 the 8 h end Wed 14:00 only because lunch is on both days: 3 h + 5 h.
    assert cal.add(vn(2026, 3, 10, 14), 1, WD) == vn(2026, 3, 11, 14)
    # From Tue 18:00 (closed) 1 WD is the whole of Wednesday, not Wed 18:00.
    assert cal.add(vn(2026, 3, 10, 18), 1, WD) == vn(2026, 3, 11, 17)


@pytest.mark.parametrize(
    "start",
    [vn(2026, 3, 9, 8), vn(2026, 3, 12, 15, 20), vn(2026, 2, 12, 9), vn(2025, 12, 31, 13)],
)
def test_working_days_equal_eight_times_working_hours(
    cal: BusinessCalendar, start: datetime
) -> None:
    assert cal.add(start, 5, WD) == cal.add(start, 40, WH)
    assert cal.add(start, 0.5, WD) == cal.add(start, 4, WH)


def test_five_working_days_from_monday_opening_end_friday_closing(cal: BusinessCalendar) -> None:
    assert cal.add(vn(2026, 3, 9, 8), 5, WD) == vn(2026, 3, 13, 17)


# --- zero amount and clock units


def test_zero_working_hours_returns_start_unchanged_even_outside_office(
    cal: BusinessCalendar,
) -> None:
    result = cal.add(vn(2026, 3, 14, 10), 0, WH)  # a Saturday
    assert result == datetime(2026, 3, 14, 3, 0, tzinfo=UTC)
    assert result.tzinfo is UTC
    assert cal.add(vn(2026, 3, 14, 10), 0, WD) == vn(2026, 3, 14, 10)


def test_calendar_days_are_plain_24_hour_days_over_weekends_and_tet(
    cal: BusinessCalendar,
) -> None:
    result = cal.add(vn(2026, 2, 14, 10), 7, Unit.CALENDAR_DAYS)
    assert result == vn(2026, 2, 21, 10)
    assert result.tzinfo is UTC


def test_minutes_are_plain_clock_minutes_across_midnight(cal: BusinessCalendar) -> None:
    assert cal.add(vn(2026, 2, 16, 23, 58), 5, Unit.MINUTES) == vn(2026, 2, 17, 0, 3)


def test_unit_accepts_its_string_value(cal: BusinessCalendar) -> None:
    assert cal.add(vn(2026, 3, 9, 8), 2, Unit("working_hours")) == vn(2026, 3, 9, 10)


# --- Tết


def test_tet_2026_weekdays_16_to_20_february_are_days_off(cal: BusinessCalendar) -> None:
    for day in range(14, 23):
        assert not cal.is_working_day(date(2026, 2, day)), day
    assert cal.is_working_day(date(2026, 2, 13))
    assert cal.is_working_day(date(2026, 2, 23))


def test_five_working_days_from_thursday_12_february_2026_jump_the_tet_break(
    cal: BusinessCalendar,
) -> None:
    # Thu 12/2 09-17 = 7 h, Fri 13/2 = 8 h (15), Tết 14-22/2,
    # Mon 23, Tue 24, Wed 25 = 24 h (39), Thu 26/2 08-09 the last hour.
    assert cal.add(vn(2026, 2, 12, 9), 5, WD) == vn(2026, 2, 26, 9)


def test_tet_2025_weekdays_27_to_31_january_are_days_off(cal: BusinessCalendar) -> None:
    for day in range(27, 32):
        assert not cal.is_working_day(date(2025, 1, day)), day
    assert not cal.is_working_day(date(2025, 2, 1))
    assert cal.is_working_day(date(2025, 1, 24))
    assert cal.is_working_day(date(2025, 2, 3))


def test_one_working_day_from_friday_before_tet_2025_ends_on_monday_3_february(
    cal: BusinessCalendar,
) -> None:
    # Fri 24/1 10-12, 13-17 = 6 h; 27/1-2/2 closed; Mon 3/2 08-10 = 2 h.
    assert cal.add(vn(2025, 1, 24, 10), 1, WD) == vn(2025, 2, 3, 10)


def test_tet_2025_monday_is_named_29_tet(cal: BusinessCalendar) -> None:
    assert cal.day_info(date(2025, 1, 27)) == DayInfo(date(2025, 1, 27), False, "29 Tết")


# --- other public holidays


def test_hung_kings_2026_on_sunday_is_observed_on_monday_27_april(cal: BusinessCalendar) -> None:
    assert cal.day_info(date(2026, 4, 26)) == DayInfo(
        date(2026, 4, 26), False, "Ngày Giỗ Tổ Hùng Vương"
    )
    assert cal.day_info(date(2026, 4, 27)) == DayInfo(
        date(2026, 4, 27), False, "Ngày Giỗ Tổ Hùng Vương (nghỉ bù)"
    )
    # Fri 24/4 17:00 is closing time; Mon 27/4 is off; Tue 28/4 gives the 8 h.
    assert cal.add(vn(2026, 4, 24, 17), 8, WH) == vn(2026, 4, 28, 17)


def test_30_april_and_1_may_2026_are_skipped(cal: BusinessCalendar) -> None:
    assert not cal.is_working_day(date(2026, 4, 30))
    assert not cal.is_working_day(date(2026, 5, 1))
    # Wed 29/4 13-17 = 4 h; Thu 30/4 - Sun 3/5 closed; Mon 4/5 08-12 = 4 h.
    assert cal.add(vn(2026, 4, 29, 13), 8, WH) == vn(2026, 5, 4, 12)


def test_start_on_a_holiday_counts_from_next_working_morning(cal: BusinessCalendar) -> None:
    assert cal.add(vn(2026, 4, 30, 10), 1, WH) == vn(2026, 5, 4, 9)


def test_national_day_2026_wednesday_takes_tuesday_as_adjacent_day(cal: BusinessCalendar) -> None:
    assert cal.day_info(date(2026, 9, 1)) == DayInfo(date(2026, 9, 1), False, "Quốc khánh")
    assert cal.day_info(date(2026, 9, 2)) == DayInfo(date(2026, 9, 2), False, "Quốc khánh")
    assert cal.is_working_day(date(2026, 9, 3))


def test_two_working_days_from_friday_28_august_2026_skip_the_five_day_break(
    cal: BusinessCalendar,
) -> None:
    # Fri 28/8 = 8 h; Sat 29 - Wed 2/9 closed (weekend, swap day 31/8, 1-2/9); Thu 3/9 = 8 h.
    assert cal.add(vn(2026, 8, 28, 8), 2, WD) == vn(2026, 9, 3, 17)


def test_vietnam_culture_day_24_november_2026_is_a_day_off(cal: BusinessCalendar) -> None:
    assert cal.day_info(date(2026, 11, 24)) == DayInfo(
        date(2026, 11, 24), False, "Ngày Văn hóa Việt Nam"
    )
    # Mon 23/11 15-17 = 2 h; Tue 24/11 off; Wed 25/11 08-10 = 2 h.
    assert cal.add(vn(2026, 11, 23, 15), 4, WH) == vn(2026, 11, 25, 10)


def test_24_november_2025_is_an_ordinary_working_monday(cal: BusinessCalendar) -> None:
    assert cal.day_info(date(2025, 11, 24)) == DayInfo(date(2025, 11, 24), True, None)


# --- day swaps


def test_seeded_override_makes_friday_2_january_2026_a_day_off(cal: BusinessCalendar) -> None:
    # Wed 31/12 13-17 = 4 h; Thu 1/1 New Year; Fri 2/1 swapped off; weekend; Mon 5/1 08-12.
    assert not cal.is_working_day(date(2026, 1, 2))
    assert cal.add(vn(2025, 12, 31, 13), 8, WH) == vn(2026, 1, 5, 12)


def test_seeded_override_makes_saturday_10_january_2026_a_working_day(
    cal: BusinessCalendar,
) -> None:
    assert cal.is_working_day(date(2026, 1, 10))
    assert cal.periods_on(date(2026, 1, 10)) == DEFAULT_PERIODS
    # Fri 9/1 16-17 = 1 h; Sat 10/1 08-09 = 1 h.
    assert cal.add(vn(2026, 1, 9, 16), 2, WH) == vn(2026, 1, 10, 9)


def test_without_overrides_the_package_misses_the_january_2026_swap() -> None:
    bare = BusinessCalendar(overrides=())
    assert bare.is_working_day(date(2026, 1, 2))
    assert not bare.is_working_day(date(2026, 1, 10))


def test_package_swap_makes_monday_31_august_2026_a_day_off(cal: BusinessCalendar) -> None:
    assert cal.day_info(date(2026, 8, 31)) == DayInfo(
        date(2026, 8, 31), False, "Ngày nghỉ (thay cho ngày 22/08/2026)"
    )


def test_make_up_saturday_22_august_2026_is_worked_with_monday_hours(
    cal: BusinessCalendar,
) -> None:
    assert cal.day_info(date(2026, 8, 22)) == DayInfo(
        date(2026, 8, 22), True, "Ngày làm việc bù (cho ngày nghỉ 31/08/2026)"
    )
    assert cal.periods_on(date(2026, 8, 22)) == cal.periods_on(date(2026, 8, 24))
    assert cal.periods_on(date(2026, 8, 22)) == DEFAULT_PERIODS
    # Fri 21/8 15-17 = 2 h; Sat 22/8 08-10 = 2 h.
    assert cal.add(vn(2026, 8, 21, 15), 4, WH) == vn(2026, 8, 22, 10)


def test_ordinary_saturday_has_no_office_periods(cal: BusinessCalendar) -> None:
    assert cal.periods_on(date(2026, 8, 29)) == ()


def test_holiday_has_no_office_periods(cal: BusinessCalendar) -> None:
    assert cal.periods_on(date(2026, 2, 17)) == ()


def test_working_day_override_reopens_a_national_holiday() -> None:
    reopened = BusinessCalendar(
        overrides=(
            CalendarOverride(date(2026, 11, 24), OverrideKind.WORKING_DAY, "Làm việc", "QĐ thử"),
        )
    )
    assert reopened.day_info(date(2026, 11, 24)) == DayInfo(date(2026, 11, 24), True, "Làm việc")
    assert reopened.add(vn(2026, 11, 23, 15), 4, WH) == vn(2026, 11, 24, 10)


# --- days()


def test_days_lists_the_tet_2026_break_with_vietnamese_names(cal: BusinessCalendar) -> None:
    assert cal.days(date(2026, 2, 13), date(2026, 2, 23)) == [
        DayInfo(date(2026, 2, 13), True, None),
        DayInfo(date(2026, 2, 14), False, None),
        DayInfo(date(2026, 2, 15), False, None),
        DayInfo(date(2026, 2, 16), False, "Giao thừa Tết Nguyên Đán"),
        DayInfo(date(2026, 2, 17), False, "Tết Nguyên Đán"),
        DayInfo(date(2026, 2, 18), False, "Mùng hai Tết Nguyên Đán"),
        DayInfo(date(2026, 2, 19), False, "Mùng ba Tết Nguyên Đán"),
        DayInfo(date(2026, 2, 20), False, "Mùng bốn Tết Nguyên Đán"),
        DayInfo(date(2026, 2, 21), False, None),
        DayInfo(date(2026, 2, 22), False, None),
        DayInfo(date(2026, 2, 23), True, None),
    ]


def test_days_shows_override_reasons_for_the_new_year_swap(cal: BusinessCalendar) -> None:
    listed = {info.day: info for info in cal.days(date(2026, 1, 1), date(2026, 1, 10))}
    assert len(listed) == 10
    assert listed[date(2026, 1, 1)] == DayInfo(date(2026, 1, 1), False, "Tết Dương lịch")
    assert listed[date(2026, 1, 2)] == DayInfo(date(2026, 1, 2), False, SEED_OVERRIDES[0].reason)
    assert listed[date(2026, 1, 10)] == DayInfo(date(2026, 1, 10), True, SEED_OVERRIDES[1].reason)


def test_days_of_a_single_day(cal: BusinessCalendar) -> None:
    assert cal.days(date(2026, 3, 9), date(2026, 3, 9)) == [DayInfo(date(2026, 3, 9), True, None)]


def test_days_accepts_a_whole_leap_year(cal: BusinessCalendar) -> None:
    assert len(cal.days(date(2028, 1, 1), date(2028, 12, 31))) == 366


def test_days_rejects_end_before_start(cal: BusinessCalendar) -> None:
    with pytest.raises(CalendarError):
        cal.days(date(2026, 3, 9), date(2026, 3, 8))


def test_days_rejects_more_than_366_days(cal: BusinessCalendar) -> None:
    with pytest.raises(CalendarError):
        cal.days(date(2026, 1, 1), date(2027, 1, 2))


def test_seed_overrides_are_the_2026_new_year_swap() -> None:
    assert [(o.day, o.kind) for o in SEED_OVERRIDES] == [
        (date(2026, 1, 2), OverrideKind.DAY_OFF),
        (date(2026, 1, 10), OverrideKind.WORKING_DAY),
    ]
    assert all(o.reason and o.document for o in SEED_OVERRIDES)


# --- seasons


def test_default_season_is_monday_to_friday_eight_to_five_with_lunch() -> None:
    assert len(DEFAULT_SEASONS) == 1
    assert DEFAULT_SEASONS[0].periods == DEFAULT_PERIODS
    assert DEFAULT_SEASONS[0].weekdays == frozenset({0, 1, 2, 3, 4})


def test_summer_and_winter_periods_are_chosen_by_local_date(
    vinh_phuc: BusinessCalendar,
) -> None:
    assert vinh_phuc.periods_on(date(2026, 6, 10)) == SUMMER_PERIODS
    assert vinh_phuc.periods_on(date(2026, 12, 9)) == WINTER_PERIODS
    assert vinh_phuc.periods_on(date(2026, 1, 5)) == WINTER_PERIODS  # wraps the year end
    assert vinh_phuc.periods_on(date(2026, 4, 15)) == WINTER_PERIODS  # inclusive end
    assert vinh_phuc.periods_on(date(2026, 4, 16)) == SUMMER_PERIODS  # inclusive start
    assert vinh_phuc.periods_on(date(2025, 10, 15)) == SUMMER_PERIODS
    assert vinh_phuc.periods_on(date(2025, 10, 16)) == WINTER_PERIODS


def test_summer_lunch_break_runs_from_11_30_to_13_30(vinh_phuc: BusinessCalendar) -> None:
    # Wed 10/6/2026 11:00-11:30 = 0.5 h; 13:30-14:00 = 0.5 h.
    assert vinh_phuc.add(vn(2026, 6, 10, 11), 1, WH) == vn(2026, 6, 10, 14)


def test_winter_day_closes_at_16_30_and_opens_at_07_30(vinh_phuc: BusinessCalendar) -> None:
    # Wed 9/12/2026 16:00-16:30 = 0.5 h; Thu 10/12 07:30-08:00 = 0.5 h.
    assert vinh_phuc.add(vn(2026, 12, 9, 16), 1, WH) == vn(2026, 12, 10, 8)


def test_deadline_crossing_into_summer_uses_summer_hours(vinh_phuc: BusinessCalendar) -> None:
    # Wed 15/4/2026 (winter) 16:00-16:30 = 0.5 h; Thu 16/4 (summer) 07:00-07:30 = 0.5 h.
    assert vinh_phuc.add(vn(2026, 4, 15, 16), 1, WH) == vn(2026, 4, 16, 7, 30)


def test_seasonal_working_day_still_holds_eight_hours(vinh_phuc: BusinessCalendar) -> None:
    assert vinh_phuc.add(vn(2026, 6, 10, 7), 1, WD) == vn(2026, 6, 10, 17)
    assert vinh_phuc.add(vn(2026, 12, 9, 7, 30), 1, WD) == vn(2026, 12, 9, 16, 30)


def test_season_weekdays_can_include_saturday() -> None:
    six_days = BusinessCalendar(
        seasons=(
            Season(
                name="Sáu ngày",
                start=(1, 1),
                end=(12, 31),
                periods=DEFAULT_PERIODS,
                weekdays=frozenset(range(6)),
            ),
        ),
        overrides=(),
    )
    assert six_days.is_working_day(date(2026, 3, 14))
    assert not six_days.is_working_day(date(2026, 3, 15))
    assert six_days.add(vn(2026, 3, 13, 16), 2, WH) == vn(2026, 3, 14, 9)


# --- working_seconds_between


def test_working_seconds_over_one_full_day_are_eight_hours(cal: BusinessCalendar) -> None:
    assert cal.working_seconds_between(vn(2026, 3, 9, 0), vn(2026, 3, 10, 0)) == 8 * HOUR


def test_working_seconds_skip_lunch_and_weekend(cal: BusinessCalendar) -> None:
    # Fri 13/3 11:00-12:00 and 13:00-17:00 = 5 h; Mon 16/3 08:00-09:30 = 1.5 h.
    assert cal.working_seconds_between(vn(2026, 3, 13, 11), vn(2026, 3, 16, 9, 30)) == 6.5 * HOUR


def test_working_seconds_over_tet_2026_count_only_the_days_around_it(
    cal: BusinessCalendar,
) -> None:
    # Fri 13/2 and Mon 23/2 only.
    assert cal.working_seconds_between(vn(2026, 2, 13, 8), vn(2026, 2, 23, 17)) == 16 * HOUR


def test_working_seconds_are_zero_when_end_is_not_after_start(cal: BusinessCalendar) -> None:
    assert cal.working_seconds_between(vn(2026, 3, 9, 10), vn(2026, 3, 9, 10)) == 0
    assert cal.working_seconds_between(vn(2026, 3, 9, 10), vn(2026, 3, 9, 9)) == 0


def test_working_seconds_match_the_amount_added(cal: BusinessCalendar) -> None:
    start = vn(2026, 2, 12, 9)
    assert cal.working_seconds_between(start, cal.add(start, 5, WD)) == 40 * HOUR


# --- version


def test_version_names_package_revision_and_hash() -> None:
    version = BusinessCalendar(revision=3).version
    assert re.fullmatch(r"vn-holidays-0\.108;rev-3;h-[0-9a-f]{8}", version)


def test_version_is_stable_for_the_same_configuration() -> None:
    assert BusinessCalendar().version == BusinessCalendar().version
    assert (
        BusinessCalendar(overrides=tuple(reversed(SEED_OVERRIDES))).version
        == BusinessCalendar().version
    )


def test_version_changes_when_an_override_is_added() -> None:
    extra = CalendarOverride(date(2026, 3, 9), OverrideKind.DAY_OFF, "Nghỉ đột xuất", "QĐ thử")
    assert (
        BusinessCalendar(overrides=(*SEED_OVERRIDES, extra)).version != BusinessCalendar().version
    )


def test_version_changes_when_an_override_reason_changes() -> None:
    edited = (
        CalendarOverride(date(2026, 1, 2), OverrideKind.DAY_OFF, "Lý do khác"),
        SEED_OVERRIDES[1],
    )
    assert BusinessCalendar(overrides=edited).version != BusinessCalendar().version


def test_version_changes_when_seasons_change() -> None:
    assert BusinessCalendar(seasons=VINH_PHUC_SEASONS).version != BusinessCalendar().version


# --- invalid input


def test_naive_start_is_rejected(cal: BusinessCalendar) -> None:
    with pytest.raises(CalendarError):
        cal.add(datetime(2026, 3, 9, 8), 1, WH)


def test_naive_instants_are_rejected_by_working_seconds_between(cal: BusinessCalendar) -> None:
    with pytest.raises(CalendarError):
        cal.working_seconds_between(datetime(2026, 3, 9, 8), vn(2026, 3, 9, 9))
    with pytest.raises(CalendarError):
        cal.working_seconds_between(vn(2026, 3, 9, 8), datetime(2026, 3, 9, 9))


@pytest.mark.parametrize("unit", list(Unit))
def test_negative_amount_is_rejected(cal: BusinessCalendar, unit: Unit) -> None:
    with pytest.raises(CalendarError):
        cal.add(vn(2026, 3, 9, 8), -1, unit)


@pytest.mark.parametrize("amount", [float("nan"), float("inf")])
def test_non_finite_amount_is_rejected(cal: BusinessCalendar, amount: float) -> None:
    with pytest.raises(CalendarError):
        cal.add(vn(2026, 3, 9, 8), amount, WH)


def test_unknown_unit_is_rejected(cal: BusinessCalendar) -> None:
    with pytest.raises(CalendarError):
        cal.add(vn(2026, 3, 9, 8), 1, "hours")  # type: ignore[arg-type]


def _all_year(*periods: OfficePeriod) -> tuple[Season, ...]:
    return (Season(name="Thử", start=(1, 1), end=(12, 31), periods=periods),)


def test_period_with_start_not_before_end_is_rejected() -> None:
    with pytest.raises(CalendarError):
        BusinessCalendar(seasons=_all_year(OfficePeriod(time(12, 0), time(8, 0))))
    with pytest.raises(CalendarError):
        BusinessCalendar(seasons=_all_year(OfficePeriod(time(8, 0), time(8, 0))))


def test_overlapping_periods_are_rejected() -> None:
    with pytest.raises(CalendarError):
        BusinessCalendar(
            seasons=_all_year(
                OfficePeriod(time(8, 0), time(12, 0)), OfficePeriod(time(11, 0), time(17, 0))
            )
        )


def test_season_without_periods_is_rejected() -> None:
    with pytest.raises(CalendarError):
        BusinessCalendar(seasons=_all_year())


def test_dates_not_covered_by_any_season_are_rejected() -> None:
    first_half = Season(name="Nửa đầu", start=(1, 1), end=(6, 30), periods=DEFAULT_PERIODS)
    with pytest.raises(CalendarError):
        BusinessCalendar(seasons=(first_half,))


def test_29_february_must_be_covered() -> None:
    no_leap_day = (Season(name="A", start=(3, 1), end=(2, 28), periods=DEFAULT_PERIODS),)
    with pytest.raises(CalendarError):
        BusinessCalendar(seasons=no_leap_day)


def test_dates_covered_by_two_seasons_are_rejected() -> None:
    with pytest.raises(CalendarError):
        BusinessCalendar(seasons=(*DEFAULT_SEASONS, *VINH_PHUC_SEASONS))


def test_invalid_season_month_day_is_rejected() -> None:
    bad = (Season(name="Sai", start=(1, 1), end=(13, 1), periods=DEFAULT_PERIODS),)
    with pytest.raises(CalendarError):
        BusinessCalendar(seasons=bad)


def test_two_overrides_for_one_day_are_rejected() -> None:
    twice = (
        CalendarOverride(date(2026, 3, 9), OverrideKind.DAY_OFF, "A"),
        CalendarOverride(date(2026, 3, 9), OverrideKind.WORKING_DAY, "B"),
    )
    with pytest.raises(CalendarError):
        BusinessCalendar(overrides=twice)


def test_negative_revision_is_rejected() -> None:
    with pytest.raises(CalendarError):
        BusinessCalendar(revision=-1)


@pytest.mark.parametrize("unit", list(Unit))
def test_amount_beyond_the_datetime_range_is_rejected(cal: BusinessCalendar, unit: Unit) -> None:
    with pytest.raises(CalendarError):
        cal.add(vn(9999, 12, 30, 8), 10_000, unit)


def test_datetime_is_rejected_where_a_local_date_is_expected(cal: BusinessCalendar) -> None:
    with pytest.raises(CalendarError):
        cal.day_info(vn(2026, 3, 9, 8))


def test_overrides_closing_the_office_for_over_a_year_are_reported_not_looped() -> None:
    closed = tuple(
        CalendarOverride(date(2026, 3, 1) + timedelta(days=i), OverrideKind.DAY_OFF, "Đóng cửa")
        for i in range(400)
    )
    with pytest.raises(CalendarError):
        BusinessCalendar(overrides=closed).add(vn(2026, 3, 2, 8), 1, WH)


# --- next office instant (notify's quiet hours end there) ---


def test_next_office_instant_inside_office_hours_is_the_instant_itself(cal):
    at = vn(2026, 3, 4, 9, 15)  # a Wednesday morning

    assert cal.next_office_instant(at) == at


def test_next_office_instant_over_lunch_is_the_afternoon_start(cal):
    assert cal.next_office_instant(vn(2026, 3, 4, 12, 30)) == vn(2026, 3, 4, 13, 0)


def test_next_office_instant_on_friday_evening_is_monday_morning(cal):
    assert cal.next_office_instant(vn(2026, 3, 6, 17, 0)) == vn(2026, 3, 9, 8, 0)


def test_next_office_instant_skips_tet(cal):
    # Tết 2026: 14-22 February off (Lunar New Year), back on Monday 23 February
    assert cal.next_office_instant(vn(2026, 2, 13, 18, 0)) == vn(2026, 2, 23, 8, 0)


def test_next_office_instant_refuses_a_naive_instant(cal):
    with pytest.raises(CalendarError):
        cal.next_office_instant(datetime(2026, 3, 4, 9, 0))
