"""Schemathesis (every check, as the coordinator) and the hostile corpus over the notify API,
served over real HTTP by the app running its real lifespan (consumer, dispatcher)."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.specs.openapi.checks import positive_data_acceptance

from notify.api import build_app
from notify.settings import NotifySettings
from paht_common.db import ensure_database, with_database
from paht_common.staff_auth import dev_key_pair, issue_token
from paht_common.testing import random_id
from paht_devenv.fuzz import Plan, attack, fuzz_operations, serving

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

ADMIN = "fuzz-notify-admin-token-5b2e"


@pytest.fixture
async def notify_app(
    postgres_dsn: str, kafka_bootstrap: str, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    name = random_id("db_")
    await ensure_database(postgres_dsn, name)
    settings = NotifySettings(
        database_url=with_database(postgres_dsn, name),
        kafka_bootstrap=kafka_bootstrap,
        consumer_group=random_id("notify-fuzz-"),
        jwt_dev_key_dir=tmp_path / "jwt",
        vapid_key_file=tmp_path / "vapid" / "private.pem",
        admin_token=ADMIN,
    )
    app = build_app(settings)
    app.state.key_dir = tmp_path / "jwt"
    async with app.router.lifespan_context(app):
        yield app


def coordinator(app: FastAPI) -> dict[str, str]:
    private, _ = dev_key_pair(app.state.key_dir)
    token = issue_token(
        private,
        subject=random_id("coord-"),
        role="coordinator",
        agency_id=None,
        issuer="paht-dev",
        audience="paht",
        ttl_seconds=3600,
    )
    return {"Authorization": f"Bearer {token}"}


async def a_subscription(base_url: str) -> str:
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as client:
        response = await client.post(
            "/v1/subscriptions",
            json={
                "agency_id": "ubnd-fuzz",
                "channel": "webhook",
                "url": "https://hooks.example.vn/paht",
                "secret": "whsec_" + base64.b64encode(os.urandom(32)).decode(),
            },
        )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_the_notify_api_passes_every_schemathesis_check(notify_app: FastAPI) -> None:
    staff = coordinator(notify_app)
    async with serving(notify_app) as base_url:
        known = {"subscription_id": await a_subscription(base_url)}
        schema = schemathesis.openapi.from_dict(notify_app.openapi()).include(path_regex=r"^/v1/")

        def headers(operation: Any) -> dict[str, str]:
            return staff

        plan = Plan(
            schema,
            base_url,
            headers=headers,
            known=known,
            relaxed={
                # a webhook target must resolve to a public address (channels.egress)
                "POST /v1/subscriptions": (positive_data_acceptance,),
                # keys.p256dh must encode a point on the P-256 curve; endpoint an https URL
                "POST /v1/push-subscriptions": (positive_data_acceptance,),
                # without an address, the caller's token must carry an email claim
                "POST /v1/email-subscriptions": (positive_data_acceptance,),
            },
        )
        failures = await asyncio.to_thread(fuzz_operations, plan)

    assert not failures, "\n\n".join(failures)


async def test_hostile_inputs_never_get_a_5xx_from_notify(notify_app: FastAPI) -> None:
    async with serving(notify_app) as base_url:
        report = await attack(base_url, notify_app.openapi(), headers=coordinator(notify_app))

    assert report.sent > 300
    assert not report.failures, "\n".join(report.failures)
