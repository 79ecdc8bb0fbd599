"""Routing metrics."""

from __future__ import annotations

from prometheus_client import Counter

ASSIGNMENTS = Counter("routing_assignments_total", "Routing decisions", ["agency", "outcome"])
