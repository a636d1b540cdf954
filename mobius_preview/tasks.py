"""The render task: one job from its message to its preview, retried or dead-lettered.

``render_preview.delay(payload)`` goes through ``PreviewTask.apply_async`` to
``accept.submit`` (validated, recorded and queued in the caller's process). Only
Celery's own retry path publishes through ``Task.apply_async`` directly.
"""

from __future__ import annotations

import json
import logging
import random
import time
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import redis
from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded

from . import logs, metrics, records, render, results, storage, webhooks
from .accept import TASK_NAME, submit
from .app import app
from .config import settings
from .errors import Cancelled, InvalidPayload, PermanentError
from .metrics import Outcome
from .render.control import Control
from .schema import validate_payload
from .states import ENDED, State
from .watch import JobWatch

log = logging.getLogger("mobius_preview.tasks")


class PreviewTask(Task):
    """Publishing goes through ``accept``; retries are recorded; failures end in the
    dead-letter queue."""

    acks_late = True
    reject_on_worker_lost = True
    typing = False
    # Any failure but a PermanentError is retried with exponential backoff: the delay
    # doubles from PREVIEW_RETRY_BACKOFF up to PREVIEW_RETRY_BACKOFF_MAX (``retry``
    # below adds the jitter); the last try's failure goes to ``on_failure``. A lost
    # Redis is not retried here: the retry could not be published, and Celery would
    # then drop the message (Reject); unacknowledged, it comes back after the
    # visibility timeout instead.
    autoretry_for = (Exception,)
    dont_autoretry_for = (PermanentError, Cancelled, redis.RedisError)
    retry_backoff = settings().retry_backoff
    retry_backoff_max = settings().retry_backoff_max
    retry_jitter = False

    @property
    def max_retries(self) -> int:
        return settings().max_tries - 1

    def apply_async(self, args: tuple[Any, ...] | None = None, kwargs: dict[str, Any] | None = None,
                    task_id: str | None = None, **options: Any) -> Any:
        # Task.retry() republishes the message it is handling with ``retries`` set:
        # that path must go straight to the broker (same id, same queue, no new acceptance).
        if "retries" in options:
            return super().apply_async(args, kwargs, task_id=task_id, **options)
        payload = args[0] if args else (kwargs or {}).get("payload")
        return submit(payload)

    def retry(self, args: tuple[Any, ...] | None = None, kwargs: dict[str, Any] | None = None,
              exc: BaseException | None = None, throw: bool = True, eta: Any = None,
              countdown: float | None = None, max_retries: int | None = None, **options: Any) -> Any:
        """"Equal jitter" on the backoff Celery computed: half the delay fixed, half
        random, so delays never shrink from one try to the next yet two jobs failing
        together do not retry in lockstep (Celery's own jitter can pick 0)."""
        if countdown is not None:
            countdown = countdown / 2 + random.uniform(0, countdown / 2)
        return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)

    def on_retry(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 einfo: Any) -> None:
        if einfo is None:
            # Celery's worker announcing a job it cancelled on losing Redis: no retry
            # was published; the unacknowledged message comes back by itself.
            return
        reason = einfo.exception  # the Retry that Task.retry raised, with its countdown
        if not isinstance(reason, Retry):  # the prefork pool wraps it (ExceptionWithTraceback)
            reason = reason.exc
        delay = float(reason.when)
        metrics.job_finished(Outcome.RETRIED, _priority(args[0] if args else None))
        log.warning("job failed (%s); retry in %.1f s", describe(exc), delay)
        try:
            records.retrying(task_id, describe(exc), round(delay, 3))
        except Exception:
            # The retry is queued already: an error here must not dead-letter the job
            # (Celery would). Its record says "running" until the retry starts.
            log.exception("could not record the retry")

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                   einfo: Any) -> None:
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
        metrics.job_finished(Outcome.INVALID if isinstance(exc, InvalidPayload) else Outcome.DEAD,
                             _priority(payload))
        _tell_host(payload, task_id, State.DEAD)


@app.task(bind=True, base=PreviewTask, name=TASK_NAME)
def render_preview(self: PreviewTask, payload: Any = None, *extra: Any, **unexpected: Any) -> dict[str, Any]:
    """Locate the job, start it, reuse or render its preview, finish it.

    A stored preview (a cache hit) is known before the job starts, so the start
    script marks it succeeded in the same round trip. Whatever raises from here is
    retried (``autoretry_for``) unless it is a PermanentError, a lost Redis or a cancel.
    """
    job_id = self.request.id
    attempt = self.request.retries + 1
    ident = logs.job_fields(payload, job_id)
    ident.pop("attempt")
    deliveries_limit = 2 * settings().max_tries + 1
    with logs.job_context(**ident, attempt=attempt):
        # 1. Locate: validate, hash the assets, look for a stored preview.
        problem = _unexpected(extra, unexpected)
        located, known = (None, None) if problem else _look_ahead(payload)

        # 2. Start: count the delivery and mark it running (or, for a cache hit, succeeded).
        record = records.start(job_id, finished=known, max_deliveries=deliveries_limit, **ident,
                               state=State.RUNNING, attempts=attempt, startedAt=records.now_iso(),
                               startedTs=time.time(), worker=self.request.hostname)
        if record["state"] == State.SUCCEEDED and record["outcome"]:
            # Redelivered after the job finished but before its message was acked.
            return _summary({"jobId": job_id, **json.loads(record["outcome"])})
        if record["state"] in ENDED - {State.SUCCEEDED}:
            if record["state"] != State.DEAD:
                metrics.job_finished(Outcome.CANCELLED, ident["priority"])  # cancelled before it ran
            return {"jobId": job_id, "skipped": record["state"]}
        if problem:
            raise PermanentError(problem)
        if record["deliveries"] > deliveries_limit:
            raise PermanentError(f"the job was delivered {record['deliveries']} times: it kills its worker")
        metrics.job_started(ident["priority"], record["submittedTs"] or None)

        # 3. Reuse the stored preview, or render one (a failure here is retried; a
        #    cancel request stops it).
        if known is not None:
            outcome = known  # records.start marked the job succeeded already
        else:
            if isinstance(located, Exception):
                raise located
            log.info("job started")
            watch = JobWatch(job_id, self.send_event)
            try:
                with metrics.in_progress(), watch.running() as control:
                    control.live = LivePreview(job_id)
                    outcome = execute(payload, located, control)
            except Cancelled:
                records.cancelled(job_id)
                storage.drop_live(job_id)
                metrics.job_finished(Outcome.CANCELLED, ident["priority"])
                log.info("job cancelled while running")
                _tell_host(payload, job_id, State.CANCELLED)
                return {"jobId": job_id, "skipped": State.CANCELLED}
            # 4. Finish (from now on the API serves the HLS preview from the finished preview).
            records.finish(job_id, outcome, rendered=not (outcome["cacheHit"] or outcome["dryRun"]))
            storage.drop_live(job_id)
        kind = (Outcome.DRY_RUN if outcome["dryRun"] else Outcome.CACHE_HIT if outcome["cacheHit"]
                else Outcome.SUCCEEDED)
        metrics.job_finished(kind, ident["priority"], seconds=outcome["seconds"])
        log.info("job %s in %.2f s: %s", kind.replace("_", " "), outcome["seconds"], outcome["folder"])
        _tell_host(payload, job_id, State.SUCCEEDED)
        return _summary(outcome)


class LivePreview:
    """The render's ``Control.live``: each time the HLS preview grows, its files and playlist
    go where the API serves them (``storage.publish_live``); the first time, the job is
    marked playable and a ``playable`` event goes out."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.announced = False

    def __call__(self, files: list[Path], playlist: str) -> None:
        storage.publish_live(self.job_id, files, playlist, render.artifacts.PLAYLIST)
        if self.announced:
            return
        self.announced = True
        try:
            records.playable(self.job_id)
        except Exception as exc:  # news, not the job: the render goes on (its end is announced)
            log.warning("could not announce the playable preview: %s", exc)


class Located(NamedTuple):
    """What every attempt starts with: the valid job, its hashed assets and content key,
    and the stored preview for that key if there is one."""

    identified: render.Identified
    folder: str | None  # where the stored preview is (storage.lookup)
    started: float


def locate(payload: Any) -> Located:
    started = time.perf_counter()
    job = validate_payload(payload)
    identified = render.identify(job, settings().assets_dir)
    return Located(identified, storage.lookup(identified.key), started)


def _look_ahead(payload: Any) -> tuple[Located | Exception, dict[str, Any] | None]:
    """The job located and, for a stored preview, its outcome. A failure to locate is
    kept and raised in step 3, where failures are retried or dead-lettered (not located
    again: an asset server answering 503 is asked once per attempt)."""
    try:
        located = locate(payload)
    except Exception as exc:
        return exc, None
    if located.folder is None:
        return located, None
    try:
        return located, execute(payload, located)
    except Exception:
        return located, None


def execute(payload: Any, located: Located | None = None, control: Control | None = None) -> dict[str, Any]:
    """Reuse the stored preview or render one, and index it for the job.

    ``located`` is ``locate(payload)`` when this attempt has done it already;
    ``control`` follows the render and can stop it.
    """
    cfg = settings()
    control = control or Control()
    located = located or locate(payload)
    identified, folder, started = located
    job = identified.job
    cache_hit = folder is not None
    timings: dict[str, float] = {}
    if folder is None:
        control.progress("assets", render.progress.percent("assets"))
        unknown = storage.pull_facts(identified.assets.values())
        prepared = render.prepare(identified, cfg.max_video_seconds, storage.asset_facts_dir())
        workdir = storage.new_workdir(identified.key)
        try:
            rendered = render.render(prepared, workdir, timeout=cfg.soft_time_limit, control=control,
                                     segments=storage.segment_store())
            storage.push_facts(unknown)  # learnt while rendering (each asset before its first use)
            timings = rendered["timings"]
            if "output" in rendered:
                metrics.segments(rendered["output"]["segments"])
            control.check()
            control.progress("publish", render.progress.percent("publish"))
            folder = storage.publish(workdir, identified.key)
        except BaseException:
            storage.discard(workdir)
            raise
    storage.index_job(job["projectId"], job["jobId"], identified.key, cache_hit=cache_hit)
    metrics.stages(timings)
    duration, files = _length_and_files(folder)
    return {
        "jobId": job["jobId"],
        "projectId": job["projectId"],
        "key": identified.key,
        "dryRun": bool(job.get("dryRun")),
        "cacheHit": cache_hit,
        "duration": duration,
        "folder": folder,
        # The files a person fetches; the HLS segments are the playlist's, served by its URIs.
        "artifacts": {name: where for name, where in files.items() if not render.artifacts.is_segment(name)},
        "seconds": round(time.perf_counter() - started, 4),
    }


@lru_cache(maxsize=512)
def _length_and_files(folder: str) -> tuple[float, dict[str, str]]:
    """Length and files of a stored preview. A published preview never changes (its
    folder is named by its content and put in place whole), so a process reads each once."""
    stored = storage.stored(folder)
    return float(stored.manifest["plan"]["duration"]), stored.files


def _unexpected(extra: tuple[Any, ...], unexpected: dict[str, Any]) -> str | None:
    """What is wrong with a message built by hand rather than by ``accept``, if anything."""
    if not (extra or unexpected):
        return None
    return (f"render_preview takes one payload, got {1 + len(extra)} arguments "
            f"and keywords {sorted(unexpected)}")


def _tell_host(payload: Any, job_id: str, state: State) -> None:
    """Queue the job's webhook, if it asked for one, with its status as it ended."""
    url = ((payload or {}).get("webhook") or {}).get("url") if isinstance(payload, dict) else None
    if url:
        webhooks.notify(job_id, url, state, results.status(job_id))


def _priority(payload: Any) -> str:
    priority: str = logs.job_fields(payload, "")["priority"]
    return priority


def describe(exc: BaseException) -> str:
    """One line for the record and the dead letter: what failed, in words an operator can act on."""
    if isinstance(exc, SoftTimeLimitExceeded):
        return (f"SoftTimeLimitExceeded: the render took longer than PREVIEW_SOFT_TIME_LIMIT "
                f"({settings().soft_time_limit} s)")
    return f"{type(exc).__name__}: {exc}"


def _summary(outcome: dict[str, Any]) -> dict[str, Any]:
    """What the task returns to Celery (logs, events, Flower): small; the record has it all."""
    return {k: outcome[k] for k in ("jobId", "key", "cacheHit", "dryRun") if k in outcome}
