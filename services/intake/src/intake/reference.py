"""Reference data the intake service needs at start: the province's communes."""

from __future__ import annotations

from vietnam_provinces import Ward

from intake.settings import IntakeSettings


def province_communes(settings: IntakeSettings) -> frozenset[str]:
    """Five-digit codes of the province's communes and wards (2025 two-level units)."""
    return frozenset(
        f"{int(w.code):05d}"
        for w in Ward.iter_all()
        if int(w.province_code) == settings.province_code_numeric
    )
