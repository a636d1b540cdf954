"""Reading a job back: its status, waiting for its end, and the result handle.

A job's record in Redis (``records``) is the only source of truth; there is no
Celery result backend. ``PreviewResult`` is the AsyncResult that ``submit`` and
``render_preview.delay`` return, answering from that record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from celery.result import AsyncResult

from . import layout, liveness, records
from .errors import JobFailed, JobNotFound
from .render.artifacts import PLAYLIST
from .states import CELERY_NAMES, ENDED, UNSUCCESSFUL, State

# The longest wait on the job's event stream between two reads of its record (below
# the Redis client's 5 s socket timeout).
EVENT_WAIT = 2.0


def status(job_id: str) -> dict[str, Any]:
    """State, attempts, times, error and artifacts of a job; raises JobNotFound."""
    with records.reaching_redis():
        record = records.get(job_id)
    if not record:
        raise JobNotFound(job_id)
    seen = None
    if record.get("state") == State.RUNNING and record.get("worker"):
        with records.reaching_redis():
            seen = liveness.last_seen(record["worker"])
    return from_record(job_id, record, worker_seen=seen)


def from_record(job_id: str, record: dict[str, str], worker_seen: float | None = None) -> dict[str, Any]:
    """A job's status from its record's fields (as ``records.get`` returns them) and,
    for a running job, when its worker last proved alive."""
    state = record.get("state", State.QUEUED)
    outcome = json.loads(record["outcome"]) if record.get("outcome") else {}
    return {
        "jobId": job_id,
        "projectId": record.get("projectId"),
        "requestId": record.get("requestId"),
        "priority": record.get("priority", layout.DEFAULT_PRIORITY),
        "state": state,
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
        "progress": _progress(record, state),
        "worker": record.get("worker") or None,
        "workerLastSeen": _iso(worker_seen),
        "recovered": int(record.get("recovered") or 0),
        "lostWorker": record.get("lostWorker") or None,
        "cancelRequested": bool(record.get("cancelRequested")),
        "webhook": _webhook(record),
        "cacheHit": outcome.get("cacheHit"),
        "dryRun": json.loads(record.get("dryRun") or "false"),
        "key": outcome.get("key"),
        "duration": outcome.get("duration"),
        "artifacts": (artifacts := _artifacts(outcome)),
        # The HLS preview can be played: its first segment is out (while running), or it is
        # among the finished preview's files.
        "playable": bool(record.get("playable")) or PLAYLIST in artifacts,
    }


def _artifacts(outcome: dict[str, Any]) -> dict[str, str]:
    """A succeeded job's files by name, each where it is (a path, or an object-store
    location); records of earlier versions kept these whole."""
    if "artifacts" in outcome:
        return dict(outcome["artifacts"])
    folder = outcome.get("folder", "")
    return {name: f"{folder}/{where}" for name, where in (outcome.get("files") or {}).items()}


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _webhook(record: dict[str, str]) -> dict[str, Any] | None:
    if not record.get("webhook"):
        return None
    return {"url": record["webhook"], "state": record.get("webhookState") or "waiting",
            "attempts": int(record.get("webhookAttempts") or 0), "error": record.get("webhookError") or None}


def _progress(record: dict[str, str], state: str) -> dict[str, Any] | None:
    if state == State.SUCCEEDED:
        return {"stage": "done", "percent": 100.0}
    if "progressPercent" not in record:
        return None
    return {"stage": record.get("progressStage"), "percent": float(record["progressPercent"])}


def follow(job_id: str, timeout: float = 60.0) -> Iterator[tuple[str, dict[str, Any]]]:
    """The job's changes in order, from the first, until it ends: ``(kind, event)``
    with kind "state", "progress" or "playable". Raises JobNotFound, or TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = "0-0"
    status(job_id)
    first = True
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"job {job_id!r} still {status(job_id)['state']} after {timeout:.0f} s")
        with records.reaching_redis():  # the first read does not wait: a late reader is answered at once
            news = records.events(job_id, after=last, block=None if first else min(EVENT_WAIT, left))
        first = False
        for ident, kind, event in news:
            last = ident
            yield kind, event
            if kind == "state" and event.get("state") in ENDED:
                return
        if not news and (current := status(job_id))["state"] in ENDED:
            yield "state", final_event(current)  # its stream is gone: the events window has passed
            return


def final_event(current: dict[str, Any]) -> dict[str, Any]:
    """An ended job's last state event, rebuilt from its status for a reader who comes
    after the events window (PREVIEW_EVENTS_TTL) let the job's stream go: the record,
    kept PREVIEW_RECORD_TTL, still says how it ended. ``fromRecord`` tells it apart."""
    event: dict[str, Any] = {"state": current["state"], "at": current["finishedAt"] or current["updatedAt"]}
    if current["state"] == State.SUCCEEDED:
        event.update(key=current["key"], cacheHit=current["cacheHit"], duration=current["duration"])
    else:
        event["error"] = current["error"]
    return {**event, "fromRecord": True}


def wait(job_id: str, timeout: float = 60.0, poll: float | None = None) -> dict[str, Any]:
    """Block until the job has ended (succeeded, dead, cancelled); return its status.

    Woken by the job's event stream (``follow``), not by polling. ``poll`` is
    accepted from callers of earlier versions and not needed.
    """
    current = status(job_id)
    if current["state"] not in ENDED:
        for _ in follow(job_id, timeout):
            pass
        current = status(job_id)
    return current


class PreviewResult(AsyncResult):
    """What ``render_preview.delay`` returns: an AsyncResult read from the job's record.

    ``created`` says whether this call created the job (False: the jobId existed).
    ``get()`` waits and returns the outcome (artifacts, key, cache hit) or raises
    JobFailed; ``state`` speaks Celery's names (PENDING, STARTED, RETRY, SUCCESS, FAILURE).
    """

    created: bool = True
    priority: str = layout.DEFAULT_PRIORITY
    # The fields a job created by this call was recorded with: its status without a read.
    record: dict[str, str] | None = None

    def job_status(self) -> dict[str, Any]:
        return status(self.id)

    @property
    def state(self) -> str:
        """The job's state in Celery's words (``states.CELERY_NAMES``)."""
        return CELERY_NAMES[State(self.job_status()["state"])]

    @property
    def status(self) -> str:
        """Celery's other name for ``state`` (not the module's ``status()``, the job's status)."""
        return self.state

    def ready(self) -> bool:
        return self.job_status()["state"] in ENDED

    def successful(self) -> bool:
        return bool(self.job_status()["state"] == State.SUCCEEDED)

    def failed(self) -> bool:
        return self.job_status()["state"] in UNSUCCESSFUL

    def get(self, timeout: float | None = None, propagate: bool = True, **_: Any) -> Any:
        final = wait(self.id, timeout=3600 if timeout is None else timeout)
        if final["state"] != State.SUCCEEDED:
            if propagate:
                raise JobFailed(self.id, final["state"], final["error"])
            return final
        return {"jobId": self.id, **{k: final[k] for k in ("key", "cacheHit", "dryRun", "duration")},
                "artifacts": final["artifacts"]}
