"""Keyset cursors round-trip and refuse forgeries with a 400 naming the cursor."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from paht_common.paging import decode_cursor, encode_cursor
from paht_common.problems import Problem


def _forge(values: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


def test_cursor_round_trips_as_aware_utc() -> None:
    local = datetime(2026, 11, 28, 9, 30, tzinfo=timezone(timedelta(hours=7)))
    instant, keys = decode_cursor(encode_cursor(local, "r-1", "acknowledgement"), keys=2)
    assert instant == local
    assert instant.tzinfo is UTC
    assert keys == ["r-1", "acknowledgement"]


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 !",
        _forge(["2026-11-28T09:30:00", "r-1"]),  # no offset
        _forge(["2026-11-28T09:30:00+07:00"]),  # a key missing
        _forge([12345, "r-1"]),  # not a string
        _forge({"at": "2026-11-28T09:30:00+07:00"}),  # not a list
        _forge(["0001-01-01T00:00:00+14:00", "r-1"]),  # out of range once in UTC
    ],
)
def test_forged_cursor_is_a_400_naming_the_cursor(cursor: str) -> None:
    with pytest.raises(Problem) as caught:
        decode_cursor(cursor, keys=1)
    assert caught.value.status == 400
    assert caught.value.extra["field"] == "cursor"
