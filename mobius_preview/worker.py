"""Worker start-up (logging, broker check, metrics, leftovers of crashed renders) and the
consumer that turns messages it cannot run into dead letters instead of dropping them.

Only workers load this module: the Celery settings name it in ``imports`` (loaded
before the worker sends its start-up signals) and as ``worker_consumer``. Host
processes that only submit never connect these handlers.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from typing import Any

import redis
from celery import signals
from celery.bootsteps import TERMINATE
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer as CeleryConsumer

from . import channel, liveness, logs, metrics, records, render, schema, storage, turns
from .config import settings
from .errors import StoreConfigError, StoreError

log = logging.getLogger("mobius_preview.worker")


@signals.setup_logging.connect
def _setup_logging(**_: object) -> None:
    logs.configure()


@signals.worker_init.connect
def _check_broker(**_: object) -> None:
    cfg = settings()
    try:
        records.client().ping()
    except redis.RedisError as exc:
        sys.exit(f"mobius-preview: REDIS_URL: cannot reach {cfg.redis_url_masked}: {exc}")
    try:
        storage.check_forked()  # wrong keys or bucket: said now, naming the variable, not at the first job
    except StoreConfigError as exc:
        sys.exit(f"mobius-preview: {exc}")
    except StoreError as exc:
        sys.exit(f"mobius-preview: PREVIEW_STORAGE_URL: cannot reach {cfg.storage_url}: {exc}")
    schema.warm()
    render.warm()
    channel.on_malformed(lambda raw, exc: keep_rejected("malformed", raw, exc))
    if cfg.metrics_port is not None:
        metrics.serve(cfg.metrics_port)
        log.info("metrics on port %s (multiprocess folder %s)", cfg.metrics_port,
                 metrics.multiprocess_dir())


_heartbeats: dict[str, liveness.Heartbeat] = {}  # by node name (tests run several in one process)


def _held() -> list[str]:
    """Delivery tags of the messages this worker holds: running and reserved."""
    requests = [*worker_state.active_requests, *worker_state.reserved_requests]
    return [tag for r in requests if (tag := getattr(r.message, "delivery_tag", None))]


@signals.worker_init.connect
def _start_heartbeat(sender: Any = None, **_: object) -> None:
    # Beats until the worker has fully stopped: through a warm shutdown, while the
    # jobs in hand finish, its messages stay its own.
    def running() -> bool:
        return sender.blueprint is None or sender.blueprint.state != TERMINATE

    _stop_heartbeat(sender)  # one per node name
    heartbeat = _heartbeats[sender.hostname] = liveness.Heartbeat(sender.hostname, _held, running)
    heartbeat.start()


@signals.worker_shutdown.connect
def _stop_heartbeat(sender: Any = None, **_: object) -> None:
    heartbeat = _heartbeats.pop(getattr(sender, "hostname", ""), None)
    if heartbeat is not None:
        heartbeat.stop()


@signals.worker_process_shutdown.connect
def _child_exited(pid: int | None = None, **_: object) -> None:
    metrics.process_exited(pid or os.getpid())


@signals.worker_ready.connect
def _clean_leftovers(**_: object) -> None:
    removed = storage.clean_stale(settings().time_limit + 60)
    if removed:
        log.info("removed %d temporary folders left by crashed renders", removed)
    pruned = render.prune_segments(storage.segments_dir(), settings().segment_days * 86400)
    if pruned:
        log.info("removed %d segments no render used in %d days", pruned, settings().segment_days)


_log_tokens: dict[str | None, contextvars.Token[dict[str, Any] | None]] = {}


@signals.task_prerun.connect
def _job_logs_begin(task_id: str | None = None, task: Any = None, args: Any = None, **_: object) -> None:
    """Celery's own lines about a job (succeeded, failed, retry) carry its fields too."""
    attempt = (task.request.retries + 1) if task is not None else None
    payload = args[0] if args else None
    _log_tokens[task_id] = logs.begin(logs.job_fields(payload, task_id or "", attempt))


@signals.task_postrun.connect
def _job_logs_end(task_id: str | None = None, **_: object) -> None:
    token = _log_tokens.pop(task_id, None)
    if token is not None:
        logs.end(token)


@signals.task_revoked.connect
def _feed_after_revoke(request: Any = None, **_: object) -> None:
    """A revoked job's message is dropped without running its start script, which would
    have uncounted the (cancelled) job and topped up its Celery list: done here instead."""
    try:
        job_id = getattr(request, "id", None)
        if job_id:
            turns.revoked(records.client(), job_id)
        else:
            turns.feed(records.client())
    except redis.RedisError as exc:  # the heartbeat's feed and repair catch up
        log.warning("could not feed after a revoked job: %s", exc)


def keep_rejected(reason: str, raw: bytes | str, exc: BaseException | None, **details: Any) -> None:
    """Keep a refused message as a dead letter and count it; never raises."""
    try:
        ident = records.keep_rejected(reason, raw, exc, **details)
        log.error("refused a message (%s), kept as dead letter %s: %s", reason, ident, exc)
    except Exception:  # never let bookkeeping break the consumer
        log.exception("could not keep a refused message (%s)", reason)
    metrics.message_rejected(reason)
    try:  # a message left a Celery list without a start script to top it up
        turns.feed(records.client())
    except redis.RedisError as exc:  # the heartbeat's feed catches up
        log.warning("could not feed after a refused message: %s", exc)


class Consumer(CeleryConsumer):
    """Celery's consumer, but a message it refuses is kept in the dead-letter queue.

    Messages published around the client (another program writing to our queues)
    can be undecodable, of a refused content type (Python-serialized bodies are never loaded),
    for an unknown task, or malformed. Celery logs and discards them; we also keep
    them, inert, with the reason, and count them.
    """

    def _keep(self, reason: str, message: Any, exc: BaseException | None) -> None:
        keep_rejected(reason, getattr(message, "body", b"") or b"", exc,
                      headers=dict(getattr(message, "headers", None) or {}),
                      content_type=getattr(message, "content_type", None))

    def on_decode_error(self, message: Any, exc: BaseException) -> Any:
        self._keep("undecodable", message, exc)
        return super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> Any:
        self._keep("unknown_message", message, None)
        return super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> Any:
        self._keep("unknown_task", message, exc)
        return super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> Any:
        self._keep("invalid_task", message, exc)
        return super().on_invalid_task(body, message, exc)
