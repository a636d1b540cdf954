"""Multiprocess mode for prometheus-client, chosen before any metric is created."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import values


def prepare_multiprocess(folder: Path) -> None:
    """Empty ``folder`` and point PROMETHEUS_MULTIPROC_DIR at it (inherited by the pool).

    Folders left by worker processes that no longer exist are removed too.
    """
    parent = folder.parent
    if parent.is_dir():
        for old in parent.glob("worker-*"):
            pid = old.name.removeprefix("worker-")
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    # prometheus-client may already be imported (the celery command loads Flower's
    # plugin, which imports it) and has then chosen in-memory values: choose again.
    values.ValueClass = values.get_value_class()
