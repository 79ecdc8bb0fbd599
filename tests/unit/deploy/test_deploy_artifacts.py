"""The container, Prometheus and Grafana artifacts under deploy/ agree with each other and the code.

No network and no Docker: deploy/compose.yaml is validated against the vendored Compose
Specification schema (compose-spec.json, from compose-spec/compose-spec, schema/compose-spec.json),
Dockerfiles are read as text, and promtool (Debian package prometheus) checks the alert rules.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from paht_common import metrics as common_metrics
from paht_common.topics import ALL_TOPICS, DEFAULT_PARTITIONS

REPO_ROOT = Path(__file__).resolve().parents[3]
DEPLOY = REPO_ROOT / "deploy"
IMAGES = REPO_ROOT / "deploy/docker"  # Dockerfiles and the PostgreSQL init script
COMPOSE_FILE = DEPLOY / "compose.yaml"
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.compose.yml"
RULES_FILE = DEPLOY / "prometheus" / "rules" / "paht.yml"
RULES_TESTS = DEPLOY / "prometheus" / "tests" / "paht_test.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "paht-overview.json"

SERVICES = {"intake": 8080, "routing": 8081, "sla": 8082, "notify": 8083}
PYTHON_IMAGE = "python:3.11-slim"
UV_PIN = "uv==0.13.8"
KAFKA_IMAGE = "apache/kafka:4.1.1"

DOCUMENTED_METRICS: dict[str, frozenset[str]] = {
    "paht_outbox_published_total": frozenset({"outbox", "topic"}),
    "paht_outbox_publish_failures_total": frozenset({"outbox", "error_type"}),
    "paht_outbox_backlog": frozenset({"outbox"}),
    "paht_outbox_oldest_age_seconds": frozenset({"outbox"}),
    "paht_consumer_events_total": frozenset({"consumer", "topic", "outcome"}),
    "paht_consumer_failures_total": frozenset({"consumer", "topic"}),
    "paht_dead_letters_total": frozenset({"consumer", "topic"}),
    "paht_consumer_handle_seconds": frozenset({"consumer"}),
    "paht_event_age_seconds": frozenset({"consumer"}),
    "paht_consumer_lag_records": frozenset({"consumer_group", "topic", "partition"}),
    "paht_consumer_lag_scrape_errors_total": frozenset({"consumer_group"}),
    "intake_http_requests_total": frozenset({"method", "route", "status"}),
    "intake_http_request_seconds": frozenset({"method", "route"}),
    "routing_assignments_total": frozenset({"agency", "outcome"}),
    "sla_threshold_events_total": frozenset({"clock", "percent"}),
    "notify_deliveries_total": frozenset({"channel", "outcome"}),
}
"""Every metric the services document, with its labels (docs and paht_common.metrics)."""

HISTOGRAMS = frozenset(
    {"paht_consumer_handle_seconds", "paht_event_age_seconds", "intake_http_request_seconds"}
)
BUILTIN_METRICS: dict[str, frozenset[str]] = {"up": frozenset()}
TARGET_LABELS = frozenset({"job", "instance", "service"})
"""Labels Prometheus attaches to every scraped series (service: see prometheus.compose.yml)."""


# ---------------------------------------------------------------------------------------------
# helpers


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, "promtool not found: install the Debian package prometheus"
    return subprocess.run(
        [binary, *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=120
    )


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile(service: str) -> list[Instruction]:
    """Instructions of deploy/docker/<service>.Dockerfile, continuation lines joined."""
    text = (IMAGES / f"{service}.Dockerfile").read_text(encoding="utf-8")
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    instructions = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    return instructions


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list)
    return [str(item) for item in value]


def copy_sources(service: str) -> list[str]:
    """Sources of COPY/ADD instructions that read the build context (not another stage)."""
    sources: list[str] = []
    for ins in dockerfile(service):
        if ins.keyword not in {"COPY", "ADD"}:
            continue
        tokens = exec_form(ins.args) if ins.args.startswith("[") else shlex.split(ins.args)
        flags = [t for t in tokens if t.startswith("--")]
        if any(flag.startswith("--from=") for flag in flags):
            continue
        paths = [t for t in tokens if not t.startswith("--")]
        assert len(paths) >= 2, f"{ins.keyword} {ins.args}: needs a source and a destination"
        sources.extend(paths[:-1])
    return sources


def workspace_member_manifests() -> list[str]:
    root = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    manifests: list[str] = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        for member in sorted(REPO_ROOT.glob(pattern)):
            if (member / "pyproject.toml").is_file():
                manifests.append((member / "pyproject.toml").relative_to(REPO_ROOT).as_posix())
    return manifests


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"\b[A-Za-z_:][A-Za-z0-9_:]*\b(?!\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})


def known_metric(name: str) -> tuple[str, frozenset[str]] | None:
    """Documented base metric and its allowed labels for a series name, if it is documented."""
    documented = DOCUMENTED_METRICS | BUILTIN_METRICS
    if name in documented:
        return name, documented[name] | TARGET_LABELS
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if name.endswith(suffix) and base in HISTOGRAMS:
            extra = {"le"} if suffix == "_bucket" else set()
            return base, documented[base] | TARGET_LABELS | extra
    return None


def metric_problems(expr: str) -> list[str]:
    """Undocumented metric names and labels that a PromQL expression selects."""
    problems: list[str] = []
    for name, body in _SELECTOR.findall(expr):
        known = known_metric(name)
        if known is None:
            continue
        for label in _MATCHER_LABEL.findall(_STRING.sub('""', body)):
            if label not in known[1]:
                problems.append(f"{name}: undocumented label {label!r}")
    bare = _STRING.sub('""', expr)
    bare = re.sub(r"\{[^}]*\}", " ", bare)
    bare = _RANGE.sub(" ", bare)
    bare = _GROUPING.sub(" ", bare)
    for name in _IDENTIFIER.findall(bare):
        if name not in _KEYWORDS and known_metric(name) is None:
            problems.append(f"undocumented metric {name!r}")
    return problems


def alert_rules() -> list[dict[str, Any]]:
    data = load_yaml(RULES_FILE)
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def dashboard_exprs() -> list[str]:
    return [
        target["expr"]
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def compose_mount(service: str, source: str) -> str:
    """Container path where a compose service mounts a host path."""
    for volume in compose()["services"][service].get("volumes", []):
        host, _, rest = str(volume).partition(":")
        if host == source:
            return rest.split(":")[0]
    raise AssertionError(f"{service} does not mount {source}")


# ---------------------------------------------------------------------------------------------
# Compose


def test_vendored_compose_schema_is_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))

    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["title"] == "Compose Specification"
    assert "service" in schema["definitions"]


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))

    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(compose()),
        key=lambda error: list(error.absolute_path),
    )

    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


@pytest.mark.parametrize("service", SERVICES)
def test_compose_builds_each_service_from_its_dockerfile_at_the_repository_root(
    service: str,
) -> None:
    build = compose()["services"][service]["build"]

    assert build["context"] == ".."
    assert (DEPLOY / build["context"]).resolve() == REPO_ROOT
    assert build["dockerfile"] == f"deploy/docker/{service}.Dockerfile"
    assert (REPO_ROOT / build["dockerfile"]).is_file()


@pytest.mark.parametrize(("service", "port"), SERVICES.items())
def test_compose_configures_each_service_with_its_prefixed_settings(
    service: str, port: int
) -> None:
    definition = compose()["services"][service]
    env = definition["environment"]
    prefix = service.upper()

    assert env["PAHT_ENV"] in {"development", "test", "production"}
    assert env[f"{prefix}_DATABASE_URL"].endswith(f"@postgres:5432/paht_{service}")
    assert env[f"{prefix}_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env[f"{prefix}_HTTP_HOST"] == "0.0.0.0"
    assert env[f"{prefix}_HTTP_PORT"] == str(port)
    assert any(str(p).endswith(f":{port}") for p in definition["ports"])


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_starts_after_healthy_infrastructure_topics_and_its_migrations(
    service: str,
) -> None:
    services = compose()["services"]
    depends = services[service]["depends_on"]
    migrate = services[f"{service}-migrate"]

    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["kafka-topics"]["condition"] == "service_completed_successfully"
    assert depends[f"{service}-migrate"]["condition"] == "service_completed_successfully"
    assert f"python -m {service} migrate" in " ".join(migrate["command"])
    assert migrate["build"] == services[service]["build"]
    assert migrate["environment"] == services[service]["environment"]
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["kafka"]


def test_postgres_init_script_creates_every_service_database() -> None:
    services = compose()["services"]
    target = compose_mount("postgres", "./docker/postgres-init.sql")
    sql = (IMAGES / "postgres-init.sql").read_text(encoding="utf-8")

    created = set(re.findall(r"CREATE DATABASE (\w+);", sql))

    assert services["postgres"]["image"].startswith("postgres:16")
    assert target.startswith("/docker-entrypoint-initdb.d/")
    assert created == {f"paht_{service}" for service in SERVICES}


def test_kafka_is_a_single_node_kraft_broker_and_controller() -> None:
    kafka = compose()["services"]["kafka"]
    env = kafka["environment"]

    assert kafka["image"] == KAFKA_IMAGE
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1


def test_topic_job_creates_every_topic_of_paht_common_with_its_partitions() -> None:
    job = compose()["services"]["kafka-topics"]
    script = " ".join(job["command"])

    assert job["image"] == KAFKA_IMAGE
    assert "/opt/kafka/bin/kafka-topics.sh" in script
    assert f"--partitions {DEFAULT_PARTITIONS}" in script
    for topic in ALL_TOPICS:
        assert re.search(rf"(?<![\w.]){re.escape(topic)}(?![\w.])", script), topic
    assert "$$topic" in script, "a shell variable must be escaped from compose interpolation"


def test_every_bind_mounted_host_path_exists() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"


# ---------------------------------------------------------------------------------------------
# Dockerfiles


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_copies_only_paths_that_exist_in_the_build_context(service: str) -> None:
    sources = copy_sources(service)

    assert sources
    missing = [src for src in sources if not list(REPO_ROOT.glob(src))]
    assert not missing, f"{service}.Dockerfile copies missing paths: {missing}"


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_copies_every_workspace_manifest_so_the_frozen_lock_resolves(
    service: str,
) -> None:
    sources = copy_sources(service)

    def copied(path: str) -> bool:
        return any(path == src or path.startswith(src.rstrip("/") + "/") for src in sources)

    assert copied("pyproject.toml")
    assert copied("uv.lock")
    assert copied("libs/common/src/paht_common/__init__.py")
    assert copied(f"services/{service}/src/{service}/__init__.py")
    for manifest in workspace_member_manifests():
        assert copied(manifest), f"{service}.Dockerfile does not copy {manifest}"


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_installs_the_service_with_pinned_uv_from_the_lock(service: str) -> None:
    instructions = dockerfile(service)
    args = {
        ins.args.split("=")[0]: ins.args.split("=", 1)[1]
        for ins in instructions
        if ins.keyword == "ARG" and "=" in ins.args
    }
    bases = [ins.args.split()[0] for ins in instructions if ins.keyword == "FROM"]
    runs = [shlex.split(ins.args) for ins in instructions if ins.keyword == "RUN"]

    resolved = [Template(base).substitute(args) for base in bases]
    assert resolved
    assert all(base == PYTHON_IMAGE for base in resolved)
    assert any(run[:3] == ["pip", "install", "--no-cache-dir"] and UV_PIN in run for run in runs)
    assert ["uv", "sync", "--frozen", "--no-dev", "--package", f"paht-{service}"] in runs


@pytest.mark.parametrize(("service", "port"), SERVICES.items())
def test_dockerfile_runs_the_service_as_non_root_with_a_healthz_healthcheck(
    service: str, port: int
) -> None:
    instructions = dockerfile(service)
    final_stage = instructions[
        max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM") :
    ]
    users = [ins.args for ins in final_stage if ins.keyword == "USER"]
    exposed = [ins.args for ins in final_stage if ins.keyword == "EXPOSE"]
    healthchecks = [ins.args for ins in final_stage if ins.keyword == "HEALTHCHECK"]
    commands = [exec_form(ins.args) for ins in final_stage if ins.keyword == "CMD"]

    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert exposed == [str(port)]
    assert len(healthchecks) == 1
    assert "urllib.request" in healthchecks[0]
    assert "/healthz" in healthchecks[0]
    assert commands == [["python", "-m", service]]


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_command_module_has_a_main_entry_point(service: str) -> None:
    command = [exec_form(ins.args) for ins in dockerfile(service) if ins.keyword == "CMD"][-1]
    module = command[2]
    entry = Path("services") / module / "src" / module / "__main__.py"

    assert (REPO_ROOT / entry).is_file(), f"`python -m {module}` needs {entry}"


@pytest.mark.parametrize("service", SERVICES)
def test_dockerignore_of_each_dockerfile_keeps_every_copied_path(service: str) -> None:
    lines = (IMAGES / f"{service}.Dockerfile.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    kept = [p[1:] for p in patterns if p.startswith("!")]

    assert patterns[0] == "*"
    for src in copy_sources(service):
        assert any(src == k or src.startswith(k + "/") for k in kept), f"{src} is ignored"


# ---------------------------------------------------------------------------------------------
# Prometheus


def test_compose_prometheus_scrapes_each_service_by_compose_name_and_port() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    assert set(jobs) == set(SERVICES)
    for service, port in SERVICES.items():
        (static,) = jobs[service]["static_configs"]
        assert static["targets"] == [f"{service}:{port}"]
        assert static["labels"] == {"service": service}
    rules_dir = compose_mount("prometheus", "./prometheus/rules")
    assert config["rule_files"] == [f"{rules_dir}/*.yml"]
    assert compose_mount("prometheus", "./prometheus/prometheus.compose.yml") == (
        "/etc/prometheus/prometheus.yml"
    )


def test_compose_prometheus_config_passes_promtool() -> None:
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))

    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES_FILE))

    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass_under_promtool() -> None:
    result = promtool("test", "rules", str(RULES_TESTS))

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_severity_and_a_summary() -> None:
    rules = alert_rules()

    assert {rule["alert"] for rule in rules} >= {
        "PahtServiceDown",
        "PahtOutboxBacklogGrowing",
        "PahtOutboxMessagesStale",
        "PahtDeadLettersIncreasing",
        "PahtConsumerFailing",
        "PahtConsumerLagGrowing",
        "PahtSlaBreachRateHigh",
        "PahtNotifyDeliveriesFailing",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_alert_rules_use_only_documented_metrics_and_labels() -> None:
    problems = {rule["alert"]: metric_problems(rule["expr"]) for rule in alert_rules()}

    assert not {name: found for name, found in problems.items() if found}


# ---------------------------------------------------------------------------------------------
# Grafana


def test_grafana_provisions_the_prometheus_datasource_the_dashboard_uses() -> None:
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = datasources["datasources"]
    board = dashboard()

    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]


def test_grafana_dashboard_provider_reads_the_mounted_dashboards_directory() -> None:
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "paht.yml")
    (provider,) = providers["providers"]

    assert provider["type"] == "file"
    assert provider["options"]["path"] == compose_mount("grafana", "./grafana/dashboards")
    assert compose_mount("grafana", "./grafana/provisioning") == "/etc/grafana/provisioning"


def test_overview_dashboard_has_uid_paht_overview_and_a_panel_for_every_metric() -> None:
    board = dashboard()
    exprs = " ".join(dashboard_exprs())
    panel_ids = [panel["id"] for panel in board["panels"]]

    assert board["uid"] == "paht-overview"
    assert len(panel_ids) == len(set(panel_ids))
    for metric in DOCUMENTED_METRICS:
        assert metric in exprs, f"no panel shows {metric}"


def test_dashboard_uses_only_documented_metrics_and_labels() -> None:
    problems = {expr: metric_problems(expr) for expr in dashboard_exprs()}

    assert not {expr: found for expr, found in problems.items() if found}


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    grafana_ranges = re.compile(r"\$__(?:rate_interval|interval|range)")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"paht:dashboard_query_{n}", "expr": grafana_ranges.sub("5m", e)}
                    for n, e in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")

    result = promtool("check", "rules", str(path))

    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# The documented metric list itself


def test_metric_check_reports_a_misspelt_metric_and_an_undocumented_label() -> None:
    expr = (
        "sum by (consumer) (rate(paht_consumer_event_total[5m])) "
        '+ on (consumer) rate(paht_dead_letters_total{outcom="x"}[5m])'
    )

    problems = metric_problems(expr)

    assert problems == [
        "paht_dead_letters_total: undocumented label 'outcom'",
        "undocumented metric 'paht_consumer_event_total'",
    ]
    bucket = 'rate(paht_event_age_seconds_bucket{le="1"}[5m])'
    assert metric_problems(f"histogram_quantile(0.99, sum by (le) ({bucket}))") == []


def test_documented_shared_metrics_match_paht_common_metrics() -> None:
    declared: dict[str, frozenset[str]] = {}
    for value in vars(common_metrics).values():
        if isinstance(value, MetricWrapperBase):
            (family,) = value.describe()
            name = family.name + ("_total" if family.type == "counter" else "")
            declared[name] = frozenset(value._labelnames)

    assert declared == {
        name: labels for name, labels in DOCUMENTED_METRICS.items() if name.startswith("paht_")
    }
