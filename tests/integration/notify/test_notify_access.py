"""Who may use notify's API: staff JWTs (intake's keys and rules) and the admin token.

The real app (lifespan, PostgreSQL, Kafka) over ASGI; tokens signed with a development key
pair made for this module, as intake's ``issue-token`` does.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notify.api import build_app
from notify.settings import NotifySettings
from paht_common.db import ensure_database, with_database
from paht_common.staff_auth import dev_key_pair, issue_token
from paht_common.testing import random_id

pytestmark = pytest.mark.integration

PROBLEM_JSON = "application/problem+json"
ADMIN = "test-notify-admin-token-4f1c"


class Tokens:
    """Signs staff tokens with the key pair the app under test trusts."""

    def __init__(self, key_dir: Path) -> None:
        self.private, _ = dev_key_pair(key_dir)

    def header(self, role: str, agency: str | None = None, **claims: str) -> dict[str, str]:
        token = issue_token(
            self.private,
            subject=claims.pop("sub", random_id("u-")),
            role=role,
            agency_id=agency,
            issuer="paht-dev",
            audience="paht",
            **claims,  # type: ignore[arg-type]
        )
        return {"Authorization": f"Bearer {token}"}


ADMIN_HEADER = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jwt")


@pytest.fixture(scope="module")
def tokens(key_dir: Path) -> Tokens:
    return Tokens(key_dir)


@pytest.fixture(scope="module")
async def api(
    postgres_dsn: str,
    kafka_bootstrap: str,
    key_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[httpx.AsyncClient]:
    name = random_id("db_")
    await ensure_database(postgres_dsn, name)
    settings = NotifySettings(
        database_url=with_database(postgres_dsn, name),
        kafka_bootstrap=kafka_bootstrap,
        consumer_group=random_id("notify-"),
        jwt_dev_key_dir=key_dir,
        vapid_key_file=tmp_path_factory.mktemp("vapid") / "private.pem",
        admin_token=ADMIN,
    )
    app = build_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notify") as c,
    ):
        yield c


def webhook(agency_id: str | None = None, app_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": "webhook",
        "url": "https://hooks.example.vn/paht",
        "secret": "whsec_" + base64.b64encode(os.urandom(32)).decode(),
    }
    if agency_id is not None:
        body["agency_id"] = agency_id
    if app_id is not None:
        body["app_id"] = app_id
    return body


def browser_subscription() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {
        "endpoint": f"https://push.example.net/send/{uuid.uuid4()}",
        "expirationTime": None,
        "keys": {
            "p256dh": base64.urlsafe_b64encode(point).decode().rstrip("="),
            "auth": base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="),
        },
    }


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    if field is not None:
        body = response.json()
        fields = {body.get("field")} | {e["field"] for e in body.get("errors", [])}
        assert field in fields, body


# --- 401: every route but the VAPID key needs credentials ---

ROUTES = [
    ("POST", "/v1/subscriptions", webhook("ubnd-07627")),
    ("GET", "/v1/subscriptions", None),
    ("GET", f"/v1/subscriptions/{uuid.uuid4()}", None),
    ("DELETE", f"/v1/subscriptions/{uuid.uuid4()}", None),
    ("GET", f"/v1/deliveries?report_id={uuid.uuid4()}", None),
    ("POST", f"/v1/deliveries/{uuid.uuid4()}/retry", None),
    ("POST", "/v1/push-subscriptions", browser_subscription()),
    ("POST", "/v1/email-subscriptions", {"email": "can.bo@bacninh.gov.vn"}),
    ("GET", "/v1/preferences", None),
    ("PUT", "/v1/preferences", {"quiet_hours": True}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_every_route_refuses_a_request_without_credentials(
    api: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await api.request(method, path, json=body)

    assert_problem(response, 401, "Authorization")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_every_route_refuses_a_token_signed_by_another_key(
    api: httpx.AsyncClient, tmp_path: Path, method: str, path: str, body: Any
) -> None:
    forged = Tokens(tmp_path).header("coordinator")

    response = await api.request(method, path, json=body, headers=forged)

    assert_problem(response, 401, "Authorization")


async def test_the_vapid_public_key_needs_no_token(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/push/vapid-public-key")

    assert response.status_code == 200
    key = base64.urlsafe_b64decode(response.json()["public_key"] + "==")
    assert len(key) == 65  # an uncompressed P-256 point
    assert key[0] == 4


# --- agency webhooks: the agency's leader or the coordinator ---


async def test_an_agency_leader_registers_its_webhook(api: httpx.AsyncClient, tokens: Tokens):
    response = await api.post(
        "/v1/subscriptions", json=webhook("so-xd"), headers=tokens.header("leader", "so-xd")
    )

    assert response.status_code == 201, response.text
    assert response.json()["agency_id"] == "so-xd"
    assert response.json()["owner_kind"] == "agency"


@pytest.mark.parametrize(
    ("role", "agency"), [("officer", "so-xd"), ("leader", "so-gtvt"), ("supervisor", None)]
)
async def test_others_cannot_register_an_agencys_webhook(
    api: httpx.AsyncClient, tokens: Tokens, role: str, agency: str | None
) -> None:
    response = await api.post(
        "/v1/subscriptions", json=webhook("so-xd"), headers=tokens.header(role, agency)
    )

    assert_problem(response, 403, "Authorization")


async def test_the_coordinator_registers_any_agencys_webhook(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await api.post(
        "/v1/subscriptions", json=webhook("so-yt"), headers=tokens.header("coordinator")
    )

    assert response.status_code == 201, response.text


async def test_an_upstream_apps_webhook_needs_the_admin_token(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    by_coordinator = await api.post(
        "/v1/subscriptions", json=webhook(app_id="demo-app"), headers=tokens.header("coordinator")
    )
    by_admin = await api.post(
        "/v1/subscriptions", json=webhook(app_id="demo-app"), headers=ADMIN_HEADER
    )

    assert_problem(by_coordinator, 403, "Authorization")
    assert by_admin.status_code == 201, by_admin.text
    assert by_admin.json()["app_id"] == "demo-app"
    assert by_admin.json()["agency_id"] is None


async def test_a_webhook_names_exactly_one_owner(api: httpx.AsyncClient) -> None:
    both = webhook("so-xd", app_id="demo-app")

    response = await api.post("/v1/subscriptions", json=both, headers=ADMIN_HEADER)

    assert_problem(response, 422)


async def test_reading_and_removing_another_agencys_webhook_is_forbidden(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    created = await api.post(
        "/v1/subscriptions", json=webhook("so-tc"), headers=tokens.header("leader", "so-tc")
    )
    url = f"/v1/subscriptions/{created.json()['id']}"
    other_leader = tokens.header("leader", "so-nv")
    officer_same_agency = tokens.header("officer", "so-tc")

    assert_problem(await api.get(url, headers=other_leader), 403)
    assert_problem(await api.delete(url, headers=other_leader), 403)
    assert_problem(await api.delete(url, headers=officer_same_agency), 403)
    assert (await api.get(url, headers=tokens.header("leader", "so-tc"))).status_code == 200
    assert (await api.delete(url, headers=tokens.header("coordinator"))).status_code == 204


async def test_listing_is_scoped_to_the_callers_agency(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    agency = random_id("ubnd-")
    await api.post(
        "/v1/subscriptions", json=webhook(agency), headers=tokens.header("leader", agency)
    )
    await api.post(
        "/v1/subscriptions", json=webhook("so-khac"), headers=tokens.header("coordinator")
    )

    mine = await api.get("/v1/subscriptions", headers=tokens.header("leader", agency))
    foreign = await api.get(
        "/v1/subscriptions",
        params={"agency_id": "so-khac"},
        headers=tokens.header("officer", agency),
    )

    assert mine.status_code == 200
    assert {s["agency_id"] for s in mine.json()} == {agency}
    assert_problem(foreign, 403)


# --- personal channels ---


async def test_an_officer_subscribes_a_browser_once(api: httpx.AsyncClient, tokens: Tokens):
    officer = tokens.header("officer", "ubnd-07627", sub="officer-push-1")
    browser = browser_subscription()

    first = await api.post("/v1/push-subscriptions", json=browser, headers=officer)
    again = await api.post("/v1/push-subscriptions", json=browser, headers=officer)
    listed = await api.get("/v1/subscriptions", headers=officer)

    assert first.status_code == 201, first.text
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert first.json()["user_id"] == "officer-push-1"
    assert "p256dh" not in first.text
    assert browser["keys"]["auth"] not in first.text
    assert [s["id"] for s in listed.json()] == [first.json()["id"]]


async def test_the_admin_token_has_no_personal_subscriptions(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/push-subscriptions", json=browser_subscription(), headers=ADMIN_HEADER
    )

    assert_problem(response, 403)


@pytest.mark.parametrize(
    ("keys", "field"),
    [
        ({"p256dh": "not base64url!", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}, "keys.p256dh"),
        (
            {"p256dh": base64.urlsafe_b64encode(b"\x04" + b"\x01" * 64).decode(), "auth": "x"},
            "keys.p256dh",
        ),
        ({"p256dh": "BAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}, "keys.p256dh"),
    ],
)
async def test_malformed_push_keys_are_refused_and_nothing_is_stored(
    api: httpx.AsyncClient, tokens: Tokens, keys: dict[str, str], field: str
) -> None:
    officer = tokens.header("officer", "ubnd-07627", sub=random_id("u-"))
    browser = browser_subscription() | {"keys": keys}

    response = await api.post("/v1/push-subscriptions", json=browser, headers=officer)
    listed = await api.get("/v1/subscriptions", headers=officer)

    assert_problem(response, 422, field)
    assert listed.json() == []


async def test_a_wrong_auth_secret_length_names_keys_auth(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    browser = browser_subscription()
    browser["keys"]["auth"] = base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("=")

    response = await api.post(
        "/v1/push-subscriptions", json=browser, headers=tokens.header("officer", "so-xd")
    )

    assert_problem(response, 422, "keys.auth")


async def test_a_plain_http_push_endpoint_is_refused(api: httpx.AsyncClient, tokens: Tokens):
    browser = browser_subscription() | {"endpoint": "http://push.example.net/send/1"}

    response = await api.post(
        "/v1/push-subscriptions", json=browser, headers=tokens.header("officer", "so-xd")
    )

    assert_problem(response, 422, "endpoint")


async def test_email_goes_to_the_tokens_address_or_a_valid_one(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    with_claim = tokens.header("officer", "so-xd", email="lan.nt@bacninh.gov.vn")
    without = tokens.header("officer", "so-xd")

    from_claim = await api.post("/v1/email-subscriptions", json={}, headers=with_claim)
    missing = await api.post("/v1/email-subscriptions", json={}, headers=without)
    bad = await api.post(
        "/v1/email-subscriptions", json={"email": "không phải email"}, headers=without
    )

    assert from_claim.status_code == 201, from_claim.text
    assert from_claim.json()["email"] == "lan.nt@bacninh.gov.vn"
    assert_problem(missing, 422, "email")
    assert_problem(bad, 422, "email")


async def test_preferences_round_trip_and_refuse_unknown_kinds(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    officer = tokens.header("officer", "so-xd", sub=random_id("u-"))
    wanted = {"quiet_hours": True, "kinds": {"sla.warning": {"web_push": False, "email": True}}}

    stored = await api.put("/v1/preferences", json=wanted, headers=officer)
    read = await api.get("/v1/preferences", headers=officer)
    unknown = await api.put(
        "/v1/preferences", json={"kinds": {"sla.nonsense": {}}}, headers=officer
    )

    assert stored.status_code == 200, stored.text
    assert read.json()["quiet_hours"] is True
    assert read.json()["kinds"]["sla.warning"] == {"web_push": False, "email": True}
    assert read.json()["kinds"]["sla.breached"] == {"web_push": True, "email": True}
    assert_problem(unknown, 422, "kinds")


async def test_officers_cannot_retry_deliveries(api: httpx.AsyncClient, tokens: Tokens):
    response = await api.post(
        f"/v1/deliveries/{uuid.uuid4()}/retry", headers=tokens.header("officer", "so-xd")
    )

    assert_problem(response, 404)  # unknown first; the 403 case is in the fan-out tests


async def test_a_browser_signed_in_by_another_officer_moves_to_them(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    first = tokens.header("officer", "ubnd-07627", sub=random_id("u-"))
    second = tokens.header("officer", "ubnd-07627", sub=random_id("u-"))
    browser = browser_subscription()

    old = await api.post("/v1/push-subscriptions", json=browser, headers=first)
    new = await api.post("/v1/push-subscriptions", json=browser, headers=second)
    old_now = await api.get(f"/v1/subscriptions/{old.json()['id']}", headers=first)

    assert new.status_code == 201
    assert new.json()["id"] != old.json()["id"]
    assert old_now.json()["active"] is False
