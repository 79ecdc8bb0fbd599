"""Micro-benchmark of BusinessCalendar.add(): `uv run python bench/bench_calendar.py`.

Prints one JSON document with add() computations per second for 8 WH and 5 WD
deadlines over random starts in 2025–2026 (fixed seed), each case timed for about 3 s.
"""

from __future__ import annotations

import json
import platform
import random
import sys
import time
from datetime import datetime, timedelta
from typing import TypedDict

from sla.calendar import TZ, BusinessCalendar, Unit

SEED = 20260212
SAMPLE_SIZE = 20_000
SECONDS_PER_CASE = 3.0
BATCH = 1_000


class CaseResult(TypedDict):
    """Throughput of one benchmark case."""

    case: str
    amount: float
    unit: str
    computations: int
    seconds: float
    per_second: float
    first_pass_seconds: float


def random_starts(rng: random.Random, count: int) -> list[datetime]:
    """Return count aware local starts spread uniformly over 2025-01-01..2026-12-31."""
    origin = datetime(2025, 1, 1, tzinfo=TZ)
    span = int((datetime(2027, 1, 1, tzinfo=TZ) - origin).total_seconds())
    return [origin + timedelta(seconds=rng.randrange(span)) for _ in range(count)]


def run_case(
    calendar: BusinessCalendar, starts: list[datetime], amount: float, unit: Unit
) -> CaseResult:
    """Call calendar.add() over starts in batches until SECONDS_PER_CASE has elapsed."""
    add = calendar.add
    warm_began = time.perf_counter()
    for start in starts:  # warms the per-day caches, as in a long-running service
        add(start, amount, unit)
    first_pass = time.perf_counter() - warm_began
    done = 0
    index = 0
    began = time.perf_counter()
    elapsed = 0.0
    while elapsed < SECONDS_PER_CASE:
        batch = starts[index : index + BATCH]
        for start in batch:
            add(start, amount, unit)
        done += len(batch)
        index = (index + BATCH) % len(starts)
        elapsed = time.perf_counter() - began
    return CaseResult(
        case=f"{amount:g} {'WH' if unit is Unit.WORKING_HOURS else 'WD'}",
        amount=amount,
        unit=str(unit),
        computations=done,
        seconds=round(elapsed, 3),
        per_second=round(done / elapsed),
        first_pass_seconds=round(first_pass, 3),
    )


def main() -> None:
    """Run the 8 WH and 5 WD cases and write the JSON report to stdout."""
    rng = random.Random(SEED)
    starts = random_starts(rng, SAMPLE_SIZE)
    calendar = BusinessCalendar()
    results = [
        run_case(calendar, starts, 8, Unit.WORKING_HOURS),
        run_case(calendar, starts, 5, Unit.WORKING_DAYS),
    ]
    report = {
        "benchmark": "BusinessCalendar.add",
        "calendar_version": calendar.version,
        "python": platform.python_version(),
        "seed": SEED,
        "starts": SAMPLE_SIZE,
        "results": results,
    }
    sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
