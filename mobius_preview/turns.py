"""Projects take turns: each priority's waiting jobs are handed to Celery a few at a time,
one project after another, within a cap per project; a project can be paused.

Celery on Redis takes a queue's messages in the order they came, so a project that
queues a batch of 60 would keep every other project waiting behind it. So acceptance
(``lua/accept.lua``) does not push a job's message onto Celery's list ``<q>.<priority>``
but onto its project's list for that priority, and puts the project in that priority's
rotation when it had nothing waiting there. The feed (``_lib.lua``) moves messages from
the projects' lists to Celery's, one at a time, while Celery's list holds fewer than
PREVIEW_QUEUE_AHEAD: each time the oldest job of the project whose turn it is, the
project then going to the end of the rotation. A project with as many jobs in progress
as PREVIEW_PROJECT_CONCURRENCY is passed over (it keeps its place); a paused one is out
of the rotation. Strict priority between the Celery lists is kombu's, as before.

The feed runs inside the scripts that change what may be handed over: accepting (a job
accepted into an idle system is on Celery's list when ``submit`` returns), starting a
job (a worker has just taken a message), and ending one (succeeded, dead-lettered,
cancelled: its project may have been at its cap); and from every worker's heartbeat
every few seconds, with ``reconcile`` now and then, as a safety net. Retries, messages
put back by the liveness sweep and kombu's own restores go straight to Celery's lists
as before: those jobs were handed over once already and stay counted in progress.

Every process (clients, API, workers) must run with the same PREVIEW_QUEUE_AHEAD and
PREVIEW_PROJECT_CONCURRENCY: the scripts each one runs apply its own.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import redis

from . import layout, scripts, states
from .config import Settings, settings


@lru_cache(maxsize=4)
def _block(cfg: Settings) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    keys = (*layout.queue_keys(cfg), *layout.turn_keys(cfg))
    args = (cfg.queue_ahead, cfg.project_concurrency,
            *(layout.project_list_prefix(p, cfg) for p in layout.PRIORITIES), *layout.PRIORITIES)
    return keys, args


def keys(cfg: Settings | None = None) -> list[str]:
    """The turns' 11 KEYS, in the order ``_lib.lua``'s ``turns_at`` reads them."""
    return list(_block(cfg or settings())[0])


def args(cfg: Settings | None = None) -> list[Any]:
    """The turns' 8 ARGV, in the order ``_lib.lua``'s ``turns_at`` reads them."""
    return list(_block(cfg or settings())[1])


def _lists(project: str, cfg: Settings) -> list[str]:
    return [layout.project_list(p, project, cfg) for p in layout.PRIORITIES]


def feed(conn: redis.Redis) -> int:
    """Top up the Celery lists from the projects' lists; returns how many jobs moved."""
    cfg = settings()
    moved: int = scripts.script("feed", conn)(keys=keys(cfg), args=args(cfg))
    return moved


def revoked(conn: redis.Redis, job_id: str) -> int:
    """A worker dropped ``job_id``'s message unrun (revoked after a cancel): uncount the
    job if it ended, and feed; returns how many jobs moved."""
    cfg = settings()
    moved: int = scripts.script("revoked", conn)(keys=[layout.job_key(job_id, cfg), *keys(cfg)],
                                                 args=[job_id, states.words(states.ENDED), *args(cfg)])
    return moved


def pause(conn: redis.Redis, project: str) -> int:
    """Hold ``project``'s jobs until ``resume``: accepted, kept, not started. Its jobs
    handed to Celery's lists but not yet taken come back; returns how many."""
    cfg = settings()
    back: int = scripts.script("pause", conn)(keys=[*keys(cfg), *_lists(project, cfg)],
                                               args=[*args(cfg), project])
    return back


def resume(conn: redis.Redis, project: str) -> bool:
    """Let ``project``'s jobs take their turns again; False when it was not paused."""
    cfg = settings()
    return bool(scripts.script("resume", conn)(keys=[*keys(cfg), *_lists(project, cfg)],
                                               args=[*args(cfg), project]))


def reconcile(conn: redis.Redis) -> tuple[int, int]:
    """Repair the bookkeeping (``lua/reconcile.lua``); returns (jobs released, projects
    whose place in a rotation was repaired). Cheap: it reads the jobs in progress and
    the projects with work, never the whole keyspace."""
    cfg = settings()
    pipe = conn.pipeline(transaction=False)
    pipe.hkeys(layout.released_key(cfg))
    pipe.hkeys(layout.project_waiting_key(cfg))
    pipe.smembers(layout.paused_key(cfg))
    for priority in layout.PRIORITIES:
        pipe.lrange(layout.turns_key(priority, cfg), 0, -1)
    released, waiting, paused, *rotations = pipe.execute()
    projects = sorted({*waiting, *paused, *(p for r in rotations for p in r)})
    out = scripts.script("reconcile", conn)(
        keys=[*keys(cfg), *(layout.job_key(j, cfg) for j in released),
              *(k for p in projects for k in _lists(p, cfg))],
        args=[*args(cfg), len(released), len(projects), states.words(states.ENDED), *released, *projects])
    return int(out[0]), int(out[1])


def facts(conn: redis.Redis) -> dict[str, dict[str, Any]]:
    """Per project with work: jobs waiting (per priority too), in progress, paused; and
    the submitted time of its oldest waiting job per priority (``oldest``: raw messages)."""
    cfg = settings()
    pipe = conn.pipeline(transaction=False)
    pipe.hgetall(layout.project_waiting_key(cfg))
    pipe.hgetall(layout.project_running_key(cfg))
    pipe.smembers(layout.paused_key(cfg))
    waiting, running, paused = pipe.execute()
    names = sorted({*waiting, *running, *paused})
    for project in names:
        for key in _lists(project, cfg):
            pipe.llen(key)
            pipe.lindex(key, -1)
    replies = pipe.execute()
    out: dict[str, dict[str, Any]] = {}
    for n, project in enumerate(names):
        mine = replies[6 * n:6 * n + 6]
        out[project] = {
            "waiting": int(waiting.get(project, 0)),
            "running": int(running.get(project, 0)),
            "paused": project in paused,
            "byPriority": dict(zip(layout.PRIORITIES, mine[0::2], strict=True)),
            "oldest": dict(zip(layout.PRIORITIES, mine[1::2], strict=True)),
        }
    return out
