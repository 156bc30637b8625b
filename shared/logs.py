"""Logging: one line per event, `key=value` fields, the service name on every line, never a secret."""

from __future__ import annotations

import logging
import os
import sys

_SECRET_KEYS = ("token", "password", "secret", "authorization")


class _KeyValueFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        parts = [
            self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            record.levelname.lower(),
            f"service={self.service}",
            f"event={record.getMessage()!r}" if " " in record.getMessage() else f"event={record.getMessage()}",
        ]
        for key, value in fields.items():
            shown = "***" if any(s in key.lower() for s in _SECRET_KEYS) else value
            parts.append(f"{key}={shown}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class EventLogger(logging.LoggerAdapter):
    """`log.info("group put", group_id=..., policy_version=...)`: fields become `key=value`."""

    def process(self, msg, kwargs):  # type: ignore[override]
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("exc_info", "stack_info", "stacklevel", "extra")}
        kwargs["extra"] = {"fields": fields}
        return msg, kwargs


def setup_logging(service: str, level: str | None = None) -> EventLogger:
    """Configure the root logger once per process and return the service's event logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("EUREKA_LOG_LEVEL", "INFO"))
    return get_logger(service)


def get_logger(name: str) -> EventLogger:
    return EventLogger(logging.getLogger(f"eureka.{name}"), {})
