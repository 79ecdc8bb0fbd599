"""The report list query: parameters only, and search text taken literally."""

from __future__ import annotations

from intake.repository import list_query


def test_search_text_wildcards_are_escaped() -> None:
    sql, args = list_query({"text": "50%_off\\"}, limit=10)
    assert "LIKE $1 ESCAPE '\\'" in sql
    assert args[0] == "%50\\%\\_off\\\\%"


def test_filters_become_numbered_parameters_never_inline_values() -> None:
    sql, args = list_query({"agency_id": "x'); DROP TABLE reports; --", "overdue": True}, limit=5)
    assert "DROP TABLE" not in sql
    assert args == ["x'); DROP TABLE reports; --", True, 5]
    assert "r.agency_id = $1" in sql
    assert "r.overdue = $2" in sql
    assert sql.endswith("LIMIT $3")
