"""SLA metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

THRESHOLD_EVENTS = Counter(
    "sla_threshold_events_total",
    "Warnings, breaches and escalations emitted",
    ["clock", "percent"],
)
SCAN_SECONDS = Histogram(
    "sla_scan_seconds",
    "Duration of one due-threshold scan cycle",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
DETECTION_LAG = Histogram(
    "sla_detection_lag_seconds",
    "Fire instant to emission of a threshold event",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60),
)
RECOMPUTES = Counter("sla_recomputations_total", "Clock recomputations", ["trigger"])
