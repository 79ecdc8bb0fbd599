"""Schemathesis (every check) and the hostile corpus over intake's /v1 API and its Open311
facade, served over real HTTP by the app running its real lifespan (PostgreSQL + Kafka).

Credentials: the app's API key, a coordinator JWT, and the admin token on /v1/admin.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from paht_devenv.fuzz import Plan, attack, fuzz_operations, serving

pytestmark = [
    pytest.mark.integration,
    # schemathesis' own strategies trip this Hypothesis deprecation; nothing we can change
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]


def in_province(categories: list[str]) -> Any:
    """Steer generated submissions to a catalogue category and a point in Bắc Ninh."""

    def steer(case: Any, category: str, lat: float, lon: float) -> Any:
        if isinstance(case.body, dict):
            case.body = {**case.body, "category": category, "location": {"lat": lat, "lon": lon}}
        return case

    def strategy(cases: Any) -> Any:
        return st.builds(
            steer,
            cases,
            st.sampled_from(categories),
            st.floats(21.10, 21.25),
            st.floats(105.95, 106.15),
        )

    return strategy


def credentials(intake: Any) -> Any:
    staff = f"Bearer {intake.token('coordinator', ttl=3600)}"
    admin = f"Bearer {intake.settings.admin_token}"

    def headers(operation: Any) -> dict[str, str]:
        declared = {p.name.lower() for p in operation.headers}
        given = {
            "x-api-key": intake.api_key,
            "authorization": admin if operation.path.startswith("/v1/admin") else staff,
        }
        return {k: v for k, v in given.items() if k in declared}

    return headers


async def test_intake_passes_every_schemathesis_check(intake: Any) -> None:
    existing = (await intake.submit())["id"]
    catalogue = await intake.client.get("/v1/categories")
    categories = [c["code"] for c in catalogue.json()]
    async with serving(intake.app) as base_url:
        schema = schemathesis.openapi.from_dict(intake.app.openapi()).include(
            path_regex=r"^/(v1|open311)/"
        )
        plan = Plan(
            schema,
            base_url,
            headers=credentials(intake),
            known={"report_id": existing, "service_code": categories[0]},
            steer={"POST /v1/reports": in_province(categories)},
            # rules a schema cannot state, so schema-valid data may still be refused there
            relaxed={
                # where a report may be is a polygon, its category a catalogue row
                "POST /v1/reports": (positive_data_acceptance,),
                # an opaque cursor is valid only when this API issued it; and schemathesis
                # negates the category list into a boolean, sent as "true", a valid category
                "GET /v1/reports": (positive_data_acceptance, negative_data_rejection),
                # start_date..end_date spans at most 90 days
                "GET /open311/v2/requests.{fmt}": (positive_data_acceptance,),
                # expires_at must be in the future
                "POST /v1/admin/api-keys": (positive_data_acceptance,),
                "POST /v1/admin/api-keys/{key_id}/rotate": (positive_data_acceptance,),
                # what an action may do depends on the report's state and other reports
                "POST /v1/reports/{report_id}/actions": (positive_data_acceptance,),
                # files are sniffed: their bytes must be an image or a video
                "POST /v1/reports/{report_id}/media": (positive_data_acceptance,),
                # a known api_key, a category of the catalogue, a point in the province
                "POST /open311/v2/requests.{fmt}": (positive_data_acceptance,),
                # a new agency needs a name, an existing one does not
                "PUT /v1/admin/agencies/{agency_id}": (positive_data_acceptance,),
            },
            max_examples=20,
        )
        failures = await asyncio.to_thread(fuzz_operations, plan)

    assert not failures, "\n\n".join(failures)


async def test_hostile_inputs_never_get_a_5xx_from_intake(intake: Any) -> None:
    existing = (await intake.submit())["id"]
    async with serving(intake.app) as base_url:
        v1 = await attack(
            base_url,
            intake.app.openapi(),
            headers={
                "X-API-Key": intake.api_key,
                "Authorization": f"Bearer {intake.token('coordinator', ttl=3600)}",
            },
            fixed_path={"report_id": existing},
        )
        open311 = await attack(
            base_url, intake.app.openapi(), prefix="/open311/", fixed_path={"fmt": "json"}
        )

    assert v1.sent > 500
    assert open311.sent > 100
    assert not v1.failures + open311.failures, "\n".join(v1.failures + open311.failures)
