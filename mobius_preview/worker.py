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
