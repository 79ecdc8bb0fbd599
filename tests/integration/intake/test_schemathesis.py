"""Property-based run of schemathesis over the intake /v1 API (real PostgreSQL + Kafka).

Schemathesis generates requests from ``app.openapi()``; each one goes to the app running in
the test's event loop (httpx ASGI transport). Every response must be free of 5xx and match
the documented schema. Hypothesis runs in a worker thread because it drives a synchronous
``@given`` loop while the app and its asyncpg pool belong to the test loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

pytestmark = [
    pytest.mark.integration,
    # schemathesis' own strategies trip this Hypothesis deprecation; nothing we can change
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

MAX_EXAMPLES = 40
CHECKS = [not_a_server_error, response_schema_conformance]


def request_args(case: Any) -> dict[str, Any]:
    """httpx arguments for a schemathesis case (which serializes for `requests`)."""
    kwargs = case.as_transport_kwargs(base_url="http://test")
    try:
        headers = {
            name: value.encode("latin-1") if isinstance(value, str) else value
            for name, value in kwargs["headers"].items()
        }
    except UnicodeEncodeError:
        reject()  # not sendable as an HTTP/1.1 header
    args: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": headers,
        "params": kwargs.get("params"),
    }
    if "json" in kwargs:
        args["json"] = kwargs["json"]
    elif isinstance(kwargs.get("data"), bytes | str):
        args["content"] = kwargs["data"]
    elif kwargs.get("data") is not None:
        args["data"] = kwargs["data"]
    return args


def fuzz(
    label: str, strategy: st.SearchStrategy[Any], send: Callable[[dict[str, Any]], httpx.Response]
) -> str | None:
    """Run one strategy; the failure text, or None when every example passed."""

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = send(request_args(case))
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        return None  # negative mode with nothing left to negate (every input is fixed)
    except Exception as exc:  # collect every operation's findings before failing
        return f"{label}: {exc}"
    return None


def in_province(strategy: st.SearchStrategy[Any], categories: list[str]) -> st.SearchStrategy[Any]:
    """Generated submissions steered to a catalogue category and a point in Bắc Ninh."""

    def steer(case: Any, category: str, lat: float, lon: float) -> Any:
        if isinstance(case.body, dict):
            case.body = {**case.body, "category": category, "location": {"lat": lat, "lon": lon}}
        return case

    return st.builds(
        steer,
        strategy,
        st.sampled_from(categories),
        st.floats(21.10, 21.25),
        st.floats(105.95, 106.15),
    )


async def test_v1_api_never_answers_5xx_and_matches_its_openapi(intake):
    existing = (await intake.submit())["id"]
    catalogue = await intake.client.get("/v1/categories")
    categories = [c["code"] for c in catalogue.json()]
    loop = asyncio.get_running_loop()

    def send(args: dict[str, Any]) -> httpx.Response:
        future = asyncio.run_coroutine_threadsafe(intake.client.request(**args), loop)
        return future.result(timeout=30)

    schema = schemathesis.openapi.from_dict(intake.app.openapi()).include(path_regex=r"^/v1/")
    credentials = {
        "x-api-key": intake.api_key,
        "authorization": f"Bearer {intake.token('coordinator', ttl=3600)}",
    }
    runs: list[tuple[str, st.SearchStrategy[Any]]] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        declared = {p.name.lower() for p in operation.headers}
        headers = {k: v for k, v in credentials.items() if k in declared}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            runs.append(
                (
                    f"{operation.label} [{mode.value}]",
                    operation.as_strategy(generation_mode=mode, headers=headers),
                )
            )
            if operation.label == "POST /v1/reports" and mode is GenerationMode.POSITIVE:
                runs.append(
                    (
                        f"{operation.label} [{mode.value}, known category in province]",
                        in_province(
                            operation.as_strategy(generation_mode=mode, headers=headers),
                            categories,
                        ),
                    )
                )
            if "{report_id}" in operation.path:
                runs.append(
                    (
                        f"{operation.label} [{mode.value}, existing report]",
                        operation.as_strategy(
                            generation_mode=mode,
                            headers=headers,
                            path_parameters={"report_id": existing},
                        ),
                    )
                )
    assert len(runs) >= 12, [label for label, _ in runs]

    def fuzz_all() -> list[str]:
        return [f for label, strategy in runs if (f := fuzz(label, strategy, send)) is not None]

    failures = await asyncio.to_thread(fuzz_all)

    assert not failures, "\n\n".join(failures)
