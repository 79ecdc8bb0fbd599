"""Command line shared by the services: ``python -m <svc> [serve|migrate|seed|relay]``.

``relay [METRICS_PORT]`` relays the outbox in a process of its own (set the service's
``*_OUTBOX_RELAY=false`` for its API workers); with a port it serves ``/metrics`` there.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import prometheus_client
import uvicorn
import uvloop
from fastapi import FastAPI

from paht_common.logging import configure_logging
from paht_common.runtime import migrate, run_relay
from paht_common.settings import BaseServiceSettings

Seeder = Callable[[Any], Coroutine[Any, Any, None]]


def service_main(
    *,
    service: str,
    settings: BaseServiceSettings,
    build_app: Callable[[], FastAPI],
    migrations: Path,
    seed: Seeder | None = None,
    argv: list[str] | None = None,
) -> int:
    """Dispatch the command; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "serve"
    configure_logging(service, settings.log_level)
    if command == "migrate":
        applied = asyncio.run(migrate(settings, migrations))
        sys.stdout.write(f"{service}: {len(applied)} migration(s) applied\n")
        return 0
    if command == "seed":
        if seed is not None:
            asyncio.run(migrate(settings, migrations))
            asyncio.run(seed(settings))
        return 0
    if command == "relay":
        port = int(args[1]) if len(args) > 1 else 0
        if port:
            prometheus_client.start_http_server(port, addr=settings.http_host)
        uvloop.run(run_relay(service=service, settings=settings, migrations=migrations))
        return 0
    if command != "serve":
        sys.stderr.write(f"usage: python -m {service} [serve|migrate|seed|relay [METRICS_PORT]]\n")
        return 2
    config = uvicorn.Config(
        build_app(),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
    return 0
