"""Intake metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SUBMISSIONS = Counter("intake_submissions_total", "Report submissions", ["channel", "outcome"])
TRANSITIONS = Counter("intake_transitions_total", "Lifecycle transitions", ["action"])
HTTP_REQUESTS = Counter(
    "intake_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "intake_http_request_seconds",
    "HTTP request duration",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SUBMIT_BATCH = Histogram(
    "intake_submit_batch_size",
    "Submissions written together by one group-commit statement",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
