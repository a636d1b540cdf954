"""The render task: validation again, dry runs, retries with backoff, dead letters.

``render_preview.delay(payload)`` goes through ``PreviewTask.apply_async``, which hands
the payload to ``client.submit``: validated, named after ``jobId``, routed by priority
and accepted in the caller's process, its message built by ``messages_for`` and
pushed by the accept script (``records.accept_many``). Only
Celery's own retry path publishes through ``Task.apply_async`` directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

from . import logs, metrics, records, render, storage
from .app import app
from .channel import Command
from .config import settings
from .errors import InvalidPayload, PermanentError
from .schema import validate_payload

TASK_NAME = "mobius_preview.render_preview"
# A job's message as captured Redis commands, and its task-sent event (None without events).
Outgoing = tuple[list[Command], dict[str, Any] | None]
log = logging.getLogger("mobius_preview.tasks")


def retry_delay(retries: int) -> float:
    """Exponential backoff capped at PREVIEW_RETRY_BACKOFF_MAX, with "equal jitter".

    Half the delay is fixed and half random, so delays never shrink from one try to
    the next yet two jobs failing together do not retry in lockstep.
    """
    cfg = settings()
    ceiling = get_exponential_backoff_interval(
        factor=cfg.retry_backoff, retries=retries, maximum=cfg.retry_backoff_max
    )
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class PreviewTask(Task):
    """Publishing goes through the client; failures end in the dead-letter queue."""

    acks_late = True
    reject_on_worker_lost = True
    typing = False

    def apply_async(self, args=None, kwargs=None, task_id=None, **options):  # type: ignore[override]
        # Task.retry() republishes the message it is handling with ``retries`` set:
        # that path must go straight to the broker (same id, same queue, no new acceptance).
        if "retries" in options:
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        from .client import submit

        payload = args[0] if args else (kwargs or {}).get("payload")
        return submit(payload)

    def messages_for(self, jobs: list[tuple[dict[str, Any], str, dict[str, Any]]]) -> list[Outgoing]:
        """Each job's message as the Redis commands that would send it, and its task-sent event.

        Celery builds the message, kombu routes and serializes it, and the channel
        captures the final LPUSH (``mobius_preview.channel``) for the client's accept
        script to run. Messages go straight onto the queue's list (anonymous exchange,
        routing key = queue name), with no per-message declare: workers declare their
        queues when they start. The task-sent event is returned, not sent: only
        accepted jobs count as sent (``sent_events``).
        """
        amqp = self.app.amqp
        with_events = bool(self.app.conf.task_send_sent_event)
        out: list[Outgoing] = []
        with self.app.producer_or_acquire() as producer, producer.channel.capture() as sink, producer.batch():
            for payload, queue, headers in jobs:
                first = len(sink)
                message = amqp.create_task_message(
                    payload["jobId"], self.name, (payload,), {}, create_sent_event=with_events,
                    argsrepr=_argsrepr(payload), kwargsrepr="{}",
                )
                amqp.send_task_message(producer, self.name, message._replace(sent_event=None), queue=queue,
                                       exchange="", routing_key=queue, headers=headers, declare=[],
                                       retry=False)
                event = message.sent_event
                if event is not None:
                    event.update(queue=queue, exchange="", routing_key=queue)
                out.append((sink[first:], event))
        return out

    def sent_events(self, events: list[dict[str, Any]]) -> Command | None:
        """These task-sent events as one captured "task-multi" PUBLISH (None for none).

        One message for many events is how Celery's own worker sends task events;
        Flower and celery-exporter read both forms. Built before acceptance so the
        accept script can send it in the same round trip.
        """
        if not events:
            return None
        with self.app.producer_or_acquire() as producer, producer.channel.capture() as sink:
            dispatcher = self.app.events.Dispatcher(
                channel=producer.channel, buffer_group=["task"], buffer_limit=len(events) + 1,
                buffer_while_offline=False,
            )
            with dispatcher.producer.batch():
                for fields in events:
                    dispatcher.send("task-sent", **fields)
                dispatcher.flush()
        (command,) = sink
        return command

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        payload = args[0] if args else None
        attempts = self.request.retries + 1
        letter = {
            "jobId": task_id,
            "payload": payload,
            "error": describe(exc),
            "errorKind": "permanent" if isinstance(exc, PermanentError) else "transient",
            "traceback": "".join(traceback.format_exception(exc))[-8000:],
            "attempts": attempts,
            "firstAttemptAt": (records.get(task_id) or {}).get("firstStartedAt"),
            "deadAt": records.now_iso(),
            "queue": (self.request.delivery_info or {}).get("routing_key"),
        }
        records.bury(
            task_id, letter, error=letter["error"], errorKind=letter["errorKind"],
            attempts=attempts, finishedAt=letter["deadAt"],
        )
        log.error("job dead-lettered after %d attempts (%s): %s", attempts, letter["errorKind"],
                  letter["error"])
        # An invalid payload is dead-lettered like any permanent error, counted apart.
        metrics.job_finished("invalid" if isinstance(exc, InvalidPayload) else "dead", _priority(payload))


def _argsrepr(payload: dict[str, Any]) -> str:
    """How Flower and the task events show the job: who it is, not the whole payload."""
    request = payload.get("previewRequest") or {}
    return (f"({{'jobId': {payload['jobId']!r}, 'projectId': {payload['projectId']!r}, "
            f"'priority': {payload.get('priority', 'normal')!r}, 'steps': {len(request.get('steps') or [])}, "
            f"'dryRun': {bool(payload.get('dryRun'))}}},)")


def _priority(payload: Any) -> str:
    return logs.job_fields(payload, "")["priority"]


def describe(exc: BaseException) -> str:
    """One line for the record and the dead letter: what failed, in words an operator can act on."""
    if isinstance(exc, SoftTimeLimitExceeded):
        return (f"SoftTimeLimitExceeded: the render took longer than PREVIEW_SOFT_TIME_LIMIT "
                f"({settings().soft_time_limit} s)")
    return f"{type(exc).__name__}: {exc}"


def _summary(outcome: dict[str, Any]) -> dict[str, Any]:
    """What the task returns to Celery (logs, events, Flower): small; the record has it all."""
    return {k: outcome[k] for k in ("jobId", "key", "cacheHit", "dryRun") if k in outcome}


@lru_cache(maxsize=512)
def _stored(folder: str) -> tuple[float, dict[str, str]]:
    """Length and files of a stored preview. A published preview never changes (its
    folder is named by its content and moved in whole), so a process reads each once."""
    return render.planned_duration(Path(folder)), storage.artifacts(Path(folder))


class Located(NamedTuple):
    """What every attempt starts with: the valid job, its hashed assets and content key,
    and the stored preview for that key if there is one."""

    identified: render.Identified
    folder: Path | None
    started: float


def locate(payload: Any) -> Located:
    started = time.perf_counter()
    job = validate_payload(payload)
    identified = render.identify(job, settings().assets_dir)
    return Located(identified, storage.lookup(identified.key), started)


def execute(payload: Any, located: Located | None = None) -> dict[str, Any]:
    """Reuse the stored preview or render one, and index it for the job.

    ``located`` is ``locate(payload)`` when this attempt has done it already.
    """
    cfg = settings()
    located = located or locate(payload)
    identified, folder, started = located
    job = identified.job
    cache_hit = folder is not None
    timings: dict[str, float] = {}
    if folder is None:
        prepared = render.prepare(identified, cfg.max_video_seconds, storage.asset_facts_dir())
        workdir = storage.new_workdir(identified.key)
        try:
            timings = render.render(prepared, workdir, timeout=cfg.soft_time_limit)["timings"]
            folder = storage.publish(workdir, identified.key)
        except BaseException:
            storage.discard(workdir)
            raise
    storage.index_job(job["projectId"], job["jobId"], identified.key, cache_hit=cache_hit)
    metrics.stages(timings)
    duration, files = _stored(str(folder))
    return {
        "jobId": job["jobId"],
        "projectId": job["projectId"],
        "key": identified.key,
        "dryRun": bool(job.get("dryRun")),
        "cacheHit": cache_hit,
        "duration": duration,
        "folder": str(folder),
        "artifacts": dict(files),
        "seconds": round(time.perf_counter() - started, 4),
    }


@app.task(bind=True, base=PreviewTask, name=TASK_NAME)
def render_preview(self: PreviewTask, payload: Any = None, *extra: Any, **unexpected: Any) -> dict[str, Any]:
    cfg = settings()
    job_id = self.request.id
    attempt = self.request.retries + 1
    ident = logs.job_fields(payload, job_id)
    ident.pop("attempt")
    with logs.job_context(**ident, attempt=attempt):
        problem = None
        if extra or unexpected:  # a message built by hand, not by the client
            problem = (f"render_preview takes one payload, got {1 + len(extra)} arguments "
                       f"and keywords {sorted(unexpected)}")
        located = known = None
        if not problem:
            with contextlib.suppress(Exception):  # met again below, where failures are handled
                located = locate(payload)
                if located.folder is not None:
                    # A stored preview: the outcome is known before the job starts, so
                    # records.start can mark it succeeded in the same round trip.
                    known = execute(payload, located)
        deliveries_limit = 2 * cfg.max_tries + 1
        record = records.start(job_id, finished=known, max_deliveries=deliveries_limit, **ident,
                               state="running", attempts=attempt, startedAt=records.now_iso(),
                               startedTs=time.time())
        if record["state"] == "succeeded" and record["outcome"]:
            # Redelivered after the job finished but before its message was acked.
            return _summary(json.loads(record["outcome"]))
        if record["state"] in ("dead", "failed"):
            if record["state"] == "failed":
                metrics.job_finished("failed", ident["priority"])  # cancelled before it ran
            return {"jobId": job_id, "skipped": record["state"]}
        if problem:
            raise PermanentError(problem)
        if record["deliveries"] > deliveries_limit:
            raise PermanentError(f"the job was delivered {record['deliveries']} times: it kills its worker")
        metrics.job_started(ident["priority"], record["submittedTs"] or None)
        if known is not None:
            outcome = known  # a stored preview: records.start marked the job succeeded too
        else:
            log.info("job started")
            with metrics.in_progress():
                try:
                    outcome = execute(payload, located)
                except PermanentError:
                    raise
                except (Exception, SoftTimeLimitExceeded) as exc:
                    if attempt >= cfg.max_tries:
                        raise
                    delay = retry_delay(self.request.retries)
                    delays = [*json.loads(record["retryDelays"] or "[]"), round(delay, 3)]
                    records.update(job_id, state="retrying", error=describe(exc), retryDelays=delays)
                    metrics.job_finished("retried", ident["priority"])
                    log.warning("job failed (%s); retry in %.1f s", describe(exc), delay)
                    raise self.retry(exc=exc, countdown=delay, max_retries=cfg.max_tries - 1) from exc
            records.finish(job_id, outcome, rendered=not (outcome["cacheHit"] or outcome["dryRun"]))
        kind = "dry_run" if outcome["dryRun"] else "cache_hit" if outcome["cacheHit"] else "succeeded"
        metrics.job_finished(kind, ident["priority"], seconds=outcome["seconds"])
        log.info("job %s in %.2f s: %s", kind.replace("_", " "), outcome["seconds"], outcome["folder"])
        return _summary(outcome)
