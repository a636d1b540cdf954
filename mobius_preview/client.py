"""What the host application calls: submit, status, wait, cancel, queue statistics.

Nothing is ever half-accepted: the payload is validated before any I/O, then one
Redis script checks the jobId and the queue limit, writes the job's record and
pushes its message (records.accept_many), so a job is either recorded and queued or
not there at all.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import kombu.exceptions
import redis
from celery.result import AsyncResult

from . import logs, metrics, records
from .config import settings
from .errors import BrokerUnavailable, InvalidPayload, JobFailed, JobNotFound, MobiusError, QueueFull
from .schema import validate_payload

TERMINAL = ("succeeded", "failed", "dead")
log = logging.getLogger("mobius_preview.client")


_CELERY_STATES = {"queued": "PENDING", "running": "STARTED", "retrying": "RETRY",
                  "succeeded": "SUCCESS", "failed": "FAILURE", "dead": "FAILURE"}


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


def _broker_down(exc: Exception) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"cannot reach Redis at {settings().redis_url_masked}: {exc}; the job was not accepted"
    )


def _headers(job: dict[str, Any]) -> dict[str, Any]:
    """Message headers: who sent it and when (the oldest-wait metric reads submitted_ts)."""
    return {"submitted_ts": repr(time.time()), "requestId": job["requestId"],
            "projectId": job["projectId"], "priority": job.get("priority", "normal")}


def submit(payload: Any, *, replay: bool = False) -> PreviewResult:
    """Validate and enqueue a preview job; the same jobId again returns the existing job.

    Raises InvalidPayload (listing every issue), QueueFull or BrokerUnavailable.
    ``replay`` lets a dead job be submitted again (dead-letter replay).
    """
    result = submit_many([payload], replay=replay)[0]
    if isinstance(result, MobiusError):
        raise result
    return result


def submit_many(payloads: list[Any], *, replay: bool = False) -> list[PreviewResult | MobiusError]:
    """Submit jobs in one Redis round trip; one result per payload, in order.

    Each item is a PreviewResult (``created`` False for a jobId that existed) or the
    error that refused it (InvalidPayload, QueueFull). Duplicates within the call
    count once. Raises BrokerUnavailable when Redis is unreachable (nothing accepted).
    """
    from .tasks import render_preview

    results: list[PreviewResult | MobiusError | None] = [None] * len(payloads)
    todo: list[tuple[int, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for i, payload in enumerate(payloads):
        try:
            job = validate_payload(payload)
        except InvalidPayload as exc:
            results[i] = exc
            continue
        if job["jobId"] not in seen:  # a repeat is filled from the first occurrence below
            seen[job["jobId"]] = i
            todo.append((i, job))
    if todo:
        _accept(todo, results, render_preview, replay)
    for i, payload in enumerate(payloads):
        if results[i] is None:
            first = results[seen[payload["jobId"]]]
            duplicate = PreviewResult(first.id, app=render_preview.app)
            duplicate.created, duplicate.priority = False, first.priority
            results[i] = duplicate
    return results  # type: ignore[return-value]


def _accept(todo: list[tuple[int, dict[str, Any]]], results: list[Any], render_preview: Any,
            replay: bool) -> None:
    """Build the messages, then record and enqueue the jobs in one script; fill ``results``."""
    jobs = [job for _, job in todo]
    queues = [settings().queue(job.get("priority", "normal")) for job in jobs]
    try:
        outgoing = render_preview.messages_for(
            [(job, q, _headers(job)) for job, q in zip(jobs, queues, strict=True)])
        events = render_preview.sent_events([event for _, event in outgoing if event is not None])
        verdicts = records.accept_many(jobs, [commands for commands, _ in outgoing], events=events,
                                       replay=replay)
    except (redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError) as exc:
        metrics.refused("broker")
        raise _broker_down(exc) from None
    accepted_events = []
    for (i, job), queue, (outcome, detail), (_, event) in zip(todo, queues, verdicts, outgoing, strict=True):
        if outcome == "full":
            metrics.refused("queue_full")
            results[i] = QueueFull(int(detail), settings().queue_max)
            continue
        result = PreviewResult(job["jobId"], app=render_preview.app)
        result.priority = job.get("priority", "normal")
        result.created = outcome == "claimed"
        results[i] = result
        if result.created:
            if event is not None:
                accepted_events.append(event)
            with logs.job_context(**logs.job_fields(job, job["jobId"])):
                log.info("job submitted to %s", queue)
    if events is not None and accepted_events and len(accepted_events) < len(jobs):
        _announce(accepted_events, render_preview)


def _announce(events: list[dict[str, Any]], render_preview: Any) -> None:
    """Some jobs were refused, so the script sent no events: send those of the accepted.

    Best effort, like all Redis events (pub/sub keeps nothing), and the jobs are
    accepted already: a failure is logged, not raised.
    """
    try:
        records.publish(render_preview.sent_events(events))
    except Exception as exc:
        log.warning("could not send the task-sent events of %d jobs: %s", len(events), exc)


def status(job_id: str) -> dict[str, Any]:
    """State, attempts, times, error and artifacts of a job; raises JobNotFound."""
    try:
        record = records.get(job_id)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise _broker_down(exc) from None
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


def cancel(job_id: str) -> dict[str, Any]:
    """Cancel a job that has not started (queued or waiting for a retry)."""
    from .app import app

    current = status(job_id)
    if current["state"] not in ("queued", "retrying"):
        return current
    app.control.revoke(job_id)
    records.update(job_id, state="failed", error="cancelled", finishedAt=records.now_iso())
    return status(job_id)


def queue_stats() -> dict[str, Any]:
    """Waiting jobs per priority, age of the oldest, and dead letters."""
    cfg = settings()
    try:
        depth = records.queue_depths()
        ages = records.oldest_waiting_age()
        dead = records.client().hlen(records.dead_key())
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise _broker_down(exc) from None
    return {
        "queues": {p: cfg.queue(p) for p in cfg.priorities},
        "depth": depth,
        "waiting": sum(depth.values()),
        "limit": cfg.queue_max,
        "oldestAgeSeconds": ages,
        "deadLetters": dead,
    }
