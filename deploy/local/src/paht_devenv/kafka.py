"""A single-node Apache Kafka 4.x broker in KRaft mode from the official Maven artifacts."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from paht_common.events import Envelope
from paht_common.kafka import encode, header_list, key_bytes, make_producer
from paht_common.topics import ALL_TOPICS, DEFAULT_PARTITIONS
from paht_devenv.procs import ManagedProcess, StartupError, port_open, wait_until

POM = Path(__file__).resolve().parents[2] / "kafka" / "pom.xml"

LOG_RETENTION_HOURS = 168
"""How long the broker keeps records; consumers' inbox retention must outlast it."""

LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def ensure_kafka_libs(lib_dir: Path) -> Path:
    """Resolve the broker jars from Maven Central into lib_dir once; returns lib_dir."""
    marker = lib_dir / ".complete"
    if marker.exists():
        return lib_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StartupError("Maven (mvn) not found: install the Debian package maven")
    if shutil.which("java") is None:
        raise StartupError("java not found: install a JDK 17+ (Debian openjdk-17-jre-headless)")
    print(f"[kafka] resolving Apache Kafka jars from Maven Central into {lib_dir}", flush=True)  # noqa: T201
    lib_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(  # noqa: S603
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={lib_dir}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StartupError(f"Maven could not resolve Kafka: {result.stdout}{result.stderr}")
    marker.write_text("ok\n")
    return lib_dir


@dataclass
class KafkaBroker:
    """Broker + controller in one process; formats its storage on first start."""

    data_dir: Path
    port: int
    controller_port: int
    lib_dir: Path
    run_dir: Path
    log_dir: Path
    heap: str = "768m"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _properties(self) -> Path:
        props = self.data_dir.parent / "server.properties"
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=6",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=6",
                    "group.initial.rebalance.delay.ms=0",
                    "num.partitions=3",
                    "auto.create.topics.enable=true",
                    f"log.retention.hours={LOG_RETENTION_HOURS}",
                    "",
                ]
            )
        )
        (self.data_dir.parent / "log4j2.properties").write_text(LOG4J2)
        return props

    def _java(self, main: str, *args: str) -> list[str]:
        java = os.environ.get("PAHT_JAVA", "java")
        log4j = f"-Dlog4j2.configurationFile={self.data_dir.parent / 'log4j2.properties'}"
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            log4j,
            "-cp",
            f"{self.lib_dir}/*",
            main,
            *args,
        ]

    def process(self) -> ManagedProcess:
        """The supervised broker process (not started)."""
        return ManagedProcess(
            name="kafka",
            argv=self._java("kafka.Kafka", str(self.data_dir.parent / "server.properties")),
            run_dir=self.run_dir,
            log_dir=self.log_dir,
        )

    def start(self, *, timeout: float = 90.0) -> None:
        """Format storage once, start the broker, wait for it and create every topic."""
        ensure_kafka_libs(self.lib_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self._properties()
        if not (self.data_dir / "meta.properties").exists():
            print(f"[kafka] formatting KRaft storage in {self.data_dir}", flush=True)  # noqa: T201
            cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            result = subprocess.run(  # noqa: S603
                self._java(
                    "kafka.tools.StorageTool", "format", f"--cluster-id={cid}", "-c", str(props)
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise StartupError(f"Kafka storage format failed: {result.stdout}{result.stderr}")
        proc = self.process()
        if not proc.running():
            if port_open(self.port):
                raise StartupError(f"port {self.port} is already taken; set PAHT_KAFKA_PORT")
            print(f"[kafka] starting broker on {self.bootstrap}", flush=True)  # noqa: T201
            proc.start()
        wait_until(
            lambda: port_open(self.port),
            timeout=timeout,
            what="Kafka",
            log=proc.log_file,
            alive=proc.running,
        )
        asyncio.run(create_topics(self.bootstrap, ALL_TOPICS, wait_seconds=timeout))

    def stop(self) -> None:
        """Stop the broker (SIGTERM for a clean shutdown)."""
        self.process().stop(timeout=30)


async def publish_event(bootstrap: str, topic: str, envelope: Envelope[Any]) -> None:
    """Send one event as a service's relay would (binary-mode CloudEvent), and wait for it."""
    message = encode(envelope)
    producer = make_producer(bootstrap, client_id=f"publish-{uuid.uuid4().hex[:8]}")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, value=message.value, key=key_bytes(message), headers=header_list(message)
        )
    finally:
        await producer.stop()


async def create_topics(
    bootstrap: str,
    topics: tuple[str, ...] | list[str],
    *,
    wait_seconds: float = 60.0,
    partitions: int = DEFAULT_PARTITIONS,
) -> None:
    """Create the topics that do not exist yet, retrying until the broker answers."""
    deadline = asyncio.get_running_loop().time() + wait_seconds
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t not in existing]
            if missing:
                await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
                )
            return
        except TopicAlreadyExistsError:
            return
        except Exception as exc:  # broker still electing its controller: retry
            last = exc
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    raise StartupError(f"could not create Kafka topics: {last!r}")
