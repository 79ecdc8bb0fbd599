"""Mutation testing of the core modules with mutmut, each against the tiers that exercise it.

Run: ``make mutation`` (all modules) or ``python tests/mutation/mutate.py routing-domain``.

mutmut mutates a copy, never the work tree: each module gets a scratch project under
``.paht/mutation/<name>/`` holding its package in ``src/`` and the tests that exercise it.
Integration tiers share one throwaway PostgreSQL + Kafka for the whole run (a conftest in the
scratch copy points the harness's fixtures at it) instead of one per mutant. The report, with
the score per module, goes to ``.paht/mutation/report.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".paht" / "mutation"
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Module:
    package: Path  # the package directory copied into src/
    files: tuple[str, ...]  # file names inside the package to mutate
    tests: tuple[str, ...]  # test paths (relative to the repo) that exercise it
    needs_infra: bool = False


MODULES: dict[str, Module] = {
    "common-delivery": Module(
        ROOT / "libs/common/src/paht_common",
        ("consumer.py", "inbox.py", "outbox.py", "faust_worker.py"),
        (
            "tests/integration/common/test_delivery_guarantees.py",
            "tests/integration/common/test_batches.py",
            "tests/integration/common/test_outbox_inbox.py",
        ),
        needs_infra=True,
    ),
    "common-events": Module(
        ROOT / "libs/common/src/paht_common",
        ("events.py",),
        ("tests/unit/common", "tests/contract"),
    ),
    "routing-domain": Module(
        ROOT / "services/routing/src/routing", ("domain.py",), ("tests/unit/routing",)
    ),
    "sla-calendar-domain": Module(
        ROOT / "services/sla/src/sla", ("calendar.py", "domain.py"), ("tests/unit/sla",)
    ),
    "intake-domain": Module(
        ROOT / "services/intake/src/intake", ("domain.py",), ("tests/unit/intake",)
    ),
}

CONFTEST = '''"""Scratch copy for mutation testing: one PostgreSQL + Kafka for every mutant."""

import os

import pytest

pytest_plugins = ["paht_devenv.pytest_plugin"]


@pytest.fixture(scope="session")
def postgres_dsn(request: pytest.FixtureRequest) -> str:
    return os.environ.get("PAHT_MUTATION_PG") or request.getfixturevalue("infra").postgres.dsn


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    return os.environ.get("PAHT_MUTATION_KAFKA") or request.getfixturevalue("infra").kafka.bootstrap
'''

PYPROJECT = """[tool.mutmut]
source_paths = ["src"]
only_mutate = {only}
pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "-x", "--timeout", "300"]
pytest_add_cli_args_test_selection = {tests}

[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "session"
asyncio_default_test_loop_scope = "session"
addopts = "--import-mode=importlib"
markers = ["integration: real infrastructure", "e2e: processes"]
"""


def scratch(name: str, module: Module) -> Path:
    """A small project mutmut can work in: src/<package>, the tests, the config."""
    where = WORK / name
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(module.package, where / "src" / module.package.name)
    for test in module.tests:
        source = ROOT / test
        if source.is_dir():
            shutil.copytree(source, where / test)
        else:
            (where / test).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, where / test)
    (where / "tests" / "conftest.py").write_text(CONFTEST)
    only = [f"src/{module.package.name}/{f}" for f in module.files]
    (where / "pyproject.toml").write_text(
        PYPROJECT.format(only=json.dumps(only), tests=json.dumps(list(module.tests)))
    )
    return where


def mutate(name: str, module: Module, env: dict[str, str]) -> dict[str, object]:
    where = scratch(name, module)
    started = time.monotonic()
    run = subprocess.run(
        [str(VENV_BIN / "mutmut"), "run", "--max-children", os.environ.get("JOBS", "2")],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
    )
    (where / "run.log").write_text(run.stdout + run.stderr)
    subprocess.run([str(VENV_BIN / "mutmut"), "export-cicd-stats"], cwd=where, env=env)
    stats_file = where / "mutants" / "mutmut-cicd-stats.json"
    stats: dict[str, object] = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    survivors = subprocess.run(
        [str(VENV_BIN / "mutmut"), "results"], cwd=where, env=env, capture_output=True, text=True
    ).stdout
    stats["survivors"] = [s.strip() for s in survivors.splitlines() if s.strip()]
    stats["minutes"] = round((time.monotonic() - started) / 60, 1)
    return stats


def score(stats: dict[str, object]) -> str:
    killed = int(stats.get("killed", 0)) + int(stats.get("timeout", 0))  # type: ignore[call-overload]
    missed = int(stats.get("survived", 0)) + int(stats.get("no_tests", 0))  # type: ignore[call-overload]
    total = killed + missed
    return f"{100 * killed / total:.0f} % ({killed}/{total})" if total else "n/a"


def main(names: list[str]) -> int:
    chosen = {n: MODULES[n] for n in (names or list(MODULES))}
    env = dict(os.environ)
    results: dict[str, dict[str, object]] = {}
    infra = None
    if any(m.needs_infra for m in chosen.values()):
        from paht_devenv.environment import throwaway_environment

        infra = throwaway_environment("paht-mutation-", with_prometheus=False)
        environment = infra.__enter__()
        environment.start_infrastructure()
        env["PAHT_MUTATION_PG"] = environment.postgres.dsn
        env["PAHT_MUTATION_KAFKA"] = environment.kafka.bootstrap
    try:
        for name, module in chosen.items():
            results[name] = mutate(name, module, env)
            print(name, score(results[name]), flush=True)  # noqa: T201
    finally:
        if infra is not None:
            infra.__exit__(None, None, None)
    lines = ["# Mutation scores", "", "| module | score (killed/total) | survived | minutes |"]
    lines.append("|---|---|---|---|")
    for name, stats in results.items():
        lines.append(
            f"| {name} | {score(stats)} | {stats.get('survived', '?')} | {stats['minutes']} |"
        )
    for name, stats in results.items():
        lines += ["", f"## {name}: surviving mutants", ""]
        lines += [f"- `{s}`" for s in stats["survivors"]]  # type: ignore[attr-defined]
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "report.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
