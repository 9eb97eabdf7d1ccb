"""Structured logging: every record carries the fields it is about (image_id, chunk_id, ...).

Fields come from `extra={...}` on the call and from `log_context(...)`, which binds them for the
code below it (contextvars: one task at a time per worker thread). Output is `key=value` text, or
one JSON object per line with `log_json` (for log shippers).

    log = get_logger(__name__)
    with log_context(chunk_id=task_id, model_version=name):
        log.info("chunk started", extra={"images": 128})
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from jewelcut.settings import Settings, get_settings

_context: ContextVar[dict[str, Any]] = ContextVar("jewelcut_log_context", default={})  # noqa: B039
# Attributes every LogRecord has; anything else on a record is a field somebody passed.
_STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_HANDLER_NAME = "jewelcut"


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(_context.get())
    fields.update(
        (key, value) for key, value in vars(record).items() if key not in _STANDARD_ATTRIBUTES
    )
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **record_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        fields = " ".join(f"{key}={value}" for key, value in record_fields(record).items())
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()} {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line.rstrip()


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners and CLIs swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(settings: Settings | None = None) -> None:
    """Install the one handler on the root logger (idempotent)."""
    settings = settings or get_settings()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
    handler = StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if settings.log_json else KeyValueFormatter())
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    noisy_loggers = ("botocore", "boto3", "urllib3", "s3transfer", "onnxscript", "onnx_ir")
    for noisy in (*noisy_loggers, "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
