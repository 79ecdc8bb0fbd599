"""Test helpers with no I/O: a settable clock, random identifiers, a loop's shutdown."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from paht_common.clock import require_aware
from paht_common.db import Wakeup


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self._now = require_aware(start, field="start")

    def now(self) -> datetime:
        """The instant the test set."""
        return self._now

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward."""
        self._now += delta

    def set(self, value: datetime) -> None:
        """Jump to an instant."""
        self._now = require_aware(value, field="value")


def random_id(prefix: str = "t") -> str:
    """Unique, readable id for isolating tests (topics, databases, agencies)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


async def cancel_as_woken(
    run: Callable[[], Coroutine[Any, Any, None]], wake: Wakeup
) -> asyncio.Task[None]:
    """Start a polling loop, let it idle, then wake and cancel it in the same instant.

    Returns the loop's task after at most 10 s: done and cancelled when the loop honours a
    cancellation that coincides with a wake-up (a NOTIFY during shutdown).
    """
    task = asyncio.create_task(run())
    await asyncio.sleep(0.5)  # idle, waiting to be woken
    wake.set()
    task.cancel()
    await asyncio.wait({task}, timeout=10)
    return task
