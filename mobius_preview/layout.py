"""The Redis layout: every key, queue and stream name mobius-preview uses, built here only.

``<p>`` is REDIS_KEY_PREFIX (kombu's ``global_keyprefix`` too, so kombu's keys share it),
``<q>`` is PREVIEW_QUEUE_NAME (default ``preview``); our own keys live under the
namespace ``<p><q>``::

    key                          type    what it holds (written by)
    <p><q>.high|.normal|.low     list    Celery messages of jobs, one list per priority, consumed
                                         in PRIORITIES order (kombu BRPOP); the feed tops each up to
                                         PREVIEW_QUEUE_AHEAD from the projects' lists, in turns
    <p><q>.<priority>.project:<P>
                                 list    messages of project P's jobs at that priority waiting their
                                         turn, oldest on the right (accept LPUSH, feed RPOP)
    <p><q>.<priority>.turns      list    the rotation: projects with jobs waiting at that priority and
                                         not paused, next on the left (accept RPUSH, feed LMOVE to the
                                         right; dropped when its list is empty; pause, resume)
    <p><q>.backlog               hash    priority -> jobs in that priority's project lists (accept +1,
                                         feed -1): with the Celery lists' lengths, the queue depth
    <p><q>.projects:waiting      hash    project -> its jobs in its lists, every priority (accept, feed)
    <p><q>.projects:running      hash    project -> its jobs handed to the workers and not ended: running,
                                         about to start, or awaiting a retry (feed +1, the scripts that
                                         end a job -1); what PREVIEW_PROJECT_CONCURRENCY caps
    <p><q>.released              hash    jobId -> project, for each job counted in projects:running, so
                                         it is counted once and uncounted once (feed, ending scripts)
    <p><q>.paused                set     paused projects: their jobs wait, out of the rotation (pause)
    <p><q>.webhooks              list    webhook deliveries, a Celery queue (webhooks.notify)
    <p><q>.job:<jobId>           hash    the job's record: state, attempts, times, outcome; expires
                                         PREVIEW_RECORD_TTL after its last change (records' scripts);
                                         once ended, folded: state and counters, the rest in `final`
    <p><q>.job:<jobId>:events    stream  the job's changes in order: type state|progress, data JSON;
                                         MAXLEN ~EVENTS_MAXLEN; TTL as the record while the job runs,
                                         PREVIEW_EVENTS_TTL once it has ended (records, sweep)
    <p><q>.dead                  hash    jobId -> dead letter, JSON (records.bury, keep_rejected)
    <p><q>.webhooks.dead         hash    messageId -> webhook delivery given up on (webhooks)
    <p><q>.workers               set     names of workers that have beaten (liveness)
    <p><q>.worker:<name>         string  heartbeat {at, pid}, expires after PREVIEW_STALLED_SECONDS
    <p><q>.held:<name>           set     delivery tags the worker holds: running, reserved (liveness)

    kombu's own, names fixed by kombu (the liveness sweep reads the first two):
    <p>unacked                   hash    delivery tag -> [message, exchange, routing key]
    <p>unacked_index             zset    delivery tag by delivery time
    <p>unacked_mutex             string  the lock of kombu's restore pass
    <p>_kombu.binding.<exchange> set     queue bindings (exchanges <q>, celeryev, pidboxes)

Celery's task events go out on the pub/sub channel ``<p>/<db>.celeryev`` (no key).
Lua scripts (``mobius_preview/lua``) are handed every key they touch in KEYS, except
two that learn names only from what they read, and so get those keys' prefixes from
here in ARGV: the liveness sweep (worker names, queues and job ids: prefixes and the
events suffix) and the feed (``_lib.lua``; project names read from a rotation: the
prefix of each priority's project lists, ``project_list_prefix``).

The hashes of counts drop a field when it reaches 0, so they hold only projects that
have work; a project's id is a projectId (``[A-Za-z0-9_][A-Za-z0-9._-]*``), so it
never holds the ``:`` that ends the list prefix.
"""

from __future__ import annotations

from .config import Settings, settings

PRIORITIES = ("high", "normal", "low")  # one queue each, consumed strictly in this order
DEFAULT_PRIORITY = "normal"
EVENTS_MAXLEN = 500  # a job's event stream keeps about this many entries (XADD MAXLEN ~)
_JOB = ".job:"  # <p><q>.job:<jobId>
EVENTS_SUFFIX = ":events"  # a record's key + this = its event stream
_KOMBU_UNACKED = "unacked"
_KOMBU_UNACKED_INDEX = "unacked_index"


def key(name: str, cfg: Settings | None = None) -> str:
    """``name`` under REDIS_KEY_PREFIX, as kombu prefixes the keys it writes."""
    return f"{(cfg or settings()).key_prefix}{name}"


def _ours(name: str, cfg: Settings | None) -> str:
    """``name`` in our namespace, ``<p><q><name>``."""
    cfg = cfg or settings()
    return key(f"{cfg.queue_name}{name}", cfg)


def queue(priority: str, cfg: Settings | None = None) -> str:
    """The Celery queue holding jobs of ``priority`` (kombu adds the prefix to its list)."""
    return f"{(cfg or settings()).queue_name}.{priority}"


def queues(cfg: Settings | None = None) -> list[str]:
    """The Celery queues of jobs, in priority order."""
    return [queue(p, cfg) for p in PRIORITIES]


def queue_keys(cfg: Settings | None = None) -> list[str]:
    """The Redis lists of the job queues, in priority order."""
    return [key(name, cfg) for name in queues(cfg)]


def webhook_queue(cfg: Settings | None = None) -> str:
    """The Celery queue of webhook deliveries."""
    return f"{(cfg or settings()).queue_name}.webhooks"


def webhook_dead_key(cfg: Settings | None = None) -> str:
    """Hash of webhook deliveries given up on, by message id."""
    return key(f"{webhook_queue(cfg)}.dead", cfg)


def dead_key(cfg: Settings | None = None) -> str:
    """The dead-letter hash: jobId -> dead letter."""
    return _ours(".dead", cfg)


def job_key(job_id: str, cfg: Settings | None = None) -> str:
    """A job's record (a hash); ``job_key("")`` is the prefix of every record."""
    return _ours(f"{_JOB}{job_id}", cfg)


def events_key(job_id: str, cfg: Settings | None = None) -> str:
    """The job's event stream: every change of state, progress and error, in order."""
    return f"{job_key(job_id, cfg)}{EVENTS_SUFFIX}"


def workers_key(cfg: Settings | None = None) -> str:
    """The set of workers that have beaten (the sweep drops those whose heartbeat expired)."""
    return _ours(".workers", cfg)


def worker_key(name: str, cfg: Settings | None = None) -> str:
    """A worker's heartbeat; ``worker_key("")`` is the prefix of every heartbeat."""
    return _ours(f".worker:{name}", cfg)


def held_key(name: str, cfg: Settings | None = None) -> str:
    """The delivery tags a worker holds; ``held_key("")`` is the prefix of every such set."""
    return _ours(f".held:{name}", cfg)


def unacked_key(cfg: Settings | None = None) -> str:
    """kombu's hash of delivered, unacknowledged messages."""
    return key(_KOMBU_UNACKED, cfg)


def unacked_index_key(cfg: Settings | None = None) -> str:
    """kombu's index of ``unacked`` by delivery time."""
    return key(_KOMBU_UNACKED_INDEX, cfg)


def project_list_prefix(priority: str, cfg: Settings | None = None) -> str:
    """The prefix of the lists of jobs waiting their turn at ``priority`` (+ a projectId)."""
    return f"{key(queue(priority, cfg), cfg)}.project:"


def project_list(priority: str, project: str, cfg: Settings | None = None) -> str:
    """Project ``project``'s jobs waiting their turn at ``priority``, oldest on the right."""
    return project_list_prefix(priority, cfg) + project


def turns_key(priority: str, cfg: Settings | None = None) -> str:
    """The rotation of projects with jobs waiting at ``priority``: the next on the left."""
    return f"{key(queue(priority, cfg), cfg)}.turns"


def backlog_key(cfg: Settings | None = None) -> str:
    """priority -> jobs waiting in that priority's project lists."""
    return _ours(".backlog", cfg)


def project_waiting_key(cfg: Settings | None = None) -> str:
    """project -> its jobs waiting in its lists (every priority)."""
    return _ours(".projects:waiting", cfg)


def project_running_key(cfg: Settings | None = None) -> str:
    """project -> its jobs handed to the workers and not ended."""
    return _ours(".projects:running", cfg)


def released_key(cfg: Settings | None = None) -> str:
    """jobId -> project of each job counted in ``project_running_key``."""
    return _ours(".released", cfg)


def paused_key(cfg: Settings | None = None) -> str:
    """The set of paused projects."""
    return _ours(".paused", cfg)


def turn_keys(cfg: Settings | None = None) -> list[str]:
    """Every fixed key of the turns (the rotations, counts, released jobs, paused projects):
    what the feed is handed, after the Celery lists, in this order."""
    return [*(turns_key(p, cfg) for p in PRIORITIES), backlog_key(cfg), project_waiting_key(cfg),
            project_running_key(cfg), released_key(cfg), paused_key(cfg)]
