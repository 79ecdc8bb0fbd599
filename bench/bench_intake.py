"""Load benchmark of the intake HTTP API on real PostgreSQL and Kafka.

Run: ``uv run python bench/bench_intake.py`` (about 5 minutes on 2 cores). Options:
``--seconds``, ``--connections`` (closed loop), ``--rate``, ``--open-connections`` and
``--grace`` (open loop).

Starts its own PostgreSQL and Kafka with ``paht_devenv`` in a temporary directory, creates a
database, migrates and seeds it, then serves the intake app with ``python -m intake`` (one
uvicorn worker process, the service's own uvicorn config) and loads it from this process
over HTTP/1.1 keep-alive connections:

(1) closed loop: ``--connections`` workers each POST /v1/reports back to back for
    ``--seconds``; accepted reports per second and latency. One run per count (default 32
    and 128): the group-commit writer needs enough requests in flight to fill a batch
    while the previous one is being written, so the best run is the capacity;
(2) open loop: POST /v1/reports at a fixed ``--rate`` for ``--seconds``; latency counts from
    each request's scheduled instant (a stalled server is not hidden by a stalled client)
    and from the moment it was sent; requests still unanswered ``--grace`` seconds after the
    last was scheduled are abandoned and count as beyond every percentile. A second open
    loop at half the closed-loop throughput gives the latency of a server that keeps up;
(3) the same runs against a bare FastAPI endpoint (GET /bare -> {"ok": true}) served with
    the same uvicorn config (``paht_common.cli.service_main``), as the framework's ceiling.

Every run is made twice: with httpx (one AsyncClient per connection) and with a minimal
asyncio-streams client, because on 2 cores httpx costs more CPU per request than the bare
server does and would otherwise be what the bare figures measure. The generator, the server,
the outbox relay (``--relay``: a process of its own by default, as several workers would
share one), PostgreSQL and Kafka share the cores; each run records the CPU each used.
Prints one JSON document and writes it to bench/results/intake.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import httpx
from fastapi import FastAPI

from intake.api import MIGRATIONS
from intake.seed import seed
from intake.settings import IntakeSettings
from paht_common.cli import service_main
from paht_common.db import ensure_database, with_database
from paht_common.runtime import migrate
from paht_common.settings import BaseServiceSettings
from paht_devenv.environment import Environment, Ports
from paht_devenv.procs import ManagedProcess, free_port, wait_until

RESULTS = Path(__file__).resolve().parent / "results" / "intake.json"
REPO_ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
DESCRIPTIONS = (
    "Ổ gà lớn giữa đường, xe máy dễ ngã.",
    "Đèn đường hỏng cả tuần nay, buổi tối rất tối.",
    "Cống thoát nước bị tắc, nước tràn lên vỉa hè.",
    "Rác thải tập kết sai nơi quy định, bốc mùi.",
    "Cây xanh nghiêng, có nguy cơ đổ vào nhà dân.",
)


# --- the bare comparison server ----------------------------------------------------------


def bare_app() -> FastAPI:
    """The smallest FastAPI app: one JSON endpoint."""
    app = FastAPI()

    @app.get("/bare")
    async def bare() -> dict[str, bool]:
        return {"ok": True}

    return app


def serve_bare(port: int) -> int:
    """Serve bare_app() exactly as the services are served (service_main's uvicorn config)."""
    settings = BaseServiceSettings(http_port=port, log_level="WARNING")
    return service_main(
        service="bare",
        settings=settings,
        build_app=bare_app,
        migrations=REPO_ROOT,
        argv=["serve"],
    )


# --- measurement -------------------------------------------------------------------------


WATCHED: dict[str, int] = {}
"""Other processes whose CPU each run reports (the separate outbox relay), by name."""


def _process_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone
        return 0
    return int(stat[11]) + int(stat[12])


def _infrastructure_ticks() -> int:
    """CPU ticks of every PostgreSQL process and of the Kafka broker (java)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm.startswith("postgres") or comm == "java":
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


@dataclass
class CpuSample:
    """CPU counters at one instant: machine busy/total ticks, the server's, the watched
    processes', PostgreSQL + Kafka's, and our own CPU time."""

    wall: float
    machine_busy: int
    machine_total: int
    server: int
    loadgen: float
    watched: dict[str, int]
    infrastructure: int

    @classmethod
    def take(cls, server_pid: int) -> CpuSample:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        ticks = [int(v) for v in fields]
        idle = ticks[3] + ticks[4]
        return cls(
            wall=time.perf_counter(),
            machine_busy=sum(ticks) - idle,
            machine_total=sum(ticks),
            server=_process_ticks(server_pid),
            loadgen=time.process_time(),
            watched={name: _process_ticks(pid) for name, pid in WATCHED.items()},
            infrastructure=_infrastructure_ticks(),
        )

    def since(self, start: CpuSample, *, requests: int) -> dict[str, float]:
        wall = self.wall - start.wall
        total = max(self.machine_total - start.machine_total, 1)
        server_seconds = (self.server - start.server) / TICKS
        watched = {
            f"{name}_percent_of_one_core": round(
                100 * (ticks - start.watched.get(name, 0)) / TICKS / wall, 1
            )
            for name, ticks in self.watched.items()
        }
        return {
            "server_cpu_ms_per_request": round(1000 * server_seconds / max(requests, 1), 2),
            "machine_busy_percent": round(
                100 * (self.machine_busy - start.machine_busy) / total, 1
            ),
            "server_process_percent_of_one_core": round(
                100 * (self.server - start.server) / TICKS / wall, 1
            ),
            "load_generator_percent_of_one_core": round(
                100 * (self.loadgen - start.loadgen) / wall, 1
            ),
            **watched,
            "postgres_and_kafka_percent_of_one_core": round(
                100 * (self.infrastructure - start.infrastructure) / TICKS / wall, 1
            ),
        }


@dataclass
class Run:
    """Outcomes of one load run."""

    latencies: list[float] = field(default_factory=list)
    service_latencies: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def record(self, status: int) -> None:
        key = str(status)
        self.statuses[key] = self.statuses.get(key, 0) + 1

    def error(self, exc: BaseException) -> None:
        key = type(exc).__name__
        self.errors[key] = self.errors.get(key, 0) + 1


def percentiles(values: list[float], *, beyond: int = 0) -> dict[str, float | None]:
    """p50 / p90 / p99 / max in ms (nearest rank); ``beyond`` values count as unbounded."""
    ordered = sorted(values) + [math.inf] * beyond
    if not ordered:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}

    def rank(q: float) -> float | None:
        value = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
        return None if math.isinf(value) else round(1000 * value, 2)

    return {"p50_ms": rank(0.50), "p90_ms": rank(0.90), "p99_ms": rank(0.99), "max_ms": rank(1)}


Request = tuple[str, str, bytes | None, dict[str, str]]
"""Method, path, body, headers."""


class Connection(Protocol):
    """One keep-alive HTTP/1.1 connection to the server under test."""

    async def send(self, request: Request) -> int: ...

    async def close(self) -> None: ...


class HttpxConnection:
    """An httpx.AsyncClient restricted to one connection.

    One client per connection: a single client whose pool holds all N connections spends
    more CPU on pool bookkeeping than on HTTP (measured: 4x fewer requests per second).
    """

    def __init__(self, base_url: str) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=60.0,
        )

    async def send(self, request: Request) -> int:
        method, path, body, headers = request
        response = await self._client.request(method, path, content=body, headers=headers)
        return response.status_code

    async def close(self) -> None:
        await self._client.aclose()


class RawConnection:
    """A minimal HTTP/1.1 client on asyncio streams (requests with Content-Length only)."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, request: Request) -> int:
        method, path, body, headers = request
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}:{self._port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError("response without Content-Length")
        await reader.readexactly(length)
        return int(head[9:12])

    async def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()


Connect = Callable[[], Connection]
NewRequest = Callable[[], Request]
CLIENT_ERRORS = (httpx.HTTPError, OSError, asyncio.IncompleteReadError, RuntimeError)


async def closed_loop(
    connect: Connect,
    new_request: NewRequest,
    *,
    connections: int,
    seconds: float,
    ok: int,
    server_pid: int,
) -> dict[str, Any]:
    """``connections`` workers, each on its own connection, send back to back."""
    run = Run()
    pool = [connect() for _ in range(connections)]
    deadline = time.perf_counter() + seconds

    async def worker(conn: Connection) -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                status = await conn.send(new_request())
            except CLIENT_ERRORS as exc:
                run.error(exc)
                await asyncio.sleep(0.01)
                continue
            run.latencies.append(time.perf_counter() - began)
            run.record(status)

    cpu = CpuSample.take(server_pid)
    began = time.perf_counter()
    await asyncio.gather(*(worker(conn) for conn in pool))
    elapsed = time.perf_counter() - began
    used = CpuSample.take(server_pid).since(cpu, requests=len(run.latencies))
    for conn in pool:
        await conn.close()
    succeeded = run.statuses.get(str(ok), 0)
    return {
        "mode": "closed loop",
        "connections": connections,
        "seconds": round(elapsed, 2),
        "requests": len(run.latencies),
        "succeeded_per_second": round(succeeded / elapsed, 1),
        "statuses": run.statuses,
        "client_errors": run.errors,
        "latency": percentiles(run.latencies),
        "cpu": used,
    }


async def open_loop(
    connect: Connect,
    new_request: NewRequest,
    *,
    rate: float,
    connections: int,
    seconds: float,
    grace: float,
    ok: int,
    server_pid: int,
) -> dict[str, Any]:
    """Requests scheduled at ``rate`` per second whatever the answers take.

    A request waits (FIFO) for a free connection; its latency counts from the instant it
    was scheduled. Requests unanswered ``grace`` seconds after the last one was scheduled
    are abandoned and counted as beyond every percentile.
    """
    run = Run()
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    pool = [connect() for _ in range(connections)]
    for conn in pool:
        idle.put_nowait(conn)

    async def one(scheduled: float) -> None:
        run.lateness.append(loop.time() - scheduled)
        conn = await idle.get()
        started = loop.time()
        try:
            status = await conn.send(new_request())
        except CLIENT_ERRORS as exc:
            run.error(exc)
            return
        finally:
            idle.put_nowait(conn)
        done = loop.time()
        run.latencies.append(done - scheduled)
        run.service_latencies.append(done - started)
        run.record(status)

    cpu = CpuSample.take(server_pid)
    origin = loop.time() + 0.05
    tasks = []
    for i in range(total):
        scheduled = origin + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    scheduled_by = loop.time() - origin
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    elapsed = loop.time() - origin
    used = CpuSample.take(server_pid).since(cpu, requests=len(run.latencies))
    for conn in pool:
        await conn.close()
    succeeded = run.statuses.get(str(ok), 0)
    return {
        "mode": "open loop",
        "target_per_second": rate,
        "connections": connections,
        "scheduled": total,
        "seconds_to_schedule": round(scheduled_by, 2),
        "completed": len(run.latencies),
        "abandoned_after_grace": len(pending),
        "grace_seconds": grace,
        "succeeded_per_second": round(succeeded / elapsed, 1),
        "statuses": run.statuses,
        "client_errors": run.errors,
        "latency_from_schedule": percentiles(run.latencies, beyond=len(pending)),
        "latency_from_send": percentiles(run.service_latencies),
        "generator_lateness": percentiles(run.lateness),
        "cpu": used,
    }


# --- orchestration -----------------------------------------------------------------------


def report_requests(api_key: str, categories: list[str], rng: random.Random) -> NewRequest:
    """POST /v1/reports of a fresh report anywhere in central Bắc Ninh."""
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}

    def new_request() -> Request:
        body = {
            "category": rng.choice(categories),
            "description": rng.choice(DESCRIPTIONS),
            "location": {"lat": rng.uniform(21.05, 21.30), "lon": rng.uniform(105.95, 106.30)},
            "reporter": {"name": "Nguyễn Văn An", "phone": "0912345678"},
            "client_report_id": uuid.uuid4().hex,
        }
        return ("POST", "/v1/reports", json.dumps(body, ensure_ascii=False).encode(), headers)

    return new_request


def bare_requests() -> Request:
    return ("GET", "/bare", None, {})


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def measure(
    name: str, port: int, new_request: NewRequest, pid: int, ok: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Closed loop, open loop at --rate, and open loop at half the closed-loop rate, per client."""
    clients: dict[str, Connect] = {
        "httpx": lambda: HttpxConnection(f"http://127.0.0.1:{port}"),
        "raw_asyncio": lambda: RawConnection("127.0.0.1", port),
    }
    results: dict[str, Any] = {}
    for client_name, connect in clients.items():
        if args.clients and client_name not in args.clients:
            continue
        label = f"{name}/{client_name}"
        log(f"{label}: warm-up")
        await closed_loop(connect, new_request, connections=32, seconds=2, ok=ok, server_pid=pid)
        by_connections: dict[str, Any] = {}
        for connections in args.connections:
            log(f"{label}: closed loop, {connections} connections, {args.seconds:g} s")
            by_connections[str(connections)] = await closed_loop(
                connect,
                new_request,
                connections=connections,
                seconds=args.seconds,
                ok=ok,
                server_pid=pid,
            )
        closed = max(by_connections.values(), key=lambda r: r["succeeded_per_second"])
        runs: dict[str, Any] = {"closed_loop": closed}
        if len(by_connections) > 1:
            runs["closed_loop_by_connections"] = by_connections
        sustainable = max(1.0, round(closed["succeeded_per_second"] / 2))
        for key, rate in (
            ("open_loop_target", args.rate),
            ("open_loop_half_capacity", sustainable),
        ):
            log(f"{label}: open loop, {rate:g}/s, {args.seconds:g} s")
            runs[key] = await open_loop(
                connect,
                new_request,
                rate=rate,
                connections=args.open_connections,
                seconds=args.seconds,
                grace=args.grace,
                ok=ok,
                server_pid=pid,
            )
        results[client_name] = runs
    return results


def log(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


async def prepare_database(env: Environment, state: Path) -> IntakeSettings:
    await ensure_database(env.postgres.dsn, "bench_intake")
    settings = IntakeSettings(
        database_url=with_database(env.postgres.dsn, "bench_intake"),
        kafka_bootstrap=env.kafka.bootstrap,
        jwt_dev_key_dir=state / "jwt",
        dev_api_key="bench-" + uuid.uuid4().hex,
    )
    await migrate(settings, MIGRATIONS)
    await seed(settings)
    return settings


async def stored(settings: IntakeSettings) -> dict[str, int]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        reports = await conn.fetchval("SELECT count(*) FROM reports")
        backlog = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    finally:
        await conn.close()
    return {"reports_stored": int(reports), "outbox_unpublished": int(backlog)}


def main() -> None:
    """Start everything, run the four measurements, write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--connections",
        type=int,
        nargs="+",
        default=[32, 128],
        help="closed loop: one run per count; the best is the capacity",
    )
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--open-connections", type=int, default=64)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument(
        "--clients", nargs="*", choices=["httpx", "raw_asyncio"], help="default: both"
    )
    parser.add_argument(
        "--only", choices=["intake", "bare"], help="measure one server (default: both)"
    )
    parser.add_argument(
        "--relay",
        choices=["separate", "in-process"],
        default="separate",
        help="outbox relay: its own process (python -m intake relay) or inside the worker",
    )
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        sys.exit(serve_bare(args.serve_bare))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop what we started

    state = Path(tempfile.mkdtemp(prefix="paht-bench-intake-"))
    env = Environment(state_dir=state, ports=Ports.free(), with_prometheus=False)
    intake_port, bare_port = free_port(), free_port()
    procs: list[ManagedProcess] = []
    try:
        log("starting PostgreSQL and Kafka")
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON report
            env.start_infrastructure()
        settings = asyncio.run(prepare_database(env, state))
        server_env = {
            "INTAKE_DATABASE_URL": settings.database_url,
            "INTAKE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "INTAKE_HTTP_HOST": "127.0.0.1",
            "INTAKE_HTTP_PORT": str(intake_port),
            "INTAKE_DEV_API_KEY": settings.dev_api_key,
            "INTAKE_JWT_DEV_KEY_DIR": str(settings.jwt_dev_key_dir),
            "INTAKE_LOG_LEVEL": "WARNING",
            "INTAKE_OUTBOX_RELAY": "true" if args.relay == "in-process" else "false",
            "PYTHONUNBUFFERED": "1",
        }
        intake = ManagedProcess(
            "intake",
            [sys.executable, "-m", "intake"],
            env.run_dir,
            env.log_dir,
            env=server_env,
            cwd=REPO_ROOT,
        )
        bare = ManagedProcess(
            "bare",
            [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(bare_port)],
            env.run_dir,
            env.log_dir,
            cwd=REPO_ROOT,
        )
        procs = [intake, bare]
        if args.relay == "separate":
            relay = ManagedProcess(
                "intake-relay",
                [sys.executable, "-m", "intake", "relay"],
                env.run_dir,
                env.log_dir,
                env=server_env,
                cwd=REPO_ROOT,
            )
            procs.append(relay)
        for proc in procs:
            proc.start()
        base_intake = f"http://127.0.0.1:{intake_port}"
        base_bare = f"http://127.0.0.1:{bare_port}"
        wait_until(
            lambda: http_ok(f"{base_intake}/readyz"),
            timeout=90,
            what="intake",
            log=intake.log_file,
            alive=intake.running,
        )
        wait_until(
            lambda: http_ok(f"{base_bare}/bare"),
            timeout=30,
            what="bare app",
            log=bare.log_file,
            alive=bare.running,
        )
        categories = [c["code"] for c in httpx.get(f"{base_intake}/v1/categories").json()]
        rng = random.Random(20260301)
        intake_pid, bare_pid = intake.pid(), bare.pid()
        if intake_pid is None or bare_pid is None:
            raise RuntimeError("a server exited after becoming ready")
        if args.relay == "separate":
            relay_pid = relay.pid()
            if relay_pid is None:
                raise RuntimeError("the outbox relay exited")
            WATCHED["outbox_relay"] = relay_pid

        async def everything() -> dict[str, Any]:
            reports = report_requests(settings.dev_api_key, categories, rng)
            results: dict[str, Any] = {}
            if args.only in (None, "intake"):
                results["intake_post_reports"] = await measure(
                    "intake", intake_port, reports, intake_pid, 202, args
                )
            if args.only in (None, "bare"):
                results["bare_fastapi_get"] = await measure(
                    "bare", bare_port, bare_requests, bare_pid, 200, args
                )
            await asyncio.sleep(3)  # let the relay drain the outbox
            results["intake_after_runs"] = await stored(settings)
            return results

        results = asyncio.run(everything())
        report = {
            "benchmark": "intake HTTP API (POST /v1/reports) vs bare FastAPI",
            "command": " ".join(["uv run python bench/bench_intake.py", *sys.argv[1:]]),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "server": {
                "process": "python -m intake (service_main: uvicorn, 1 worker, httptools, uvloop)",
                "log_level": "WARNING",
                "db_pool_max": settings.db_pool_max,
                "outbox_relay": (
                    "python -m intake relay, a process of its own"
                    if args.relay == "separate"
                    else "inside the worker process"
                ),
            },
            "clients": {
                "httpx": "httpx.AsyncClient per connection, HTTP/1.1 keep-alive",
                "raw_asyncio": "asyncio streams, HTTP/1.1 keep-alive (generator-cost check)",
            },
            "note": (
                "The load generator, the server, PostgreSQL and Kafka share the same cores; "
                "see each run's cpu figures. Throughput here is a floor for a dedicated server."
            ),
            "results": results,
        }
        text = json.dumps(report, indent=2, ensure_ascii=False)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text + "\n", encoding="utf-8")
        sys.stdout.write(text + "\n")
    finally:
        for proc in procs:
            proc.stop(timeout=15)
        with contextlib.redirect_stdout(sys.stderr):
            env.kafka.stop()
            env.postgres.stop(mode="immediate")
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
