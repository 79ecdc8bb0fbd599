"""What each attempt outcome means and when the next attempt happens."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from notify.domain import (
    AttemptResult,
    RetryPolicy,
    classify_http_status,
    decide,
    parse_retry_after,
)
from notify.settings import NotifySettings

SCHEDULE = (5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0)
POLICY = RetryPolicy(schedule=SCHEDULE, max_retry_after=86_400.0)
NOW = datetime(2025, 3, 4, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize("code", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(code: int) -> None:
    assert classify_http_status(code) == "delivered"


def test_410_means_the_endpoint_is_gone() -> None:
    assert classify_http_status(410) == "gone"


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504, 599])
def test_throttling_timeouts_and_server_errors_are_retried(code: int) -> None:
    assert classify_http_status(code) == "retry"


@pytest.mark.parametrize("code", [400, 401, 403, 404, 405, 413, 422])
def test_other_client_errors_fail_for_good(code: int) -> None:
    assert classify_http_status(code) == "failed"


@pytest.mark.parametrize("code", [101, 301, 302, 307, 308])
def test_informational_and_redirects_are_failed_attempts_worth_retrying(code: int) -> None:
    assert classify_http_status(code) == "retry"


def test_default_settings_use_the_documented_schedule() -> None:
    settings = NotifySettings()

    assert settings.retry_schedule_seconds == SCHEDULE
    assert settings.delivery_timeout_seconds == 15.0
    assert settings.http_port == 8083


def test_settings_refuse_a_lease_shorter_than_an_attempt() -> None:
    with pytest.raises(ValueError, match="lease_seconds"):
        NotifySettings(lease_seconds=10, delivery_timeout_seconds=15)


@pytest.mark.parametrize(("attempts", "delay"), list(enumerate(SCHEDULE, start=1)))
def test_retries_follow_the_schedule(attempts: int, delay: float) -> None:
    decision = decide(
        AttemptResult("retry", status_code=503, error="HTTP 503"), attempts=attempts, policy=POLICY
    )

    assert decision.outcome == "retry"
    assert decision.status == "pending"
    assert decision.retry_in == delay
    assert decision.status_code == 503


def test_gives_up_after_the_last_scheduled_retry() -> None:
    decision = decide(
        AttemptResult("retry", error="ConnectError: refused"), attempts=7, policy=POLICY
    )

    assert decision.outcome == "failed"
    assert decision.status == "failed"
    assert decision.retry_in is None
    assert decision.error == "gave up after 7 attempts: ConnectError: refused"


def test_transport_errors_are_retried_without_a_status_code() -> None:
    decision = decide(
        AttemptResult("retry", error="timed out after 15 s"), attempts=1, policy=POLICY
    )

    assert decision.outcome == "retry"
    assert decision.status_code is None
    assert decision.retry_in == 5.0


def test_retry_after_postpones_the_next_attempt() -> None:
    result = AttemptResult("retry", status_code=429, retry_after=90.0)

    assert decide(result, attempts=1, policy=POLICY).retry_in == 90.0


def test_retry_after_never_brings_the_next_attempt_forward() -> None:
    result = AttemptResult("retry", status_code=429, retry_after=1.0)

    assert decide(result, attempts=3, policy=POLICY).retry_in == 120.0


def test_retry_after_is_capped() -> None:
    policy = RetryPolicy(schedule=SCHEDULE, max_retry_after=3600.0)
    result = AttemptResult("retry", status_code=503, retry_after=10 * 86_400.0)

    assert decide(result, attempts=1, policy=policy).retry_in == 3600.0


def test_jitter_only_stretches_the_delay() -> None:
    policy = RetryPolicy(schedule=SCHEDULE, jitter=0.1)
    result = AttemptResult("retry", status_code=503)

    assert decide(result, attempts=2, policy=policy, jitter=0.0).retry_in == 30.0
    assert decide(result, attempts=2, policy=policy, jitter=1.0).retry_in == pytest.approx(33.0)


@pytest.mark.parametrize("verdict", ["delivered", "failed", "gone"])
def test_final_outcomes_are_never_retried(verdict: str) -> None:
    result = AttemptResult(verdict, status_code=200)  # type: ignore[arg-type]

    decision = decide(result, attempts=1, policy=POLICY)

    assert decision.outcome == verdict
    assert decision.retry_in is None


def test_gone_and_failed_end_as_failed_deliveries() -> None:
    assert decide(AttemptResult("gone", 410), attempts=1, policy=POLICY).status == "failed"
    assert decide(AttemptResult("failed", 400), attempts=1, policy=POLICY).status == "failed"
    assert decide(AttemptResult("delivered", 200), attempts=1, policy=POLICY).status == "delivered"


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("120", now=NOW) == 120.0
    assert parse_retry_after("Tue, 04 Mar 2025 02:01:30 GMT", now=NOW) == 90.0
    assert parse_retry_after("Tue, 04 Mar 2025 01:00:00 GMT", now=NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5"])
def test_unusable_retry_after_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None
