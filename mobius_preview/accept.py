"""Accepting jobs: validate, build each job's Celery message, record and queue it.

The one way in for ``submit``, ``submit_many`` and ``render_preview.delay``. Nothing
is ever half-accepted: the payload is validated before any I/O, then Celery builds
the message, kombu routes and serializes it, our channel captures the final Redis
command instead of sending it (``channel``), and one Redis script checks the jobId
and the queue limit, writes the job's record and pushes its message
(``records.accept_many``). A job is either recorded and queued or not there at all.
Queued means onto its project's list, to take its turn (``turns``); in an idle
system the same script hands it on to Celery's list at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import layout, logs, metrics, records
from .app import app
from .channel import Command
from .config import settings
from .errors import BrokerUnavailable, InvalidPayload, MobiusError, PayloadIssue, QueueFull
from .results import PreviewResult
from .schema import validate_payload

TASK_NAME = "mobius_preview.render_preview"
# A job's message as captured Redis commands, and its task-sent event (None without events).
Outgoing = tuple[list[Command], dict[str, Any] | None]
log = logging.getLogger("mobius_preview.accept")


def submit(payload: Any, *, replay: bool = False) -> PreviewResult:
    """Validate and enqueue a preview job; the same jobId again returns the existing job.

    Raises InvalidPayload (listing every issue), QueueFull or BrokerUnavailable.
    ``replay`` lets a dead job be submitted again (dead-letter replay).
    """
    return _one(submit_many([payload], replay=replay)[0])


async def submit_async(payload: Any, *, replay: bool = False) -> PreviewResult:
    """``submit`` for an event loop (the HTTP API): the same validation and message,
    and its one Redis round trip awaited on the asyncio client instead of a thread's."""
    batch = _Batch([payload], replay)
    if batch.todo:
        with _reaching_redis():
            batch.conclude(await records.accept_many_async(batch.jobs, batch.commands, events=batch.events,
                                                           replay=replay))
    return _one(batch.results()[0])


def submit_many(payloads: list[Any], *, replay: bool = False) -> list[PreviewResult | MobiusError]:
    """Submit jobs in one Redis round trip; one result per payload, in order.

    Each item is a PreviewResult (``created`` False for a jobId that existed) or the
    error that refused it (InvalidPayload, QueueFull). Duplicates within the call
    count once. Raises BrokerUnavailable when Redis is unreachable (nothing accepted).
    """
    batch = _Batch(payloads, replay)
    if batch.todo:
        with _reaching_redis():
            batch.conclude(records.accept_many(batch.jobs, batch.commands, events=batch.events,
                                               replay=replay))
    return batch.results()


def _one(result: PreviewResult | MobiusError) -> PreviewResult:
    if isinstance(result, MobiusError):
        raise result
    return result


@contextmanager
def _reaching_redis() -> Iterator[None]:
    """Redis away: BrokerUnavailable (nothing was accepted), counted as refused."""
    try:
        with records.reaching_redis("the job was not accepted"):
            yield
    except BrokerUnavailable:
        metrics.refused("broker")
        raise


class _Batch:
    """One submission's jobs: validated, their messages built (no I/O), then concluded
    from the accept script's verdicts; the round trip between is the caller's (sync or
    async), so both ways in share every other step."""

    def __init__(self, payloads: list[Any], replay: bool) -> None:
        self.payloads, self.replay = payloads, replay
        self._results: list[PreviewResult | MobiusError | None] = [None] * len(payloads)
        self.todo: list[tuple[int, dict[str, Any]]] = []
        self._seen: dict[str, int] = {}
        for i, payload in enumerate(payloads):
            try:
                job = _validated(payload)
            except InvalidPayload as exc:
                self._results[i] = exc
                continue
            if job["jobId"] not in self._seen:  # a repeat is filled from the first occurrence
                self._seen[job["jobId"]] = i
                self.todo.append((i, job))
        self.jobs = [job for _, job in self.todo]
        self.queues = [layout.queue(job.get("priority", layout.DEFAULT_PRIORITY)) for job in self.jobs]
        self.outgoing: list[Outgoing] = []
        self.events: Command | None = None
        if self.todo:
            with _reaching_redis():
                self.outgoing = messages_for([(job, q, _headers(job))
                                              for job, q in zip(self.jobs, self.queues, strict=True)])
                self.events = sent_events([event for _, event in self.outgoing if event is not None])

    @property
    def commands(self) -> list[list[Command]]:
        return [commands for commands, _ in self.outgoing]

    def conclude(self, verdicts: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Each job's result from its verdict (claimed, exists, full, projectfull)."""
        accepted_events = []
        for (i, job), queue, (outcome, detail, fields), (_, event) in zip(
                self.todo, self.queues, verdicts, self.outgoing, strict=True):
            if outcome == "full":
                metrics.refused("queue_full")
                self._results[i] = QueueFull(int(detail), settings().queue_max)
                continue
            if outcome == "projectfull":
                metrics.refused("project_queue_full")
                self._results[i] = QueueFull(int(detail), settings().project_queue_max,
                                             project=job["projectId"])
                continue
            result = PreviewResult(job["jobId"], app=app)
            result.priority = job.get("priority", layout.DEFAULT_PRIORITY)
            result.created = outcome == "claimed"
            self._results[i] = result
            if result.created:
                result.record = records.as_stored(fields)
                if event is not None:
                    accepted_events.append(event)
                with logs.job_context(**logs.job_fields(job, job["jobId"])):
                    log.info("job submitted to %s", queue)
        if self.events is not None and accepted_events and len(accepted_events) < len(self.jobs):
            _announce(accepted_events)

    def results(self) -> list[PreviewResult | MobiusError]:
        """One result per payload, in order; a repeat gets its first occurrence's."""
        out: list[PreviewResult | MobiusError] = []
        for i, payload in enumerate(self.payloads):
            result = self._results[i]
            if result is None:
                first = self._results[self._seen[payload["jobId"]]]
                if isinstance(first, PreviewResult):
                    result = PreviewResult(first.id, app=app)
                    result.created, result.priority = False, first.priority
                else:  # the first was refused (queue full): so is this
                    result = first
            assert result is not None
            out.append(result)
        return out


def _validated(payload: Any) -> dict[str, Any]:
    """The payload checked against the contract and what this service can do."""
    job = validate_payload(payload)
    if job.get("webhook") and not settings().webhook_secret:
        raise InvalidPayload([PayloadIssue("$.webhook", "config", "this service has no "
                                           "PREVIEW_WEBHOOK_SECRET, so it cannot sign webhooks")])
    return job


def _announce(events: list[dict[str, Any]]) -> None:
    """Some jobs were refused, so the script sent no events: send those of the accepted.

    Best effort, like all Redis events (pub/sub keeps nothing), and the jobs are
    accepted already: a failure is logged, not raised.
    """
    try:
        command = sent_events(events)
        if command is not None:
            records.publish(command)
    except Exception as exc:
        log.warning("could not send the task-sent events of %d jobs: %s", len(events), exc)


def _headers(job: dict[str, Any]) -> dict[str, Any]:
    """Message headers: who sent it and when (the oldest-wait metric reads submitted_ts)."""
    return {"submitted_ts": repr(time.time()), "requestId": job["requestId"],
            "projectId": job["projectId"], "priority": job.get("priority", layout.DEFAULT_PRIORITY)}


def messages_for(jobs: list[tuple[dict[str, Any], str, dict[str, Any]]]) -> list[Outgoing]:
    """Each job's message as the Redis commands that would send it, and its task-sent event.

    Celery builds the message, kombu routes and serializes it, and the channel
    captures the final LPUSH (``mobius_preview.channel``) for the accept script to
    run. Messages go straight onto the queue's list (anonymous exchange, routing key =
    queue name), with no per-message declare: workers declare their queues when they
    start. The task-sent event is returned, not sent: only accepted jobs count as
    sent (``sent_events``).
    """
    amqp = app.amqp
    with_events = bool(app.conf.task_send_sent_event)
    out: list[Outgoing] = []
    with app.producer_or_acquire() as producer, producer.channel.capture() as sink, producer.batch():
        for payload, queue, headers in jobs:
            first = len(sink)
            message = amqp.create_task_message(
                payload["jobId"], TASK_NAME, (payload,), {}, create_sent_event=with_events,
                argsrepr=_argsrepr(payload), kwargsrepr="{}",
            )
            amqp.send_task_message(producer, TASK_NAME, message._replace(sent_event=None), queue=queue,
                                   exchange="", routing_key=queue, headers=headers, declare=[],
                                   retry=False)
            event = message.sent_event
            if event is not None:
                event.update(queue=queue, exchange="", routing_key=queue)
            out.append((sink[first:], event))
    return out


def sent_events(events: list[dict[str, Any]]) -> Command | None:
    """These task-sent events as one captured "task-multi" PUBLISH (None for none).

    One message for many events is how Celery's own worker sends task events;
    Flower and celery-exporter read both forms. Built before acceptance so the
    accept script can send it in the same round trip.
    """
    if not events:
        return None
    with app.producer_or_acquire() as producer, producer.channel.capture() as sink:
        dispatcher = app.events.Dispatcher(
            channel=producer.channel, buffer_group=["task"], buffer_limit=len(events) + 1,
            buffer_while_offline=False,
        )
        with dispatcher.producer.batch():
            for fields in events:
                dispatcher.send("task-sent", **fields)
            dispatcher.flush()
    command: Command
    (command,) = sink
    return command


def _argsrepr(payload: dict[str, Any]) -> str:
    """How Flower and the task events show the job: who it is, not the whole payload."""
    request = payload.get("previewRequest") or {}
    priority = payload.get("priority", layout.DEFAULT_PRIORITY)
    return (f"({{'jobId': {payload['jobId']!r}, 'projectId': {payload['projectId']!r}, "
            f"'priority': {priority!r}, 'steps': {len(request.get('steps') or [])}, "
            f"'dryRun': {bool(payload.get('dryRun'))}}},)")
