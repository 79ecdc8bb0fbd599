"""The whole lifecycle through every service (issue 19): submit → routed and assigned →
acknowledged → extension → resolved → published → rated by the app → reopened → re-assigned
by hand (routing follows) → resolved → published → closed by the rating window."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from paht_common.staff_auth import dev_key_pair, issue_token
from paht_devenv.environment import DEV_API_KEY, Environment, throwaway_environment

pytestmark = pytest.mark.e2e

AGENCY = "ubnd-07627"  # routing's rule for the commune
OTHER_AGENCY = "ubnd-07615"
APP = {"X-API-Key": DEV_API_KEY}
WITHIN = 90.0


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Environment, Path]]:
    key_dir = tmp_path_factory.mktemp("jwt")
    with throwaway_environment("paht-e2e-life-", with_prometheus=False) as env:
        env.extra_env["INTAKE_JWT_DEV_KEY_DIR"] = str(key_dir)
        env.extra_env["INTAKE_CLOSE_SCAN_INTERVAL_SECONDS"] = "0.2"
        env.start_all()
        yield env, key_dir


def staff(key_dir: Path, role: str, agency: str | None = None) -> dict[str, str]:
    private, _ = dev_key_pair(key_dir)
    token = issue_token(
        private,
        subject=f"{role}-e2e",
        role=role,
        agency_id=agency,
        issuer="paht-dev",
        audience="paht",
    )
    return {"Authorization": f"Bearer {token}"}


async def eventually(condition: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + WITHIN
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {WITHIN} s")
        await asyncio.sleep(0.2)


async def test_a_report_goes_the_whole_way_and_the_window_closes_it(system) -> None:
    env, key_dir = system
    coordinator = staff(key_dir, "coordinator")
    officer = staff(key_dir, "officer", AGENCY)
    other_officer = staff(key_dir, "officer", OTHER_AGENCY)
    intake_url = f"http://127.0.0.1:{env.ports.services['intake']}"
    routing_url = f"http://127.0.0.1:{env.ports.services['routing']}"
    async with (
        httpx.AsyncClient(base_url=intake_url, timeout=10) as intake,
        httpx.AsyncClient(base_url=routing_url, timeout=10) as routing,
    ):

        async def act(headers: dict[str, str], action: str, **fields: Any) -> str:
            response = await intake.post(
                f"/v1/reports/{report_id}/actions", json={"type": action, **fields}, headers=headers
            )
            assert response.status_code == 200, (action, response.text)
            return str(response.json()["to"])

        async def state_is(expected: str) -> bool:
            response = await intake.get(f"/v1/reports/{report_id}", headers=coordinator)
            return bool(response.json()["status"] == expected)

        submitted = await intake.post(
            "/v1/reports",
            headers=APP,
            json={
                "category": "URBAN_ORDER.ENCROACHMENT",
                "description": "Lấn chiếm vỉa hè trước chợ.",
                "location": {"commune_code": "07627", "lat": 21.18, "lon": 106.07},
                "reporter": {"name": "Nguyễn Thị Bình", "phone": "0912345678"},
            },
        )
        assert submitted.status_code == 202, submitted.text
        report_id = submitted.json()["id"]

        await eventually(lambda: state_is("assigned"))  # routed automatically
        assert await act(officer, "acknowledge") == "in_progress"
        assert await act(officer, "request_extension", days=2, reason="Chờ phối hợp.") == (
            "extension_requested"
        )
        assert await act(coordinator, "approve_extension") == "in_progress"
        assert await act(officer, "respond", text="Đã giải tỏa vỉa hè.") == "resolved"
        assert await act(coordinator, "publish") == "published"
        assert await act(APP, "rate", rating=2, comment="Hôm sau lại lấn chiếm.") == "rated"
        assert await act(APP, "reopen", reason="Vẫn lấn chiếm.") == "reopened"

        # the coordinator re-routes by hand; routing's view follows
        assert await act(coordinator, "assign", agency_id=OTHER_AGENCY) == "assigned"

        async def routing_follows() -> bool:
            response = await routing.get(f"/v1/assignments/{report_id}")
            if response.status_code != 200:
                return False
            current = response.json()["current"]
            return bool(current["agency_id"] == OTHER_AGENCY and current["source"] == "manual")

        await eventually(routing_follows)
        assert await act(other_officer, "acknowledge") == "in_progress"
        assert await act(other_officer, "respond", text="Đã cưỡng chế.") == "resolved"
        assert await act(coordinator, "publish") == "published"
        assert await act(APP, "rate", rating=5, comment="Đã sạch.") == "rated"

        # the 7-day window ends: moved to the past rather than waited for
        db = await asyncpg.connect(env.database_url("intake"))
        try:
            await db.execute(
                "UPDATE reports SET closes_at = now() - interval '1 second' WHERE id = $1",
                report_id,
            )
        finally:
            await db.close()
        await eventually(lambda: state_is("closed"))

        timeline = (
            await intake.get(f"/v1/reports/{report_id}/timeline", headers=coordinator)
        ).json()
        actions = [(t["action"], t["actor_role"]) for t in timeline]
        assert actions[-1] == ("close", "system")
        assert ("rate", "reporter") in actions
        assert ("reopen", "reporter") in actions
