"""The Celery application: queues, routes and serializers come from celeryconfig.py."""

from __future__ import annotations

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

app = Celery("mobius_preview", include=["mobius_preview.tasks"])
app.config_from_object("celeryconfig")

from . import worker  # noqa: E402,F401  (worker start-up signal handlers)
