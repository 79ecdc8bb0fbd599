"""Routing rules, pure: which agency leads a report, by category and commune."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One ordered routing rule; ``None`` fields match anything."""

    id: str
    priority: int
    agency_id: str
    category: str | None = None
    commune_code: str | None = None

    def matches(self, *, category: str, commune_code: str | None) -> bool:
        """True when the rule covers this category (or a parent of it) and commune."""
        if self.category is not None and not category_within(category, self.category):
            return False
        return self.commune_code is None or self.commune_code == commune_code


@dataclass(frozen=True)
class Decision:
    """The chosen rule, or none when nothing matched."""

    rule: Rule | None

    @property
    def agency_id(self) -> str | None:
        return None if self.rule is None else self.rule.agency_id


def category_within(category: str, scope: str) -> bool:
    """True when ``category`` is ``scope`` or one of its sub-categories (dot-separated)."""
    return category == scope or category.startswith(scope + ".")


def specificity(rule: Rule) -> tuple[int, int, int]:
    """Sort key: lower priority first, then commune rules, then longer category scopes."""
    return (
        rule.priority,
        0 if rule.commune_code is not None else 1,
        -len(rule.category or ""),
    )


def choose_rule(rules: Iterable[Rule], *, category: str, commune_code: str | None) -> Decision:
    """First matching rule by priority (ties: the more specific rule, then the id)."""
    matching = [r for r in rules if r.matches(category=category, commune_code=commune_code)]
    if not matching:
        return Decision(rule=None)
    return Decision(rule=min(matching, key=lambda r: (*specificity(r), r.id)))


NEEDS_SCREENING = "needs_screening"
"""Flag intake puts on a submitted report held for the coordinator's triage: not routed."""


def is_manual_assignment(*, action: str, actor_role: str) -> bool:
    """Whether a report.transitioned is a coordinator's (re-)assignment, which routing
    records; a system ``assign`` is intake applying routing's own decision."""
    return action == "assign" and actor_role != "system"
