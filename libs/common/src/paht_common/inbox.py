"""Inbox: makes a consumer idempotent by remembering which events it handled."""

from __future__ import annotations

import uuid

from paht_common.db import Conn

CLAIM = """
INSERT INTO inbox (consumer, event_id) VALUES ($1, $2)
ON CONFLICT DO NOTHING
RETURNING 1
"""


async def claim(conn: Conn, *, consumer: str, event_id: uuid.UUID) -> bool:
    """True the first time ``consumer`` sees ``event_id``; call inside the handling transaction."""
    return await conn.fetchval(CLAIM, consumer, event_id) is not None
