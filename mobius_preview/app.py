"""The Celery application: its settings come from ``mobius_preview.celeryconfig``.

Importing it checks the configuration (one line naming the variable when it is
wrong), chooses Prometheus' multiprocess mode in a worker serving metrics (before
any metric exists), and puts our Redis channel (``channel``) under kombu. The task
module is loaded by Celery (``include``), the worker's hooks by the worker
(``imports`` and ``worker_consumer`` in the settings).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from celery import Celery

from . import channel
from .config import settings
from .errors import ConfigError
from .metrics_setup import prepare_multiprocess

try:
    settings()
except ConfigError as exc:
    # Under the celery command a traceback would bury the one line that matters.
    if Path(sys.argv[0]).name in ("celery", "mobius-preview"):
        sys.exit(f"mobius-preview: configuration error: {exc}")
    raise


def _is_worker_process() -> bool:
    return Path(sys.argv[0]).name in ("celery", "__main__.py") and "worker" in sys.argv[1:]


if settings().metrics_port is not None and _is_worker_process():
    # A worker serving METRICS_PORT counts in multiprocess mode (a folder of its own,
    # emptied at start), so the pool's children count into files that the main
    # process aggregates.
    prepare_multiprocess(settings().data_dir / "prometheus" / f"worker-{os.getpid()}")

app = Celery("mobius_preview", include=["mobius_preview.tasks", "mobius_preview.webhooks"])
app.config_from_object("mobius_preview.celeryconfig")
# Host processes capture messages through it (accept) and workers read queues with it.
channel.install()
