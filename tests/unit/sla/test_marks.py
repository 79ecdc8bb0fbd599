"""Warning and escalation thresholds come from configuration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sla.calendar import Unit
from sla.domain import DEFAULT_MARKS, Target, build_marks
from sla.settings import SlaSettings


def test_default_settings_give_the_default_ladder() -> None:
    settings = SlaSettings()
    assert build_marks(settings.warning_percents, settings.escalations) == DEFAULT_MARKS


def test_custom_ladder_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLA_WARNING_PERCENTS", "[80, 50]")
    monkeypatch.setenv("SLA_ESCALATIONS", '["2wd:coordinator", "90min:duty_officer"]')
    settings = SlaSettings()
    marks = build_marks(settings.warning_percents, settings.escalations)
    assert [(m.key, m.percent, m.level) for m in marks] == [
        ("50", 50, "officer"),
        ("80", 80, "officer"),
        ("100", 100, "agency_leader"),
        ("100+2wd", 100, "coordinator"),
        ("100+90min", 100, "duty_officer"),
    ]
    assert marks[3].overdue == Target(2, Unit.WORKING_DAYS)
    assert marks[4].overdue == Target(90, Unit.MINUTES)


@pytest.mark.parametrize(
    "bad", ['["8xx:coordinator"]', '["wh:coordinator"]', '["8wh"]', '["0wd:coordinator"]']
)
def test_malformed_escalation_is_refused_at_startup(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("SLA_ESCALATIONS", bad)
    with pytest.raises(ValidationError, match="escalation"):
        SlaSettings()


@pytest.mark.parametrize("percent", ["[0]", "[100]", "[150]"])
def test_warning_outside_1_to_99_is_refused(monkeypatch: pytest.MonkeyPatch, percent: str) -> None:
    monkeypatch.setenv("SLA_WARNING_PERCENTS", percent)
    with pytest.raises(ValidationError, match="warning percent"):
        SlaSettings()
