"""Structured logging: JSON lines in production, readable lines on a terminal.

Every record logged inside a job carries requestId, jobId, projectId, attempt and
priority, taken from a context variable that the task sets for its duration.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from . import layout
from .config import mask_url, settings

_job: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("job", default=None)
JOB_FIELDS = ("requestId", "jobId", "projectId", "attempt", "priority")


def job_fields(payload: Any, job_id: str, attempt: int | None = None) -> dict[str, Any]:
    """The fields that identify a job in logs and records, from a payload of any shape."""
    data = payload if isinstance(payload, dict) else {}
    priority = data.get("priority")
    return {
        "jobId": job_id,
        "projectId": data.get("projectId") if isinstance(data.get("projectId"), str) else None,
        "requestId": data.get("requestId") if isinstance(data.get("requestId"), str) else None,
        "priority": priority if priority in layout.PRIORITIES else layout.DEFAULT_PRIORITY,
        "attempt": attempt,
    }


@contextmanager
def job_context(**fields: Any) -> Iterator[None]:
    """Attach job fields to every log record emitted inside the block."""
    token = _job.set({k: v for k, v in fields.items() if v is not None})
    try:
        yield
    finally:
        _job.reset(token)


def begin(fields: dict[str, Any]) -> contextvars.Token[dict[str, Any] | None]:
    """Start a job's log context (for Celery's task_prerun); end it with ``end``."""
    return _job.set({k: v for k, v in fields.items() if v is not None})


def end(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _job.reset(token)


class _JobFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        fields = _job.get()
        if fields is None:
            # Celery's own lines about a task ("received", ...) carry its id in ``data``.
            data = getattr(record, "data", None)
            if isinstance(data, dict) and isinstance(data.get("id"), str):
                fields = {"jobId": data["id"]}
        for name, value in (fields or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class _MaskSecrets(logging.Filter):
    """Mask passwords of Redis URLs that a library might log."""

    def __init__(self) -> None:
        super().__init__()
        self._url = settings().redis_url
        self._masked = mask_url(self._url)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._url != self._masked:
            message = record.getMessage()
            if self._url in message:
                record.msg, record.args = message.replace(self._url, self._masked), None
        return True


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = " ".join(f"{k}={getattr(record, k)}" for k in JOB_FIELDS if hasattr(record, k))
        return f"{base} {extra}".rstrip()


def configure(stream: Any = None) -> None:
    """Install the handler on the root logger (idempotent)."""
    cfg = settings()
    stream = stream or sys.stderr
    root = logging.getLogger()
    if any(getattr(h, "_mobius", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(stream)
    handler._mobius = True  # type: ignore[attr-defined]
    use_json = cfg.log_format == "json" or (cfg.log_format == "auto" and not stream.isatty())
    if use_json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(_Text("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_JobFilter())
    handler.addFilter(_MaskSecrets())
    root.addHandler(handler)
    root.setLevel(cfg.log_level)
