"""The one source of the current time: aware UTC, so copies cannot drift."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def utcnow() -> datetime:
    """Return the current instant as an aware UTC datetime."""
    return datetime.now(UTC)


class Clock(Protocol):
    """Anything that can tell the time; handlers receive one instead of calling utcnow()."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """Return the current instant as an aware UTC datetime."""
        return utcnow()


def require_aware(value: datetime, *, field: str) -> datetime:
    """Return value in UTC; raise ValueError naming the field when it has no offset."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field} must carry a UTC offset")
    return value.astimezone(UTC)


def to_local_iso(value: datetime) -> str:
    """Render an aware instant as ISO 8601 with the +07:00 offset of Asia/Ho_Chi_Minh."""
    return value.astimezone(LOCAL_TZ).isoformat()
