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

import base64
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import kombu.exceptions
import redis

from .channel import Command
from .config import Settings, settings
from .errors import BrokerUnavailable

STATES = ("queued", "running", "retrying", "succeeded", "failed", "dead")

# Fields travel as one JSON object of strings per record (a Lua table here): far
# fewer arguments for redis-py to encode than field, value, field, value...
_HSET_JSON = """
local function hset_table(key, fields)
  local flat = {}
  for name, value in pairs(fields) do
    flat[#flat + 1] = name
    flat[#flat + 1] = value
  end
  redis.call('HSET', key, unpack(flat))
end
local function hset_json(key, text)
  hset_table(key, cjson.decode(text))
end
"""

# Accepting jobs, all in one round trip and atomically: for each job, unless its
# jobId exists (a dead one may be replayed) or the queues hold PREVIEW_QUEUE_MAX
# jobs, write its record and push its message onto its queue. So a job is either
# recorded and queued, or neither. When every job was accepted, the batch's
# task-sent events go out too (PUBLISH). KEYS: the 3 queue lists, then per job its
# record and its queue list. ARGV: limit, replay flag, record TTL, events topic and
# body (or empty), then per job its fields and its message.
_ACCEPT = _HSET_JSON + """
local limit, replay, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local depth = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2]) + redis.call('LLEN', KEYS[3])
local out, jobs, accepted = {}, (#KEYS - 3) / 2, 0
for j = 1, jobs do
  local record, queue, fields, message = KEYS[2 + 2 * j], KEYS[3 + 2 * j], ARGV[4 + 2 * j], ARGV[5 + 2 * j]
  local state = redis.call('HGET', record, 'state')
  if state and not (replay == '1' and state == 'dead') then
    out[j] = 'exists:' .. state
  elseif depth >= limit then
    out[j] = 'full:' .. depth
  else
    redis.call('DEL', record)
    hset_json(record, fields)
    redis.call('EXPIRE', record, ttl)
    redis.call('LPUSH', queue, message)
    depth = depth + 1
    accepted = accepted + 1
    out[j] = 'claimed:' .. depth
  end
end
if accepted == jobs and ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return out
"""

# A worker starting a job: nothing to do for a finished one (its message came back
# before the ack landed); otherwise count the delivery and mark it running, in one
# round trip. When the outcome is known before the job starts (its preview is
# stored: a cache hit), the same call also marks it succeeded, unless it was
# delivered too often. ARGV: fields, record TTL, now, delivery limit and succeeded
# fields (both empty for a plain start). Returns the state before, the delivery
# count and the fields the task reads.
_START = _HSET_JSON + """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'succeeded' or state == 'dead' or state == 'failed' then
  return {state, '0', redis.call('HGET', KEYS[1], 'outcome') or '', '', '', ''}
end
local deliveries = redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
local before = redis.call('HMGET', KEYS[1], 'submittedTs', 'retryDelays', 'firstStartedAt')
local fields = cjson.decode(ARGV[1])
if not before[3] then fields['firstStartedAt'] = ARGV[3] end
if ARGV[5] ~= '' and deliveries <= tonumber(ARGV[4]) then
  redis.call('HINCRBY', KEYS[1], 'completions', 1)
  for name, value in pairs(cjson.decode(ARGV[5])) do fields[name] = value end
end
hset_table(KEYS[1], fields)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return {state or '', tostring(deliveries), '', before[1] or '', before[2] or '', before[3] or ''}
"""

# ARGV: rendered flag, record TTL, succeeded fields.
_FINISH = _HSET_JSON + """
redis.call('HINCRBY', KEYS[1], 'completions', 1)
if ARGV[1] == '1' then redis.call('HINCRBY', KEYS[1], 'renders', 1) end
hset_json(KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


# A retry is scheduled: record the error and append its delay. ARGV: error, delay,
# now, record TTL.
_RETRYING = """
local delays = cjson.decode(redis.call('HGET', KEYS[1], 'retryDelays') or '[]')
delays[#delays + 1] = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'retrying', 'error', ARGV[1], 'retryDelays', cjson.encode(delays),
           'updatedAt', ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""


def _text(fields: dict[str, Any]) -> str:
    """Fields as one JSON object of strings (non-strings JSON-encoded), for the scripts."""
    return json.dumps({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in fields.items()
                       if v is not None})


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url.replace("redis+socket://", "unix://"),
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
        retry_on_timeout=True,
    )


def client(cfg: Settings | None = None) -> redis.Redis:
    """The shared Redis client (decoded strings) for the configured REDIS_URL."""
    return _client((cfg or settings()).redis_url)


@lru_cache(maxsize=16)
def _script(url: str, source: str):
    return _client(url).register_script(source)


def script(source: str):
    """A Lua script registered once per client (EVALSHA, loaded on first use)."""
    return _script(settings().redis_url, source)


def key(name: str, cfg: Settings | None = None) -> str:
    """A Redis key under REDIS_KEY_PREFIX (the same prefix kombu puts on the queues)."""
    return f"{(cfg or settings()).key_prefix}{name}"


def job_key(job_id: str, cfg: Settings | None = None) -> str:
    cfg = cfg or settings()
    return key(f"{cfg.queue_name}.job:{job_id}", cfg)


def queue_keys(cfg: Settings | None = None) -> list[str]:
    cfg = cfg or settings()
    return [key(cfg.queue(p), cfg) for p in cfg.priorities]


def dead_key(cfg: Settings | None = None) -> str:
    cfg = cfg or settings()
    return key(cfg.dead_letter_key, cfg)


def _record_fields(payload: dict[str, Any], now: str, now_ts: float) -> str:
    return _text({
        "jobId": payload["jobId"],
        "projectId": payload["projectId"],
        "requestId": payload["requestId"],
        "priority": payload.get("priority", "normal"),
        "dryRun": bool(payload.get("dryRun")),
        "state": "queued",
        "attempts": "0",
        "submittedAt": now,
        "submittedTs": repr(now_ts),
    })


def accept_many(payloads: list[dict[str, Any]], messages: list[list[Command]], *,
                events: Command | None = None, replay: bool = False) -> list[tuple[str, str]]:
    """Record and enqueue each job unless it exists or the queues are full: one round trip.

    ``messages[i]`` holds job i's captured Redis commands (``mobius_preview.channel``):
    one LPUSH. ``events`` (a captured PUBLISH of the task-sent events) is sent when
    every job was accepted. Returns one ``("claimed", depth)``, ``("exists", state)``
    or ``("full", depth)`` per job. ``replay`` lets a dead job be accepted again.
    """
    if not payloads:
        return []
    cfg = settings()
    now, now_ts = now_iso(), time.time()
    keys = queue_keys(cfg)
    topic, body = (events[1], events[2]) if events else ("", "")
    args: list[Any] = [cfg.queue_max, "1" if replay else "0", cfg.record_ttl, topic, body]
    for payload, commands in zip(payloads, messages, strict=True):
        if len(commands) != 1 or commands[0][0] != "lpush":
            raise RuntimeError(f"expected one LPUSH per message, got {[c[0] for c in commands]}")
        _, queue, body = commands[0]
        keys.extend((job_key(payload["jobId"], cfg), queue))
        args.extend((_record_fields(payload, now, now_ts), body))
    out = script(_ACCEPT)(keys=keys, args=args)
    return [tuple(item.split(":", 1)) for item in out]


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
            _text(_succeeded(finished)) if finished is not None else ""]
    state, deliveries, outcome, submitted, delays, first = script(_START)(keys=[job_key(job_id)], args=args)
    return {"state": state, "deliveries": int(deliveries), "outcome": outcome,
            "submittedTs": submitted, "retryDelays": delays, "firstStartedAt": first or now}


def _succeeded(outcome: dict[str, Any]) -> dict[str, Any]:
    now = now_iso()
    return {"state": "succeeded", "finishedAt": now, "finishedTs": repr(time.time()),
            "updatedAt": now, "error": "", "outcome": outcome}


def get(job_id: str) -> dict[str, str] | None:
    data = client().hgetall(job_key(job_id))
    return data or None


def update(job_id: str, **fields: Any) -> None:
    """Set fields of a job record (creating it when a host bypassed the client)."""
    values = {
        k: (v if isinstance(v, str) else json.dumps(v)) for k, v in fields.items() if v is not None
    }
    values["updatedAt"] = now_iso()
    pipe = client().pipeline(transaction=True)
    pipe.hset(job_key(job_id), mapping=values)
    pipe.expire(job_key(job_id), settings().record_ttl)
    pipe.execute()


def finish(job_id: str, outcome: dict[str, Any], *, rendered: bool) -> None:
    """Mark a job succeeded with its outcome.

    ``completions`` counts how often the job ran to success (1 unless it ran twice),
    ``renders`` how many of those encoded a video (0 for dry runs and cache hits).
    """
    script(_FINISH)(keys=[job_key(job_id)],
                    args=["1" if rendered else "0", settings().record_ttl, _text(_succeeded(outcome))])


def retrying(job_id: str, error: str, delay: float) -> None:
    """Mark a job waiting for its retry in ``delay`` seconds, kept in ``retryDelays``."""
    script(_RETRYING)(keys=[job_key(job_id)], args=[error, repr(delay), now_iso(), settings().record_ttl])


def bury(job_id: str, letter: dict[str, Any], **fields: Any) -> None:
    """Write the dead letter and mark the job dead in one transaction."""
    values = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in fields.items()}
    values.update(state="dead", updatedAt=now_iso())
    pipe = client().pipeline(transaction=True)
    pipe.hset(dead_key(), job_id, json.dumps(letter))
    pipe.hset(job_key(job_id), mapping=values)
    pipe.expire(job_key(job_id), settings().record_ttl)
    pipe.execute()


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
    client().hset(dead_key(), ident, json.dumps(letter, default=str))
    return ident


def queue_depths() -> dict[str, int]:
    """Jobs waiting per priority (messages on the Redis list of each queue)."""
    cfg = settings()
    pipe = client().pipeline(transaction=False)
    for name in queue_keys(cfg):
        pipe.llen(name)
    return dict(zip(cfg.priorities, pipe.execute(), strict=True))


def queue_facts(now: float | None = None) -> dict[str, Any]:
    """Jobs waiting per priority, how long the oldest of each has waited, and the
    dead-letter count, read in one round trip (for status, metrics and health).

    kombu pushes on the left and pops on the right, so the oldest message is at
    index -1; its ``submitted_ts`` header is set by the client when it is accepted.
    """
    cfg = settings()
    names = queue_keys(cfg)
    pipe = client().pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    for name in names:
        pipe.lindex(name, -1)
    pipe.hlen(dead_key(cfg))
    replies = pipe.execute()
    now = time.time() if now is None else now
    n = len(names)
    return {
        "depth": dict(zip(cfg.priorities, replies[:n], strict=True)),
        "oldestAgeSeconds": {p: _age(raw, now) for p, raw in zip(cfg.priorities, replies[n:2 * n],
                                                                   strict=True)},
        "deadLetters": replies[-1],
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
