"""The only home of Kafka topic names. A breaking change gets a new ``.v2`` topic."""

from __future__ import annotations

from typing import Final

REPORT_EVENTS: Final = "paht.report.events.v1"
"""Lifecycle of a report, produced by intake (submitted, every transition, media added)."""

ROUTING_EVENTS: Final = "paht.routing.events.v1"
"""Routing decisions, produced by routing."""

SLA_EVENTS: Final = "paht.sla.events.v1"
"""Deadlines, warnings, breaches and escalations, produced by sla."""

NOTIFY_EVENTS: Final = "paht.notify.events.v1"
"""Delivery outcomes, produced by notify."""

MAIN_TOPICS: Final = (REPORT_EVENTS, ROUTING_EVENTS, SLA_EVENTS, NOTIFY_EVENTS)

DEFAULT_PARTITIONS: Final = 3


def dead_letter(topic: str) -> str:
    """Name of the dead-letter topic for records of ``topic`` that cannot be handled."""
    return f"{topic}.dlq"


ALL_TOPICS: Final = MAIN_TOPICS + tuple(dead_letter(t) for t in MAIN_TOPICS)
