"""JSON logging with the ids of the event and report being handled."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)
event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)
report_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("report_id", default=None)

_CONTEXT = {"correlation_id": correlation_id, "event_id": event_id, "report_id": report_id}
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context ids and extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a JSON line."""
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, var in _CONTEXT.items():
            value = var.get()
            if value is not None:
                out[name] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every logger's output as JSON lines to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


@contextlib.contextmanager
def bind_event(envelope: Any) -> Iterator[None]:
    """Attach an envelope's ids to every log line written inside the block."""
    tokens = [
        (event_id, event_id.set(str(envelope.event_id))),
        (correlation_id, correlation_id.set(envelope.correlation_id)),
        (report_id, report_id.set(str(envelope.payload.report_id))),
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
