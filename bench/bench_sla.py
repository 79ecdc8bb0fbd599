"""Benchmark of the SLA threshold scanner on real PostgreSQL and Kafka.

Run: ``uv run python bench/bench_sla.py --clocks 1000000`` (about 10 minutes on 2 cores), or
``uv run python bench/bench_sla.py --quick`` (100,000 clocks, 30 s of due load, ~2 minutes).

Starts its own PostgreSQL and Kafka with ``paht_devenv`` in a temporary directory, then:

(a) scan cost per cycle with nothing due, as the open clocks grow to 10k, 100k, 1M (each
    with its five pending thresholds: 50 %, 75 %, 100 %, +8 WH, +3 WD): ``scan_once`` wall
    time over many cycles and ``EXPLAIN (ANALYZE, BUFFERS)`` of the claim query (custom and
    generic plan). Flat numbers mean the cost follows what is due, not what is open.
(b) breach detection lag: the real scanner loop (``run_scanner``, 0.5 s interval) and an
    ``OutboxRelay`` to the broker run while 1,000 thresholds per minute fall due (fire
    instants spread evenly over the window) on top of the open clocks; an aiokafka consumer
    reads ``paht.sla.events.v1`` and the lag is due instant -> record timestamp (and ->
    receipt by the consumer), as p50 / p99 / max.

Prints one JSON document and writes it to bench/results/sla.json (sla-quick.json for
--quick, so a quick run never replaces the full figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from paht_common.clock import SystemClock
from paht_common.db import (
    Conn,
    apply_migrations,
    create_pool,
    ensure_database,
    with_database,
)
from paht_common.events import SlaThresholdReached
from paht_common.kafka import RawRecord, decode, make_producer
from paht_common.outbox import OutboxRelay
from paht_common.testing import FakeClock
from paht_common.topics import DEFAULT_PARTITIONS, SLA_EVENTS
from paht_devenv.environment import Environment, Ports
from paht_devenv.procs import StartupError
from sla import repository
from sla.handlers import CalendarCache, SlaContext
from sla.scanner import run_scanner, scan_once

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "services" / "sla" / "migrations"
RESULTS = ROOT / "bench" / "results"
DATABASE = "paht_sla_bench"
SEED = 20261127
CHUNK = 50_000
SCAN_CYCLES = 200
SCAN_BATCH = 500
SCAN_INTERVAL = 0.5
DUE_PER_MINUTE = 1_000
CALENDAR_VERSION = "bench"
# (mark, percent, level, fire instant as a fraction of the 5-WD span before/after due)
MARKS: tuple[tuple[str, int, str, float], ...] = (
    ("50", 50, "officer", -0.5),
    ("75", 75, "officer", -0.25),
    ("100", 100, "agency_leader", 0.0),
    ("100+8wh", 100, "coordinator", 0.2),
    ("100+3wd", 100, "province_leadership", 0.6),
)
REPORT_COLUMNS = ("report_id", "number", "category", "urgency", "agency_id", "policy_id")
CLOCK_COLUMNS = (
    "report_id",
    "kind",
    "generation",
    "status",
    "amount",
    "unit",
    "agency_id",
    "started_at",
    "due_at",
    "consumed_s",
    "breached",
    "calendar_version",
)
THRESHOLD_COLUMNS = (
    "report_id",
    "clock",
    "generation",
    "mark",
    "percent",
    "level",
    "fire_at",
    "due_at",
)


def log(message: str) -> None:
    """Progress on stderr; the JSON result alone goes to stdout."""
    sys.stderr.write(f"[bench_sla {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


async def copy_clocks(
    conn: Conn,
    *,
    count: int,
    offset: int,
    now: datetime,
    rng: random.Random,
    marks: tuple[tuple[str, int, str, float], ...] = MARKS,
    due_at: list[datetime] | None = None,
) -> list[uuid.UUID]:
    """COPY ``count`` reports, each with a running resolution clock and its thresholds.

    Without ``due_at`` every due instant is 5 to 30 days ahead, so that even the 50 % mark
    (3.5 days before the due instant) is in the future: nothing is due yet.
    """
    span = timedelta(days=7)  # 5 WD as wall time, for spreading the marks
    ids: list[uuid.UUID] = []
    for start in range(0, count, CHUNK):
        size = min(CHUNK, count - start)
        reports, clocks, thresholds = [], [], []
        for i in range(start, start + size):
            rid = uuid.UUID(int=rng.getrandbits(128), version=4)
            ids.append(rid)
            agency = f"ubnd-{(offset + i) % 500}"
            due = (
                due_at[i]
                if due_at is not None
                else now + timedelta(days=5) + timedelta(seconds=rng.uniform(0, 25 * 86400))
            )
            reports.append((rid, f"BN-{offset + i}", "INFRA.ROAD", "normal", agency, "default"))
            clocks.append(
                (
                    rid,
                    "resolution",
                    1,
                    "running",
                    Decimal(5),
                    "working_days",
                    agency,
                    due - span,
                    due,
                    0.0,
                    False,
                    CALENDAR_VERSION,
                )
            )
            for key, percent, level, shift in marks:
                fire = due + span * shift
                thresholds.append((rid, "resolution", 1, key, percent, level, fire, due))
        async with conn.transaction():
            await conn.copy_records_to_table("sla_reports", records=reports, columns=REPORT_COLUMNS)
            await conn.copy_records_to_table("clocks", records=clocks, columns=CLOCK_COLUMNS)
            await conn.copy_records_to_table(
                "thresholds", records=thresholds, columns=THRESHOLD_COLUMNS
            )
    return ids


async def without_indexes(
    conn: Conn, tables: tuple[str, ...], load: Callable[[], Awaitable[object]]
) -> None:
    """Run ``load()`` with the tables' indexes dropped, then re-create exactly the same ones.

    A sorted index build is far cheaper than maintaining random-UUID btrees row by row; the
    schema after the load is the migration's schema.
    """
    saved: list[tuple[str, str, str, str]] = []
    for table in tables:
        for row in await conn.fetch(
            "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint "
            "WHERE conrelid = $1::regclass AND contype IN ('p', 'u')",
            table,
        ):
            saved.append(("constraint", table, row["conname"], row["def"]))
            await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{row["conname"]}"')
        for row in await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1", table
        ):
            saved.append(("index", table, row["indexname"], row["indexdef"]))
            await conn.execute(f'DROP INDEX "{row["indexname"]}"')
    await load()
    await conn.execute("SET maintenance_work_mem = '512MB'")
    for kind, table, name, definition in saved:
        if kind == "constraint":
            await conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        else:
            await conn.execute(definition)
    await conn.execute("RESET maintenance_work_mem")


async def baseline_ms(pool: asyncpg.Pool) -> float:
    """p50 of acquire + transaction + SELECT 1: the floor any scan cycle pays."""
    times: list[float] = []
    for _ in range(SCAN_CYCLES):
        began = time.perf_counter()
        async with pool.acquire() as conn, conn.transaction():
            await conn.fetchval("SELECT 1")
        times.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(times), 3)


def _buffers(plan: str) -> int:
    match = re.search(r"Buffers: shared((?: \w+=\d+)+)", plan)
    return sum(int(v) for v in re.findall(r"=(\d+)", match.group(1))) if match else 0


def _execution_ms(plan: str) -> float:
    match = re.search(r"Execution Time: ([\d.]+) ms", plan)
    return float(match.group(1)) if match else float("nan")


async def explain(conn: Conn, now: datetime) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim query, custom and generic plan (rolled back)."""
    async with conn.transaction():
        rows = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS) " + repository.CLAIM_DUE_THRESHOLDS, now, SCAN_BATCH
        )
        custom = "\n".join(r[0] for r in rows)
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute(
            "PREPARE bench_claim(timestamptz, int) AS " + repository.CLAIM_DUE_THRESHOLDS
        )
        rows = await conn.fetch(
            f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_claim('{now.isoformat()}', {SCAN_BATCH})"
        )
        generic = "\n".join(r[0] for r in rows)
        await conn.execute("DEALLOCATE bench_claim")
    return {
        "index_scan_on_thresholds_due": bool(
            re.search(r"(Index|Bitmap Index) Scan (using|on) thresholds_due", custom)
        ),
        "generic_plan_index_scan_on_thresholds_due": "Index Scan using thresholds_due" in generic,
        "seq_scan_on_thresholds": "Seq Scan on thresholds" in custom + generic,
        "buffers": _buffers(custom),
        "buffers_generic_plan": _buffers(generic),
        "execution_ms": _execution_ms(custom),
        "execution_ms_generic_plan": _execution_ms(generic),
        "plan": custom.splitlines(),
        "plan_generic": generic.splitlines(),
    }


async def measure_scan(pool: asyncpg.Pool, *, open_clocks: int, now: datetime) -> dict[str, Any]:
    """scan_once wall time over SCAN_CYCLES cycles with nothing due, plus the plan."""
    ctx = SlaContext(clock=FakeClock(now), calendars=CalendarCache(), province="bn")
    baseline = await baseline_ms(pool)
    load_before = os.getloadavg()[0]
    for _ in range(10):  # warm-up, and past the prepared statement's switch to a generic plan
        await scan_once(pool, ctx=ctx, batch=SCAN_BATCH)
    times: list[float] = []
    fired = 0
    for _ in range(SCAN_CYCLES):
        began = time.perf_counter()
        fired += await scan_once(pool, ctx=ctx, batch=SCAN_BATCH)
        times.append((time.perf_counter() - began) * 1000)
    async with pool.acquire() as conn:
        plan = await explain(conn, now)
        sizes = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM thresholds WHERE fired_at IS NULL) AS pending, "
            "pg_relation_size('thresholds') AS table_bytes, "
            "pg_relation_size('thresholds_due') AS index_bytes"
        )
    assert sizes is not None
    return {
        "open_clocks": open_clocks,
        "pending_thresholds": sizes["pending"],
        "thresholds_table_mb": round(sizes["table_bytes"] / 2**20, 1),
        "thresholds_due_index_mb": round(sizes["index_bytes"] / 2**20, 1),
        "fired": fired,
        "cycles": SCAN_CYCLES,
        "scan_ms_p50": round(statistics.median(times), 3),
        "scan_ms_p99": round(percentile(times, 99), 3),
        "scan_ms_max": round(max(times), 3),
        "baseline_acquire_tx_select1_ms_p50": baseline,
        "load_average_1m": round((load_before + os.getloadavg()[0]) / 2, 2),
        "explain": plan,
    }


async def detection_lag(
    pool: asyncpg.Pool, *, bootstrap: str, seconds: float, rng: random.Random, offset: int
) -> dict[str, Any]:
    """Run scanner + relay while DUE_PER_MINUTE thresholds per minute fall due."""
    count = int(DUE_PER_MINUTE * seconds / 60)
    step = 60.0 / DUE_PER_MINUTE
    start = datetime.now(UTC) + timedelta(seconds=10)
    fire_at = [start + timedelta(seconds=i * step) for i in range(count)]
    async with pool.acquire() as conn:
        ids = await copy_clocks(
            conn,
            count=count,
            offset=offset,
            now=start,
            rng=rng,
            marks=(("100", 100, "agency_leader", 0.0),),
            due_at=fire_at,
        )
        await conn.execute("ANALYZE thresholds")
    due_of = dict(zip(ids, fire_at, strict=True))

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    partitions = [TopicPartition(SLA_EVENTS, p) for p in range(DEFAULT_PARTITIONS)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:  # resolve the end offsets now, before any event is produced
        await consumer.position(tp)

    producer = make_producer(bootstrap, client_id="sla-bench-relay")
    await producer.start()
    relay = OutboxRelay(pool, producer, service="sla")
    ctx = SlaContext(clock=SystemClock(), calendars=CalendarCache(), province="bn")
    scan_count_before = REGISTRY.get_sample_value("sla_scan_seconds_count") or 0.0
    scan_sum_before = REGISTRY.get_sample_value("sla_scan_seconds_sum") or 0.0
    tasks = [
        asyncio.create_task(relay.run(), name="relay"),
        asyncio.create_task(
            run_scanner(pool, ctx=ctx, interval=SCAN_INTERVAL, batch=SCAN_BATCH), name="scanner"
        ),
    ]
    record_lag: list[float] = []
    receive_lag: list[float] = []
    seen: set[str] = set()
    duplicates = 0
    unexpected = 0
    deadline = time.monotonic() + seconds + 90
    load_before = os.getloadavg()[0]
    log(f"lag: {count} thresholds due from {start.isoformat()} over {seconds:.0f} s")
    try:
        while len(seen) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            received = time.time()
            for messages in batches.values():
                for m in messages:
                    envelope = decode(
                        RawRecord(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers))
                    )
                    payload = envelope.payload
                    if not isinstance(payload, SlaThresholdReached):
                        continue
                    if str(envelope.event_id) in seen:
                        duplicates += 1
                        continue
                    seen.add(str(envelope.event_id))
                    if payload.report_id not in due_of:
                        unexpected += 1
                        continue
                    due = due_of[payload.report_id].timestamp()
                    record_lag.append(m.timestamp / 1000 - due)
                    receive_lag.append(received - due)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await consumer.stop()
        await producer.stop()
    scans = (REGISTRY.get_sample_value("sla_scan_seconds_count") or 0.0) - scan_count_before
    scan_sum = (REGISTRY.get_sample_value("sla_scan_seconds_sum") or 0.0) - scan_sum_before

    def summary(values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        return {
            "p50": round(statistics.median(values), 3),
            "p99": round(percentile(values, 99), 3),
            "max": round(max(values), 3),
            "min": round(min(values), 3),
        }

    return {
        "due_per_minute": DUE_PER_MINUTE,
        "window_seconds": seconds,
        "expected": count,
        "received": len(seen),
        "duplicates": duplicates,
        "unexpected": unexpected,
        "scan_interval_seconds": SCAN_INTERVAL,
        "scan_cycles": int(scans),
        "scan_ms_mean_under_load": round(scan_sum / scans * 1000, 3) if scans else None,
        "load_average_1m": round((load_before + os.getloadavg()[0]) / 2, 2),
        "lag_due_to_record_timestamp_seconds": summary(record_lag),
        "lag_due_to_consumer_receipt_seconds": summary(receive_lag),
    }


async def run(args: argparse.Namespace, env: Environment) -> dict[str, Any]:
    admin = env.postgres.dsn
    await ensure_database(admin, DATABASE)
    pool = await create_pool(with_database(admin, DATABASE), min_size=2, max_size=6)
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, MIGRATIONS)
            await repository.seed_calendar_once(conn)
            version = await conn.fetchval("SHOW server_version")
        rng = random.Random(SEED)
        now = datetime.now(UTC)
        steps = [s for s in (10_000, 100_000, 1_000_000) if s < args.clocks] + [args.clocks]
        scan_results: list[dict[str, Any]] = []
        seeded = 0
        for target in steps:
            began = time.perf_counter()
            async with pool.acquire() as conn:
                load = functools.partial(
                    copy_clocks, conn, count=target - seeded, offset=seeded, now=now, rng=rng
                )
                await without_indexes(conn, ("sla_reports", "clocks", "thresholds"), load)
                await conn.execute("VACUUM ANALYZE sla_reports")
                await conn.execute("VACUUM ANALYZE clocks")
                await conn.execute("VACUUM ANALYZE thresholds")
            seed_seconds = time.perf_counter() - began
            seeded = target
            result = await measure_scan(pool, open_clocks=seeded, now=now)
            result["seed_seconds"] = round(seed_seconds, 1)
            scan_results.append(result)
            log(
                f"scan @ {seeded:>9,} open clocks: p50 {result['scan_ms_p50']} ms, "
                f"p99 {result['scan_ms_p99']} ms, buffers {result['explain']['buffers']} "
                f"(seeded in {seed_seconds:.0f} s)"
            )
        lag = await detection_lag(
            pool, bootstrap=env.kafka.bootstrap, seconds=args.seconds, rng=rng, offset=seeded
        )
        log(f"lag: {json.dumps(lag['lag_due_to_record_timestamp_seconds'])}")
    finally:
        await pool.close()
    return {
        "benchmark": "sla",
        "mode": "quick" if args.quick else "full",
        "command": "uv run python bench/bench_sla.py " + " ".join(sys.argv[1:]),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "postgres": version,
        },
        "scan_batch": SCAN_BATCH,
        "scan_cost_nothing_due": scan_results,
        "detection_lag": lag,
    }


def stop_infrastructure(env: Environment) -> None:
    """Stop Kafka and PostgreSQL and remove their state."""
    env.kafka.stop()
    env.postgres.stop(mode="immediate")
    shutil.rmtree(env.state_dir, ignore_errors=True)


def start_infrastructure(attempts: int = 3) -> Environment:
    """PostgreSQL and Kafka on free ports in a fresh directory.

    Retried (bounded) because paht_devenv's random KRaft cluster id sometimes starts with
    "-", which kafka-storage then reads as an option and refuses.
    """
    for attempt in range(1, attempts + 1):
        state = Path(tempfile.mkdtemp(prefix="paht-bench-sla-"))
        env = Environment(state_dir=state, ports=Ports.free(), with_prometheus=False)
        log(f"starting PostgreSQL and Kafka in {state}")
        try:
            with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON alone
                env.start_infrastructure()
            return env
        except StartupError as exc:
            log(f"infrastructure start {attempt}/{attempts} failed: {str(exc)[:200]}")
            stop_infrastructure(env)
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clocks", type=int, default=1_000_000, help="open clocks to seed")
    parser.add_argument(
        "--seconds", type=float, default=120.0, help="length of the due-load window"
    )
    parser.add_argument("--quick", action="store_true", help="100k clocks, 30 s of due load")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON")
    args = parser.parse_args()
    if args.quick:
        args.clocks = min(args.clocks, 100_000)
        args.seconds = 30.0
    out: Path = args.out or RESULTS / ("sla-quick.json" if args.quick else "sla.json")

    env = start_infrastructure()
    try:
        results = asyncio.run(run(args, env))
    finally:
        stop_infrastructure(env)
    text = json.dumps(results, indent=2, default=str)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
