"""The whole local system: infrastructure plus the four services, under one state directory.

The same code serves ``make run`` (state in ``.paht/``, default ports) and the test harness
(state in a temporary directory, free ports), so tests never touch a running dev system.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from paht_common.db import ensure_database, with_database
from paht_devenv.kafka import KafkaBroker
from paht_devenv.postgres import PostgresServer
from paht_devenv.procs import ManagedProcess, StartupError, free_port, wait_until
from paht_devenv.prometheus import PrometheusServer

REPO_ROOT = Path(__file__).resolve().parents[4]
SERVICES = ("intake", "routing", "sla", "notify")
DEV_API_KEY = "dev-only-key"
DEV_NOTIFY_ADMIN_TOKEN = "dev-only-notify-admin-token"
"""Notify's admin token in local runs (registers upstream apps' webhooks, manages any)."""


def _env_port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass
class Ports:
    """TCP ports of every component."""

    postgres: int = 5433
    kafka: int = 9092
    kafka_controller: int = 9093
    prometheus: int = 9090
    services: dict[str, int] = field(
        default_factory=lambda: {"intake": 8080, "routing": 8081, "sla": 8082, "notify": 8083}
    )

    @classmethod
    def from_env(cls) -> Ports:
        """Default ports, each overridable by an environment variable."""
        return cls(
            postgres=_env_port("PAHT_PG_PORT", 5433),
            kafka=_env_port("PAHT_KAFKA_PORT", 9092),
            kafka_controller=_env_port("PAHT_KAFKA_CONTROLLER_PORT", 9093),
            prometheus=_env_port("PAHT_PROMETHEUS_PORT", 9090),
            services={
                name: _env_port(f"PAHT_{name.upper()}_PORT", default)
                for name, default in (
                    ("intake", 8080),
                    ("routing", 8081),
                    ("sla", 8082),
                    ("notify", 8083),
                )
            },
        )

    @classmethod
    def free(cls) -> Ports:
        """Ports nothing listens on now (for test runs)."""
        return cls(
            postgres=free_port(),
            kafka=free_port(),
            kafka_controller=free_port(),
            prometheus=free_port(),
            services={name: free_port() for name in SERVICES},
        )


@dataclass
class Environment:
    """Handles on every component living under ``state_dir``."""

    state_dir: Path
    ports: Ports
    kafka_lib_dir: Path = REPO_ROOT / ".paht" / "kafka-lib"
    extra_env: dict[str, str] = field(default_factory=dict)
    with_prometheus: bool = True

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def postgres(self) -> PostgresServer:
        return PostgresServer(
            self.state_dir / "postgres" / "data", self.ports.postgres, self.log_dir / "postgres.log"
        )

    @property
    def kafka(self) -> KafkaBroker:
        return KafkaBroker(
            self.state_dir / "kafka" / "data",
            self.ports.kafka,
            self.ports.kafka_controller,
            self.kafka_lib_dir,
            self.run_dir,
            self.log_dir,
        )

    @property
    def prometheus(self) -> PrometheusServer:
        return PrometheusServer(
            self.state_dir / "prometheus" / "data",
            self.ports.prometheus,
            dict(self.ports.services),
            self.run_dir,
            self.log_dir,
        )

    def database_url(self, service: str) -> str:
        """DSN of a service's own database."""
        return with_database(self.postgres.dsn, f"paht_{service}")

    def service_env(self, service: str) -> dict[str, str]:
        """Environment variables a service process runs with."""
        prefix = service.upper()
        env = {
            f"{prefix}_DATABASE_URL": self.database_url(service),
            f"{prefix}_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            f"{prefix}_HTTP_PORT": str(self.ports.services[service]),
            f"{prefix}_HTTP_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
        }
        if service == "intake":
            env["INTAKE_DEV_API_KEY"] = os.environ.get("PAHT_DEV_API_KEY", DEV_API_KEY)
        if service == "notify":
            env["NOTIFY_ADMIN_TOKEN"] = os.environ.get(
                "PAHT_NOTIFY_ADMIN_TOKEN", DEV_NOTIFY_ADMIN_TOKEN
            )
            # the VAPID key is made on the first start and kept with the state
            env["NOTIFY_VAPID_KEY_FILE"] = str(self.state_dir / "vapid" / "private.pem")
        env.update(self.extra_env)
        paht_env = env.get("PAHT_ENV", os.environ.get("PAHT_ENV", "development"))
        if service == "notify" and paht_env != "production":
            # agencies' local receivers and push services listen on 127.0.0.1 over http;
            # the caller's environment (or extra_env) still wins
            for name in (
                "NOTIFY_WEBHOOK_ALLOW_PRIVATE",
                "NOTIFY_WEBHOOK_ALLOW_HTTP",
                "NOTIFY_PUSH_ALLOW_HTTP",
            ):
                env.setdefault(name, os.environ.get(name, "true"))
        return env

    def service(self, name: str) -> ManagedProcess:
        """The supervised process of one service (not started)."""
        return ManagedProcess(
            name=name,
            argv=[sys.executable, "-m", name],
            run_dir=self.run_dir,
            log_dir=self.log_dir,
            env=self.service_env(name),
            cwd=REPO_ROOT,
        )

    def start_infrastructure(self) -> None:
        """PostgreSQL, Kafka (with topics) and the service databases."""
        self.postgres.start()
        self.kafka.start()
        asyncio.run(self._create_databases())

    async def _create_databases(self) -> None:
        for name in SERVICES:
            await ensure_database(self.postgres.dsn, f"paht_{name}")

    def run_service_command(self, name: str, *args: str) -> None:
        """Run ``python -m <service> <args>`` (migrate, seed) to completion."""
        env = dict(os.environ)
        env.update(self.service_env(name))
        result = subprocess.run(  # noqa: S603
            [sys.executable, "-m", name, *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StartupError(f"{name} {' '.join(args)} failed:\n{result.stderr[-4000:]}")

    def migrate(self) -> None:
        """Apply every service's migrations."""
        for name in SERVICES:
            self.run_service_command(name, "migrate")

    def seed(self) -> None:
        """Load the demo reference data (Bắc Ninh categories, agencies, routing rules)."""
        for name in SERVICES:
            self.run_service_command(name, "seed")

    def start_services(self, names: tuple[str, ...] = SERVICES, *, timeout: float = 90.0) -> None:
        """Start services and wait until each answers /readyz."""
        for name in names:
            self.service(name).start()
        for name in names:
            self.wait_ready(name, timeout=timeout)

    def wait_ready(self, name: str, *, timeout: float = 90.0) -> None:
        """Block until the service's /readyz answers 200."""
        url = f"http://127.0.0.1:{self.ports.services[name]}/readyz"
        proc = self.service(name)
        wait_until(
            lambda: _http_ok(url),
            timeout=timeout,
            what=f"service {name}",
            log=proc.log_file,
            alive=proc.running,
        )

    def start_all(self) -> None:
        """Everything, in dependency order."""
        self.start_infrastructure()
        self.migrate()
        self.seed()
        self.start_services()
        if self.with_prometheus:
            self.prometheus.start()

    def stop_all(self, *, postgres_mode: str = "fast") -> None:
        """Services first, then Prometheus, Kafka and PostgreSQL."""
        for name in SERVICES:
            self.service(name).stop()
        if self.with_prometheus:
            self.prometheus.process().stop()
        self.kafka.stop()
        self.postgres.stop(mode=postgres_mode)

    def status(self) -> Mapping[str, str]:
        """Component name -> running/stopped (and pid)."""
        out: dict[str, str] = {}
        out["postgres"] = "running" if self.postgres.running() else "stopped"
        procs = [self.kafka.process()] + [self.service(n) for n in SERVICES]
        if self.with_prometheus:
            procs.append(self.prometheus.process())
        for proc in procs:
            pid = proc.pid()
            out[proc.name] = f"running (pid {pid})" if pid else "stopped"
        return out


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local URL
            return bool(response.status == 200)
    except OSError:
        return False


def local_environment() -> Environment:
    """The developer's environment: state in .paht/, default (or PAHT_*_PORT) ports."""
    state = Path(os.environ.get("PAHT_STATE_DIR", REPO_ROOT / ".paht" / "local"))
    return Environment(state_dir=state, ports=Ports.from_env())


@contextlib.contextmanager
def throwaway_environment(prefix: str, *, with_prometheus: bool) -> Iterator[Environment]:
    """An Environment in a fresh temp dir on free ports, stopped and deleted afterwards.

    Set PAHT_KEEP_TEST_STATE=1 to keep the directory (data and logs) for a post-mortem.
    """
    state = Path(tempfile.mkdtemp(prefix=prefix))
    env = Environment(
        state_dir=state,
        ports=Ports.free(),
        with_prometheus=with_prometheus,
        extra_env={"PAHT_ENV": "test"},
    )
    try:
        yield env
    finally:
        env.stop_all(postgres_mode="immediate")
        if not os.environ.get("PAHT_KEEP_TEST_STATE"):
            shutil.rmtree(state, ignore_errors=True)
