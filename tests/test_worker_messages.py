"""Messages published around the client: refused, counted, kept, never executed."""

from __future__ import annotations

import json
import uuid

from conftest import free_port, scrape, wait_for
from kombu import Connection, Exchange, Producer

import mobius_preview
from mobius_preview import client, dlq, layout, records
from mobius_preview.config import settings

# The first bytes of a Python-serialized object (protocol 4): the worker must never load it.
PY_SERIALIZED = b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94."


def publish(body, content_type: str, task: str = "mobius_preview.render_preview",
            job_id: str | None = None) -> str:
    job_id = job_id or f"raw-{uuid.uuid4().hex[:10]}"
    queue = layout.queue("normal")
    with Connection(settings().redis_url,
                    transport_options={"global_keyprefix": settings().key_prefix}) as conn:
        Producer(conn).publish(
            body, exchange=Exchange(settings().queue_name, type="direct"), routing_key=queue,
            serializer=None, content_type=content_type,
            content_encoding="utf-8" if isinstance(body, str) else "binary",
            headers={"id": job_id, "task": task, "lang": "py", "argsrepr": "", "kwargsrepr": ""},
        )
    return job_id


def test_messages_around_the_client_are_kept_and_never_run(worker_process, make_job):
    port = free_port()
    worker_process(env={"METRICS_PORT": str(port)})
    garbled = publish("{this is not json", "application/json")
    serialized = publish(PY_SERIALIZED, "application/x-python-serialize")
    job = make_job()
    unknown = publish(json.dumps([[job], {}, {}]), "application/json", task="os.system", job_id=job["jobId"])
    empty = publish(json.dumps([[], {}, {}]), "application/json")
    extra = publish(json.dumps([[job, "rm -rf /"], {}, {}]), "application/json")

    wait_for(lambda: {garbled, serialized, unknown, empty, extra} <= set(
        records.client().hkeys(layout.dead_key())), timeout=30)
    letters = {i: dlq.show(i) for i in (garbled, serialized, unknown, empty, extra)}
    assert letters[garbled]["rejected"] == "undecodable" and letters[garbled]["body"] == "{this is not json"
    assert letters[serialized]["rejected"] in ("undecodable", "invalid_task")
    assert "ContentDisallowed" in letters[serialized]["error"] or "refused" in letters[serialized]["error"]
    assert letters[unknown]["rejected"] == "unknown_task" and letters[unknown]["payload"] == job
    assert letters[empty]["errorKind"] == "permanent"
    assert "$: must be a JSON object" in letters[empty]["error"]
    assert "takes one payload" in letters[extra]["error"]
    assert records.get(job["jobId"]) is None  # the unknown task never ran as our job

    s = scrape(f"http://127.0.0.1:{port}/metrics")
    rejected = {dict(labels).get("reason"): v for (name, labels), v in s.items()
                if name == "mobius_preview_messages_rejected_total"}
    assert rejected.get("undecodable", 0) + rejected.get("invalid_task", 0) >= 2
    assert rejected.get("unknown_task") == 1

    # The worker is unharmed: a normal job still runs.
    ok = make_job()
    mobius_preview.submit(ok)
    assert client.wait(ok["jobId"], timeout=30)["state"] == "succeeded"


def test_garbage_on_the_queue_list_does_not_stop_the_worker(worker_process, make_job):
    worker_process()
    records.client().lpush(layout.queue_keys()[1], "\x00 definitely not a message")
    ok = make_job()
    mobius_preview.submit(ok)
    assert client.wait(ok["jobId"], timeout=60)["state"] == "succeeded"
    kept = [letter for letter in dlq.list_letters() if letter.get("rejected") == "malformed"]
    assert len(kept) == 1 and "definitely not a message" in dlq.show(kept[0]["jobId"])["body"]
