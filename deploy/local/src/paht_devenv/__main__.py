"""Local environment CLI (``make run`` and friends), no Docker needed.

python -m paht_devenv run            # everything, foreground; Ctrl-C stops it all
python -m paht_devenv up | down      # the same, detached
python -m paht_devenv status
python -m paht_devenv start|stop|kill|restart|logs SERVICE
python -m paht_devenv infra | migrate | seed
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

from paht_devenv.environment import SERVICES, Environment, local_environment
from paht_devenv.procs import ManagedProcess, StartupError

COMPONENTS = (*SERVICES, "kafka", "prometheus")


def _banner(env: Environment) -> str:
    p = env.ports
    lines = [
        "",
        "PAHT is running (every page below works without internet):",
        *(
            f"  {name:8} http://127.0.0.1:{port}/   API docs http://127.0.0.1:{port}/docs"
            for name, port in p.services.items()
        ),
        f"  open311  http://127.0.0.1:{p.services['intake']}/open311/v2/discovery.json",
        f"  events   http://127.0.0.1:{p.services['intake']}/asyncapi",
        "  also     /redoc, /healthz, /readyz and /metrics on each service",
        f"  Prometheus http://127.0.0.1:{p.prometheus}   Kafka 127.0.0.1:{p.kafka}   "
        f"PostgreSQL postgresql://postgres@127.0.0.1:{p.postgres}/",
        f"  logs     {env.log_dir}",
        "",
    ]
    return "\n".join(lines)


def _process(env: Environment, name: str) -> ManagedProcess:
    if name == "kafka":
        return env.kafka.process()
    if name == "prometheus":
        return env.prometheus.process()
    return env.service(name)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="paht")
    parser.add_argument(
        "command",
        choices=[
            "run",
            "up",
            "down",
            "status",
            "start",
            "stop",
            "kill",
            "restart",
            "logs",
            "infra",
            "migrate",
            "seed",
        ],
    )
    parser.add_argument("component", nargs="?", choices=COMPONENTS)
    args = parser.parse_args(argv)
    env = local_environment()
    try:
        return _dispatch(env, args.command, args.component)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 1


def _dispatch(env: Environment, command: str, component: str | None) -> int:
    if command in {"start", "stop", "kill", "restart", "logs"} and component is None:
        print(f"'{command}' needs a component: {', '.join(COMPONENTS)}", file=sys.stderr)  # noqa: T201
        return 2
    if command == "run":
        env.start_all()
        print(_banner(env), flush=True)  # noqa: T201
        stop = False

        def _stop(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        while not stop:
            time.sleep(0.5)
        print("stopping…", flush=True)  # noqa: T201
        env.stop_all()
        return 0
    if command == "up":
        env.start_all()
        print(_banner(env), flush=True)  # noqa: T201
        return 0
    if command == "down":
        env.stop_all()
        return 0
    if command == "status":
        for name, state in env.status().items():
            print(f"{name:11} {state}")  # noqa: T201
        return 0
    if command == "infra":
        env.start_infrastructure()
        return 0
    if command == "migrate":
        env.start_infrastructure()
        env.migrate()
        return 0
    if command == "seed":
        env.seed()
        return 0
    assert component is not None
    proc = _process(env, component)
    if command == "start":
        proc.start()
        if component in SERVICES:
            env.wait_ready(component)
    elif command == "stop":
        proc.stop()
    elif command == "kill":
        proc.kill()
    elif command == "restart":
        proc.stop()
        proc.start()
        if component in SERVICES:
            env.wait_ready(component)
    elif command == "logs":
        return subprocess.call(["tail", "-n", "100", "-F", str(proc.log_file)])  # noqa: S603,S607
    return 0


if __name__ == "__main__":
    sys.exit(main())
