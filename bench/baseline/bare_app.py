"""The baseline for bench/queue.py: a bare Celery app on the same Redis, one no-op task.

Same serializer, prefetch and acknowledgement settings as mobius-preview's worker, so
the comparison measures what our layer adds (validation, idempotency, queue limit,
records, dead letters), not configuration.
"""

import os
import time

import redis
from celery import Celery

URL = os.environ["REDIS_URL"]
PREFIX = os.environ.get("REDIS_KEY_PREFIX", "") + "bare:"

app = Celery("bare", broker=URL)
app.conf.update(
    task_serializer="json", accept_content=["json"], task_ignore_result=True,
    task_acks_late=True, worker_prefetch_multiplier=1, task_default_queue="bare",
    broker_transport_options={"global_keyprefix": PREFIX, "queue_order_strategy": "priority"},
    worker_hijack_root_logger=False,
    # Same events as mobius-preview (celery-exporter and Flower need them).
    worker_send_task_events=True, task_send_sent_event=True,
)
_r = redis.Redis.from_url(URL.replace("redis+socket://", "unix://"))


@app.task(name="bare.noop")
def noop(sent: float) -> None:
    """Record (sent, started, finished): the bench reads them back."""
    started = time.time()
    _r.rpush(PREFIX + "done", f"{sent} {started} {time.time()}")
