"""End-to-end latency: POST /v1/reports → signed webhook at the agency's receiver.

Starts the whole system in a throwaway environment (as `make run` does, on free ports),
registers a Standard Webhooks receiver for one agency, submits reports one at a time and
measures submit → verified webhook arrival.

    uv run python bench/bench_e2e_latency.py [--reports 50]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import statistics
import time
import uuid
from pathlib import Path

import httpx
from aiohttp import web
from standardwebhooks import Webhook

from paht_devenv.environment import DEV_API_KEY, DEV_NOTIFY_ADMIN_TOKEN, throwaway_environment

AGENCY = "ubnd-07627"
RESULTS = Path(__file__).parent / "results" / "e2e_latency.json"


async def measure(env_ports: dict[str, int], reports: int) -> dict[str, float | int]:
    """Submit ``reports`` reports sequentially and time each until its webhook arrives."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    verifier = Webhook(secret)
    arrived: dict[str, float] = {}
    got = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        verifier.verify(body, dict(request.headers))
        arrived.setdefault(json.loads(body)["data"]["report_id"], time.perf_counter())
        got.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:
        notify = f"http://127.0.0.1:{env_ports['notify']}"
        intake = f"http://127.0.0.1:{env_ports['intake']}"
        response = await client.post(
            f"{notify}/v1/subscriptions",
            headers={"Authorization": f"Bearer {DEV_NOTIFY_ADMIN_TOKEN}"},
            json={
                "agency_id": AGENCY,
                "channel": "webhook",
                "url": f"http://127.0.0.1:{port}/hook",
                "secret": secret,
            },
        )
        response.raise_for_status()
        for i in range(reports + 3):
            started = time.perf_counter()
            response = await client.post(
                f"{intake}/v1/reports",
                headers={"X-API-Key": DEV_API_KEY, "Idempotency-Key": str(uuid.uuid4())},
                json={
                    "category": "URBAN_ORDER.ENCROACHMENT",
                    "description": f"Lấn chiếm vỉa hè, lần đo {i}",
                    "location": {"commune_code": "07627", "lat": 21.18, "lon": 106.07},
                },
            )
            report_id = response.json()["id"]
            async with asyncio.timeout(60):
                while report_id not in arrived:
                    got.clear()
                    await got.wait()
            if i >= 3:  # the first ones warm up connections and consumer fetches
                latencies.append(arrived[report_id] - started)
    await runner.cleanup()
    latencies.sort()
    return {
        "reports": len(latencies),
        "p50_seconds": round(statistics.median(latencies), 3),
        "p90_seconds": round(latencies[int(0.9 * (len(latencies) - 1))], 3),
        "max_seconds": round(latencies[-1], 3),
    }


def main() -> None:
    """Start the system, measure, print and store the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=50)
    args = parser.parse_args()
    with throwaway_environment("paht-bench-e2e-", with_prometheus=False) as env:
        env.start_all()
        result = asyncio.run(measure(dict(env.ports.services), args.reports))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
