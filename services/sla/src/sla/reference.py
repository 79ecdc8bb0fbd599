"""Reference data kept in memory: the business calendar and the SLA policies.

Both change rarely and only through stored rows whose revision moves with every change (the
calendar's by the code that edits it, the policies' by a trigger). The event handler reads
both revisions in the query that loads a report's facts, so checking them costs no round
trip, and reloads what moved: an edit is seen by the next event in every instance.
"""

from __future__ import annotations

from paht_common.db import Conn
from sla import repository
from sla.calendar import BusinessCalendar
from sla.domain import Policy


class CalendarCache:
    """The business calendar, reloaded when its stored revision changes."""

    def __init__(self) -> None:
        self._calendar: BusinessCalendar | None = None
        self._revision = -1

    async def get(self, conn: Conn) -> BusinessCalendar:
        """Current calendar (one cheap revision query per call)."""
        return await self.at(conn, revision=await repository.calendar_revision(conn))

    async def at(self, conn: Conn, *, revision: int) -> BusinessCalendar:
        """The calendar of a revision already read; no query unless it moved."""
        if self._calendar is None or revision != self._revision:
            self._calendar = await repository.load_calendar(conn)
            self._revision = revision
        return self._calendar


class PolicyCache:
    """Active policies in evaluation order, reloaded when their stored revision changes."""

    def __init__(self) -> None:
        self._policies: tuple[Policy, ...] | None = None
        self._revision = -1

    async def at(self, conn: Conn, *, revision: int) -> tuple[Policy, ...]:
        """The policies of a revision already read; no query unless it moved."""
        if self._policies is None or revision != self._revision:
            self._policies = tuple(await repository.load_policies(conn))
            self._revision = revision
        return self._policies
