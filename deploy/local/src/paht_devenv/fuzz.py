"""Fuzzing a service's HTTP API in tests: schemathesis over its OpenAPI and a hostile corpus.

The app (its lifespan already running in the test's event loop) is served over real HTTP by
uvicorn in that loop (``serving``), so schemathesis calls it as any outside client would,
including the checks that send requests of their own (unsupported methods, missing
headers). Hypothesis drives a synchronous loop, so ``fuzz_operations`` runs in a worker thread
while the loop serves. Run alone: ``uv run --frozen pytest -q -k "schemathesis or hostile"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, given, reject, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup

MAX_EXAMPLES = 25
"""Examples per operation and generation mode: about a minute a service on two cores."""


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port in this loop (lifespan off: the test runs it);
    yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@dataclass
class Plan:
    """What to fuzz: operations of a schema, fixed headers (credentials) per operation and
    extra runs with known path parameters (so reads of existing resources are reached)."""

    schema: Any
    base_url: str
    headers: Callable[[Any], dict[str, str]] = lambda _: {}
    known: Mapping[str, str] = field(default_factory=dict)
    steer: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    """Per operation label, a function of its positive strategy giving another (known
    catalogue codes, places inside the province) run in addition."""
    relaxed: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    """Checks skipped per operation label, each with its reason in the caller's comment
    (a rule JSON Schema cannot state, such as a bound on the span of two parameters)."""
    max_examples: int = MAX_EXAMPLES

    def runs(self) -> list[tuple[str, Any]]:
        """(label, strategy) for each operation x {positive, negative} (+ known resources)."""
        runs: list[tuple[str, Any]] = []
        for result in self.schema.get_all_operations():
            operation = result.ok()
            headers = self.headers(operation)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                label = f"{operation.label} [{mode.value}]"
                strategy = operation.as_strategy(generation_mode=mode, headers=headers)
                runs.append((label, strategy))
                known = {k: v for k, v in self.known.items() if "{" + k + "}" in operation.path}
                if known:
                    runs.append(
                        (
                            f"{label} known {', '.join(known)}",
                            operation.as_strategy(
                                generation_mode=mode, headers=headers, path_parameters=known
                            ),
                        )
                    )
                steer = self.steer.get(operation.label)
                if steer is not None and mode is GenerationMode.POSITIVE:
                    runs.append((f"{label} steered", steer(strategy)))
        return runs


def fuzz_operations(plan: Plan) -> list[str]:
    """Run every check schemathesis has (``--checks all``) on each run of the plan; the
    failure reports (empty when every example passed). Blocking: call in a thread."""
    failures: list[str] = []
    for label, strategy in plan.runs():
        failure = _fuzz_one(label, strategy, plan)
        if failure is not None:
            failures.append(failure)
    return failures


def _fuzz_one(label: str, strategy: Any, plan: Plan) -> str | None:
    @settings(
        max_examples=plan.max_examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        try:
            response = case.call(base_url=plan.base_url, timeout=30)
        except (UnicodeEncodeError, ValueError):
            reject()  # not sendable over HTTP/1.1 (a header outside latin-1, for instance)
        case.validate_response(
            response,
            excluded_checks=list(plan.relaxed.get(case.operation.label, ())),
            transport_kwargs={"base_url": plan.base_url},
        )

    try:
        run()
    except Unsatisfiable:
        return None  # negative mode with nothing left to negate
    except (Exception, FailureGroup) as exc:  # collect every operation's findings
        return f"{label}: {exc}"
    return None


# --- the hostile corpus -------------------------------------------------------------------

TEXT_VALUES: tuple[str, ...] = (
    "%00",
    "a%00b",
    "%01%1F",
    "%7F",
    "%FF%FE",
    "%C3%28",
    "%ED%A0%80",  # an encoded lone surrogate (U+D800)
    "%F4%90%80%80",  # beyond U+10FFFF
    "x" * 20_000,
    "-1",
    "0",
    "99999999999999999999999999999999999999",
    "1e309",
    "NaN",
    "-Infinity",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59%2B14:00",
    "-999999-01-01",
    "1",
    "..%2F..%2Fetc%2Fpasswd",
    "%25",
    "%",
)
"""Path segment and query values, already percent-encoded where they need it."""
RANGES: tuple[tuple[str, str], ...] = (
    ("0001-01-01", "9999-12-31"),
    ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"),
    ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"),
    ("-9223372036854775809", "9223372036854775808"),
    ("0", "1e400"),
)
"""(low, high) pairs set at once on the first and second half of an operation's query."""

DEEP = 50_000
BODIES: tuple[bytes, ...] = (
    b'{"x": "\\u0000"}',
    b'{"x": "\\ud800"}',  # a lone surrogate, JSON-escaped
    b'{"x": "\\udc00\\ud800"}',
    b"\xff\xfe{}",
    b"[" * DEEP + b"]" * DEEP,
    b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    b"1e999999",
    b"9" * 100_000,
    b'{"amount": 1e999999, "limit": ' + b"9" * 5_000 + b"}",
    b"-0",
    b"null",
    b"",
    b"{",
    b'{"x": "' + b"y" * 2_000_000 + b'"}',
)
"""Request bodies, sent as application/json."""

HEADER_VALUES: tuple[str | bytes, ...] = (
    "x" * 60_000,
    b"\xff\xfe",
    "Bearer " + "a" * 20_000,
    "Bearer \x01",
)
"""Header values (for Authorization, X-API-Key, Idempotency-Key and an unknown header)."""


@dataclass(frozen=True)
class Target:
    """One operation of the OpenAPI document to attack."""

    method: str
    path: str
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]
    header_params: tuple[str, ...]
    has_body: bool

    def url(self, values: Mapping[str, str]) -> str:
        """The path with each parameter replaced by ``values`` (raw) or a harmless default."""
        path = self.path
        for name in self.path_params:
            path = path.replace("{" + name + "}", values.get(name, "x"))
        return path


def targets(document: Mapping[str, Any], prefix: str = "/") -> list[Target]:
    """Every operation of an OpenAPI document under ``prefix``."""
    found: list[Target] = []
    for path, operations in document.get("paths", {}).items():
        if not path.startswith(prefix):
            continue
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            params = operation.get("parameters", [])

            def named(where: str, params: Iterable[Mapping[str, Any]] = params) -> tuple[str, ...]:
                return tuple(str(p["name"]) for p in params if p.get("in") == where)

            found.append(
                Target(
                    method.upper(),
                    path,
                    named("path"),
                    named("query"),
                    named("header"),
                    "requestBody" in operation,
                )
            )
    return found


@dataclass
class HostileReport:
    """What the corpus sent and every answer that broke the rule (5xx or a dropped reply)."""

    sent: int = 0
    failures: list[str] = field(default_factory=list)

    def record(self, what: str, response: httpx.Response | Exception) -> None:
        self.sent += 1
        if isinstance(response, Exception):
            self.failures.append(f"{what}: {type(response).__name__}: {response}")
        elif response.status_code >= 500:
            self.failures.append(f"{what}: {response.status_code} {response.text[:300]}")


async def attack(
    base_url: str,
    document: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    prefix: str = "/v1/",
    fixed_path: Mapping[str, str] | None = None,
) -> HostileReport:
    """Send the hostile corpus to every path, query, header and body parameter of every
    operation under ``prefix`` (with ``headers``, the credentials); nothing may answer 5xx."""
    report = HostileReport()
    base_headers = dict(headers or {})
    fixed = dict(fixed_path or {})
    async with httpx.AsyncClient(base_url=base_url, timeout=60, headers=base_headers) as client:

        async def send(what: str, method: str, url: str, **kwargs: Any) -> None:
            try:
                response = await client.request(method, url, **kwargs)
            except httpx.LocalProtocolError:
                return  # h11 will not send it (a control character in a header)
            except httpx.HTTPError as exc:
                # the server may close an oversized request; a refusal, not a crash
                if isinstance(exc, httpx.RemoteProtocolError) and "oversized" in what:
                    report.sent += 1
                    return
                report.record(what, exc)
                return
            report.record(what, response)

        for target in targets(document, prefix):
            defaults = {name: fixed.get(name, "x") for name in target.path_params}
            for name in target.path_params:
                for value in TEXT_VALUES:
                    url = target.url({**defaults, name: quote(value, safe="%:+-")})
                    await send(
                        f"{target.method} {target.path} path {name}={value[:40]}",
                        target.method,
                        url,
                    )
            for name in target.query_params:
                for value in TEXT_VALUES:
                    url = f"{target.url(defaults)}?{name}={quote(value, safe='%:+-')}"
                    await send(
                        f"{target.method} {target.path} query {name}={value[:40]}",
                        target.method,
                        url,
                    )
            if len(target.query_params) > 1:  # absurd ranges: every parameter at an extreme
                for low, high in RANGES:
                    half = len(target.query_params) // 2
                    query = "&".join(
                        f"{name}={low if i < half else high}"
                        for i, name in enumerate(target.query_params)
                    )
                    await send(
                        f"{target.method} {target.path} range {low}..{high}",
                        target.method,
                        f"{target.url(defaults)}?{query}",
                    )
            for name in {*target.header_params, "Idempotency-Key", "X-Unknown"}:
                for raw in HEADER_VALUES:
                    encoded = raw if isinstance(raw, bytes) else raw.encode("latin-1")
                    size = "oversized " if len(encoded) > 8000 else ""
                    await send(
                        f"{target.method} {target.path} {size}header {name}={raw[:30]!r}",
                        target.method,
                        target.url(defaults),
                        headers={name.encode(): encoded},
                    )
            if target.has_body or target.method in ("POST", "PUT"):
                for body in BODIES:
                    await send(
                        f"{target.method} {target.path} body {body[:40]!r}",
                        target.method,
                        target.url(defaults),
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
    return report
