"""Worker start-up: logging, a broker check, metrics, and leftovers of crashed renders."""

from __future__ import annotations

import logging
import os
import sys

import redis
from celery import signals

from . import logs, metrics, records, storage
from .config import settings

log = logging.getLogger("mobius_preview.worker")


@signals.setup_logging.connect
def _setup_logging(**_: object) -> None:
    logs.configure()


@signals.worker_init.connect
def _check_broker(**_: object) -> None:
    cfg = settings()
    try:
        records.client().ping()
    except redis.RedisError as exc:
        sys.exit(f"mobius-preview: REDIS_URL: cannot reach {cfg.redis_url_masked}: {exc}")
    if cfg.metrics_port is not None:
        metrics.serve(cfg.metrics_port)
        log.info("metrics on port %s (multiprocess folder %s)", cfg.metrics_port,
                 metrics.multiprocess_dir())


@signals.worker_process_shutdown.connect
def _child_exited(pid: int | None = None, **_: object) -> None:
    metrics.process_exited(pid or os.getpid())


@signals.worker_ready.connect
def _clean_leftovers(**_: object) -> None:
    removed = storage.clean_stale(settings().time_limit + 60)
    if removed:
        log.info("removed %d temporary folders left by crashed renders", removed)


_log_tokens: dict[str, object] = {}


@signals.task_prerun.connect
def _job_logs_begin(task_id: str | None = None, task=None, args=None, **_: object) -> None:
    """Celery's own lines about a job (succeeded, failed, retry) carry its fields too."""
    attempt = (task.request.retries + 1) if task is not None else None
    payload = args[0] if args else None
    _log_tokens[task_id] = logs.begin(logs.job_fields(payload, task_id, attempt))


@signals.task_postrun.connect
def _job_logs_end(task_id: str | None = None, **_: object) -> None:
    token = _log_tokens.pop(task_id, None)
    if token is not None:
        logs.end(token)
