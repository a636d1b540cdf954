"""The dead-letter queue: jobs that failed for good, kept until replayed or purged.

Celery has no dead-letter queue on Redis, so ``<queue name>.dead`` is a Redis hash of
jobId to a JSON record (payload, error, traceback, attempts, times), written by the
task in the same transaction that marks the job dead. Replay resubmits first and
deletes the record only after the new submission is accepted, so a crash between
the two leaves the job both queued and listed here, never lost.
"""

from __future__ import annotations

import json
from typing import Any

from . import layout, records
from .accept import submit
from .errors import JobNotFound


def list_letters() -> list[dict[str, Any]]:
    """All dead letters, oldest first (without tracebacks, for listing)."""
    raw = records.client().hgetall(layout.dead_key())
    letters = [json.loads(v) for v in raw.values()]
    letters.sort(key=lambda letter: letter.get("deadAt") or "")
    return [{k: v for k, v in letter.items() if k not in ("traceback", "payload")} for letter in letters]


def show(job_id: str) -> dict[str, Any]:
    raw = records.client().hget(layout.dead_key(), job_id)
    if raw is None:
        raise JobNotFound(job_id)
    letter: dict[str, Any] = json.loads(raw)
    return letter


def replay(job_id: str) -> dict[str, Any]:
    """Resubmit a dead job under the same jobId with fresh attempts."""
    letter = show(job_id)
    payload = letter.get("payload")
    result = submit(payload, replay=True)
    records.client().hdel(layout.dead_key(), job_id)
    return {"jobId": job_id, "resubmitted": result.created, "priority": result.priority}


def replay_all() -> list[dict[str, Any]]:
    outcomes = []
    for letter in list_letters():
        try:
            outcomes.append(replay(letter["jobId"]))
        except Exception as exc:  # keep going; report each failure
            outcomes.append({"jobId": letter["jobId"], "error": f"{type(exc).__name__}: {exc}"})
    return outcomes


def purge(job_id: str) -> bool:
    """Forget a dead letter for good. The job's record stays 'dead'."""
    return bool(records.client().hdel(layout.dead_key(), job_id))
