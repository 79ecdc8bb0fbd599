"""Consumer lag: the per-partition arithmetic and the monitor that turns it into gauges."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from paht_common.lag import GroupOffsets, LagMonitor, group_lag, partition_lag
from paht_common.testing import random_id


def test_lag_is_end_minus_committed() -> None:
    assert partition_lag(end=120, beginning=0, committed=100) == 20


def test_a_group_that_never_committed_has_every_retained_record_to_read() -> None:
    assert partition_lag(end=120, beginning=30, committed=None) == 90


def test_a_committed_offset_below_the_log_start_counts_from_the_log_start() -> None:
    assert partition_lag(end=120, beginning=30, committed=10) == 90


def test_a_group_at_the_end_has_no_lag_and_lag_is_never_negative() -> None:
    assert partition_lag(end=120, beginning=0, committed=120) == 0
    assert partition_lag(end=120, beginning=0, committed=125) == 0


def test_group_lag_covers_every_partition_with_an_end_offset() -> None:
    offsets = GroupOffsets(
        beginnings={("t", 0): 0, ("t", 1): 5, ("u", 0): 0},
        ends={("t", 0): 10, ("t", 1): 8, ("u", 0): 4},
        committed={("t", 0): 7},
    )

    assert group_lag(offsets) == {("t", 0): 3, ("t", 1): 3, ("u", 0): 4}


class FakeOffsets:
    """Answers with the queued results in order (an exception is raised); then repeats the last."""

    def __init__(self, *results: GroupOffsets | Exception) -> None:
        self.results = list(results)
        self.calls = 0
        self.closed = False
        self.called_twice = asyncio.Event()

    async def offsets(self, group_id: str, topics: tuple[str, ...]) -> GroupOffsets:
        self.calls += 1
        if self.calls >= 2:
            self.called_twice.set()
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def close(self) -> None:
        self.closed = True


def lag_gauge(group: str, topic: str, partition: int) -> float | None:
    labels = {"consumer_group": group, "topic": topic, "partition": str(partition)}
    return REGISTRY.get_sample_value("paht_consumer_lag_records", labels)


def errors(group: str) -> float | None:
    labels = {"consumer_group": group}
    return REGISTRY.get_sample_value("paht_consumer_lag_scrape_errors_total", labels)


async def test_tick_sets_the_gauge_of_each_partition_and_drops_vanished_ones() -> None:
    group = random_id("group-")
    source = FakeOffsets(
        GroupOffsets(beginnings={}, ends={("t", 0): 10, ("t", 1): 4}, committed={("t", 0): 6}),
        GroupOffsets(beginnings={}, ends={("t", 0): 12}, committed={("t", 0): 12}),
    )
    async with LagMonitor(group_id=group, topics=("t",), source=source) as monitor:
        first = await monitor.tick()
        assert first == {("t", 0): 4, ("t", 1): 4}
        assert lag_gauge(group, "t", 0) == 4
        assert lag_gauge(group, "t", 1) == 4

        await monitor.tick()

    assert lag_gauge(group, "t", 0) == 0
    assert lag_gauge(group, "t", 1) is None
    assert source.closed


async def test_a_failed_poll_is_counted_and_retried_without_ending_the_monitor() -> None:
    group = random_id("group-")
    source = FakeOffsets(
        ConnectionError("broker away"),
        GroupOffsets(beginnings={}, ends={("t", 0): 9}, committed={("t", 0): 2}),
    )
    monitor = LagMonitor(group_id=group, topics=("t",), source=source, interval_seconds=0.01)

    task = asyncio.create_task(monitor.run())
    await asyncio.wait_for(source.called_twice.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert errors(group) == 1
    assert lag_gauge(group, "t", 0) == 7
    assert source.closed
