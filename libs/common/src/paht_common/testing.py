"""Test helpers with no I/O: a settable clock and random identifiers."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from paht_common.clock import require_aware


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
