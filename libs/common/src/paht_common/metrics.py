"""Prometheus metrics shared by every service, declared once.

No metric declares `job`, `instance` or `service`: Prometheus attaches those to every scraped
series as target labels (deploy/prometheus), and a clash would rename ours `exported_*`. The
outbox metrics name their outbox (the owning service) `outbox`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OUTBOX_PUBLISHED = Counter(
    "paht_outbox_published_total", "Outbox rows relayed to Kafka", ["outbox", "topic"]
)
OUTBOX_FAILURES = Counter(
    "paht_outbox_publish_failures_total",
    "Relay batches that failed to publish",
    ["outbox", "error_type"],
)
OUTBOX_BACKLOG = Gauge("paht_outbox_backlog", "Outbox rows not yet published", ["outbox"])
OUTBOX_AGE = Gauge(
    "paht_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row", ["outbox"]
)
CONSUMED = Counter(
    "paht_consumer_events_total",
    "Kafka records handled by a consumer",
    ["consumer", "topic", "outcome"],
)
CONSUMER_FAILURES = Counter(
    "paht_consumer_failures_total", "Handler attempts that raised", ["consumer", "topic"]
)
DEAD_LETTERS = Counter(
    "paht_dead_letters_total", "Records sent to a dead-letter topic", ["consumer", "topic"]
)
HANDLE_SECONDS = Histogram(
    "paht_consumer_handle_seconds",
    "Time to handle one record, database commit included",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
END_TO_END_SECONDS = Histogram(
    "paht_event_age_seconds",
    "Event age (occurred_at to handled) when a consumer handles it",
    ["consumer"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
CONSUMER_LAG = Gauge(
    "paht_consumer_lag_records",
    "Records a consumer group has yet to read: end offset minus committed offset",
    ["consumer_group", "topic", "partition"],
)
CONSUMER_LAG_ERRORS = Counter(
    "paht_consumer_lag_scrape_errors_total",
    "Lag polls of a consumer group that failed (retried at the next interval)",
    ["consumer_group"],
)
