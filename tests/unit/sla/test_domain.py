"""Pure tests of the SLA clock model on the real Vietnamese business calendar.

Every expected instant is worked out by hand in a comment from the default office hours
(Monday to Friday, 08:00-12:00 and 13:00-17:00, Asia/Ho_Chi_Minh, 1 WD = 8 WH) and the
2026 holidays (domain.md §10); none is obtained by calling the code under test.

Weeks used (2026):
    Mon 23/11, Tue 24/11 = Ngày Văn hóa Việt Nam (day off), Wed 25/11 … Fri 27/11
    Mon 30/11, Tue 1/12, Wed 2/12, Thu 3/12, Fri 4/12, Mon 7/12, Tue 8/12, Wed 9/12 …
    Mon 14/12; no holiday between 25/11 and 31/12.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime

import pytest

from sla.calendar import TZ, BusinessCalendar, Unit
from sla.domain import (
    DEFAULT_MARKS,
    Clock,
    ClockMath,
    Fact,
    FactKind,
    Mark,
    Policy,
    Target,
    ThresholdInstant,
    choose_policy,
    compute_clocks,
    target_seconds,
    threshold_instants,
)

WH = Unit.WORKING_HOURS
WD = Unit.WORKING_DAYS
HOUR = 3600.0

# The defaults of migrations/0001_sla.sql (domain.md §4.3).
NORMAL = Policy(
    id="default-normal",
    priority=100,
    urgency="normal",
    screening=Target(4, WH),
    acknowledgement=Target(8, WH),
    resolution=Target(5, WD),
)
URGENT = replace(NORMAL, id="default-urgent", urgency="urgent", resolution=Target(4, WH))
COMPLEX = replace(NORMAL, id="default-complex", urgency="complex", resolution=Target(10, WD))


def vn(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An aware wall-clock instant in Asia/Ho_Chi_Minh."""
    return datetime(year, month, day, hour, minute, tzinfo=TZ)


@pytest.fixture(scope="module")
def math() -> ClockMath:
    return ClockMath(BusinessCalendar())


def fact(
    kind: FactKind, at: datetime, *, agency_id: str | None = None, extension_days: float = 0.0
) -> Fact:
    """A fact ranked like the handlers rank them (lifecycle order breaks ties)."""
    rank = list(FactKind).index(kind)
    return Fact(kind, at, rank, agency_id=agency_id, extension_days=extension_days)


def clocks_by_kind(
    facts: list[Fact], policy: Policy, math: ClockMath
) -> tuple[Clock, Clock, Clock]:
    screening, ack, res = compute_clocks(facts, policy, math)
    assert (screening.kind, ack.kind, res.kind) == ("screening", "acknowledgement", "resolution")
    return screening, ack, res


# --- policies -----------------------------------------------------------------------------


def test_choose_policy_takes_the_lowest_priority_number_that_matches() -> None:
    road = replace(NORMAL, id="road", priority=10, category="INFRA.ROAD", urgency=None)
    infra = replace(NORMAL, id="infra", priority=20, category="INFRA", urgency=None)
    chosen = choose_policy(
        [NORMAL, infra, road], category="INFRA.ROAD.POTHOLE", urgency="normal", agency_id=None
    )
    assert chosen.id == "road"


def test_choose_policy_matches_category_codes_by_whole_segments() -> None:
    infra = replace(NORMAL, id="infra", priority=10, category="INFRA", urgency=None)
    assert (
        choose_policy([NORMAL, infra], category="INFRA", urgency="normal", agency_id=None).id
        == "infra"
    )
    # "INFRASTRUCTURE" starts with "INFRA" but is not inside the INFRA tree.
    assert (
        choose_policy(
            [NORMAL, infra], category="INFRASTRUCTURE", urgency="normal", agency_id=None
        ).id
        == "default-normal"
    )


def test_choose_policy_honours_urgency_and_agency_conditions() -> None:
    agency = replace(NORMAL, id="ward-7", priority=5, urgency=None, agency_id="ubnd-ward-7")
    policies = [NORMAL, URGENT, COMPLEX, agency]
    assert choose_policy(policies, category="X", urgency="urgent", agency_id=None).id == (
        "default-urgent"
    )
    assert choose_policy(policies, category="X", urgency="complex", agency_id="other").id == (
        "default-complex"
    )
    assert choose_policy(policies, category="X", urgency="urgent", agency_id="ubnd-ward-7").id == (
        "ward-7"
    )


def test_choose_policy_breaks_priority_ties_by_id() -> None:
    b = replace(NORMAL, id="b")
    a = replace(NORMAL, id="a")
    assert choose_policy([b, a], category="X", urgency="normal", agency_id=None).id == "a"


def test_choose_policy_without_a_match_raises_lookup_error() -> None:
    with pytest.raises(LookupError, match="X.Y/urgent"):
        choose_policy([NORMAL, COMPLEX], category="X.Y", urgency="urgent", agency_id=None)


# --- ClockMath ----------------------------------------------------------------------------


def test_elapsed_counts_office_time_only_across_lunch_and_weekend(math: ClockMath) -> None:
    # Fri 27/11 11:00 -> Mon 30/11 09:00: Fri 11-12 (1 h) + 13-17 (4 h) + Mon 08-09 (1 h).
    assert math.elapsed(WH, vn(2026, 11, 27, 11), vn(2026, 11, 30, 9)) == 6 * HOUR


def test_elapsed_of_wall_clock_units_counts_every_second(math: ClockMath) -> None:
    # Sat 28/11 20:00 -> Sun 29/11 08:00 is 12 wall-clock hours, none of them office time.
    assert math.elapsed(Unit.CALENDAR_DAYS, vn(2026, 11, 28, 20), vn(2026, 11, 29, 8)) == 12 * HOUR
    assert math.elapsed(WD, vn(2026, 11, 28, 20), vn(2026, 11, 29, 8)) == 0.0


def test_elapsed_is_zero_when_the_end_is_not_after_the_start(math: ClockMath) -> None:
    assert math.elapsed(WH, vn(2026, 11, 30, 10), vn(2026, 11, 30, 9)) == 0.0


def test_add_skips_the_vietnam_culture_day(math: ClockMath) -> None:
    # Mon 23/11 16:00 + 2 WH: Mon 16-17 (1 h); Tue 24/11 is a day off; Wed 08-09 (1 h).
    assert math.add(WH, vn(2026, 11, 23, 16), 2 * HOUR) == vn(2026, 11, 25, 9)


def test_add_of_minutes_runs_on_the_24_7_clock(math: ClockMath) -> None:
    # Sat 28/11 23:30 + 90 minutes = Sun 29/11 01:00, office hours notwithstanding.
    assert math.add(Unit.MINUTES, vn(2026, 11, 28, 23, 30), 90 * 60) == vn(2026, 11, 29, 1)


def test_target_seconds_converts_each_unit() -> None:
    assert target_seconds(Target(8, WH)) == 8 * HOUR
    assert target_seconds(Target(5, WD)) == 40 * HOUR  # 1 WD = 8 WH
    assert target_seconds(Target(7, Unit.CALENDAR_DAYS)) == 7 * 24 * HOUR
    assert target_seconds(Target(5, Unit.MINUTES)) == 300.0


# --- starting and stopping clocks ---------------------------------------------------------


def test_submission_outside_office_hours_starts_screening_at_the_next_office_period(
    math: ClockMath,
) -> None:
    # Submitted Mon 30/11 06:30: counting starts at 08:00; 4 WH -> 12:00 the same day.
    screening, ack, res = clocks_by_kind(
        [fact(FactKind.SUBMITTED, vn(2026, 11, 30, 6, 30))], NORMAL, math
    )
    assert screening.status == "running"
    assert screening.due_at == vn(2026, 11, 30, 12)
    assert (ack.status, res.status) == ("pending", "pending")


def test_routed_friday_afternoon_gives_acknowledgement_due_monday_16h(math: ClockMath) -> None:
    # Routed Fri 27/11 16:00 + 8 WH: Fri 16-17 (1 h), Mon 30/11 08-12 (4 h -> 5 h),
    # 13-16 (3 h -> 8 h) => Mon 30/11 16:00 +07:00.
    submitted = fact(FactKind.SUBMITTED, vn(2026, 11, 27, 14))
    routed = fact(FactKind.ROUTED, vn(2026, 11, 27, 16), agency_id="ubnd-a")
    screening, ack, res = clocks_by_kind([submitted, routed], NORMAL, math)
    assert ack.status == "running"
    assert ack.generation == 1
    assert ack.agency_id == "ubnd-a"
    assert ack.started_at == vn(2026, 11, 27, 16)
    assert ack.due_at == vn(2026, 11, 30, 16)
    # Routing stops screening: 14:00-16:00 used 2 of its 4 WH.
    assert screening.status == "stopped"
    assert screening.stopped_at == vn(2026, 11, 27, 16)
    assert screening.consumed_s == 2 * HOUR
    assert res.status == "pending"


ROUTED_FRI = fact(FactKind.ROUTED, vn(2026, 11, 27, 16), agency_id="ubnd-a")
ACK_MON = fact(FactKind.ACKNOWLEDGED, vn(2026, 11, 30, 9, 30))


def test_acknowledgement_stops_its_clock_on_time(math: ClockMath) -> None:
    # Fri 16-17 (1 h) + Mon 08:00-09:30 (1.5 h) = 2.5 WH of 8.
    _, ack, _ = clocks_by_kind([ROUTED_FRI, ACK_MON], NORMAL, math)
    assert ack.status == "stopped"
    assert ack.stopped_at == vn(2026, 11, 30, 9, 30)
    assert ack.consumed_s == 2.5 * HOUR
    assert not ack.breached_at(vn(2026, 12, 31))


@pytest.mark.parametrize(
    ("policy", "due"),
    [
        # 5 WD = 40 WH from Mon 30/11 09:30: Mon 6.5 h, Tue 1/12 14.5, Wed 22.5, Thu 30.5,
        # Fri 38.5, Mon 7/12 08:00-09:30 -> 40 => Mon 7/12 09:30.
        (NORMAL, vn(2026, 12, 7, 9, 30)),
        # 4 WH from Mon 09:30: 09:30-12:00 (2.5 h) + 13:00-14:30 (1.5 h) => Mon 30/11 14:30.
        (URGENT, vn(2026, 11, 30, 14, 30)),
        # 10 WD: two full working weeks without holidays => Mon 14/12 09:30.
        (COMPLEX, vn(2026, 12, 14, 9, 30)),
    ],
    ids=["normal-5wd", "urgent-4wh", "complex-10wd"],
)
def test_acknowledgement_starts_the_resolution_clock(
    math: ClockMath, policy: Policy, due: datetime
) -> None:
    _, _, res = clocks_by_kind([ROUTED_FRI, ACK_MON], policy, math)
    assert res.status == "running"
    assert res.generation == 1
    assert res.started_at == vn(2026, 11, 30, 9, 30)
    assert res.agency_id == "ubnd-a"
    assert res.due_at == due


def test_resolution_clock_skips_the_culture_day_holiday(math: ClockMath) -> None:
    # Acknowledged Mon 23/11 10:00, 40 WH: Mon 10-12, 13-17 (6 h); Tue 24/11 off;
    # Wed 14, Thu 22, Fri 30, Mon 30/11 38, Tue 1/12 08:00-10:00 -> 40 => Tue 1/12 10:00.
    facts = [
        fact(FactKind.ROUTED, vn(2026, 11, 23, 8), agency_id="a"),
        fact(FactKind.ACKNOWLEDGED, vn(2026, 11, 23, 10)),
    ]
    _, _, res = clocks_by_kind(facts, NORMAL, math)
    assert res.due_at == vn(2026, 12, 1, 10)


def test_resolution_starts_assigned_runs_both_clocks_from_routing(math: ClockMath) -> None:
    # Routed Mon 30/11 09:30 with resolution_starts="assigned": resolution due 5 WD later,
    # Mon 7/12 09:30; the acknowledgement clock (8 WH) is due Tue 1/12 09:30
    # (Mon 09:30-12 2.5 h, 13-17 4 h -> 6.5 h, Tue 08:00-09:30 1.5 h -> 8 h).
    assigned = replace(NORMAL, resolution_starts="assigned")
    routed = fact(FactKind.ROUTED, vn(2026, 11, 30, 9, 30), agency_id="a")
    _, ack, res = clocks_by_kind([routed], assigned, math)
    assert (ack.status, res.status) == ("running", "running")
    assert res.started_at == vn(2026, 11, 30, 9, 30)
    assert res.due_at == vn(2026, 12, 7, 9, 30)
    assert ack.due_at == vn(2026, 12, 1, 9, 30)
    # Acknowledging later stops the acknowledgement clock and leaves resolution untouched.
    acked = fact(FactKind.ACKNOWLEDGED, vn(2026, 11, 30, 15))
    _, ack2, res2 = clocks_by_kind([routed, acked], assigned, math)
    assert ack2.status == "stopped"
    assert res2 == res


# --- pause, resume, extension ------------------------------------------------------------

NORMAL_RUNNING = [
    fact(FactKind.ROUTED, vn(2026, 11, 30, 8), agency_id="a"),
    fact(FactKind.ACKNOWLEDGED, vn(2026, 11, 30, 9, 30)),
]  # resolution due Mon 7/12 09:30 (see above)


def test_pause_keeps_consumed_time_and_resume_shifts_due_by_paused_office_time(
    math: ClockMath,
) -> None:
    paused = fact(FactKind.PAUSED, vn(2026, 12, 1, 10))
    resumed = fact(FactKind.RESUMED, vn(2026, 12, 2, 14))
    _, _, res = clocks_by_kind([*NORMAL_RUNNING, paused], NORMAL, math)
    # Consumed before the pause: Mon 09:30-12 (2.5) + 13-17 (4) + Tue 08-10 (2) = 8.5 WH.
    assert res.status == "paused"
    assert res.consumed_s == 8.5 * HOUR
    _, _, res = clocks_by_kind([*NORMAL_RUNNING, paused, resumed], NORMAL, math)
    # Paused office time: Tue 10-12 (2), 13-17 (4), Wed 08-12 (4), 13-14 (1) = 11 WH, so the
    # due moves 11 WH past Mon 7/12 09:30: Mon 09:30-17 (6.5), Tue 8/12 08-12 (4 -> 10.5),
    # 13:00-13:30 (0.5 -> 11) => Tue 8/12 13:30. (Check: 31.5 WH left from Wed 14:00 reach
    # the same instant.)
    assert res.status == "running"
    assert res.due_at == vn(2026, 12, 8, 13, 30)


def test_paused_clock_emits_no_thresholds(math: ClockMath) -> None:
    paused = fact(FactKind.PAUSED, vn(2026, 12, 1, 10))
    clocks = compute_clocks([*NORMAL_RUNNING, paused], NORMAL, math)
    assert [t.clock for t in threshold_instants(clocks, DEFAULT_MARKS, math)] == []


def test_approved_extension_adds_working_days_to_the_due(math: ClockMath) -> None:
    # 2 extra WD on a due of Mon 7/12 09:30 => Wed 9/12 09:30; the clock is now 7 WD long.
    extended = fact(FactKind.EXTENDED, vn(2026, 12, 3, 10), extension_days=2.0)
    _, _, res = clocks_by_kind([*NORMAL_RUNNING, extended], NORMAL, math)
    assert res.amount == 7
    assert res.due_at == vn(2026, 12, 9, 9, 30)


def test_extension_of_an_hours_clock_adds_eight_hours_per_day(math: ClockMath) -> None:
    # Urgent resolution (4 WH) from Mon 30/11 09:30 is due 14:30; +1 WD = +8 WH:
    # Mon 14:30-17 (2.5), Tue 1/12 08-12 (4 -> 6.5), 13:00-14:30 (1.5 -> 8) => Tue 14:30.
    extended = fact(FactKind.EXTENDED, vn(2026, 11, 30, 11), extension_days=1.0)
    _, _, res = clocks_by_kind([*NORMAL_RUNNING, extended], URGENT, math)
    assert res.amount == 12
    assert res.due_at == vn(2026, 12, 1, 14, 30)


def test_approval_without_days_grants_the_days_requested(math: ClockMath) -> None:
    # intake's approve_extension may omit days ("as requested"); the request asked for 3 WD:
    # Mon 7/12 09:30 + 3 WD => Thu 10/12 09:30.
    requested = fact(FactKind.EXTENSION_REQUESTED, vn(2026, 12, 3, 9), extension_days=3.0)
    approved = fact(FactKind.EXTENDED, vn(2026, 12, 3, 11))
    _, _, res = clocks_by_kind([*NORMAL_RUNNING, requested, approved], NORMAL, math)
    assert res.amount == 8
    assert res.due_at == vn(2026, 12, 10, 9, 30)


def test_extension_request_alone_does_not_move_the_due(math: ClockMath) -> None:
    requested = fact(FactKind.EXTENSION_REQUESTED, vn(2026, 12, 3, 9), extension_days=3.0)
    _, _, res = clocks_by_kind([*NORMAL_RUNNING, requested], NORMAL, math)
    assert res.due_at == vn(2026, 12, 7, 9, 30)


# --- re-routing ---------------------------------------------------------------------------

# Routed to A Mon 30/11 08:00, returned 10:00 (2 WH used), re-routed to B 14:00.
REROUTE = [
    fact(FactKind.ROUTED, vn(2026, 11, 30, 8), agency_id="a"),
    fact(FactKind.RETURNED, vn(2026, 11, 30, 10)),
    fact(FactKind.ROUTED, vn(2026, 11, 30, 14), agency_id="b"),
]


def test_return_pauses_the_acknowledgement_clock(math: ClockMath) -> None:
    _, ack, _ = clocks_by_kind(REROUTE[:2], NORMAL, math)
    assert ack.status == "paused"
    assert ack.consumed_s == 2 * HOUR


def test_reroute_with_restart_starts_a_new_generation_from_zero(math: ClockMath) -> None:
    # 8 WH from Mon 14:00: Mon 14-17 (3), Tue 1/12 08-12 (4 -> 7), 13-14 (1 -> 8) => Tue 14:00.
    _, ack, res = clocks_by_kind(REROUTE, NORMAL, math)
    assert ack.status == "running"
    assert ack.generation == 2
    assert ack.agency_id == "b"
    assert ack.started_at == vn(2026, 11, 30, 14)
    assert ack.consumed_s == 0.0
    assert ack.due_at == vn(2026, 12, 1, 14)
    assert res.status == "pending"


def test_reroute_with_continue_keeps_consumed_time(math: ClockMath) -> None:
    # 6 WH left from Mon 14:00: Mon 14-17 (3), Tue 1/12 08-11 (3) => Tue 11:00.
    cont = replace(NORMAL, on_reroute="continue")
    _, ack, _ = clocks_by_kind(REROUTE, cont, math)
    assert ack.status == "running"
    assert ack.generation == 1
    assert ack.agency_id == "b"
    assert ack.started_at == vn(2026, 11, 30, 8)
    assert ack.consumed_s == 2 * HOUR
    assert ack.due_at == vn(2026, 12, 1, 11)


def test_reassignment_with_continue_while_running_keeps_the_time_already_counted(
    math: ClockMath,
) -> None:
    # A coordinator reassigns to B at 10:00 without a return; the clock that started at 08:00
    # continues, so it is still due 8 WH after 08:00: Mon 08-12 (4) + 13-17 (4) => Mon 17:00.
    cont = replace(NORMAL, on_reroute="continue")
    facts = [
        fact(FactKind.ROUTED, vn(2026, 11, 30, 8), agency_id="a"),
        fact(FactKind.ROUTED, vn(2026, 11, 30, 10), agency_id="b"),
    ]
    _, ack, _ = clocks_by_kind(facts, cont, math)
    assert ack.agency_id == "b"
    assert ack.due_at == vn(2026, 11, 30, 17)


def test_reroute_with_continue_resumes_a_returned_resolution_clock(math: ClockMath) -> None:
    # Acknowledged Mon 30/11 09:00, returned 11:00 (2 WH of resolution used), re-routed 14:00:
    # 38 WH left from Mon 14:00: Mon 3, Tue 11, Wed 19, Thu 27, Fri 35, Mon 7/12 08-11 (3)
    # => Mon 7/12 11:00.
    cont = replace(NORMAL, on_reroute="continue")
    facts = [
        fact(FactKind.ROUTED, vn(2026, 11, 30, 8), agency_id="a"),
        fact(FactKind.ACKNOWLEDGED, vn(2026, 11, 30, 9)),
        fact(FactKind.RETURNED, vn(2026, 11, 30, 11)),
        fact(FactKind.ROUTED, vn(2026, 11, 30, 14), agency_id="b"),
    ]
    _, _, res = clocks_by_kind(facts, cont, math)
    assert res.status == "running"
    assert res.generation == 1
    assert res.consumed_s == 2 * HOUR
    assert res.due_at == vn(2026, 12, 7, 11)


# --- cancel, resolve, breach -------------------------------------------------------------


def test_merge_during_screening_cancels_every_clock(math: ClockMath) -> None:
    facts = [
        fact(FactKind.SUBMITTED, vn(2026, 11, 30, 8)),
        fact(FactKind.CANCELLED, vn(2026, 11, 30, 9)),
    ]
    clocks = compute_clocks(facts, NORMAL, math)
    assert [c.status for c in clocks] == ["cancelled", "cancelled", "cancelled"]
    assert threshold_instants(clocks, DEFAULT_MARKS, math) == []
    assert not any(c.breached_at(vn(2027, 1, 1)) for c in clocks)


def test_reject_after_return_cancels_the_open_clocks(math: ClockMath) -> None:
    facts = [*REROUTE[:2], fact(FactKind.CANCELLED, vn(2026, 11, 30, 11))]
    _, ack, res = clocks_by_kind(facts, NORMAL, math)
    assert (ack.status, res.status) == ("cancelled", "cancelled")
    assert ack.stopped_at == vn(2026, 11, 30, 11)


URGENT_FROM_13H = [
    fact(FactKind.ROUTED, vn(2026, 11, 30, 8), agency_id="a"),
    fact(FactKind.ACKNOWLEDGED, vn(2026, 11, 30, 13)),
]  # urgent resolution: 4 WH from Mon 13:00 => due Mon 30/11 17:00


@pytest.mark.parametrize(
    ("resolved_at", "breached"),
    [
        (vn(2026, 11, 30, 16, 59), False),
        (vn(2026, 11, 30, 17), False),  # "on time" is RESOLVED <= deadline (domain.md §4.4)
        (vn(2026, 12, 1, 8, 30), True),  # half an office hour late
        # After the deadline but before any further office time: still late (§4.4).
        (vn(2026, 11, 30, 18), True),
        (vn(2026, 12, 5, 10), True),  # Saturday
    ],
    ids=["before", "exactly-at-due", "next-morning", "same-evening", "saturday"],
)
def test_resolution_after_the_due_is_a_breach_and_before_is_not(
    math: ClockMath, resolved_at: datetime, breached: bool
) -> None:
    facts = [*URGENT_FROM_13H, fact(FactKind.RESOLVED, resolved_at)]
    _, _, res = clocks_by_kind(facts, URGENT, math)
    assert res.status == "stopped"
    assert res.due_at == vn(2026, 11, 30, 17)
    assert res.breached_at(vn(2027, 1, 1)) is breached


def test_running_clock_is_breached_only_after_its_due(math: ClockMath) -> None:
    _, _, res = clocks_by_kind(URGENT_FROM_13H, URGENT, math)
    assert not res.breached_at(vn(2026, 11, 30, 17))
    assert res.breached_at(vn(2026, 11, 30, 17, 1))


def test_resolution_after_an_extension_is_judged_against_the_extended_due(
    math: ClockMath,
) -> None:
    # Urgent due Mon 17:00 + 1 WD = Tue 1/12 17:00; resolved Tue 16:00 is on time.
    facts = [
        *URGENT_FROM_13H,
        fact(FactKind.EXTENDED, vn(2026, 11, 30, 14), extension_days=1.0),
        fact(FactKind.RESOLVED, vn(2026, 12, 1, 16)),
    ]
    _, _, res = clocks_by_kind(facts, URGENT, math)
    assert res.due_at == vn(2026, 12, 1, 17)
    assert not res.breached_at(vn(2027, 1, 1))


def test_reopen_after_review_starts_a_new_resolution_generation(math: ClockMath) -> None:
    # Resolved Mon 15:00, review_reject Mon 16:00: a fresh 4 WH urgent clock from 16:00:
    # Mon 16-17 (1), Tue 1/12 08-11 (3) => Tue 11:00.
    facts = [
        *URGENT_FROM_13H,
        fact(FactKind.RESOLVED, vn(2026, 11, 30, 15)),
        fact(FactKind.REOPENED, vn(2026, 11, 30, 16)),
    ]
    _, _, res = clocks_by_kind(facts, URGENT, math)
    assert res.status == "running"
    assert res.generation == 2
    assert res.due_at == vn(2026, 12, 1, 11)


# --- order and duplicates ----------------------------------------------------------------

HISTORY = [
    fact(FactKind.SUBMITTED, vn(2026, 11, 27, 9)),
    fact(FactKind.ROUTED, vn(2026, 11, 27, 10), agency_id="a"),
    fact(FactKind.RETURNED, vn(2026, 11, 27, 11)),
    fact(FactKind.ROUTED, vn(2026, 11, 27, 15), agency_id="b"),
    fact(FactKind.ACKNOWLEDGED, vn(2026, 11, 30, 9)),
    fact(FactKind.PAUSED, vn(2026, 12, 1, 9)),
    fact(FactKind.RESUMED, vn(2026, 12, 2, 9)),
    fact(FactKind.EXTENDED, vn(2026, 12, 3, 9), extension_days=2.0),
]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_facts_out_of_order_or_duplicated_give_the_same_clocks(math: ClockMath, seed: int) -> None:
    expected = compute_clocks(HISTORY, NORMAL, math)
    shuffled = HISTORY + HISTORY[2:5]
    random.Random(seed).shuffle(shuffled)
    assert compute_clocks(shuffled, NORMAL, math) == expected


def test_history_gives_the_hand_computed_due(math: ClockMath) -> None:
    # Resolution from Mon 30/11 09:00, 40 WH; paused Tue 1/12 09:00 -> Wed 2/12 09:00
    # (8 WH paused) and extended by 2 WD (16 WH): 64 WH after Mon 09:00 in office time.
    # Mon 09-17 = 7, then 8 per day: Tue 15, Wed 23, Thu 31, Fri 39, Mon 7/12 47, Tue 55,
    # Wed 63, Thu 10/12 08-09 -> 64 => Thu 10/12 09:00.
    _, ack, res = clocks_by_kind(HISTORY, NORMAL, math)
    assert ack.generation == 2
    assert res.due_at == vn(2026, 12, 10, 9)


# --- thresholds ---------------------------------------------------------------------------


def test_thresholds_fire_at_50_75_100_and_the_escalations(math: ClockMath) -> None:
    # Acknowledgement routed Fri 27/11 16:00, 8 WH, due Mon 30/11 16:00.
    #  50 % = 4 WH: Fri 16-17 (1), Mon 08-11 (3)            => Mon 30/11 11:00
    #  75 % = 6 WH: Fri 1, Mon 08-12 (4 -> 5), 13-14 (1)    => Mon 30/11 14:00
    # 100 %                                                 => Mon 30/11 16:00
    # +8 WH after due: Mon 16-17 (1), Tue 08-12 (5), 13-16  => Tue 1/12 16:00
    # +3 WD after due: Mon 1, Tue 9, Wed 17, Thu 08-12 (21), 13-16 (24) => Thu 3/12 16:00
    clocks = compute_clocks([ROUTED_FRI], NORMAL, math)
    instants = threshold_instants(clocks, DEFAULT_MARKS, math)
    due = vn(2026, 11, 30, 16)
    assert instants == [
        ThresholdInstant("acknowledgement", 1, DEFAULT_MARKS[0], vn(2026, 11, 30, 11), due),
        ThresholdInstant("acknowledgement", 1, DEFAULT_MARKS[1], vn(2026, 11, 30, 14), due),
        ThresholdInstant("acknowledgement", 1, DEFAULT_MARKS[2], due, due),
        ThresholdInstant("acknowledgement", 1, DEFAULT_MARKS[3], vn(2026, 12, 1, 16), due),
        ThresholdInstant("acknowledgement", 1, DEFAULT_MARKS[4], vn(2026, 12, 3, 16), due),
    ]
    assert [(t.mark.key, t.mark.percent, t.mark.level) for t in instants] == [
        ("50", 50, "officer"),
        ("75", 75, "officer"),
        ("100", 100, "agency_leader"),
        ("100+8wh", 100, "coordinator"),
        ("100+3wd", 100, "province_leadership"),
    ]


def test_thresholds_after_a_pause_count_only_running_office_time(math: ClockMath) -> None:
    # Resolution from Mon 30/11 09:30 (40 WH), paused Tue 10:00 -> Wed 14:00, 8.5 WH consumed.
    # 50 % = 20 WH: 11.5 left from Wed 14:00: Wed 14-17 (3), Thu 3/12 8 (11), Fri 08:00-08:30
    #   => Fri 4/12 08:30.
    # 75 % = 30 WH: 21.5 left: Wed 3, Thu 11, Fri 19, Mon 7/12 08:00-10:30 (21.5) => Mon 10:30.
    facts = [
        *NORMAL_RUNNING,
        fact(FactKind.PAUSED, vn(2026, 12, 1, 10)),
        fact(FactKind.RESUMED, vn(2026, 12, 2, 14)),
    ]
    clocks = compute_clocks(facts, NORMAL, math)
    marks = DEFAULT_MARKS[:3]
    fire = {(t.clock, t.mark.key): t.fire_at for t in threshold_instants(clocks, marks, math)}
    assert fire == {
        ("resolution", "50"): vn(2026, 12, 4, 8, 30),
        ("resolution", "75"): vn(2026, 12, 7, 10, 30),
        ("resolution", "100"): vn(2026, 12, 8, 13, 30),
    }


def test_a_mark_already_passed_when_the_clock_continues_fires_at_the_restart(
    math: ClockMath,
) -> None:
    # Continue after a return with 6 of 8 WH used (75 % passed): the 50 % and 75 % marks are
    # due at once (the resume instant); 100 % is 2 WH later: Mon 14:00 -> 16:00.
    cont = replace(NORMAL, on_reroute="continue")
    facts = [
        fact(FactKind.ROUTED, vn(2026, 11, 30, 8), agency_id="a"),
        fact(FactKind.RETURNED, vn(2026, 11, 30, 15)),  # 08-12 + 13-15 = 6 WH
        fact(FactKind.ROUTED, vn(2026, 12, 1, 14), agency_id="b"),
    ]
    clocks = compute_clocks(facts, cont, math)
    fire = {t.mark.key: t.fire_at for t in threshold_instants(clocks, DEFAULT_MARKS[:3], math)}
    assert fire == {
        "50": vn(2026, 12, 1, 14),
        "75": vn(2026, 12, 1, 14),
        "100": vn(2026, 12, 1, 16),
    }


def test_wall_clock_overdue_mark_counts_every_hour(math: ClockMath) -> None:
    # A 24/7 escalation two calendar days after a due of Mon 30/11 16:00 => Wed 2/12 16:00.
    mark = Mark("100+2cd", 100, "coordinator", Target(2, Unit.CALENDAR_DAYS))
    clocks = compute_clocks([ROUTED_FRI], NORMAL, math)
    [instant] = threshold_instants(clocks, (mark,), math)
    assert instant.fire_at == vn(2026, 12, 2, 16)
