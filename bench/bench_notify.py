"""Delivery throughput and latency of the notify dispatcher on real PostgreSQL.

Run: ``uv run --frozen python bench/bench_notify.py`` (offers 1,000 deliveries/s, 20,000 per
scenario; each scenario stops after ``--scenario-timeout`` s, so at most ~10 minutes), or on a
busy machine ``--rate 100 --deliveries 3000`` (how bench/results/notify.json was made).

Starts its own PostgreSQL with ``paht_devenv`` in a temporary directory (notify's migrations
applied) and three kinds of process, so each one's CPU is its own:

- this process runs one ``Dispatcher`` built the way ``notify.api`` builds it
  (``Dispatcher.from_settings``, the ``egress.guarded_client`` with allow_private, the
  webhook and Web Push channels, JSON logging at INFO as ``python -m notify`` configures it,
  written to /dev/null) on a pool of ``db_pool_max`` connections;
- a receivers process: 4 aiohttp webhook receivers answering 204 (verifying the Standard
  Webhooks signature of one request in 50) and the local ``PushService`` (verifies VAPID,
  decrypts aes128gcm), recording each request's arrival time;
- an enqueuer process: SLA breach events (``SlaThresholdReached``) handled by
  ``handlers.handle_event`` in one transaction each, as the consumer does, for an agency whose
  subscriptions receive them: every event fans out to every subscription.

Scenarios, each bounded by ``--scenario-timeout``:

- ``paced``: events offered at ``--rate`` deliveries/s while the dispatcher runs; latency is
  ``delivered_at - created_at`` per row (created_at is the enqueuing transaction's start) and
  receiver arrival - created_at; webhooks to 20 subscriptions on 4 receivers, the same with one
  dead subscription more (refusing connections, or always answering 503), and Web Push to
  ``--browsers`` subscriptions.
- ``drain``: the whole backlog is enqueued first, then the dispatcher starts; deliveries/s is
  its capacity (backlog / time to deliver it), latency there is only queueing.

The dispatcher's claim, record and send calls are timed by wrapping them (no service change).
Prints a summary table and writes bench/results/notify.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import hashlib
import io
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import platform
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "notify.json"
MIGRATIONS = ROOT / "services" / "notify" / "migrations"
HOOKS_PER_RECEIVER = 5
VERIFY_ONE_IN = 50
POLL_SECONDS = 0.25
TARGET_PER_SECOND = 1_000.0


def log(message: str) -> None:
    sys.stderr.write(f"[bench_notify {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def hook_secret(name: str) -> str:
    """The signing secret of the receiver path ``name`` (both processes derive it)."""
    return "whsec_" + base64.b64encode(hashlib.sha256(name.encode()).digest()).decode()


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "n": len(ordered),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": round(ordered[-1], 2),
    }


# --------------------------------------------------------------------------- receivers process


def receivers_main(conn: multiprocessing.connection.Connection, receivers: int) -> None:
    """Child process: webhook receivers and the push service, driven over ``conn``."""
    asyncio.run(_receivers(conn, receivers))


async def _receivers(conn: multiprocessing.connection.Connection, count: int) -> None:
    from aiohttp import web
    from standardwebhooks import Webhook

    from paht_devenv.peers.push_service import PushRequest, PushService

    arrivals: dict[str, float] = {}
    statuses: Counter[str] = Counter()
    connections: set[tuple[str, int]] = set()  # client (host, port): one per TCP connection
    verify = {"checked": 0, "failed": 0, "seen": 0}
    push_log: list[tuple[float, str, int, str | None, bytes | None]] = []

    class TimedPushService(PushService):
        async def _record(self, request: PushRequest) -> None:
            push_log.append(
                (
                    time.time(),
                    request.subscription_id,
                    request.status,
                    request.reason,
                    request.plaintext,
                )
            )
            # not kept in self.requests / inboxes: 20,000 messages per scenario add up

    async def hook(request: web.Request) -> web.Response:
        raw = await request.read()
        now = time.time()
        name = request.match_info["name"]
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            connections.add((str(peer[0]), int(peer[1])))
        if name.startswith("dead"):
            statuses["dead_503"] += 1
            return web.Response(status=503, text="unavailable")
        verify["seen"] += 1
        if verify["seen"] % VERIFY_ONE_IN == 0:
            verify["checked"] += 1
            try:
                Webhook(hook_secret(name)).verify(raw, dict(request.headers))
            except Exception:
                verify["failed"] += 1
        arrivals[request.headers.get("webhook-id", "")] = now
        statuses["204"] += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks/{name}", hook)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    for _ in range(count):
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
    ports = [int(address[1]) for address in runner.addresses]
    push = TimedPushService()
    await push.start()
    loop = asyncio.get_running_loop()
    conn.send({"hook_ports": ports, "push_origin": push.origin})
    try:
        while True:
            command, argument = await loop.run_in_executor(None, conn.recv)
            if command == "subscribe":
                browsers = [
                    push.subscribe(application_server_key=argument["key"]).to_json()
                    for _ in range(argument["count"])
                ]
                conn.send(browsers)
            elif command == "collect":
                pushes = []
                for at, sub_id, status, reason, plaintext in push_log:
                    report = None
                    if plaintext is not None:
                        report = json.loads(plaintext).get("report_id")
                    pushes.append((at, sub_id, status, reason, report))
                usage = resource.getrusage(resource.RUSAGE_SELF)
                conn.send(
                    {
                        "hook_arrivals": dict(arrivals),
                        "hook_statuses": dict(statuses),
                        "hook_connections": len(connections),
                        "signatures": dict(verify),
                        "pushes": pushes,
                        "cpu_seconds": usage.ru_utime + usage.ru_stime,
                    }
                )
                arrivals.clear()
                statuses.clear()
                connections.clear()
                push_log.clear()
                verify.update(checked=0, failed=0, seen=0)
            else:
                break
    finally:
        await push.stop()
        await runner.cleanup()


# ---------------------------------------------------------------------------- enqueuer process


def enqueuer_main(
    conn: multiprocessing.connection.Connection,
    dsn: str,
    agency: str,
    events: int,
    events_per_second: float | None,
) -> None:
    """Child process: SLA breach events for ``agency`` through ``handle_event``, paced."""
    conn.send(asyncio.run(_enqueue(dsn, agency, events, events_per_second)))


async def _enqueue(
    dsn: str, agency: str, events: int, events_per_second: float | None
) -> dict[str, Any]:
    from notify import handlers
    from paht_common.db import create_pool
    from paht_common.events import Envelope, Payload, SlaThresholdReached, new_envelope

    pool = await create_pool(dsn, min_size=1, max_size=1)
    queued = 0
    behind = 0.0
    start_cpu = time.process_time()
    began = time.perf_counter()
    try:
        async with pool.acquire() as db:
            for i in range(events):
                if events_per_second is not None:
                    target = began + i / events_per_second
                    wait = target - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    else:
                        behind = max(behind, -wait)
                payload = SlaThresholdReached(
                    report_id=uuid.uuid4(),
                    number=f"BN-2026-{i:06d}",
                    agency_id=agency,
                    clock="resolution",
                    percent=100,
                    due_at=datetime.now(UTC),
                )
                envelope: Envelope[Payload] = new_envelope(payload, source="/sla", province="bn")
                async with db.transaction():
                    queued += await handlers.handle_event(db, envelope)
    finally:
        await pool.close()
    elapsed = time.perf_counter() - began
    return {
        "events": events,
        "deliveries_queued": queued,
        "seconds": round(elapsed, 2),
        "queued_per_second": round(queued / elapsed, 1),
        "max_behind_schedule_ms": round(behind * 1000, 1),
        "cpu_seconds": round(time.process_time() - start_cpu, 2),
    }


# ----------------------------------------------------------------------------- instrumentation


@dataclass
class Timings:
    """Wall times (ms) of the dispatcher's database calls and sends in one scenario."""

    claim_ms: list[float] = field(default_factory=list)
    claimed_rows: list[int] = field(default_factory=list)
    pending_stats_ms: list[float] = field(default_factory=list)
    record_ms: list[float] = field(default_factory=list)
    record_sizes: list[int] = field(default_factory=list)
    record_total_ms: list[float] = field(default_factory=list)
    send_ms: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        def mean(values: list[float]) -> float | None:
            return round(statistics.fmean(values), 3) if values else None

        return {
            "claim_due": {
                "calls": len(self.claim_ms),
                "mean_ms": mean(self.claim_ms),
                "p99_ms": percentiles(self.claim_ms)["p99"],
                "total_s": round(sum(self.claim_ms) / 1000, 2),
                "mean_rows": mean([float(n) for n in self.claimed_rows]),
            },
            "pending_stats": {
                "calls": len(self.pending_stats_ms),
                "mean_ms": mean(self.pending_stats_ms),
                "total_s": round(sum(self.pending_stats_ms) / 1000, 2),
            },
            "record_attempts": {
                "calls": len(self.record_ms),
                "mean_ms": mean(self.record_ms),
                "p99_ms": percentiles(self.record_ms)["p99"],
                "mean_outcomes": mean([float(n) for n in self.record_sizes]),
            },
            "record_outcome_wait": {
                "mean_ms": mean(self.record_total_ms),
                "p99_ms": percentiles(self.record_total_ms)["p99"],
            },
            "send": {
                channel: {"mean_ms": mean(v), "p99_ms": percentiles(v)["p99"]}
                for channel, v in self.send_ms.items()
            },
        }


TIMINGS = Timings()


def instrument() -> None:
    """Wrap the dispatcher's claim / stats / record calls with timers (module attributes).

    ``record_attempts`` is one batch (one transaction, pool wait excluded); the outcome wait
    is ``Recorder.record``: from a send's outcome to its batch committed.
    """
    from notify import dispatcher, repository

    claim = repository.claim_due
    stats = repository.pending_stats
    record = dispatcher.record_attempts  # type: ignore[attr-defined]
    record_outer = dispatcher.Recorder.record

    async def timed_claim(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        rows = await claim(*args, **kwargs)
        TIMINGS.claim_ms.append((time.perf_counter() - began) * 1000)
        TIMINGS.claimed_rows.append(len(rows))
        return rows

    async def timed_stats(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        result = await stats(*args, **kwargs)
        TIMINGS.pending_stats_ms.append((time.perf_counter() - began) * 1000)
        return result

    async def timed_record(conn: Any, outcomes: Any, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        result = await record(conn, outcomes, *args, **kwargs)
        TIMINGS.record_ms.append((time.perf_counter() - began) * 1000)
        TIMINGS.record_sizes.append(len(outcomes))
        return result

    async def timed_outer(self: Any, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return await record_outer(self, *args, **kwargs)
        finally:
            TIMINGS.record_total_ms.append((time.perf_counter() - began) * 1000)

    repository.claim_due = timed_claim
    repository.pending_stats = timed_stats
    dispatcher.record_attempts = timed_record  # type: ignore[attr-defined]
    dispatcher.Recorder.record = timed_outer  # type: ignore[method-assign]


class TimedChannel:
    """A channel that times its wrapped channel's sends."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name: str = inner.name

    async def send(self, delivery: Any) -> Any:
        began = time.perf_counter()
        try:
            return await self._inner.send(delivery)
        finally:
            TIMINGS.send_ms.setdefault(self.name, []).append((time.perf_counter() - began) * 1000)


# -------------------------------------------------------------------------------- CPU counters


def _ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def postgres_ticks(postmaster: int) -> int:
    """CPU ticks of the postmaster and its children (backends, walwriter, ...)."""
    total = _ticks(postmaster)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------------- bench


@dataclass
class Bench:
    dsn: str
    postmaster: int
    receivers: multiprocessing.connection.Connection
    hook_ports: list[int]
    push_origin: str
    settings: Any
    args: argparse.Namespace
    mp: Any
    results: list[dict[str, Any]] = field(default_factory=list)

    async def setup_agency(
        self, pool: asyncpg.Pool, agency: str, *, hooks: int, dead: str | None, browsers: int
    ) -> tuple[set[uuid.UUID], uuid.UUID | None, dict[str, uuid.UUID]]:
        """Subscriptions of a fresh agency: (healthy ids, dead id, push sub id -> id)."""
        from notify import handlers
        from paht_common.roles import Role
        from paht_common.staff_auth import Staff

        healthy: set[uuid.UUID] = set()
        dead_id = None
        push_ids: dict[str, uuid.UUID] = {}
        async with pool.acquire() as conn:
            for i in range(hooks):
                port = self.hook_ports[i % len(self.hook_ports)]
                name = f"{agency}-{i}"
                record = await handlers.create_subscription(
                    conn,
                    agency_id=agency,
                    url=f"http://127.0.0.1:{port}/hooks/{name}",
                    secret=hook_secret(name),
                )
                healthy.add(record["id"])
            if dead is not None:
                from paht_devenv.procs import free_port

                url = (
                    f"http://127.0.0.1:{free_port()}/hooks/dead"  # nothing listens there
                    if dead == "refused"
                    else f"http://127.0.0.1:{self.hook_ports[0]}/hooks/dead-{agency}"
                )
                record = await handlers.create_subscription(
                    conn, agency_id=agency, url=url, secret=hook_secret("dead")
                )
                dead_id = record["id"]
            if browsers:
                from notify.vapid import vapid_signer
                from paht_common.clock import SystemClock

                key = vapid_signer(self.settings, SystemClock()).application_server_key
                self.receivers.send(("subscribe", {"count": browsers, "key": key}))
                for i, browser in enumerate(self.receivers.recv()):
                    member = Staff(
                        subject=f"{agency}-officer-{i}",
                        role=Role.OFFICER,
                        agency_id=agency,
                        name=f"Officer {i}",
                    )
                    record, _ = await handlers.subscribe_push(
                        conn,
                        member=member,
                        endpoint=browser["endpoint"],
                        p256dh=browser["keys"]["p256dh"],
                        auth=browser["keys"]["auth"],
                    )
                    healthy.add(record["id"])
                    push_ids[browser["endpoint"].rsplit("/", 1)[1]] = record["id"]
        return healthy, dead_id, push_ids

    def start_enqueuer(
        self, agency: str, events: int, per_second: float | None
    ) -> tuple[Any, multiprocessing.connection.Connection]:
        parent, child = self.mp.Pipe()
        process = self.mp.Process(
            target=enqueuer_main,
            args=(child, self.dsn, agency, events, per_second),
            daemon=True,
        )
        process.start()
        return process, parent

    async def scenario(
        self,
        name: str,
        *,
        mode: str,
        hooks: int = 0,
        browsers: int = 0,
        dead: str | None = None,
    ) -> dict[str, Any]:
        from notify.channels.base import Channel
        from notify.channels.egress import guarded_client
        from notify.channels.webhook import WebhookChannel
        from notify.channels.webpush import WebPushChannel
        from notify.dispatcher import Dispatcher
        from notify.vapid import vapid_signer
        from paht_common.clock import SystemClock
        from paht_common.db import create_pool

        args = self.args
        settings = self.settings
        agency = f"bench-{name}"
        fanout = hooks + browsers
        total = args.drain_deliveries if mode == "drain" else args.deliveries
        events = max(1, total // fanout)
        expected = events * fanout
        log(
            f"{name}: {events} events x {fanout} subscriptions" + (f" + dead ({dead})" * bool(dead))
        )
        admin = await create_pool(self.dsn, min_size=1, max_size=2)
        try:
            async with admin.acquire() as conn:
                await conn.execute("TRUNCATE deliveries")
                await conn.execute("ANALYZE")
            healthy, dead_id, push_ids = await self.setup_agency(
                admin, agency, hooks=hooks, dead=dead, browsers=browsers
            )
            self.receivers.send(("collect", None))
            self.receivers.recv()  # reset
            enqueue_result: dict[str, Any] | None = None
            if mode == "drain":
                process, pipe = self.start_enqueuer(agency, events, None)
                enqueue_result = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
                process.join()
                async with admin.acquire() as conn:
                    await conn.execute("ANALYZE deliveries")

            TIMINGS.__init__()  # type: ignore[misc]
            clock = SystemClock()
            async with guarded_client(settings) as client:
                channels: list[Channel] = [
                    WebhookChannel(
                        client,
                        timeout=settings.delivery_timeout_seconds,
                        allow_private=settings.webhook_allow_private,
                        allow_http=settings.webhook_allow_http,
                        clock=clock,
                    ),
                    WebPushChannel(
                        client,
                        vapid_signer(settings, clock),
                        clock=clock,
                        timeout=settings.delivery_timeout_seconds,
                        allow_http=settings.push_allow_http,
                    ),
                ]
                pool = await create_pool(
                    self.dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max
                )
                dispatcher = Dispatcher.from_settings(
                    pool, {c.name: TimedChannel(c) for c in channels}, settings
                )
                profiler = cProfile.Profile() if args.profile else None
                load0 = os.getloadavg()[0]
                cpu0, pg0, wall0 = own_cpu(), postgres_ticks(self.postmaster), time.time()
                if profiler is not None:
                    profiler.enable()
                task = asyncio.create_task(dispatcher.run())
                if mode == "paced":
                    process, pipe = self.start_enqueuer(agency, events, args.rate / fanout)
                deadline = time.monotonic() + args.scenario_timeout
                delivered = 0
                while time.monotonic() < deadline:
                    await asyncio.sleep(POLL_SECONDS)
                    async with admin.acquire() as conn:
                        delivered = await conn.fetchval(
                            "SELECT count(*) FROM deliveries WHERE status = 'delivered'"
                            " AND subscription_id = ANY($1::uuid[])",
                            list(healthy),
                        )
                    if delivered >= expected:
                        break
                wall1 = time.time()
                cpu1, pg1 = own_cpu(), postgres_ticks(self.postmaster)
                load = (round(load0, 2), round(os.getloadavg()[0], 2))
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                if profiler is not None:
                    profiler.disable()
                await pool.close()
            if mode == "paced":
                enqueue_result = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
                process.join()
            self.receivers.send(("collect", None))
            received = self.receivers.recv()
            async with admin.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT id, subscription_id, report_id, status, attempts,"
                    " extract(epoch FROM created_at)::float8 AS created,"
                    " extract(epoch FROM delivered_at)::float8 AS delivered"
                    " FROM deliveries"
                )
                dead_state = None
                if dead_id is not None:
                    dead_state = dict(
                        await conn.fetchrow(  # type: ignore[arg-type]
                            "SELECT consecutive_failures, circuit_open_until IS NOT NULL AS open"
                            " FROM subscriptions WHERE id = $1",
                            dead_id,
                        )
                    )
        finally:
            await admin.close()
        return self.summarise(
            name,
            mode=mode,
            hooks=hooks,
            browsers=browsers,
            dead=dead,
            expected=expected,
            rows=rows,
            healthy=healthy,
            dead_id=dead_id,
            dead_state=dead_state,
            push_ids=push_ids,
            received=received,
            enqueue=enqueue_result,
            wall=(wall0, wall1),
            cpu=cpu1 - cpu0,
            pg_seconds=(pg1 - pg0) / os.sysconf("SC_CLK_TCK"),
            profiler=profiler,
            load=load,
        )

    def summarise(
        self,
        name: str,
        *,
        mode: str,
        hooks: int,
        browsers: int,
        dead: str | None,
        expected: int,
        rows: list[asyncpg.Record],
        healthy: set[uuid.UUID],
        dead_id: uuid.UUID | None,
        dead_state: dict[str, Any] | None,
        push_ids: dict[str, uuid.UUID],
        received: dict[str, Any],
        enqueue: dict[str, Any] | None,
        wall: tuple[float, float],
        cpu: float,
        pg_seconds: float,
        profiler: cProfile.Profile | None,
        load: tuple[float, float],
    ) -> dict[str, Any]:
        good = [r for r in rows if r["subscription_id"] in healthy]
        done = [r for r in good if r["status"] == "delivered"]
        latency = [(r["delivered"] - r["created"]) * 1000 for r in done]
        first_created = min((r["created"] for r in good), default=wall[0])
        last_delivered = max((r["delivered"] for r in done), default=wall[1])
        start = first_created if mode == "paced" else wall[0]
        span = max(last_delivered - start, 1e-6)
        created = {str(r["id"]): r["created"] for r in good}
        arrival = [
            (at - created[webhook_id]) * 1000
            for webhook_id, at in received["hook_arrivals"].items()
            if webhook_id in created
        ]
        by_report = {(r["subscription_id"], str(r["report_id"])): r["created"] for r in good}
        push_status: Counter[int] = Counter()
        refusals: Counter[str] = Counter()
        for at, sub_id, status, reason, report in received["pushes"]:
            push_status[status] += 1
            if reason:
                refusals[reason] += 1
            key = (push_ids.get(sub_id), report)
            if status == 201 and key in by_report:
                arrival.append((at - by_report[key]) * 1000)
        result: dict[str, Any] = {
            "scenario": name,
            "mode": mode,
            "webhook_subscriptions": hooks,
            "push_subscriptions": browsers,
            "dead_endpoint": dead,
            "expected_healthy_deliveries": expected,
            "delivered": len(done),
            "attempts_healthy": sum(r["attempts"] for r in good),
            "complete": len(done) >= expected,
            "seconds": round(span, 2),
            "deliveries_per_second": round(len(done) / span, 1),
            "latency_ms": percentiles(latency),
            "receiver_arrival_ms": percentiles(arrival),
            "machine_load_1min_before_after": load,
            "bench_process_cpu_s": round(cpu, 2),
            "bench_cpu_s_per_1000": round(cpu / max(len(done), 1) * 1000, 3),
            "postgres_cpu_s": round(pg_seconds, 2),
            "postgres_cpu_s_per_1000": round(pg_seconds / max(len(done), 1) * 1000, 3),
            "receivers": {
                "hook_statuses": received["hook_statuses"],
                "hook_connections": received["hook_connections"],
                "signatures_verified": received["signatures"],
                "push_statuses": {str(k): v for k, v in push_status.items()},
                "push_refusals": dict(refusals.most_common(3)),
            },
            "enqueue": enqueue,
            "dispatcher_calls": TIMINGS.summary(),
        }
        if dead_id is not None:
            dead_rows = [r for r in rows if r["subscription_id"] == dead_id]
            result["dead"] = {
                "deliveries": len(dead_rows),
                "attempts": sum(r["attempts"] for r in dead_rows),
                "rows_attempted": sum(1 for r in dead_rows if r["attempts"] > 0),
                "answered_503": received["hook_statuses"].get("dead_503", 0),
                "subscription": dead_state,
                "breaker_threshold": self.settings.breaker_threshold,
                "max_in_flight_per_subscription": self.settings.max_in_flight_per_subscription,
            }
        if profiler is not None:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(35)
            result["profile_top"] = out.getvalue().splitlines()[:70]
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
            result["profile_tottime"] = out.getvalue().splitlines()[:60]
        log(
            f"{name}: {result['delivered']}/{expected} delivered, "
            f"{result['deliveries_per_second']}/s, p50 {result['latency_ms']['p50']} ms, "
            f"p99 {result['latency_ms']['p99']} ms, cpu/1000 {result['bench_cpu_s_per_1000']} s"
        )
        return result


async def run(bench: Bench) -> None:
    from notify.api import MIGRATIONS as service_migrations
    from paht_common.db import apply_migrations, create_pool

    assert service_migrations.resolve() == MIGRATIONS.resolve()
    pool = await create_pool(bench.dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, MIGRATIONS)
    finally:
        await pool.close()
    args = bench.args
    hooks = args.receivers * HOOKS_PER_RECEIVER
    plan: list[tuple[str, dict[str, Any]]] = [
        ("webhooks", {"mode": "paced", "hooks": hooks}),
        ("webhooks-dead-refused", {"mode": "paced", "hooks": hooks, "dead": "refused"}),
        ("webhooks-dead-503", {"mode": "paced", "hooks": hooks, "dead": "503"}),
        ("webpush", {"mode": "paced", "browsers": args.browsers}),
    ]
    if not args.no_drain:
        plan += [
            ("webhooks-drain", {"mode": "drain", "hooks": hooks}),
            ("webpush-drain", {"mode": "drain", "browsers": args.browsers}),
        ]
    if args.only:
        plan = [p for p in plan if p[0] in args.only]
    for name, options in plan:
        bench.results.append(await bench.scenario(name, **options))


def table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'scenario':<24}{'mode':<7}{'delivered':>10}{'per s':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'rcv p99':>9}{'cpu/1k':>8}{'pg/1k':>7}{'dead att':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        dead = r.get("dead", {}).get("attempts", "")
        lines.append(
            f"{r['scenario']:<24}{r['mode']:<7}{r['delivered']:>10}"
            f"{r['deliveries_per_second']:>8}{r['latency_ms']['p50'] or '-':>9}"
            f"{r['latency_ms']['p99'] or '-':>9}{r['receiver_arrival_ms']['p99'] or '-':>9}"
            f"{r['bench_cpu_s_per_1000']:>8}{r['postgres_cpu_s_per_1000']:>7}{dead:>9}"
        )
    return "\n".join(lines)


def verdicts(results: list[dict[str, Any]], offered: float) -> dict[str, Any]:
    """The issue's targets: >= 1,000 deliveries/s; healthy p99 within 20 % with a dead one."""
    by = {r["scenario"]: r for r in results}
    out: dict[str, Any] = {"target_deliveries_per_second": TARGET_PER_SECOND}
    for name in ("webhooks", "webpush", "webhooks-drain", "webpush-drain"):
        if name in by:
            rate = by[name]["deliveries_per_second"]
            out[f"{name}_meets_target"] = rate >= TARGET_PER_SECOND
            if by[name]["mode"] == "paced":
                out[f"{name}_kept_up_with_offered_{offered:g}"] = rate >= offered * 0.98
    base = by.get("webhooks", {}).get("latency_ms", {}).get("p99")
    for name in ("webhooks-dead-refused", "webhooks-dead-503"):
        if name in by and base:
            p99 = by[name]["latency_ms"]["p99"]
            out[f"{name}_healthy_p99_vs_baseline"] = round(p99 / base, 2) if p99 else None
            out[f"{name}_within_20_percent"] = bool(p99 and p99 <= base * 1.2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=20_000, help="per scenario")
    parser.add_argument(
        "--drain-deliveries", type=int, default=20_000, help="backlog of the drain scenarios"
    )
    parser.add_argument("--rate", type=float, default=1_000.0, help="offered deliveries/s")
    parser.add_argument("--receivers", type=int, default=4, help="webhook receivers (x5 subs)")
    parser.add_argument("--browsers", type=int, default=20, help="Web Push subscriptions")
    parser.add_argument("--scenario-timeout", type=float, default=75.0)
    parser.add_argument("--no-drain", action="store_true", help="skip the backlog scenarios")
    parser.add_argument("--only", nargs="*", help="run only these scenarios")
    parser.add_argument("--profile", action="store_true", help="cProfile the dispatcher")
    parser.add_argument("--log-level", default="INFO", help="dispatcher logging (to /dev/null)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from cryptography.hazmat.primitives.asymmetric import ec

    from notify.settings import NotifySettings
    from notify.vapid import private_pem
    from paht_common.logging import configure_logging
    from paht_devenv.postgres import PostgresServer
    from paht_devenv.procs import free_port

    # as python -m notify logs, to a sink: each delivery's INFO line is part of its cost
    configure_logging("notify", args.log_level)
    sink = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the run
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sink)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    instrument()

    state = Path(tempfile.mkdtemp(prefix="paht-bench-notify-"))
    server = PostgresServer(data_dir=state / "pg", port=free_port(), log_file=state / "pg.log")
    mp = multiprocessing.get_context("spawn")
    parent, child = mp.Pipe()
    receivers = mp.Process(target=receivers_main, args=(child, args.receivers), daemon=True)
    started = time.time()
    try:
        log(f"starting PostgreSQL in {state}")
        with contextlib.redirect_stdout(sys.stderr):
            server.start()
        postmaster = int((state / "pg" / "postmaster.pid").read_text().split()[0])
        receivers.start()
        ready = parent.recv()
        log(f"receivers on {ready['hook_ports']}, push service at {ready['push_origin']}")
        settings = NotifySettings(
            database_url=server.dsn,
            webhook_allow_private=True,
            webhook_allow_http=True,
            push_allow_http=True,
            vapid_private_key=private_pem(ec.generate_private_key(ec.SECP256R1())),
        )
        bench = Bench(
            dsn=server.dsn,
            postmaster=postmaster,
            receivers=parent,
            hook_ports=ready["hook_ports"],
            push_origin=ready["push_origin"],
            settings=settings,
            args=args,
            mp=mp,
        )
        asyncio.run(run(bench))
        parent.send(("stop", None))
        receivers.join(10)
    finally:
        if receivers.is_alive():
            receivers.terminate()
        with contextlib.redirect_stdout(sys.stderr):
            server.stop(mode="immediate")
        shutil.rmtree(state, ignore_errors=True)
        sink.close()
    report = {
        "benchmark": "notify dispatcher: deliveries/s and enqueue -> delivered latency",
        "command": " ".join(["uv run --frozen python bench/bench_notify.py", *sys.argv[1:]]),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "seconds": round(time.time() - started, 1),
        "settings": {
            "max_in_flight": settings.max_in_flight,
            "max_in_flight_per_subscription": settings.max_in_flight_per_subscription,
            "dispatcher_batch_size": settings.dispatcher_batch_size,
            "db_pool_max": settings.db_pool_max,
            "breaker_threshold": settings.breaker_threshold,
            "breaker_probe_seconds": settings.breaker_probe_seconds,
            "retry_schedule_seconds": list(settings.retry_schedule_seconds),
            "log_level": args.log_level,
        },
        "offered_rate": args.rate,
        "enqueue": "handlers.handle_event with SlaThresholdReached (breach) events, one "
        "transaction each, in a separate process",
        "verdicts": verdicts(bench.results, args.rate),
        "scenarios": bench.results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    sys.stdout.write(table(bench.results) + "\n")
    sys.stdout.write(json.dumps(report["verdicts"], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
