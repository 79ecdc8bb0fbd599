"""Who acts on a report: the roles every service names in tokens, timelines and events."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """Who acts on a report."""

    COORDINATOR = "coordinator"
    OFFICER = "officer"
    LEADER = "leader"
    SUPERVISOR = "supervisor"
    REPORTER = "reporter"
    SYSTEM = "system"


AGENCY_ROLES: frozenset[Role] = frozenset({Role.OFFICER, Role.LEADER})
"""Roles bound to one agency: they may act only on reports assigned to it."""
