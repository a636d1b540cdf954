"""What the host application calls: submit, status, wait, cancel, queue statistics.

One import for the host: submitting lives in ``accept``, reading a job back in
``results``; cancelling and the queue figures are here.
"""

from __future__ import annotations

from typing import Any

from . import layout, records, turns, webhooks
from .accept import submit, submit_many
from .app import app
from .config import PROJECT_ID, settings
from .errors import InvalidPayload, PayloadIssue
from .results import PreviewResult, status, wait
from .states import WAITING, State

__all__ = ["PreviewResult", "cancel", "pause_project", "queue_stats", "resume_project", "status", "submit",
           "submit_many", "wait"]


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
    """Waiting jobs per priority, age of the oldest, dead letters, and per project (every
    project with work, or paused) its jobs waiting their turn, in progress, and whether
    it is paused."""
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
        "projects": facts["projects"],
        "turns": {"ahead": cfg.queue_ahead, "projectConcurrency": cfg.project_concurrency or None,
                  "projectQueueMax": cfg.project_queue_max or None},
    }


def _project(project: str) -> str:
    if not isinstance(project, str) or not PROJECT_ID.match(project):
        raise InvalidPayload([PayloadIssue("project", "pattern", "a projectId: 1-128 characters of "
                                           "[A-Za-z0-9._-], not starting with '.' or '-'")],
                             source=f"project {project!r}")
    return project


def pause_project(project: str) -> dict[str, Any]:
    """Hold a project's jobs: accepted and kept, none started, until ``resume_project``.
    Its jobs handed to Celery's queue but not yet taken come back to wait; jobs a
    worker holds already run to their end."""
    with records.reaching_redis():
        back = turns.pause(records.client(), _project(project))
    return {"project": project, "paused": True, "returned": back}


def resume_project(project: str) -> dict[str, Any]:
    """Let a paused project's jobs take their turns again."""
    with records.reaching_redis():
        was = turns.resume(records.client(), _project(project))
    return {"project": project, "paused": False, "wasPaused": was}
