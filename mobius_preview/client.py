"""What the host application calls: submit, status, wait, cancel, queue statistics.

One import for the host: submitting lives in ``accept``, reading a job back in
``results``; cancelling and the queue figures are here.
"""

from __future__ import annotations

from typing import Any

from . import layout, records, webhooks
from .accept import submit, submit_many
from .app import app
from .config import settings
from .results import PreviewResult, status, wait
from .states import WAITING, State

__all__ = ["PreviewResult", "cancel", "queue_stats", "status", "submit", "submit_many", "wait"]


def cancel(job_id: str) -> dict[str, Any]:
    """Cancel a job: one not started ends ``cancelled`` at once; a running one is asked
    to stop (its worker kills the render within a second or two, then it ends
    ``cancelled``; ``wait`` tells when). A finished job is left as it is. Returns its
    status; a cancelled jobId may be submitted again."""
    status(job_id)  # JobNotFound for an unknown job
    with records.reaching_redis():
        found = records.cancel(job_id)
    current = status(job_id)
    if found in WAITING:
        app.control.revoke(job_id)  # workers that already hold the message skip it at once
        webhooks.notify(job_id, (current["webhook"] or {}).get("url"), State.CANCELLED, current)
    return current


def queue_stats() -> dict[str, Any]:
    """Waiting jobs per priority, age of the oldest, and dead letters."""
    cfg = settings()
    with records.reaching_redis():
        facts = records.queue_facts()
    return {
        "queues": {p: layout.queue(p, cfg) for p in layout.PRIORITIES},
        "depth": facts["depth"],
        "waiting": sum(facts["depth"].values()),
        "limit": cfg.queue_max,
        "oldestAgeSeconds": facts["oldestAgeSeconds"],
        "deadLetters": facts["deadLetters"],
    }
