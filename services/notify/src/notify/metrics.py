"""Notify metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "notify_deliveries_total",
    "Delivery attempts by outcome (delivered, retry, failed, gone)",
    ["channel", "outcome"],
)
DELIVERY_SECONDS = Histogram(
    "notify_delivery_seconds",
    "Duration of one delivery attempt",
    ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
PENDING = Gauge(
    "notify_pending_deliveries", "Deliveries not yet delivered or failed (in flight included)"
)
QUEUED = Counter(
    "notify_deliveries_queued_total", "Deliveries queued from events", ["channel", "event_type"]
)
CIRCUIT_OPENED = Counter(
    "notify_circuit_opened_total",
    "Times an endpoint's circuit opened (or stayed open after a failed probe)",
    ["channel"],
)
