"""What a recomputation writes: only the clock and threshold rows that change."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sla.calendar import TZ
from sla.projection import (
    ClockRow,
    StoredThreshold,
    ThresholdRow,
    clocks_to_write,
    threshold_writes,
    upserted,
)

T0 = datetime(2026, 11, 27, 16, tzinfo=TZ)
DUE = datetime(2026, 11, 30, 16, tzinfo=TZ)


def row(**changes: object) -> ClockRow:
    base = ClockRow(
        kind="acknowledgement",
        generation=1,
        status="running",
        amount=8.0,
        unit="working_hours",
        agency_id="ubnd-a",
        started_at=T0,
        stopped_at=None,
        due_at=DUE,
        consumed_s=0.0,
        breached=False,
        calendar_version="v1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def threshold(mark: str = "50", **changes: object) -> ThresholdRow:
    base = ThresholdRow("acknowledgement", 1, mark, 50, "officer", T0, DUE)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_an_unknown_clock_is_written() -> None:
    assert clocks_to_write({}, [row()]) == (row(),)


def test_a_clock_equal_to_the_stored_row_is_not_written() -> None:
    assert clocks_to_write({"acknowledgement": row()}, [row()]) == ()


def test_a_clock_whose_due_instant_moved_is_written() -> None:
    moved = row(due_at=datetime(2026, 12, 1, 9, tzinfo=TZ))
    assert clocks_to_write({"acknowledgement": row()}, [moved]) == (moved,)


def test_a_finished_clock_of_the_same_generation_is_never_rewritten() -> None:
    stopped = row(status="stopped", stopped_at=T0, calendar_version="v1")
    recomputed = replace(stopped, calendar_version="v2", due_at=None)
    assert upserted(stopped, recomputed) == stopped
    assert clocks_to_write({"acknowledgement": stopped}, [recomputed]) == ()


def test_a_stored_breach_of_the_same_generation_is_kept_so_nothing_is_written() -> None:
    assert clocks_to_write({"acknowledgement": row(breached=True)}, [row()]) == ()


def test_a_new_generation_drops_the_old_breach() -> None:
    fresh = row(generation=2)
    assert upserted(row(breached=True), fresh).breached is False
    assert clocks_to_write({"acknowledgement": row(breached=True)}, [fresh]) == (fresh,)


def test_unchanged_thresholds_need_no_write() -> None:
    stored = [StoredThreshold(threshold(), fired=False)]
    writes = threshold_writes(stored, [threshold()])
    assert not writes
    assert (writes.stale, writes.upserts) == ((), ())


def test_a_pending_threshold_no_longer_wanted_is_stale() -> None:
    stored = [
        StoredThreshold(threshold("50"), fired=False),
        StoredThreshold(threshold("75"), False),
    ]
    writes = threshold_writes(stored, [threshold("50")])
    assert writes.stale == (("acknowledgement", 1, "75"),)
    assert writes.upserts == ()


def test_a_moved_or_new_threshold_is_upserted() -> None:
    moved = threshold("50", fire_at=datetime(2026, 11, 30, 11, tzinfo=TZ))
    new = threshold("75", percent=75)
    writes = threshold_writes([StoredThreshold(threshold("50"), fired=False)], [moved, new])
    assert writes.stale == ()
    assert writes.upserts == (moved, new)


def test_a_fired_threshold_is_neither_deleted_nor_rewritten() -> None:
    stored = [StoredThreshold(threshold("50"), fired=True)]
    assert not threshold_writes(stored, [threshold("50", due_at=T0)])
    assert not threshold_writes(stored, [])


def test_the_first_of_two_wanted_rows_with_one_key_wins() -> None:
    first, second = threshold("100+8wh", level="coordinator"), threshold("100+8wh", level="x")
    assert threshold_writes([], [first, second]).upserts == (first,)
