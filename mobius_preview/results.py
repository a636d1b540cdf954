"""Reading a job back: its status, waiting for its end, and the result handle.

A job's record in Redis (``records``) is the only source of truth; there is no
Celery result backend. ``PreviewResult`` is the AsyncResult that ``submit`` and
``render_preview.delay`` return, answering from that record.
"""

from __future__ import annotations

import json
import time
from typing import Any

from celery.result import AsyncResult

from . import records
from .errors import JobFailed, JobNotFound

TERMINAL = ("succeeded", "failed", "dead")

_CELERY_STATES = {"queued": "PENDING", "running": "STARTED", "retrying": "RETRY",
                  "succeeded": "SUCCESS", "failed": "FAILURE", "dead": "FAILURE"}


def status(job_id: str) -> dict[str, Any]:
    """State, attempts, times, error and artifacts of a job; raises JobNotFound."""
    with records.reaching_redis():
        record = records.get(job_id)
    if not record:
        raise JobNotFound(job_id)
    state = record.get("state", "queued")
    outcome = json.loads(record["outcome"]) if record.get("outcome") else {}
    return {
        "jobId": job_id,
        "projectId": record.get("projectId"),
        "requestId": record.get("requestId"),
        "priority": record.get("priority", "normal"),
        # "submitting": a claim left by a client of an earlier version (claim, then publish).
        "state": "queued" if state == "submitting" else state,
        "attempts": int(record.get("attempts") or 0),
        "renders": int(record.get("renders") or 0),
        "completions": int(record.get("completions") or 0),
        "submittedAt": record.get("submittedAt"),
        "startedAt": record.get("startedAt"),
        "finishedAt": record.get("finishedAt"),
        "updatedAt": record.get("updatedAt"),
        "error": record.get("error") or None,
        "errorKind": record.get("errorKind") or None,
        "retryDelays": json.loads(record.get("retryDelays") or "[]"),
        "cacheHit": outcome.get("cacheHit"),
        "dryRun": json.loads(record.get("dryRun") or "false"),
        "key": outcome.get("key"),
        "duration": outcome.get("duration"),
        "artifacts": outcome.get("artifacts") or {},
    }


def wait(job_id: str, timeout: float = 60.0, poll: float = 0.1) -> dict[str, Any]:
    """Block until the job is succeeded, failed or dead; return its status."""
    deadline = time.monotonic() + timeout
    while True:
        current = status(job_id)
        if current["state"] in TERMINAL:
            return current
        if time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id!r} still {current['state']} after {timeout:.0f} s")
        time.sleep(poll)


class PreviewResult(AsyncResult):
    """What ``render_preview.delay`` returns: an AsyncResult read from the job's record.

    ``created`` says whether this call created the job (False: the jobId existed).
    ``get()`` waits and returns the outcome (artifacts, key, cache hit) or raises
    JobFailed; ``state`` speaks Celery's names (PENDING, STARTED, RETRY, SUCCESS, FAILURE).
    """

    created: bool = True
    priority: str = "normal"

    def job_status(self) -> dict[str, Any]:
        return status(self.id)

    @property
    def state(self) -> str:  # type: ignore[override]
        return _CELERY_STATES[status(self.id)["state"]]

    status = state

    def ready(self) -> bool:
        return status(self.id)["state"] in TERMINAL

    def successful(self) -> bool:
        return status(self.id)["state"] == "succeeded"

    def failed(self) -> bool:
        return status(self.id)["state"] in ("failed", "dead")

    def get(self, timeout: float | None = None, propagate: bool = True, **_: Any) -> Any:  # type: ignore[override]
        final = wait(self.id, timeout=3600 if timeout is None else timeout)
        if final["state"] != "succeeded":
            if propagate:
                raise JobFailed(self.id, final["state"], final["error"])
            return final
        record = records.get(self.id) or {}
        return json.loads(record.get("outcome") or "{}")
