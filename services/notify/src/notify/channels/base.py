"""The interface every outbound channel implements (webhook now; Web Push and email later)."""

from __future__ import annotations

from typing import Protocol

from notify.domain import AttemptResult, ClaimedDelivery


class Channel(Protocol):
    """Sends one delivery attempt and reports what happened; never raises for remote failures.

    A channel maps its transport's answers onto a ``Verdict`` (delivered, retry, failed,
    gone); the dispatcher owns leases, retry timing and recording outcomes.
    """

    name: str
    """Value of ``subscriptions.channel`` this channel serves."""

    async def send(self, delivery: ClaimedDelivery) -> AttemptResult:
        """Make one attempt; must finish within the channel's own timeout."""
        ...
