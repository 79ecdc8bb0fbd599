"""Which rule routes a report: order, specificity, category hierarchy, communes, no match."""

from __future__ import annotations

import pytest

from routing.domain import Rule, category_within, choose_rule


def chosen(rules: list[Rule], category: str, commune: str | None = None) -> str | None:
    decision = choose_rule(rules, category=category, commune_code=commune)
    return None if decision.rule is None else decision.rule.id


def test_the_lowest_priority_that_matches_wins_whatever_the_order_given() -> None:
    late = Rule(id="late", priority=20, agency_id="B", category="INFRA")
    early = Rule(id="early", priority=10, agency_id="A", category="INFRA")

    assert chosen([late, early], "INFRA.ROAD") == "early"
    assert chosen([early, late], "INFRA.ROAD") == "early"


def test_priority_beats_specificity() -> None:
    specific = Rule(
        id="specific", priority=20, agency_id="B", category="INFRA.ROAD", commune_code="C1"
    )
    broad = Rule(id="broad", priority=10, agency_id="A")

    assert chosen([specific, broad], "INFRA.ROAD", "C1") == "broad"


def test_on_equal_priority_a_commune_rule_beats_a_province_wide_one() -> None:
    province = Rule(id="province", priority=10, agency_id="A", category="INFRA.ROAD")
    commune = Rule(id="commune", priority=10, agency_id="B", category="INFRA", commune_code="C1")

    assert chosen([province, commune], "INFRA.ROAD", "C1") == "commune"
    assert chosen([commune, province], "INFRA.ROAD", "C1") == "commune"


def test_on_equal_priority_and_commune_the_narrower_category_wins() -> None:
    parent = Rule(id="parent", priority=10, agency_id="A", category="INFRA")
    child = Rule(id="child", priority=10, agency_id="B", category="INFRA.ROAD")
    anything = Rule(id="anything", priority=10, agency_id="C")

    assert chosen([anything, parent, child], "INFRA.ROAD.POTHOLE") == "child"
    assert chosen([anything, parent], "INFRA.ROAD") == "parent"


def test_a_full_tie_goes_to_the_smallest_rule_id() -> None:
    b = Rule(id="b", priority=10, agency_id="B", category="INFRA")
    a = Rule(id="a", priority=10, agency_id="A", category="INFRA")

    assert chosen([b, a], "INFRA.ROAD") == "a"


@pytest.mark.parametrize(
    ("category", "scope", "within"),
    [
        ("INFRA", "INFRA", True),
        ("INFRA.ROAD", "INFRA", True),
        ("INFRA.ROAD.POTHOLE", "INFRA", True),
        ("INFRA.ROAD.POTHOLE", "INFRA.ROAD", True),
        ("INFRA", "INFRA.ROAD", False),  # a parent is not within its child
        ("INFRASTRUCTURE", "INFRA", False),  # a shared prefix is not a parent
        ("INFRA.ROADWORKS", "INFRA.ROAD", False),
        ("ENV.WASTE", "INFRA", False),
    ],
)
def test_category_hierarchy(category: str, scope: str, within: bool) -> None:
    assert category_within(category, scope) is within


def test_a_category_rule_covers_sub_categories_but_not_look_alikes() -> None:
    rule = Rule(id="r", priority=1, agency_id="A", category="INFRA.ROAD")

    assert rule.matches(category="INFRA.ROAD", commune_code=None)
    assert rule.matches(category="INFRA.ROAD.POTHOLE", commune_code=None)
    assert not rule.matches(category="INFRA.ROADWORKS", commune_code=None)
    assert not rule.matches(category="INFRA", commune_code=None)


def test_a_commune_rule_matches_only_its_commune() -> None:
    rule = Rule(id="r", priority=1, agency_id="A", commune_code="C1")

    assert rule.matches(category="ANY", commune_code="C1")
    assert not rule.matches(category="ANY", commune_code="C2")
    assert not rule.matches(category="ANY", commune_code=None)  # no location, no commune rule


def test_a_rule_without_category_or_commune_matches_everything() -> None:
    rule = Rule(id="r", priority=1, agency_id="A")

    assert rule.matches(category="ENV.WASTE", commune_code=None)
    assert rule.matches(category="INFRA", commune_code="C9")


def test_a_report_without_commune_falls_to_the_province_wide_rule() -> None:
    commune = Rule(id="commune", priority=1, agency_id="B", category="INFRA", commune_code="C1")
    province = Rule(id="province", priority=5, agency_id="A", category="INFRA")

    assert chosen([commune, province], "INFRA.ROAD", None) == "province"
    assert chosen([commune, province], "INFRA.ROAD", "C2") == "province"
    assert chosen([commune, province], "INFRA.ROAD", "C1") == "commune"


def test_no_matching_rule_gives_no_agency() -> None:
    rules = [
        Rule(id="other-category", priority=1, agency_id="A", category="ENV"),
        Rule(id="other-commune", priority=1, agency_id="B", commune_code="C2"),
    ]

    decision = choose_rule(rules, category="INFRA.ROAD", commune_code="C1")

    assert decision.rule is None
    assert decision.agency_id is None
    assert choose_rule([], category="INFRA", commune_code=None).agency_id is None


def test_the_decision_names_the_agency_of_the_chosen_rule() -> None:
    decision = choose_rule(
        [Rule(id="r", priority=1, agency_id="PW", category="INFRA")],
        category="INFRA.ROAD",
        commune_code=None,
    )

    assert decision.agency_id == "PW"
