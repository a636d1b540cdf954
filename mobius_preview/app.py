"""The Celery application: queues, routes and serializers come from celeryconfig.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from celery import Celery

from .config import settings
from .errors import ConfigError

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
    # emptied at start), chosen before any metric exists, so the pool's children
    # count into files that the main process aggregates.
    from .metrics_setup import prepare_multiprocess

    prepare_multiprocess(settings().data_dir / "prometheus" / f"worker-{os.getpid()}")

app = Celery("mobius_preview", include=["mobius_preview.tasks"])
app.config_from_object("celeryconfig")

from . import channel, worker  # noqa: E402,F401  (worker start-up signal handlers)

channel.install()
