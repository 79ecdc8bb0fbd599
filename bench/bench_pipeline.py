"""End-to-end pipeline throughput: open-loop POST /v1/reports → signed report.assigned webhook.

    uv run --frozen python bench/bench_pipeline.py --rate 50 --seconds 30 [--drain 120]
    uv run --frozen python bench/bench_pipeline.py --attach ...   # a running `make run` system
    make bench-e2e RATE=50 SECONDS=30

Starts the whole system in a throwaway environment (PostgreSQL, Kafka and the four services
as processes, free ports; Prometheus not needed), or with ``--attach`` uses a running
``make run`` system (ports from the ``PAHT_*`` variables or the defaults). Registers a
Standard Webhooks receiver for agency ubnd-07627 (the demo seed routes
URBAN_ORDER.ENCROACHMENT in commune 07627 there), sends a few warm-up reports, then drives
an open-loop generator: report i's POST starts at ``i / rate`` seconds whatever earlier
answers took (raw asyncio HTTP/1.1 keep-alive connections, opened as needed, so the
generator is never the bottleneck). Each report is timed from its POST start to the first
verified ``report.assigned`` webhook naming it, until every accepted report has arrived or
``--drain`` seconds after the last POST have passed.

Every second it samples consumer-group lag per group and topic (committed offsets against
end offsets), each service database's outbox backlog (and notify's pending deliveries), and
the CPU time of each service's process tree, the Kafka broker, every PostgreSQL process and
this process (generator, webhook receiver and sampler: one process). The CPU of a process
per report counts from the first measured POST to the last arrival (or the drain timeout),
minus its idle rate measured for a few seconds before the load. After the run the outbox
and delivery timestamps in the databases give the median time spent in each stage.

Prints a progress line every few seconds and a summary table; writes
bench/results/pipeline-<rate>.json with the summary and the per-second series.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import random
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvloop
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from standardwebhooks import Webhook

from paht_devenv.environment import (
    DEV_API_KEY,
    DEV_NOTIFY_ADMIN_TOKEN,
    SERVICES,
    Environment,
    local_environment,
    throwaway_environment,
)

AGENCY = "ubnd-07627"
CATEGORY = "URBAN_ORDER.ENCROACHMENT"
COMMUNE = "07627"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
TICKS = os.sysconf("SC_CLK_TCK")
GENERATOR = "bench generator+receiver"
SAMPLER = "bench sampler (thread)"
ACCEPTED = (200, 201, 202)


def log(message: str) -> None:
    sys.stderr.write(f"[bench-e2e] {message}\n")
    sys.stderr.flush()


# --- the system under test ------------------------------------------------------------------


@dataclass
class Target:
    """Where the system listens and which processes are its own."""

    intake_url: str
    notify_url: str
    bootstrap: str
    database_urls: dict[str, str]
    api_key: str
    admin_token: str
    env: Environment

    def roots(self) -> dict[str, int]:
        """Root pid of each component whose CPU we count (process trees)."""
        roots: dict[str, int] = {}
        for name in SERVICES:
            pid = self.env.service(name).pid()
            if pid is not None:
                roots[name] = pid
        kafka = self.env.kafka.process().pid()
        if kafka is not None:
            roots["kafka"] = kafka
        with contextlib.suppress(OSError, ValueError, IndexError):
            pm = self.env.postgres.data_dir / "postmaster.pid"
            roots["postgres"] = int(pm.read_text().splitlines()[0])
        roots[GENERATOR] = os.getpid()
        return roots


def target_of(env: Environment) -> Target:
    return Target(
        intake_url=f"http://127.0.0.1:{env.ports.services['intake']}",
        notify_url=f"http://127.0.0.1:{env.ports.services['notify']}",
        bootstrap=env.kafka.bootstrap,
        database_urls={name: env.database_url(name) for name in SERVICES},
        api_key=os.environ.get("PAHT_DEV_API_KEY", DEV_API_KEY),
        admin_token=os.environ.get("PAHT_NOTIFY_ADMIN_TOKEN", DEV_NOTIFY_ADMIN_TOKEN),
        env=env,
    )


@contextlib.contextmanager
def system(attach: bool) -> Iterator[Target]:
    """A running system: the developer's (attach) or a throwaway one stopped afterwards."""
    if attach:
        yield target_of(local_environment())
        return
    with throwaway_environment("paht-bench-pipeline-", with_prometheus=False) as env:
        log(f"starting PostgreSQL, Kafka and the four services in {env.state_dir}")
        began = time.monotonic()
        with contextlib.redirect_stdout(sys.stderr):
            env.start_all()
        log(f"system up in {time.monotonic() - began:.0f} s")
        yield target_of(env)


# --- CPU from /proc -------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime+cutime+cstime ticks) for every process."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))
    return table


def tree_ticks(roots: dict[str, int]) -> dict[str, int]:
    """CPU ticks of each root's process tree (live processes plus reaped children)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    others = set(roots.values())
    out: dict[str, int] = {}
    for name, root in roots.items():
        total, stack = 0, [root]
        while stack:
            pid = stack.pop()
            if pid in table:
                total += table[pid][1]
                # another component's tree is its own (the services are our children when
                # this process started them)
                stack.extend(c for c in children.get(pid, ()) if c not in others)
        out[name] = total
    return out


def thread_ticks(tid: int) -> int:
    """CPU ticks of one thread of this process."""
    try:
        raw = Path(f"/proc/self/task/{tid}/stat").read_bytes()
    except OSError:
        return 0
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks of the whole machine."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    return sum(ticks) - idle, sum(ticks)


@dataclass
class CpuReading:
    wall: float
    procs: dict[str, int]
    busy: int
    total: int

    @classmethod
    def take(cls, roots: dict[str, int], sampler_tid: int | None = None) -> CpuReading:
        """Counters now; the sampler thread's CPU is split off this process's."""
        busy, total = machine_ticks()
        procs = tree_ticks(roots)
        if sampler_tid is not None:
            sampler = thread_ticks(sampler_tid)
            procs[GENERATOR] = procs.get(GENERATOR, 0) - sampler
            procs[SAMPLER] = sampler
        return cls(time.perf_counter(), procs, busy, total)

    def core_percent(self, earlier: CpuReading) -> dict[str, float]:
        """Percent of one core each component used since ``earlier``."""
        wall = max(self.wall - earlier.wall, 1e-6)
        return {
            name: round(max(ticks - earlier.procs.get(name, ticks), 0) * 100 / TICKS / wall, 1)
            for name, ticks in self.procs.items()
        }

    def machine_percent(self, earlier: CpuReading) -> float:
        """Busy percent of all cores since ``earlier``."""
        return round(100 * (self.busy - earlier.busy) / max(self.total - earlier.total, 1), 1)


# --- the load generator -------------------------------------------------------------------


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (Content-Length bodies)."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.last_used = time.monotonic()

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        lines = [f"POST {path} HTTP/1.1", f"Host: {self._host}:{self._port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError("response without Content-Length")
        answer = await reader.readexactly(length)
        self.last_used = time.monotonic()
        return int(head[9:12]), answer

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class ConnectionPool:
    """Idle keep-alive connections; a new one whenever none is idle (up to ``limit``)."""

    KEEP_ALIVE = 3.0
    """Seconds a connection may sit idle before it is reopened (uvicorn closes at 5)."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self._host, self._port, self._limit = host, port, limit
        self._idle: asyncio.Queue[RawConnection] = asyncio.Queue()
        self.opened = 0

    async def acquire(self) -> RawConnection:
        if self._idle.empty() and self.opened < self._limit:
            self.opened += 1
            return RawConnection(self._host, self._port)
        conn = await self._idle.get()
        if time.monotonic() - conn.last_used > self.KEEP_ALIVE:
            conn.close()  # the server may have closed it: reconnect rather than fail
        return conn

    def release(self, conn: RawConnection, *, broken: bool) -> None:
        if broken:
            conn.close()
        self._idle.put_nowait(conn)

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()


@dataclass
class Sent:
    """One measured report."""

    index: int
    scheduled: float
    started: float
    started_wall: float
    post_seconds: float | None = None
    status: int | None = None
    report_id: str | None = None
    error: str | None = None


@dataclass
class Receiver:
    """Webhook receiver: verifies signatures, records first arrival per report."""

    verifier: Webhook
    arrived: dict[str, float] = field(default_factory=dict)
    webhook_ids: dict[str, int] = field(default_factory=dict)
    ids_per_report: dict[str, set[str]] = field(default_factory=dict)
    by_type: dict[str, int] = field(default_factory=dict)
    bad_signatures: int = 0
    received: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.perf_counter()
        self.received += 1
        try:
            self.verifier.verify(body, dict(request.headers))
        except Exception:  # any verification failure: count it, answer 400
            self.bad_signatures += 1
            return web.Response(status=400)
        document = json.loads(body)
        kind = str(document.get("type"))
        self.by_type[kind] = self.by_type.get(kind, 0) + 1
        if kind != "report.assigned":
            return web.Response(status=204)
        webhook_id = request.headers.get("webhook-id", "")
        self.webhook_ids[webhook_id] = self.webhook_ids.get(webhook_id, 0) + 1
        report_id = str(document["data"]["report_id"])
        self.ids_per_report.setdefault(report_id, set()).add(webhook_id)
        self.arrived.setdefault(report_id, now)
        self.wake.set()
        return web.Response(status=204)


# --- lag and backlog ------------------------------------------------------------------------


class LagProbe:
    """Committed offsets of every consumer group against the topics' end offsets."""

    def __init__(self, bootstrap: str) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._partitions: dict[str, list[int]] = {}

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._consumer.stop()
        with contextlib.suppress(Exception):
            await self._admin.close()

    async def _partitions_of(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            described = await self._admin.describe_topics([topic])
            found = [
                int(p["partition"])
                for t in described
                if t.get("topic") == topic
                for p in t.get("partitions", ())
            ]
            if not found:
                return []
            self._partitions[topic] = sorted(found)
        return self._partitions[topic]

    async def sample(self) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
        """(group -> topic -> lag (records not yet committed), topic -> end offsets)."""
        groups = [g[0] for g in await self._admin.list_consumer_groups()]
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in sorted(groups):
            offsets = await self._admin.list_consumer_group_offsets(group)
            committed[group] = {tp: om.offset for tp, om in offsets.items()}
        wanted: set[TopicPartition] = set()
        for offsets in committed.values():
            for topic in {tp.topic for tp in offsets}:
                wanted.update(TopicPartition(topic, p) for p in await self._partitions_of(topic))
        ends = await self._consumer.end_offsets(list(wanted)) if wanted else {}
        lag: dict[str, dict[str, int]] = {}
        for group, offsets in committed.items():
            per_topic: dict[str, int] = {}
            for tp, end in ends.items():
                if tp.topic not in {t.topic for t in offsets}:
                    continue
                done = max(offsets.get(tp, 0), 0)
                per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(end - done, 0)
            lag[group] = per_topic
        records: dict[str, int] = {}
        for tp, end in ends.items():
            records[tp.topic] = records.get(tp.topic, 0) + end
        return lag, records


class BacklogProbe:
    """Unpublished outbox rows per service database, and notify's pending deliveries."""

    def __init__(self, database_urls: dict[str, str]) -> None:
        self._urls = database_urls
        self._conns: dict[str, asyncpg.Connection] = {}

    async def start(self) -> None:
        for name, url in self._urls.items():
            self._conns[name] = await asyncpg.connect(url)

    async def stop(self) -> None:
        for conn in self._conns.values():
            with contextlib.suppress(Exception):
                await conn.close()

    async def sample(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, conn in self._conns.items():
            out[f"{name}_outbox"] = int(
                await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            )
        if "notify" in self._conns:
            out["notify_pending_deliveries"] = int(
                await self._conns["notify"].fetchval(
                    "SELECT count(*) FROM deliveries WHERE status = 'pending'"
                )
            )
        return out


# --- statistics -----------------------------------------------------------------------------


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of a sorted list (None when empty)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 1)


def spread(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max in ms."""
    ordered = sorted(values)
    return {
        "p50_ms": ms(percentile(ordered, 0.50)),
        "p90_ms": ms(percentile(ordered, 0.90)),
        "p99_ms": ms(percentile(ordered, 0.99)),
        "max_ms": ms(ordered[-1] if ordered else None),
    }


# --- stage breakdown from the databases -----------------------------------------------------

OUTBOX_TIMES = """
SELECT DISTINCT ON (key) convert_from(key, 'UTF8') AS report_id,
       extract(epoch FROM created_at) AS created,
       extract(epoch FROM published_at) AS published
FROM outbox
WHERE key = ANY($1::bytea[]) AND headers->>'ce_type' LIKE $2
ORDER BY key, id DESC
"""
"""The latest such event of each report: sla writes clocks_changed on report.submitted and
again on report.routed; the second one is what notify turns into report.assigned."""

DELIVERY_TIMES = """
SELECT report_id::text AS report_id,
       min(extract(epoch FROM created_at)) AS created,
       min(extract(epoch FROM delivered_at)) AS delivered
FROM deliveries
WHERE subscription_id = $1 AND event_type = 'report.assigned' AND report_id = ANY($2::uuid[])
GROUP BY 1
"""


async def stage_breakdown(
    target: Target, subscription_id: str, sent: list[Sent], arrived: dict[str, float]
) -> dict[str, Any]:
    """Median/p90 of each hop, from the outbox and delivery timestamps (server clock).

    created_at is now() of the writing transaction, i.e. when it began; published_at is
    now() of the relay's transaction, i.e. when it claimed the row (before sending it);
    arrival is this process's clock mapped to wall time.
    """
    done = [s for s in sent if s.report_id and s.report_id in arrived]
    if not done:
        return {}
    keys = [s.report_id.encode() for s in done if s.report_id]
    ids = [uuid.UUID(s.report_id) for s in done if s.report_id]
    points: dict[str, dict[str, float]] = {s.report_id: {} for s in done if s.report_id}
    for s in done:
        assert s.report_id is not None
        points[s.report_id]["post"] = s.started_wall
        points[s.report_id]["webhook"] = s.started_wall + (arrived[s.report_id] - s.started)
    hops = (
        ("intake", "%.report.submitted.%", "submitted"),
        ("routing", "%.report.routed.%", "routed"),
        ("sla", "%.sla.clocks_changed.%", "clocks"),
    )
    for service, pattern, name in hops:
        conn = await asyncpg.connect(target.database_urls[service])
        try:
            for row in await conn.fetch(OUTBOX_TIMES, keys, pattern):
                p = points.get(row["report_id"])
                if p is not None and row["created"] is not None:
                    p[f"{name}_written"] = float(row["created"])
                    if row["published"] is not None:
                        p[f"{name}_published"] = float(row["published"])
        finally:
            await conn.close()
    conn = await asyncpg.connect(target.database_urls["notify"])
    try:
        for row in await conn.fetch(DELIVERY_TIMES, uuid.UUID(subscription_id), ids):
            p = points.get(row["report_id"])
            if p is not None and row["created"] is not None:
                p["delivery_queued"] = float(row["created"])
    finally:
        await conn.close()
    order = [
        "post",
        "submitted_written",
        "submitted_published",
        "routed_written",
        "routed_published",
        "clocks_written",
        "clocks_published",
        "delivery_queued",
        "webhook",
    ]
    labels = {
        "submitted_written": "POST → intake tx (report.submitted)",
        "submitted_published": "intake outbox wait → relay claims",
        "routed_written": "relay send + Kafka + routing queue → routing tx",
        "routed_published": "routing outbox wait → relay claims",
        "clocks_written": "relay send + Kafka + sla queue → sla tx",
        "clocks_published": "sla outbox wait → relay claims",
        "delivery_queued": "relay send + Kafka + notify queue → notify tx",
        "webhook": "notify tx → webhook received (dispatcher)",
    }
    out: dict[str, Any] = {}
    for before, after in zip(order, order[1:], strict=False):
        deltas = [p[after] - p[before] for p in points.values() if before in p and after in p]
        out[labels[after]] = {"reports": len(deltas), **spread(deltas)}
    return out


# --- the run --------------------------------------------------------------------------------


def report_body(run: str, i: int, rng: random.Random) -> bytes:
    body = {
        "category": CATEGORY,
        "description": f"Lấn chiếm vỉa hè, đo tải {run} số {i}",
        "location": {
            "commune_code": COMMUNE,
            "lat": round(21.18 + rng.uniform(-0.02, 0.02), 6),
            "lon": round(106.07 + rng.uniform(-0.02, 0.02), 6),
        },
    }
    return json.dumps(body, ensure_ascii=False).encode()


async def wait_for(predicate: Callable[[], bool], wake: asyncio.Event, within: float) -> bool:
    """Wait until ``predicate()`` holds (re-checked on each ``wake``) or ``within`` s pass."""
    deadline = time.perf_counter() + within
    while not predicate():
        left = deadline - time.perf_counter()
        if left <= 0:
            return False
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=min(left, 1.0))
    return True


class Sampler(threading.Thread):
    """Samples CPU, lag and backlog every second in a thread with its own event loop, so
    its cost is measured apart from the generator's and never delays a POST."""

    def __init__(
        self,
        target: Target,
        roots: dict[str, int],
        origin: float,
        progress: Callable[[], dict[str, Any]],
        every: int,
    ) -> None:
        super().__init__(name="sampler", daemon=True)
        self.target, self.roots, self.origin = target, roots, origin
        self.progress, self.every = progress, every
        self.series: list[dict[str, Any]] = []
        self.tid: int | None = None
        self.started = threading.Event()
        self.halt = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        self.tid = threading.get_native_id()
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.failure = exc
        finally:
            self.started.set()

    async def _main(self) -> None:
        lag_probe = LagProbe(self.target.bootstrap)
        backlog_probe = BacklogProbe(self.target.database_urls)
        await lag_probe.start()
        await backlog_probe.start()
        self.started.set()
        try:
            previous = CpuReading.take(self.roots, self.tid)
            tick = 0
            while not self.halt.is_set():
                await asyncio.sleep(max(0.0, self.origin + tick - time.perf_counter()))
                previous = await self._sample(tick, previous, lag_probe, backlog_probe)
                tick += 1
        finally:
            await lag_probe.stop()
            await backlog_probe.stop()

    async def _sample(
        self, tick: int, previous: CpuReading, lag_probe: LagProbe, backlog_probe: BacklogProbe
    ) -> CpuReading:
        reading = CpuReading.take(self.roots, self.tid)
        lag: dict[str, dict[str, int]] | None
        records: dict[str, int] | None
        try:
            lag, records = await asyncio.wait_for(lag_probe.sample(), 5)
        except Exception as exc:  # noqa: BLE001 - a rebalance or a slow broker: keep going
            lag = records = None
            log(f"lag probe: {exc!r}")
        backlog: dict[str, int] | None
        try:
            backlog = await asyncio.wait_for(backlog_probe.sample(), 5)
        except Exception as exc:  # noqa: BLE001 - report and keep going
            backlog = None
            log(f"backlog probe: {exc!r}")
        cpu = reading.core_percent(previous)
        point: dict[str, Any] = {
            "t": round(reading.wall - self.origin, 2),
            **self.progress(),
            "lag": lag,
            "topic_end_offsets": records,
            "backlog": backlog,
            "cpu_percent_of_one_core": cpu,
            "machine_busy_percent": reading.machine_percent(previous),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        self.series.append(point)
        if tick % self.every == 0 and tick:
            lag_total = {g: sum(t.values()) for g, t in (lag or {}).items()}
            log(
                f"t={point['t']:4.0f}s {point['phase']:5} sent={point['sent']} "
                f"accepted={point['accepted']} delivered={point['delivered']} "
                f"lag={lag_total} backlog={backlog} "
                f"cpu%={{{', '.join(f'{k}: {v:.0f}' for k, v in cpu.items())}}} "
                f"machine={point['machine_busy_percent']:.0f}%"
            )
        return reading


async def measure(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Register the receiver, warm up, measure idle CPU, run the open loop and drain."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    receiver = Receiver(Webhook(secret))
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    hook_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    admin = {"Authorization": f"Bearer {target.admin_token}"}
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{target.notify_url}/v1/subscriptions",
            headers=admin,
            json={
                "agency_id": AGENCY,
                "channel": "webhook",
                "url": f"http://127.0.0.1:{hook_port}/hook",
                "secret": secret,
            },
        )
        response.raise_for_status()
        subscription_id = str(response.json()["id"])
    intake_port = int(target.intake_url.rsplit(":", 1)[1])
    pool = ConnectionPool("127.0.0.1", intake_port, args.connections)
    try:
        return await _measure(target, args, receiver, pool, subscription_id)
    finally:
        pool.close()
        async with httpx.AsyncClient(timeout=30) as client:
            with contextlib.suppress(httpx.HTTPError):
                await client.delete(
                    f"{target.notify_url}/v1/subscriptions/{subscription_id}", headers=admin
                )
        await runner.cleanup()


async def _measure(
    target: Target,
    args: argparse.Namespace,
    receiver: Receiver,
    pool: ConnectionPool,
    subscription_id: str,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    headers = {"X-API-Key": target.api_key, "Content-Type": "application/json"}
    run = uuid.uuid4().hex[:8]
    rng = random.Random(run)

    async def post(i: int, scheduled: float, into: list[Sent]) -> None:
        began = time.perf_counter()
        record = Sent(index=i, scheduled=scheduled, started=began, started_wall=time.time())
        into.append(record)
        body = report_body(run, i, rng)
        conn = await pool.acquire()
        broken = True
        try:
            async with asyncio.timeout(args.post_timeout):
                status, answer = await conn.post(
                    "/v1/reports", body, {**headers, "Idempotency-Key": str(uuid.uuid4())}
                )
            broken = False
            record.status = status
            record.post_seconds = time.perf_counter() - began
            if status in ACCEPTED:
                record.report_id = str(json.loads(answer)["id"])
        except (OSError, asyncio.IncompleteReadError, RuntimeError, TimeoutError) as exc:
            record.error = type(exc).__name__
        except (ValueError, KeyError) as exc:  # an answer without a report id
            record.error = f"bad answer: {type(exc).__name__}"
        finally:
            pool.release(conn, broken=broken)

    # warm-up: connections, consumer fetch sessions, a committed offset on most partitions
    log(f"warm-up: {args.warmup} reports")
    warm: list[Sent] = []
    await asyncio.gather(*(post(-1 - i, 0.0, warm) for i in range(args.warmup)))
    warm_ids = {s.report_id for s in warm if s.report_id}
    if not await wait_for(lambda: warm_ids <= receiver.arrived.keys(), receiver.wake, 90):
        log(f"warm-up: only {len(warm_ids & receiver.arrived.keys())} of {len(warm_ids)} arrived")

    sent: list[Sent] = []
    total = int(args.rate * args.seconds)
    phase = ["idle"]

    def progress() -> dict[str, Any]:
        return {
            "phase": phase[0],
            "sent": len(sent),
            "accepted": sum(1 for s in sent if s.report_id),
            "delivered": sum(1 for s in sent if s.report_id and s.report_id in receiver.arrived),
        }

    roots = target.roots()
    missing = [n for n in (*SERVICES, "kafka", "postgres") if n not in roots]
    if missing:
        log(f"no pid found for {missing}: their CPU is not counted")
    origin_perf = time.perf_counter() + args.idle + 1.0
    sampler = Sampler(target, roots, origin_perf, progress, args.progress)
    sampler.start()
    sampler.started.wait(30)
    if sampler.failure is not None:
        raise RuntimeError("the sampler could not start") from sampler.failure
    log(f"idle baseline: {args.idle:g} s")
    idle_start = CpuReading.take(roots, sampler.tid)
    await asyncio.sleep(args.idle)
    idle_end = CpuReading.take(roots, sampler.tid)
    idle_percent = idle_end.core_percent(idle_start)

    origin = loop.time() + (origin_perf - time.perf_counter())
    load_avg_start = os.getloadavg()
    log(f"open loop: {args.rate:g}/s for {args.seconds:g} s ({total} reports)")
    tasks: list[asyncio.Task[None]] = []
    lateness: list[float] = []
    delay = origin - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
    phase[0] = "load"
    cpu_start = CpuReading.take(roots, sampler.tid)
    for i in range(total):
        scheduled = origin + i / args.rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness.append(loop.time() - scheduled)
        tasks.append(asyncio.create_task(post(i, scheduled, sent)))
    sending_seconds = time.perf_counter() - origin_perf
    if tasks:
        await asyncio.wait(tasks, timeout=args.post_timeout + 5)
    phase[0] = "drain"
    drain_start = time.perf_counter()
    ids = {s.report_id for s in sent if s.report_id}
    complete = await wait_for(lambda: ids <= receiver.arrived.keys(), receiver.wake, args.drain)
    cpu_end = CpuReading.take(roots, sampler.tid)
    drained_seconds = time.perf_counter() - drain_start
    load_avg_end = os.getloadavg()
    last = time.perf_counter()
    if complete and ids:
        last = max(receiver.arrived[i] for i in ids if i)
    sampler.halt.set()
    await asyncio.to_thread(sampler.join, 10)
    series = sampler.series

    # --- figures ---
    ok = [s for s in sent if s.report_id]
    delivered = [s for s in ok if s.report_id in receiver.arrived]
    e2e = [receiver.arrived[s.report_id] - s.started for s in delivered if s.report_id]
    post_latency = [s.post_seconds for s in sent if s.post_seconds is not None]
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    for s in sent:
        if s.status is not None:
            statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
        if s.error is not None:
            errors[s.error] = errors.get(s.error, 0) + 1
    measured_ids = {s.report_id for s in ok}
    # the same webhook-id (one delivery) received again
    duplicate_webhooks = sum(n - 1 for n in receiver.webhook_ids.values() if n > 1)
    # a second delivery (another webhook-id) for one report
    extra_deliveries = sum(
        len(w) - 1 for r, w in receiver.ids_per_report.items() if r in measured_ids and len(w) > 1
    )
    # CPU from the first POST to the last arrival (or the drain timeout), net of idle
    window = max(cpu_end.wall - cpu_start.wall, 1e-6)
    n = max(len(ok), 1)
    cpu_ms_net: dict[str, float] = {}
    cpu_ms_gross: dict[str, float] = {}
    for name, ticks in cpu_end.procs.items():
        used = (ticks - cpu_start.procs.get(name, ticks)) / TICKS
        idle = idle_percent.get(name, 0.0) / 100 * window
        cpu_ms_gross[name] = round(1000 * used / n, 2)
        cpu_ms_net[name] = round(1000 * max(used - idle, 0.0) / n, 2)
    ours = sum(t - cpu_start.procs.get(k, t) for k, t in cpu_end.procs.items()) / TICKS
    machine_busy_seconds = (cpu_end.busy - cpu_start.busy) / TICKS
    max_lag: dict[str, int] = {}
    max_lag_topic: dict[str, dict[str, int]] = {}
    max_backlog: dict[str, int] = {}
    for point in series:
        for group, topics in (point["lag"] or {}).items():
            max_lag[group] = max(max_lag.get(group, 0), sum(topics.values()))
            for topic, lag in topics.items():
                per = max_lag_topic.setdefault(group, {})
                per[topic] = max(per.get(topic, 0), lag)
        for name, count in (point["backlog"] or {}).items():
            max_backlog[name] = max(max_backlog.get(name, 0), count)
    ends = [p["topic_end_offsets"] for p in series if p["topic_end_offsets"]]
    records_per_report: dict[str, float] = {}
    if len(ends) >= 2:
        for topic, end in ends[-1].items():
            records_per_report[topic] = round((end - ends[0].get(topic, end)) / n, 2)
    stages = await stage_breakdown(target, subscription_id, sent, receiver.arrived)
    delivered_per_second = None
    if len(delivered) >= 2:
        first = min(receiver.arrived[s.report_id] for s in delivered if s.report_id)
        final = max(receiver.arrived[s.report_id] for s in delivered if s.report_id)
        delivered_per_second = round(len(delivered) / max(final - first, 1e-6), 1)
    return {
        "target_rate_per_second": args.rate,
        "seconds": args.seconds,
        "scheduled": total,
        "sent_in_seconds": round(sending_seconds, 2),
        "generator_lateness": spread(lateness),
        "connections_opened": pool.opened,
        "accepted": len(ok),
        "statuses": statuses,
        "client_errors": errors,
        "delivered_distinct_reports": len(delivered),
        "lost_after_drain": len(ok) - len(delivered),
        "duplicate_webhooks_same_id": duplicate_webhooks,
        "extra_deliveries_other_id": extra_deliveries,
        "webhooks_received": receiver.received,
        "webhooks_by_type": receiver.by_type,
        "bad_signatures": receiver.bad_signatures,
        "drain_complete": complete,
        "drain_seconds": round(drained_seconds, 2),
        "delivered_per_second": delivered_per_second,
        "post_latency": spread(post_latency),
        "submit_to_webhook": spread(e2e),
        "max_lag_per_group": max_lag,
        "max_lag_per_group_topic": max_lag_topic,
        "max_backlog": max_backlog,
        "kafka_records_per_report": records_per_report,
        "cpu_window_seconds": round(window, 2),
        "cpu_window_end_to_last_arrival_seconds": round(cpu_end.wall - last, 2),
        "idle_cpu_percent_of_one_core": idle_percent,
        "cpu_ms_per_report_net_of_idle": cpu_ms_net,
        "cpu_ms_per_report_gross": cpu_ms_gross,
        "cpu_ours_seconds": round(ours, 1),
        "machine_busy_seconds_all_cores": round(machine_busy_seconds, 1),
        "machine_busy_percent": cpu_end.machine_percent(cpu_start),
        "other_processes_cpu_seconds": round(machine_busy_seconds - ours, 1),
        "stages": stages,
        "loadavg_start": [round(v, 2) for v in load_avg_start],
        "loadavg_end": [round(v, 2) for v in load_avg_end],
        "series": series,
    }


def table(result: dict[str, Any]) -> str:
    """The summary as aligned text."""

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"

    post, e2e = result["post_latency"], result["submit_to_webhook"]
    rows = [
        f"rate {result['target_rate_per_second']:g}/s for {result['seconds']:g} s: "
        f"scheduled {result['scheduled']}, accepted {result['accepted']}, "
        f"delivered {result['delivered_distinct_reports']}, "
        f"lost {result['lost_after_drain']}, duplicates {result['duplicate_webhooks_same_id']} "
        f"(+{result['extra_deliveries_other_id']} extra deliveries), "
        f"bad signatures {result['bad_signatures']}",
        f"statuses {result['statuses']} errors {result['client_errors']}; "
        f"drain {'complete' if result['drain_complete'] else 'TIMED OUT'} after "
        f"{result['drain_seconds']} s; delivered {result['delivered_per_second']}/s",
        f"POST ms          p50 {fmt(post['p50_ms'])}  p99 {fmt(post['p99_ms'])}  "
        f"max {fmt(post['max_ms'])}",
        f"submit→webhook ms p50 {fmt(e2e['p50_ms'])}  p90 {fmt(e2e['p90_ms'])}  "
        f"p99 {fmt(e2e['p99_ms'])}  max {fmt(e2e['max_ms'])}",
        f"max lag per group {result['max_lag_per_group']}",
        f"max backlog {result['max_backlog']}",
        f"Kafka records per report {result['kafka_records_per_report']}",
        "CPU ms per report (net of idle / gross), idle % of a core:",
    ]
    for name, net in result["cpu_ms_per_report_net_of_idle"].items():
        rows.append(
            f"    {name:28} {fmt(net):>8} / {fmt(result['cpu_ms_per_report_gross'][name]):>8}"
            f"   idle {result['idle_cpu_percent_of_one_core'].get(name, 0):.1f}%"
        )
    rows.append(
        f"machine busy {result['machine_busy_percent']}% of all cores over the window; "
        f"other processes used {result['other_processes_cpu_seconds']} CPU s "
        f"(ours {result['cpu_ours_seconds']})"
    )
    if result["stages"]:
        rows.append("stage (median / p90 ms):")
        for name, s in result["stages"].items():
            rows.append(f"    {name:50} {fmt(s['p50_ms']):>8} / {fmt(s['p90_ms']):>8}")
    rows.append(f"loadavg start {result['loadavg_start']} end {result['loadavg_end']}")
    return "\n".join(rows)


def code_version() -> dict[str, Any]:
    """The commit measured and whether services/, libs/ or deploy/ had uncommitted changes."""
    root = Path(__file__).resolve().parents[1]

    def git(*argv: str) -> str:
        result = subprocess.run(  # noqa: S603
            ["git", *argv],  # noqa: S607
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.strip()

    changed = git("status", "--porcelain", "--", "services", "libs", "deploy").splitlines()
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_in_services_libs_deploy": changed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="reports per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to send")
    parser.add_argument("--drain", type=float, default=120.0, help="wait for webhooks (s)")
    parser.add_argument("--attach", action="store_true", help="use a running `make run` system")
    parser.add_argument("--connections", type=int, default=256, help="most HTTP connections")
    parser.add_argument("--post-timeout", type=float, default=30.0)
    parser.add_argument("--warmup", type=int, default=10, help="reports before measuring")
    parser.add_argument("--idle", type=float, default=5.0, help="idle CPU baseline (s)")
    parser.add_argument("--progress", type=int, default=5, help="progress line every N s")
    parser.add_argument("--output", type=Path, help="default bench/results/pipeline-<rate>.json")
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be positive")
    load_avg = os.getloadavg()
    log(f"loadavg at start {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")
    code = code_version()  # before the run: others may commit while it goes
    with system(args.attach) as target:
        result = uvloop.run(measure(target, args))
    output = args.output or RESULTS_DIR / f"pipeline-{args.rate:g}.json"
    document = {
        "benchmark": "pipeline: open-loop POST /v1/reports → verified report.assigned webhook",
        "command": " ".join(["uv run --frozen python bench/bench_pipeline.py", *sys.argv[1:]]),
        "mode": "attach" if args.attach else "throwaway environment",
        "code": code,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "loadavg_before_startup": [round(v, 2) for v in load_avg],
        "note": (
            "The generator, the receiver, the four services, Kafka and PostgreSQL share the "
            "machine's cores (with whatever else runs there: see machine_busy_percent and "
            "other_processes_cpu_seconds)."
        ),
        **result,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    sys.stdout.write(table(result) + "\n")
    sys.stdout.write(f"wrote {output}\n")


if __name__ == "__main__":
    main()
