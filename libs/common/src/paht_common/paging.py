"""Opaque keyset cursors: an aware instant plus string keys, base64url-encoded JSON."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from paht_common.problems import Problem


def encode_cursor(instant: datetime, *keys: str) -> str:
    """Cursor for the row after which the next page starts."""
    raw = json.dumps([instant.isoformat(), *keys])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str, *, keys: int) -> tuple[datetime, list[str]]:
    """(aware UTC instant, keys) of a cursor; Problem 400 naming ``cursor`` when forged."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if (
            not isinstance(values, list)
            or len(values) != keys + 1
            or not all(isinstance(v, str) for v in values)
        ):
            raise TypeError(f"cursor holds an instant and {keys} key(s)")
        instant = datetime.fromisoformat(values[0])
        if instant.tzinfo is None:
            raise ValueError("cursor instant without offset")
        return instant.astimezone(UTC), values[1:]
    except (ValueError, TypeError, OverflowError) as exc:
        raise Problem(
            400, "Invalid cursor", "cursor is not one this API issued", field="cursor"
        ) from exc
