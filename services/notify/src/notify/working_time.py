"""Office hours from the SLA service's calendar (its owner): where quiet hours end."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

import httpx

logger = logging.getLogger(__name__)

CACHE_SECONDS = 60.0
"""How long an answer is reused for instants asked about since (a calendar edit shows up
within this long; alerts are never held by more than this past the office-hours start)."""


class SlaCalendar:
    """``WorkingTime`` through ``GET /v1/calendar/next-working`` of the SLA service.

    When the SLA service cannot answer, the alert is not held (None): a late quiet hour is
    better than a lost or indefinitely held alert.
    """

    def __init__(self, client: httpx.AsyncClient, base_url: str, *, timeout: float = 2.0):
        self._client = client
        self._url = base_url.rstrip("/") + "/v1/calendar/next-working"
        self._timeout = timeout
        self._cached: tuple[datetime, datetime, float] | None = None
        """(asked at, answer, monotonic time of the answer)."""

    async def next_working_instant(self, at: datetime) -> datetime | None:
        """The first office-hours instant at or after ``at``; None when it cannot be told."""
        cached = self._cached
        if cached is not None and time.monotonic() - cached[2] < CACHE_SECONDS:
            asked, answer, _ = cached
            if asked <= at < answer:
                return answer  # still outside office hours: the same start
            if answer == asked and asked <= at < asked + timedelta(seconds=CACHE_SECONDS):
                return at  # was office time a moment ago
        try:
            response = await self._client.get(
                self._url, params={"at": at.isoformat()}, timeout=self._timeout
            )
            response.raise_for_status()
            answer = datetime.fromisoformat(response.json()["at"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            logger.warning("SLA calendar unavailable, alerts are not held: %r", exc)
            return None
        self._cached = (at, answer, time.monotonic())
        return answer
