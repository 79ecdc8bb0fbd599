"""Outbound channels: one class per way of reaching a subscriber (webhook today)."""

from __future__ import annotations

from notify.channels.base import Channel
from notify.channels.webhook import WebhookChannel

__all__ = ["Channel", "WebhookChannel"]
