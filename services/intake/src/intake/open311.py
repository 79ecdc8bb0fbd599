"""Open311 GeoReport v2 facade (being written)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

if TYPE_CHECKING:
    from intake.handlers import IntakeContext


def open311_router(ctx: IntakeContext) -> APIRouter:
    """Router mounted under /open311/v2."""
    return APIRouter(prefix="/open311/v2", tags=["open311"])
