"""HTTP API and composition root of the routing service.

Run: ``python -m routing`` (serves on ROUTING_HTTP_PORT, runs the faust worker in-process).
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from faust.contrib.asgi import faust_app_running

from paht_common.clock import SystemClock
from paht_common.db import Conn
from paht_common.docs import install_docs
from paht_common.events import Envelope, Payload
from paht_common.faust_worker import attach_agent, make_faust_app
from paht_common.http import DbConn, ops_router
from paht_common.problems import install_problem_handlers, problem_responses
from paht_common.runtime import Runtime
from paht_common.topics import REPORT_EVENTS
from routing import repository
from routing.handlers import handle_report_event
from routing.settings import RoutingSettings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
CONSUMER = "routing"
PROBLEM_TEXT = {
    404: "the report has no assignment (not routed yet, or unknown)",
    422: "report_id is not a UUID",
}


def build_app(settings: RoutingSettings | None = None) -> FastAPI:
    """The FastAPI app whose lifespan runs the runtime and the faust worker."""
    settings = settings or RoutingSettings()
    clock = SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Runtime(service="routing", settings=settings, migrations=MIGRATIONS) as rt:

            async def handle(conn: Conn, envelope: Envelope[Payload]) -> None:
                await handle_report_event(
                    conn, envelope, clock=clock, province=settings.province_code
                )

            worker = make_faust_app(settings.faust_app_id, settings)
            attach_agent(
                worker, (REPORT_EVENTS,), rt.processor(CONSUMER, handle), name="route_reports"
            )
            rt.watch_lag(settings.faust_app_id, (REPORT_EVENTS,))  # faust: group id = app id
            app.state.runtime = rt
            app.include_router(ops_router(rt.checks()))
            async with faust_app_running(worker, stop_timeout=15):
                yield

    app = FastAPI(title="PAHT routing", version="1.0.0", lifespan=lifespan)
    install_problem_handlers(app)
    install_docs(app, "routing")

    @app.get(
        "/v1/assignments/{report_id}",
        tags=["assignments"],
        responses=problem_responses(PROBLEM_TEXT, 404, 422),
    )
    async def get_assignments(report_id: uuid.UUID, conn: DbConn) -> dict[str, Any]:
        """Current lead agency of a report and its routing history."""
        history = await repository.assignments_of(conn, report_id=report_id)
        if not history:
            raise HTTPException(404, f"no assignment for report {report_id}")
        current = next((h for h in history if h["is_current"]), history[-1])
        return {"report_id": str(report_id), "current": current, "history": history}

    return app
