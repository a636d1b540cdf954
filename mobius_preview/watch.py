"""Following a running job: its progress out to Redis and the task events, and a
cancel request in from Redis, for the render's ``Control``.

Progress goes out at most every ``MIN_INTERVAL`` seconds (a new kind of stage always
goes), and its percent never goes down. A thread looks for ``cancelRequested`` on the
job's record every ``CANCEL_POLL`` seconds and sets the render's stop event, so a
cancelled render stops within about a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import layout, records
from .render.control import Control

MIN_INTERVAL = 0.25
CANCEL_POLL = 0.5
log = logging.getLogger("mobius_preview.watch")


class JobWatch:
    def __init__(self, job_id: str, send_event: Callable[..., Any] | None = None):
        self.job_id = job_id
        self.control = Control(progress=self.report)
        self._send_event = send_event
        self._percent = 0.0
        self._last_at = 0.0
        self._last_kind = ""

    def report(self, stage: str, percent: float) -> None:
        self._percent = percent = max(self._percent, min(100.0, percent))
        kind = stage.split()[0]
        now = time.monotonic()
        if kind == self._last_kind and now - self._last_at < MIN_INTERVAL:
            return
        self._last_at, self._last_kind = now, kind
        try:
            records.progress(self.job_id, stage, percent)
            if self._send_event is not None:
                self._send_event("task-progress", stage=stage, percent=round(percent, 1))
        except Exception as exc:  # progress is news, not the job: never fail a render for it
            log.warning("could not report progress: %s", exc)

    def _watch_cancel(self, done: threading.Event) -> None:
        while not done.wait(CANCEL_POLL):
            try:
                if records.client().hexists(layout.job_key(self.job_id), "cancelRequested"):
                    self.control.stop.set()
                    return
            except Exception as exc:
                log.warning("could not look for a cancel request: %s", exc)

    @contextmanager
    def running(self) -> Iterator[Control]:
        """The render's Control, with the cancel watch running for as long as the block."""
        done = threading.Event()
        watcher = threading.Thread(target=self._watch_cancel, args=(done,), daemon=True,
                                   name=f"cancel-watch-{self.job_id}")
        watcher.start()
        try:
            yield self.control
        finally:
            done.set()
            watcher.join(timeout=2)
