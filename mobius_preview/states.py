"""The states of a job, and which rule applies to which: the one vocabulary.

A job's record (``layout.job_key``) holds its ``state``; the Lua scripts are handed
the groups below (``words``) rather than spelling states themselves, so a new state
is added here and nowhere else::

    queued ──> running ──> succeeded
      ^  │        │  └──> retrying ──> (queued again by Celery's retry) ──> running
      │  │        ├──> dead             (out of tries, or a permanent error)
      │  │        └──> cancelled        (asked to stop while running)
      │  └──> cancelled                 (cancelled before it ran)
      └── running, its worker lost (liveness sweep)

Celery's own names (PENDING, STARTED, ...) cannot say "retrying" or "dead";
``CELERY_NAMES`` maps ours to theirs for ``PreviewResult.state``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"  # failed; Celery has queued its retry for later
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # how earlier versions recorded jobs cancelled before they ran
    DEAD = "dead"  # dead-lettered: out of tries or a permanent error
    CANCELLED = "cancelled"


STATES = tuple(State)
ENDED = frozenset({State.SUCCEEDED, State.FAILED, State.DEAD, State.CANCELLED})  # never changes again
UNSUCCESSFUL = frozenset({State.FAILED, State.DEAD})  # Celery's FAILURE
WAITING = frozenset({State.QUEUED, State.RETRYING})  # not started: a cancel ends it at once
STOPPABLE = frozenset({State.RUNNING})  # a cancel asks its worker to stop it
LOST_WITH_WORKER = frozenset({State.RUNNING})  # the sweep puts it back queued when its worker dies
SUBMITTABLE_AGAIN = frozenset({State.CANCELLED})  # the same jobId may be submitted afresh
REPLAYABLE = frozenset({State.DEAD})  # accepted again by a dead-letter replay

CELERY_NAMES = {State.QUEUED: "PENDING", State.RUNNING: "STARTED", State.RETRYING: "RETRY",
                State.SUCCEEDED: "SUCCESS", State.FAILED: "FAILURE", State.DEAD: "FAILURE",
                State.CANCELLED: "REVOKED"}


def words(states: Iterable[State]) -> str:
    """A group of states as the Lua scripts take it: space-separated, sorted."""
    return " ".join(sorted(states))
