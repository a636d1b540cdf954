"""Job records and queue facts kept in Redis, beside the Celery queues.

Celery's own states (PENDING, STARTED, ...) cannot say "dead-lettered" or "a retry is
scheduled", and the same task id submitted twice is two runs (celery#4070). So each
job has a small Redis hash, written when the job is accepted (which makes submission
idempotent): its state, attempts, times, error and artifacts. State changes that
must agree with another key (accepting against the queue length together with the
message, dead-lettering) are single Lua scripts or MULTI transactions, so no crash
can leave them half-done.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import kombu.exceptions
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.typing import EncodableT

from . import layout, scripts, states, turns
from .channel import Command
from .config import Settings, settings
from .errors import BrokerUnavailable
from .states import State

ACCEPT_WAIT_MS = 1000  # how long acceptance waits for PREVIEW_ACCEPT_REPLICAS replicas
CANCELLED_ERROR = "cancelled"  # the error a cancelled job's record and event give
# The fields an ended job's record keeps as they are when the rest is folded into one
# JSON field (``final``; _lib.lua's fold): those the scripts still read or count after
# the end (a late duplicate delivery is recognised and counted by them).
FOLD_KEEPS = ("state", "outcome", "completions", "renders", "deliveries")
_KEEPS = " ".join(FOLD_KEEPS)
EVENT_BLOCK = 10.0  # seconds an event-stream reader waits for news before looking again


def as_stored(fields: dict[str, Any]) -> dict[str, str]:
    """Fields as Redis keeps them (strings; others JSON-encoded; None left out)."""
    return {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in fields.items() if v is not None}


def _text(fields: dict[str, Any]) -> str:
    """Fields as one JSON object of strings (non-strings JSON-encoded), for the scripts."""
    return json.dumps(as_stored(fields))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def connect(*, asynchronous: bool = False, **options: Any) -> Any:
    """A new client (decoded strings) for REDIS_URL: that Redis, or with ``sentinel://``
    URLs whichever server the sentinels name master now (it follows a failover)."""
    cfg = settings()
    options = {"decode_responses": True, **options}
    if cfg.sentinels:
        last = urlsplit(cfg.redis_url.split(";")[-1])
        db = int(last.path.lstrip("/") or 0)
        module = redis.asyncio.sentinel if asynchronous else redis.sentinel
        timeout = options.get("socket_connect_timeout", 2)
        watchers = module.Sentinel(cfg.sentinels, sentinel_kwargs={"socket_timeout": timeout,
                                                                    "socket_connect_timeout": timeout})
        return watchers.master_for(cfg.sentinel_master, db=db, password=last.password, **options)
    kind = redis.asyncio.Redis if asynchronous else redis.Redis
    return kind.from_url(cfg.redis_url.replace("redis+socket://", "unix://"), **options)


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    conn: redis.Redis = connect(socket_connect_timeout=2, socket_timeout=5, health_check_interval=15,
                                retry_on_timeout=True)
    return conn


# One asyncio client per event loop and URL: its connections belong to the loop that
# made them (a server restarted in the same process, as tests do, runs a new loop).
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, redis.asyncio.Redis]] = (
    weakref.WeakKeyDictionary())


def async_client(cfg: Settings | None = None) -> redis.asyncio.Redis:
    """The asyncio client of the running event loop (the API's submissions and event
    streams), made on first use in that loop."""
    url = (cfg or settings()).redis_url
    per_loop = _async_clients.setdefault(asyncio.get_running_loop(), {})
    if url not in per_loop:
        per_loop[url] = connect(asynchronous=True, socket_connect_timeout=2, socket_timeout=EVENT_BLOCK + 5,
                                health_check_interval=15)
    return per_loop[url]


def client(cfg: Settings | None = None) -> redis.Redis:
    """The shared Redis client (decoded strings) for the configured REDIS_URL."""
    return _client((cfg or settings()).redis_url)


def _event(state: State, **fields: Any) -> str:
    """A change of state as its event stream keeps it (JSON)."""
    return json.dumps({"state": state, "at": now_iso(), **fields})


def _job_keys(job_id: str) -> list[str]:
    """KEYS of the scripts that change one job: its record and its event stream."""
    return [layout.job_key(job_id), layout.events_key(job_id)]


def _ending_keys(job_id: str) -> list[str]:
    """KEYS of the scripts that may end a job: its record, its event stream, the turns."""
    return [layout.job_key(job_id), layout.events_key(job_id), *turns.keys()]


def _run(name: str, keys: list[str], args: list[Any]) -> Any:
    """Run Lua script ``name`` (``mobius_preview/lua``) on the shared client: one round trip."""
    return scripts.script(name, client())(keys=keys, args=args)


def _record_fields(payload: dict[str, Any], now: str, now_ts: float) -> dict[str, Any]:
    return {
        "jobId": payload["jobId"],
        "projectId": payload["projectId"],
        "requestId": payload["requestId"],
        "priority": payload.get("priority", layout.DEFAULT_PRIORITY),
        "dryRun": bool(payload.get("dryRun")),
        "webhook": (payload.get("webhook") or {}).get("url"),
        "state": State.QUEUED,
        "attempts": "0",
        "submittedAt": now,
        "submittedTs": repr(now_ts),
    }


def accept_many(payloads: list[dict[str, Any]], messages: list[list[Command]], *,
                events: Command | None = None, replay: bool = False) -> list[tuple[str, str, dict[str, Any]]]:
    """Record and enqueue each job unless it exists or the queues are full: one round trip.

    ``messages[i]`` holds job i's captured Redis commands (``mobius_preview.channel``):
    one LPUSH, whose message goes onto the job's project's list for its priority, to
    take its turn (``turns``). ``events`` (a captured PUBLISH of the task-sent events)
    is sent when every job was accepted. Returns one ``("claimed", depth, record)``,
    ``("exists", state, record)``, ``("full", depth, record)`` or ``("projectfull",
    waiting, record)`` per job, ``record`` being the fields a claimed job's record was
    given. ``replay`` lets a dead job be accepted again.
    """
    if not payloads:
        return []
    keys, args, written = _accept_call(payloads, messages, events, replay)
    out = _run("accept", keys, args)
    if _replicas_needed(out):
        _replicas_confirmed(client().execute_command("WAIT", settings().accept_replicas, ACCEPT_WAIT_MS))
    return _verdicts(out, written)


async def accept_many_async(payloads: list[dict[str, Any]], messages: list[list[Command]], *,
                            events: Command | None = None,
                            replay: bool = False) -> list[tuple[str, str, dict[str, Any]]]:
    """``accept_many`` on the asyncio client, for an event loop (the API's submissions:
    the round trip is awaited, no thread is handed the request and no GIL is passed)."""
    if not payloads:
        return []
    keys, args, written = _accept_call(payloads, messages, events, replay)
    conn = async_client()
    out = await scripts.script("accept", conn)(keys=keys, args=args)
    if _replicas_needed(out):
        _replicas_confirmed(await conn.execute_command("WAIT", settings().accept_replicas, ACCEPT_WAIT_MS))
    return _verdicts(out, written)


def _accept_call(payloads: list[dict[str, Any]], messages: list[list[Command]], events: Command | None,
                 replay: bool) -> tuple[list[str], list[Any], list[dict[str, Any]]]:
    """The accept script's KEYS and ARGV, and the fields each job's record is given."""
    cfg = settings()
    now, now_ts = now_iso(), time.time()
    keys = turns.keys(cfg)
    topic, body = (events[1], events[2]) if events else ("", "")
    args: list[Any] = [cfg.queue_max, cfg.project_queue_max, "1" if replay else "0", cfg.record_ttl,
                       layout.EVENTS_MAXLEN, topic, body, _event(State.QUEUED, at=now),
                       states.words(states.SUBMITTABLE_AGAIN), states.words(states.REPLAYABLE),
                       *turns.args(cfg)]
    written = []
    for payload, commands in zip(payloads, messages, strict=True):
        if len(commands) != 1 or commands[0][0] != "lpush":
            raise RuntimeError(f"expected one LPUSH per message, got {[c[0] for c in commands]}")
        body = commands[0][2]
        fields = _record_fields(payload, now, now_ts)
        keys.extend((layout.job_key(payload["jobId"], cfg),
                     layout.project_list(fields["priority"], payload["projectId"], cfg),
                     layout.events_key(payload["jobId"], cfg)))
        written.append(fields)
        args.extend((_text(fields), body))
    return keys, args, written


def _replicas_needed(out: list[str]) -> bool:
    """Whether acceptance must wait for PREVIEW_ACCEPT_REPLICAS (some job was claimed)."""
    return bool(settings().accept_replicas) and any(item.startswith("claimed:") for item in out)


def _replicas_confirmed(confirmed: int) -> None:
    """Accepted only once a replica has it too, so losing the master loses no accepted job."""
    wanted = settings().accept_replicas
    if confirmed < wanted:
        raise redis.TimeoutError(f"{confirmed} of {wanted} replicas confirmed the jobs within "
                                 f"{ACCEPT_WAIT_MS} ms (PREVIEW_ACCEPT_REPLICAS); submit again")


def _verdicts(out: list[str], written: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(*item.split(":", 1), fields) for item, fields in zip(out, written, strict=True)]  # type: ignore[misc]


def publish(command: Command) -> None:
    """Send one captured PUBLISH (task events) through our client."""
    client().publish(command[1], command[2])


def start(job_id: str, *, finished: dict[str, Any] | None = None, max_deliveries: int = 0,
          **fields: Any) -> dict[str, Any]:
    """Count a delivery and mark the job running unless it already finished.

    With ``finished`` (an outcome known before the job starts), mark it succeeded
    in the same round trip, as long as it was delivered at most ``max_deliveries``
    times. Returns ``state`` (before this call), ``deliveries``, and the record's
    ``outcome``, ``submittedTs``, ``retryDelays`` and ``firstStartedAt``.
    """
    now = now_iso()
    args = [_text({**fields, "updatedAt": now}), settings().record_ttl, now, max_deliveries,
            _text(_succeeded(finished)) if finished is not None else "",
            _succeeded_event(finished) if finished is not None else "",
            _event(State.RUNNING, attempt=fields.get("attempts"), worker=fields.get("worker")),
            layout.EVENTS_MAXLEN, states.words(states.ENDED), job_id, *turns.args(), settings().events_ttl,
            _KEEPS]
    state, deliveries, outcome, submitted, delays, first = _run("start", _ending_keys(job_id), args)
    return {"state": state, "deliveries": int(deliveries), "outcome": outcome,
            "submittedTs": submitted, "retryDelays": delays, "firstStartedAt": first or now}


def _succeeded(outcome: dict[str, Any]) -> dict[str, Any]:
    now = now_iso()
    return {"state": State.SUCCEEDED, "finishedAt": now, "finishedTs": repr(time.time()),
            "updatedAt": now, "error": "", "outcome": kept_outcome(outcome)}


def kept_outcome(outcome: dict[str, Any]) -> dict[str, Any]:
    """What a record keeps of an outcome: where the preview is (``folder``: a folder or an
    object-store location) and each file's place under it (``files``), not every file's
    whole path, nor the ids the record holds already: a record is kept for days."""
    kept: dict[str, Any] = {k: outcome[k] for k in ("key", "dryRun", "cacheHit", "duration", "seconds",
                                                    "folder") if k in outcome}
    folder = str(outcome.get("folder", ""))
    if "artifacts" in outcome:
        kept["files"] = {name: str(where).removeprefix(f"{folder}/")
                         for name, where in sorted(outcome["artifacts"].items())}
    return kept


def _succeeded_event(outcome: dict[str, Any]) -> str:
    return _event(State.SUCCEEDED, key=outcome.get("key"), cacheHit=outcome.get("cacheHit"),
                  duration=outcome.get("duration"))


def get(job_id: str) -> dict[str, str] | None:
    """The job's record as one dict of strings (an ended one unfolded), None when unknown."""
    data: dict[str, str] = client().hgetall(layout.job_key(job_id))  # type: ignore[assignment]
    return unfold(data) or None


def unfold(record: dict[str, str]) -> dict[str, str]:
    """A record's fields with those an ended job folded into ``final`` put back (the
    loose fields, written later, win)."""
    if "final" not in record:
        return record
    loose = {name: value for name, value in record.items() if name != "final"}
    return {**json.loads(record["final"]), **loose}


def update(job_id: str, **fields: Any) -> None:
    """Set fields of a job record (creating it when a host bypassed the client)."""
    values: dict[EncodableT, EncodableT] = {
        k: (v if isinstance(v, str) else json.dumps(v)) for k, v in fields.items() if v is not None
    }
    values["updatedAt"] = now_iso()
    pipe = client().pipeline(transaction=True)
    pipe.hset(layout.job_key(job_id), mapping=values)
    pipe.expire(layout.job_key(job_id), settings().record_ttl)
    pipe.execute()


def finish(job_id: str, outcome: dict[str, Any], *, rendered: bool) -> None:
    """Mark a job succeeded with its outcome.

    ``completions`` counts how often the job ran to success (1 unless it ran twice),
    ``renders`` how many of those encoded a video (0 for dry runs and cache hits).
    """
    _run("finish", _ending_keys(job_id), ["1" if rendered else "0", settings().record_ttl,
                                          _text(_succeeded(outcome)), _succeeded_event(outcome),
                                          layout.EVENTS_MAXLEN, job_id, *turns.args(), settings().events_ttl,
                                          _KEEPS])


def retrying(job_id: str, error: str, delay: float) -> None:
    """Mark a job waiting for its retry in ``delay`` seconds, kept in ``retryDelays``."""
    fields = {"state": State.RETRYING, "error": error, "updatedAt": now_iso()}
    _run("retrying", _job_keys(job_id), [_text(fields), repr(delay), settings().record_ttl,
                                         _event(State.RETRYING, error=error, retryIn=delay),
                                         layout.EVENTS_MAXLEN])


def cancelled(job_id: str) -> None:
    """A running job's render stopped on request: the job ends cancelled."""
    now = now_iso()
    fields = {"state": State.CANCELLED, "error": CANCELLED_ERROR, "finishedAt": now, "updatedAt": now}
    _run("stopped", _ending_keys(job_id), [_text(fields), settings().record_ttl,
                                           _event(State.CANCELLED, error=CANCELLED_ERROR),
                                           layout.EVENTS_MAXLEN, job_id, *turns.args(), settings().events_ttl,
                                           _KEEPS])


def progress(job_id: str, stage: str, percent: float) -> None:
    """Where a running render is: its stage and a percent (the caller keeps it rising)."""
    percent = round(percent, 1)
    _change(job_id, "progress", json.dumps({"stage": stage, "percent": percent, "at": now_iso()}),
            progressStage=stage, progressPercent=percent)


def playable(job_id: str) -> None:
    """A running job's HLS preview has its first segment out: ``playable`` on its record,
    a ``playable`` event on its stream (the API adds the playlist's link)."""
    _change(job_id, "playable", json.dumps({"playable": True, "at": now_iso()}), playable="1")


def _change(job_id: str, kind: str, event: str, *, ends: bool = False, **fields: Any) -> None:
    """Set fields of a job and put ``event`` (JSON, of ``kind``: state, progress, playable) on
    its stream; a change that ``ends`` the job leaves the stream only the events window."""
    cfg = settings()
    _run("change", _job_keys(job_id), [_text({**fields, "updatedAt": now_iso()}), cfg.record_ttl,
                                       kind, event, layout.EVENTS_MAXLEN,
                                       cfg.events_ttl if ends else cfg.record_ttl, _KEEPS if ends else ""])


def cancel(job_id: str) -> str:
    """Cancel a job that has not started, or ask its worker to stop it; returns the state found."""
    now = now_iso()
    ended = {"state": State.CANCELLED, "error": CANCELLED_ERROR, "finishedAt": now, "updatedAt": now}
    found: str = _run("cancel", _ending_keys(job_id), [
        settings().record_ttl, layout.EVENTS_MAXLEN, states.words(states.WAITING),
        states.words(states.STOPPABLE), _text(ended), _text({"cancelRequested": now, "updatedAt": now}),
        _event(State.CANCELLED, error=CANCELLED_ERROR), job_id, *turns.args(), settings().events_ttl, _KEEPS])
    return found


def events(job_id: str, after: str = "0-0", block: float | None = None,
           count: int = 100) -> list[tuple[str, str, dict[str, Any]]]:
    """The job's events after stream id ``after``: (id, kind, event), oldest first.

    ``block`` seconds: wait that long for one when there is none yet (keep it below
    the client's 5 s socket timeout).
    """
    reply: Any = client().xread({layout.events_key(job_id): after}, count=count,
                                block=None if block is None else max(1, int(block * 1000)))
    return [(ident, fields["type"], json.loads(fields["data"])) for _, entries in reply or []
            for ident, fields in entries]


def bury(job_id: str, letter: dict[str, Any], **fields: Any) -> None:
    """Write the dead letter and mark the job dead in one script (which also ends its turn
    and folds its record)."""
    cfg = settings()
    values = {**fields, "state": State.DEAD, "updatedAt": now_iso()}
    _run("bury", [layout.dead_key(cfg), *_ending_keys(job_id)],
         [job_id, json.dumps(letter), _text(values), cfg.record_ttl,
          _event(State.DEAD, error=letter.get("error")), layout.EVENTS_MAXLEN, *turns.args(),
          cfg.events_ttl, _KEEPS])


def keep_rejected(reason: str, raw: bytes | str, exc: BaseException | None, *,
                  headers: dict[str, Any] | None = None, content_type: str | None = None) -> str:
    """Write a message the worker refused into the dead-letter hash; returns its id.

    The body is kept as text when it is UTF-8, else base64, never deserialized
    (beyond reading a JSON payload out of a JSON body, to make it replayable).
    """
    headers = headers or {}
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "replace")
    raw = raw[:65536]
    try:
        body, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    ident = str(headers.get("id") or f"rejected-{uuid.uuid4().hex}")
    payload = None
    if content_type == "application/json":
        try:  # Celery protocol 2 JSON body: [args, kwargs, embed]
            decoded = json.loads(body)
            payload = decoded[0][0] if decoded and decoded[0] else None
        except (ValueError, TypeError, IndexError, KeyError):
            payload = None
    letter = {
        "jobId": ident, "payload": payload, "rejected": reason,
        "error": f"{reason}: {type(exc).__name__}: {exc}" if exc else reason,
        "errorKind": "permanent", "attempts": 0, "deadAt": now_iso(),
        "task": headers.get("task"), "contentType": content_type,
        "body": body, "bodyEncoding": encoding,
    }
    client().hset(layout.dead_key(), ident, json.dumps(letter, default=str))
    return ident


def queue_depths() -> dict[str, int]:
    """Jobs waiting per priority: on Celery's list of each queue and in the projects'
    lists waiting their turn (``layout.backlog_key``)."""
    cfg = settings()
    pipe = client().pipeline(transaction=False)
    for name in layout.queue_keys(cfg):
        pipe.llen(name)
    pipe.hmget(layout.backlog_key(cfg), list(layout.PRIORITIES))
    *lengths, backlog = pipe.execute()
    return {p: n + int(b or 0) for p, n, b in zip(layout.PRIORITIES, lengths, backlog, strict=True)}


def queue_facts(now: float | None = None) -> dict[str, Any]:
    """Jobs waiting per priority, how long the oldest of each has waited, the dead-letter
    count, and per project its jobs waiting and in progress (for status, metrics, health).

    kombu pushes on the left and pops on the right, so the oldest message of a list is
    at index -1; its ``submitted_ts`` header is set by the client when it is accepted.
    The oldest waiting job of a priority is the oldest of its Celery list's and of its
    projects' lists. Two round trips: the counts, then the projects' lists.
    """
    cfg = settings()
    names = layout.queue_keys(cfg)
    conn = client()
    pipe = conn.pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    for name in names:
        pipe.lindex(name, -1)
    pipe.hlen(layout.dead_key(cfg))
    pipe.hmget(layout.backlog_key(cfg), list(layout.PRIORITIES))
    replies = pipe.execute()
    projects = turns.facts(conn)
    now = time.time() if now is None else now
    n = len(names)
    backlog = [int(b or 0) for b in replies[-1]]
    oldest: dict[str, float | None] = {}
    for i, priority in enumerate(layout.PRIORITIES):
        heads = [replies[n + i], *(p["oldest"][priority] for p in projects.values())]
        known = [a for a in (_age(raw, now) for raw in heads) if a is not None]
        oldest[priority] = max(known) if known else None
    for facts in projects.values():
        del facts["oldest"]
    return {
        "depth": {p: replies[i] + backlog[i] for i, p in enumerate(layout.PRIORITIES)},
        "oldestAgeSeconds": oldest,
        "deadLetters": replies[2 * n],
        "projects": projects,
    }


def _age(raw: str | None, now: float) -> float | None:
    if not raw:
        return None
    try:
        return max(0.0, now - float(json.loads(raw)["headers"]["submitted_ts"]))
    except (ValueError, KeyError, TypeError):
        return None


@contextmanager
def reaching_redis(consequence: str = "") -> Iterator[None]:
    """Turn a lost connection to Redis into BrokerUnavailable, naming the (masked) URL
    and, when given, what it means for the caller ("the job was not accepted")."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError) as exc:
        tail = f"; {consequence}" if consequence else ""
        raise BrokerUnavailable(f"cannot reach Redis at {settings().redis_url_masked}: {exc}{tail}") from None
