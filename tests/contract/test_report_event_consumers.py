"""Every consumer of a report event it has no use for handles it as a no-op: never a crash,
never a dead letter (no I/O: a fake database that allows only the inbox claim)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from intake.handlers import IntakeContext, handle_external_event
from intake.settings import IntakeSettings
from notify.domain import notification_for
from paht_common.clock import SystemClock
from paht_common.consumer import EventProcessor
from paht_common.db import Conn
from paht_common.events import (
    AddedMedia,
    Envelope,
    Payload,
    ReportMediaAdded,
    new_envelope,
)
from paht_common.inbox import CLAIM
from paht_common.kafka import RawRecord, encode, header_list, key_bytes
from paht_common.topics import REPORT_EVENTS
from routing.handlers import handle_report_event
from sla.handlers import CalendarCache, SlaContext, handle_event

AT = datetime(2026, 11, 27, 3, tzinfo=UTC)


def media_added() -> Envelope[Payload]:
    payload = ReportMediaAdded(
        report_id=uuid.uuid4(),
        number="BN-2026-000042",
        count=1,
        media=[AddedMedia(sha256="ab" * 32, content_type="image/jpeg")],
        added_at=AT,
    )
    return new_envelope(payload, source="/intake", province="bn", occurred_at=AT)


class InboxOnly:
    """A connection that answers the inbox claim and fails on any other use."""

    def __init__(self) -> None:
        self.claims = 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    async def fetchval(self, query: str, *args: Any) -> Any:
        assert query == CLAIM, f"unexpected query: {query}"
        self.claims += 1
        return 1

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the handler used the database ({name})")


class OnePool:
    def __init__(self, conn: InboxOnly) -> None:
        self.conn = conn

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[InboxOnly]:
        yield self.conn


def intake_settings() -> IntakeSettings:
    return IntakeSettings(database_url="postgresql://unused/unused", kafka_bootstrap="unused:9092")


Handler = Callable[[Conn, Envelope[Payload]], Awaitable[None]]


def routing_handler() -> Handler:
    async def handle(conn: Conn, envelope: Envelope[Payload]) -> None:
        await handle_report_event(conn, envelope, clock=SystemClock(), province="bn")

    return handle


def sla_handler() -> Handler:
    ctx = SlaContext(clock=SystemClock(), calendars=CalendarCache(), province="bn")

    async def handle(conn: Conn, envelope: Envelope[Payload]) -> None:
        await handle_event(conn, envelope, ctx=ctx)

    return handle


def intake_handler() -> Handler:
    ctx = IntakeContext(settings=intake_settings(), clock=SystemClock(), communes=frozenset())

    async def handle(conn: Conn, envelope: Envelope[Payload]) -> None:
        await handle_external_event(conn, envelope, ctx=ctx)

    return handle


@pytest.mark.parametrize(
    "make_handler",
    [routing_handler, sla_handler, intake_handler],
    ids=["routing", "sla", "intake"],
)
async def test_media_added_is_handled_as_a_no_op_not_dead_lettered(
    make_handler: Callable[[], Handler],
) -> None:
    message = encode(media_added())
    record = RawRecord(
        topic=REPORT_EVENTS,
        partition=0,
        offset=0,
        key=key_bytes(message),
        value=message.value,
        headers=tuple(header_list(message)),
    )
    conn = InboxOnly()
    dead: list[str] = []

    async def dead_letters(topic: str, record: RawRecord, headers: Any) -> None:
        dead.append(topic)

    processor = EventProcessor(
        consumer="test",
        pool=OnePool(conn),  # type: ignore[arg-type]
        handler=make_handler(),
        dead_letters=dead_letters,
        retry_delay=0.0,
    )

    outcome = await processor.process(record)

    assert (outcome, dead, conn.claims) == ("handled", [], 1)


def test_notify_makes_no_notification_of_media_added() -> None:
    assert notification_for(media_added()) is None
