"""Benchmark of one SLA event handler on real PostgreSQL: events/s and round trips per event.

Run: ``uv run --frozen python bench/bench_sla_handler.py --label after`` (about 2 minutes on
2 cores). To measure another tree of the service (the code before a change), put its source
first on the path: ``PYTHONPATH=/tmp/sla-before/services/sla/src uv run --frozen python
bench/bench_sla_handler.py --label before``; migrations are taken from that tree as well.

Starts its own PostgreSQL with ``paht_devenv`` in a temporary directory (no Kafka), applies
the common and SLA migrations, then feeds ``sla.handlers.handle_event`` a pre-built list of
envelopes: per report submitted -> routed -> acknowledged -> resolved, the reports' events
interleaved in time order. Each event runs as ``EventProcessor`` runs it today: a pooled
connection, one transaction, the inbox claim, then the handler.

(a) throughput: events/s over the timed reports (after a warm-up), nothing else running.
(b) round trips: asyncpg's query logger on the connection counts every request/response
    exchange (an ``executemany`` is one) on a separate sample of reports, split into the
    handler's own and the consumer's (BEGIN, inbox claim, COMMIT, the pool's reset on
    release). Statement preparation and type introspection happen once per connection and
    are not counted.

The result is merged into bench/results/sla_handler.json under ``--label``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

import sla
from paht_common.db import Conn, apply_migrations, create_pool, ensure_database, with_database
from paht_common.events import (
    Envelope,
    Payload,
    ReportRouted,
    ReportSubmitted,
    ReportTransitioned,
    new_envelope,
)
from paht_common.inbox import claim
from paht_common.testing import FakeClock
from paht_devenv.environment import Environment, Ports
from sla import repository
from sla.calendar import TZ
from sla.handlers import CalendarCache, SlaContext, handle_event

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = Path(sla.__file__).resolve().parents[2] / "migrations"
RESULTS = ROOT / "bench" / "results" / "sla_handler.json"
DATABASE = "paht_sla_handler_bench"
CONSUMER = "sla"
SEED = 20261202
START = datetime(2026, 9, 7, 8, 0, tzinfo=TZ)
AGENCIES = tuple(f"ubnd-{i}" for i in range(20))
CATEGORIES = ("INFRA.ROAD", "INFRA.LIGHT", "ENV.WASTE", "ORDER.NOISE")
URGENCIES = ("normal", "normal", "normal", "urgent", "complex")


def log(message: str) -> None:
    """Progress on stderr; the JSON result alone goes to stdout."""
    sys.stderr.write(f"[bench_sla_handler {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def lifecycle(rng: random.Random, start: datetime) -> list[Envelope[Any]]:
    """The four events of one report, each at a plausible delay after the previous one."""
    rid = uuid.UUID(int=rng.getrandbits(128), version=4)
    number = f"BN-{rid.hex[:8]}"
    category, urgency = rng.choice(CATEGORIES), rng.choice(URGENCIES)
    agency = rng.choice(AGENCIES)
    routed_at = start + timedelta(minutes=rng.uniform(1, 90))
    acked_at = routed_at + timedelta(hours=rng.uniform(0.5, 30))
    resolved_at = acked_at + timedelta(hours=rng.uniform(2, 24 * 8))
    payloads: list[tuple[Payload, str, datetime]] = [
        (
            ReportSubmitted(
                report_id=rid,
                number=number,
                category=category,
                commune_code="09394",
                lat=21.18,
                lon=106.07,
                channel="app",
                urgency=urgency,
                source_app="bench",
                submitted_at=start,
            ),
            "/intake",
            start,
        ),
        (
            ReportRouted(
                report_id=rid,
                number=number,
                agency_id=agency,
                agency_name=agency.upper(),
                category=category,
                commune_code="09394",
                urgency=urgency,
                rule_id="rule-1",
                routed_at=routed_at,
            ),
            "/routing",
            routed_at,
        ),
        (
            ReportTransitioned(
                report_id=rid,
                action="acknowledge",
                from_state="assigned",
                to_state="in_progress",
                actor_role="officer",
                agency_id=agency,
                details={},
                at=acked_at,
            ),
            "/intake",
            acked_at,
        ),
        (
            ReportTransitioned(
                report_id=rid,
                action="resolve",
                from_state="in_progress",
                to_state="resolved",
                actor_role="officer",
                agency_id=agency,
                details={},
                at=resolved_at,
            ),
            "/intake",
            resolved_at,
        ),
    ]
    return [
        new_envelope(p, source=source, province="bn", occurred_at=at) for p, source, at in payloads
    ]


def build_events(rng: random.Random, reports: int) -> list[Envelope[Any]]:
    """Every report's lifecycle, reports submitted over weeks, all events in time order."""
    events: list[Envelope[Any]] = []
    span = timedelta(days=28).total_seconds()
    for _ in range(reports):
        events.extend(lifecycle(rng, START + timedelta(seconds=rng.uniform(0, span))))
    events.sort(key=lambda e: e.occurred_at)
    return events


def event_kind(envelope: Envelope[Any]) -> str:
    p = envelope.payload
    if isinstance(p, ReportTransitioned):
        return f"transitioned:{p.action}"
    return "submitted" if isinstance(p, ReportSubmitted) else "routed"


async def process(pool: asyncpg.Pool, envelope: Envelope[Payload], ctx: SlaContext) -> None:
    """One event as EventProcessor handles it: a transaction, the inbox claim, the handler."""
    async with pool.acquire() as conn, conn.transaction():
        if await claim(conn, consumer=CONSUMER, event_id=envelope.event_id):
            await handle_event(conn, envelope, ctx=ctx)


def query_class(query: str) -> str:
    text = query.strip().upper()
    if text.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
        return "transaction"
    if "INTO INBOX" in text:
        return "inbox_claim"
    if "PG_ADVISORY_UNLOCK_ALL" in text or "RESET ALL" in text:
        return "pool_reset"
    return "handler"


async def throughput(
    pool: asyncpg.Pool, events: list[Envelope[Any]], ctx: SlaContext
) -> dict[str, Any]:
    """Events/s over the whole list, and per-event latencies."""
    latencies: list[float] = []
    began = time.perf_counter()
    for envelope in events:
        t0 = time.perf_counter()
        await process(pool, envelope, ctx)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "events": len(events),
        "seconds": round(elapsed, 3),
        "events_per_second": round(len(events) / elapsed, 1),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 3),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
    }


async def round_trips(
    pool: asyncpg.Pool, events: list[Envelope[Any]], ctx: SlaContext
) -> dict[str, Any]:
    """Round trips per event type, the handler's own and the consumer's."""
    logged: list[str] = []
    per_kind: dict[str, list[Counter[str]]] = defaultdict(list)
    async with pool.acquire() as conn:
        conn.add_query_logger(lambda record: logged.append(record.query))
    for envelope in events:
        logged.clear()
        await process(pool, envelope, ctx)
        await asyncio.sleep(0)  # the logger's callbacks run on the next loop iteration
        await asyncio.sleep(0)
        per_kind[event_kind(envelope)].append(Counter(query_class(q) for q in logged))
    summary: dict[str, Any] = {}
    for kind, counters in sorted(per_kind.items()):
        handler = [c["handler"] for c in counters]
        total = [sum(c.values()) for c in counters]
        summary[kind] = {
            "events": len(counters),
            "handler_mean": round(statistics.mean(handler), 2),
            "handler_min": min(handler),
            "handler_max": max(handler),
            "total_mean": round(statistics.mean(total), 2),
            "consumer_overhead": {
                name: round(statistics.mean(c[name] for c in counters), 2)
                for name in ("transaction", "inbox_claim", "pool_reset")
            },
        }
    every = [c["handler"] for cs in per_kind.values() for c in cs]
    summary["all_events"] = {
        "handler_mean": round(statistics.mean(every), 2),
        "total_mean": round(
            statistics.mean(sum(c.values()) for cs in per_kind.values() for c in cs), 2
        ),
    }
    return summary


async def run(args: argparse.Namespace, env: Environment) -> dict[str, Any]:
    admin = env.postgres.dsn
    await ensure_database(admin, DATABASE)
    # one connection: one handler, strictly sequential, as one partition's consumer runs
    pool = await create_pool(with_database(admin, DATABASE), min_size=1, max_size=1)
    try:
        conn: Conn
        async with pool.acquire() as conn:
            await apply_migrations(conn, MIGRATIONS)
            await repository.seed_calendar_once(conn)
            version = await conn.fetchval("SHOW server_version")
        rng = random.Random(SEED)
        warmup = build_events(rng, args.warmup)
        timed = build_events(rng, args.reports)
        counted = build_events(rng, args.count_reports)
        last = max(e.occurred_at for e in warmup + timed + counted)
        ctx = SlaContext(
            clock=FakeClock(last + timedelta(days=1)), calendars=CalendarCache(), province="bn"
        )
        log(f"warm-up: {len(warmup)} events")
        await throughput(pool, warmup, ctx)
        log(f"timed: {len(timed)} events of {args.reports} reports")
        speed = await throughput(pool, timed, ctx)
        log(f"{speed['events_per_second']} events/s")
        trips = await round_trips(pool, counted, ctx)
        log(f"round trips: {json.dumps(trips['all_events'])}")
    finally:
        await pool.close()
    return {
        "command": "uv run --frozen python bench/bench_sla_handler.py " + " ".join(sys.argv[1:]),
        "sla_source": str(Path(sla.__file__).resolve().parent),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "postgres": version,
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "reports": args.reports,
        "mix": "per report: submitted, routed, transitioned:acknowledge, transitioned:resolve",
        "throughput": speed,
        "round_trips_per_event": trips,
    }


def start_postgres() -> Environment:
    """PostgreSQL alone on a free port in a fresh directory."""
    state = Path(tempfile.mkdtemp(prefix="paht-bench-sla-handler-"))
    env = Environment(state_dir=state, ports=Ports.free(), with_prometheus=False)
    log(f"starting PostgreSQL in {state}")
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON alone
        env.postgres.start()
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reports", type=int, default=3000, help="reports in the timed run")
    parser.add_argument("--warmup", type=int, default=200, help="reports before timing")
    parser.add_argument("--count-reports", type=int, default=200, help="reports counted")
    parser.add_argument("--label", required=True, help="key of this run in the results")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to merge into")
    args = parser.parse_args()

    env = start_postgres()
    try:
        result = asyncio.run(run(args, env))
    finally:
        env.postgres.stop(mode="immediate")
        shutil.rmtree(env.state_dir, ignore_errors=True)
    document: dict[str, Any] = {"benchmark": "sla_handler"}
    if args.out.exists():
        document = json.loads(args.out.read_text(encoding="utf-8"))
    document[args.label] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
