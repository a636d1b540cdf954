"""Celery settings for mobius-preview, derived from the environment (mobius_preview.config).

Loaded by ``mobius_preview.app`` with ``config_from_object``. Change behaviour through
the environment variables in the README, not here.
"""

from kombu.entity import Exchange, Queue

from mobius_preview import layout
from mobius_preview.config import settings

_s = settings()

broker_url = _s.redis_url
# No Celery result backend: each job's state and outcome live in its record
# (mobius_preview.records), which also knows "retrying" and "dead"; the host reads
# them through mobius_preview.status()/wait() or the returned PreviewResult.
task_ignore_result = True

# JSON only: a message in any other serialization is refused by the worker, never loaded.
task_serializer = "json"
accept_content = ["json"]
event_serializer = "json"

# One queue (one Redis list) per priority, consumed strictly in this order. No
# per-message priority levels: on Redis they would override queue order and hide
# messages from LLEN and from celery-exporter's celery_queue_length.
_exchange = Exchange(_s.queue_name, type="direct")
# Webhook deliveries (short, time-limited POSTs) come first so a host hears of a
# finished job before more renders start; see docs/operations.md for a separate
# webhook worker.
_webhooks = layout.webhook_queue(_s)
task_queues = [Queue(_webhooks, _exchange, routing_key=_webhooks),
               *(Queue(name, _exchange, routing_key=name) for name in layout.queues(_s))]
task_routes = {"mobius_preview.deliver_webhook": {"queue": _webhooks}}
task_default_queue = layout.queue(layout.DEFAULT_PRIORITY, _s)
task_default_exchange = _s.queue_name
task_default_routing_key = task_default_queue
task_create_missing_queues = False

_transport = {
    # Strict priority needs kombu >= 5.7 (kombu#801, fixed by kombu PR #2464).
    "queue_order_strategy": "priority",
    # An unacknowledged message is redelivered after this long. It must outlast the
    # hard time limit of a render and the longest retry countdown, or a long job would
    # run twice (kombu#337). config.py enforces that.
    "visibility_timeout": _s.visibility_timeout,
    "global_keyprefix": _s.key_prefix,
    # How often a worker looks for messages of dead workers whose visibility timeout
    # has passed, and puts them back on their queue (kombu >= 5.7).
    "unacked_restore_interval": _s.restore_interval,
    "unacked_restore_throttle": 1,
    # A restore pass holds a Redis lock for milliseconds; a worker killed while holding
    # it would block every restore until the lock expires (kombu's default: 300 s).
    "unacked_mutex_expire": 30,
}
if _s.sentinels:  # sentinel://h1:p1;sentinel://h2:p2/db: kombu asks them for the master
    _transport["master_name"] = _s.sentinel_master
    _transport["sentinel_kwargs"] = {"socket_timeout": 2, "socket_connect_timeout": 2}
broker_transport_options = _transport
broker_connection_retry_on_startup = True
broker_connection_timeout = 4
redis_socket_connect_timeout = 4
redis_socket_timeout = 10

# At least once: acknowledge after the task returns; a pool child killed mid-job
# requeues its message; prefetch one so a waiting high job is never stuck behind
# low jobs already reserved by this worker.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_concurrency = _s.concurrency
worker_cancel_long_running_tasks_on_connection_loss = True
task_soft_time_limit = _s.soft_time_limit
task_time_limit = _s.time_limit

# Events for Flower and celery-exporter.
worker_send_task_events = True
task_send_sent_event = True

worker_hijack_root_logger = False
# The worker's own hooks (logging, broker check, metrics, clean-up): a worker imports
# these before it sends its start-up signals; a host process never loads them.
imports = ["mobius_preview.worker"]
# Messages the worker cannot run (undecodable, a refused content type, unknown task) become
# dead letters.
worker_consumer = "mobius_preview.worker:Consumer"
