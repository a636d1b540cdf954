"""Workers prove they are alive; jobs held by a worker that stopped proving it go back.

Every worker writes, every ``PREVIEW_STALLED_SECONDS / 3``, a heartbeat key that
expires after ``PREVIEW_STALLED_SECONDS``, and the set of delivery tags it holds
(running or reserved). kombu keeps every delivered, unacknowledged message in its
``unacked`` hash (and ``unacked_index``, by delivery time) until it is acked; it only
puts one back after the visibility timeout (22 minutes by default), which must
outlast the longest render. The sweep (any living worker, every few seconds, one Lua
script, ``lua/sweep.lua``, so two sweepers never restore one message twice) puts
back, at the front of its queue, every message delivered more than
``PREVIEW_STALLED_SECONDS`` ago that no living worker holds: its worker died (host
lost, OOM-killed, SIGKILL). A long render on a living worker is never taken from it,
however long it runs. The job's record says it was put back (``recovered``,
``lostWorker``) and its event stream says so too.

The same thread runs the projects' feed every tick and repairs its bookkeeping every
``REPAIR_EVERY`` ticks (``turns``): a safety net behind the scripts that feed as jobs
are accepted, start and end.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

import redis

from . import layout, metrics, records, scripts, states, turns
from .config import settings

log = logging.getLogger("mobius_preview.liveness")
REPAIR_EVERY = 12  # ticks (of PREVIEW_STALLED_SECONDS / 6: a minute by default) between turns.reconcile


def beat(conn: redis.Redis, name: str, tags: Iterable[str]) -> None:
    """Prove ``name`` alive for PREVIEW_STALLED_SECONDS and say which messages it holds."""
    stalled = settings().stalled_seconds
    held = layout.held_key(name)
    pipe = conn.pipeline(transaction=True)  # the held set is never seen half-written
    pipe.set(layout.worker_key(name), json.dumps({"at": time.time(), "pid": os.getpid()}), ex=stalled)
    pipe.delete(held)
    tags = list(tags)
    if tags:
        pipe.sadd(held, *tags)
        pipe.expire(held, stalled)
    pipe.sadd(layout.workers_key(), name)
    pipe.execute()


def sweep(conn: redis.Redis, now: float | None = None, limit: int = 100) -> list[str]:
    """Put back the messages of dead workers; returns their job ids."""
    cfg = settings()
    now = time.time() if now is None else now
    restored: list[str] = scripts.script("sweep", conn)(
        keys=[layout.unacked_key(cfg), layout.unacked_index_key(cfg), layout.workers_key(cfg)],
        args=[now - cfg.stalled_seconds, layout.worker_key("", cfg), layout.held_key("", cfg),
              layout.job_key("", cfg), layout.EVENTS_SUFFIX, layout.key("", cfg), records.now_iso(),
              cfg.record_ttl, limit, layout.EVENTS_MAXLEN, states.words(states.LOST_WITH_WORKER),
              states.State.QUEUED],
    )
    return restored


def forget(conn: redis.Redis, name: str) -> None:
    """A worker that stopped cleanly: whatever it still held is swept at once."""
    conn.delete(layout.worker_key(name), layout.held_key(name))


def last_seen(name: str) -> float | None:
    """When worker ``name`` last proved alive (Unix time), None when it has not lately."""
    raw = records.client().get(layout.worker_key(name))
    return json.loads(raw)["at"] if raw else None


class Heartbeat:
    """The worker's thread that beats and sweeps until ``stop``, or until ``running()``
    says the worker has stopped (embedded workers end without a shutdown signal)."""

    def __init__(self, name: str, held: Callable[[], Iterable[str]],
                 running: Callable[[], bool] = lambda: True):
        self.name, self.held, self.running = name, held, running
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="mobius-heartbeat")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _stopped_within(self, seconds: float) -> bool:
        """Wait ``seconds``, looking twice a second whether the worker has stopped."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._done.wait(min(0.5, left)) or not self.running():
                return True
        return False

    @staticmethod
    def _turns(conn: redis.Redis, repair: bool) -> None:
        """The projects' feed, and now and then the repair of its bookkeeping."""
        if repair:
            freed, repaired = turns.reconcile(conn)
            if freed or repaired:
                log.warning("turns repaired: %d ended job(s) released, %d rotation place(s) fixed",
                            freed, repaired)
        turns.feed(conn)

    def _run(self) -> None:
        # A client of its own: the pool's children, forked from this process, never use it.
        cfg = settings()
        conn = records.connect(socket_connect_timeout=2, socket_timeout=5)
        tick = max(1.0, cfg.stalled_seconds / 6)
        beats_every = max(1, round(cfg.stalled_seconds / 3 / tick))
        n = 0
        while True:
            try:
                if n % beats_every == 0:
                    beat(conn, self.name, self.held())
                restored = sweep(conn)
                if restored:
                    metrics.jobs_recovered(len(restored))
                    log.warning("put back %d job(s) of a worker that stopped proving alive: %s",
                                len(restored), ", ".join(restored))
                self._turns(conn, repair=n % REPAIR_EVERY == REPAIR_EVERY - 1)
            except Exception as exc:  # Redis away: beat again next tick
                log.warning("heartbeat: %s", exc)
            n += 1
            if self._stopped_within(tick):
                break
        try:
            forget(conn, self.name)
        except Exception as exc:
            log.warning("heartbeat: could not remove %s: %s", self.name, exc)
