"""Submitting: validation before I/O, idempotency under races, the queue limit, status."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time

import pytest
from conftest import task_events

import mobius_preview
from mobius_preview import (
    BrokerUnavailable,
    InvalidPayload,
    JobNotFound,
    QueueFull,
    client,
    layout,
    records,
    render_preview,
)


def waiting() -> int:
    return sum(records.queue_depths().values())


def test_submit_routes_by_priority_and_names_the_task_after_the_job(make_job):
    jobs = {p: make_job(priority=p) for p in ("high", "normal", "low")}
    for job in jobs.values():
        result = mobius_preview.submit(job)
        assert result.id == job["jobId"] and result.created
    assert records.queue_depths() == {"high": 1, "normal": 1, "low": 1}
    assert client.status(jobs["low"]["jobId"])["state"] == "queued"


def test_default_priority_is_normal(make_job):
    job = make_job()
    job.pop("priority", None)
    render_preview.delay(job)
    assert records.queue_depths()["normal"] == 1


def test_invalid_payload_never_reaches_the_broker(make_job):
    job = make_job(dryRun="yes")
    job["previewRequest"]["assets"] = [{"id": "a", "type": "image", "path": "../secret"}]
    with pytest.raises(InvalidPayload) as caught:
        render_preview.delay(job)
    paths = {i.path for i in caught.value.issues}
    assert paths == {"$.dryRun", "$.previewRequest.assets[0].path"}
    assert waiting() == 0
    with pytest.raises(JobNotFound):
        client.status(job["jobId"])


def test_duplicate_submission_returns_the_existing_job(make_job):
    job = make_job()
    first = mobius_preview.submit(job)
    second = render_preview.delay(job)
    assert first.created and not second.created
    assert second.id == first.id
    assert waiting() == 1


@pytest.mark.slow(8)  # six Python processes importing the package: left to `make test`
def test_concurrent_duplicates_enqueue_once_across_processes(make_job, tmp_path):
    job = make_job()
    path = tmp_path / "job.json"
    import json

    path.write_text(json.dumps(job))
    code = (
        "import json,sys,mobius_preview;"
        f"r=mobius_preview.submit(json.load(open({str(path)!r})));print(r.created)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(6)]
    created = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(created) == ["False"] * 5 + ["True"]
    assert waiting() == 1


def test_concurrent_duplicates_enqueue_once_across_threads(make_job):
    job = make_job()
    results, barrier = [], threading.Barrier(16)

    def go():
        barrier.wait()
        results.append(mobius_preview.submit(job).created)

    threads = [threading.Thread(target=go) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert waiting() == 1


def test_queue_full_at_the_limit_and_accepting_again_below_it(make_job, settings_env):
    settings_env(PREVIEW_QUEUE_MAX="3")
    for _ in range(3):
        mobius_preview.submit(make_job())
    refused = make_job()
    with pytest.raises(QueueFull) as caught:
        mobius_preview.submit(refused)
    assert caught.value.depth == 3 and caught.value.limit == 3
    assert "3 jobs waiting, limit is 3" in str(caught.value)
    with pytest.raises(JobNotFound):
        client.status(refused["jobId"])  # a refused job leaves no claim behind
    records.client().rpop(layout.queue_keys()[1])  # one job leaves the queue
    assert mobius_preview.submit(refused).created


def test_broker_down_is_a_clear_fast_error(make_job, settings_env):
    settings_env(REDIS_URL="redis://127.0.0.1:1/0")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        mobius_preview.submit(make_job())
    assert time.monotonic() - started < 5
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in str(caught.value)
    assert "not accepted" in str(caught.value)


def test_unknown_job_is_not_found(capsys):
    with pytest.raises(JobNotFound) as caught:
        client.status("no-such-job")
    assert "no-such-job" in str(caught.value)
    from mobius_preview.cli import main

    assert main(["status", "no-such-job"]) == 1
    assert "job not found: 'no-such-job'" in capsys.readouterr().err


def test_cancel_a_queued_job(make_job):
    job = make_job()
    mobius_preview.submit(job)
    st = client.cancel(job["jobId"])
    assert st["state"] == "cancelled" and st["error"] == "cancelled"


def test_queue_stats_reports_depth_and_oldest_age(make_job):
    mobius_preview.submit(make_job(priority="low"))
    time.sleep(0.2)
    stats = client.queue_stats()
    assert stats["depth"] == {"high": 0, "normal": 0, "low": 1}
    assert stats["oldestAgeSeconds"]["low"] >= 0.2
    assert stats["oldestAgeSeconds"]["high"] is None


def test_submit_many_in_order_with_duplicates_invalid_and_the_limit(make_job, settings_env):
    settings_env(PREVIEW_QUEUE_MAX="5")
    existing = make_job(priority="high")
    mobius_preview.submit(existing)
    jobs = [make_job(priority=p) for p in ("high", "normal", "low", "low", "normal", "high")]
    batch = [jobs[0], existing, make_job(dryRun="no"), jobs[1], jobs[0], *jobs[2:]]
    results = mobius_preview.submit_many(batch)
    assert len(results) == len(batch)
    assert results[0].created and results[0].id == jobs[0]["jobId"]
    assert not results[1].created  # already submitted before
    assert isinstance(results[2], InvalidPayload)
    assert results[3].created
    assert not results[4].created and results[4].id == jobs[0]["jobId"]  # duplicate within the call
    assert [r.created for r in results[5:7]] == [True, True]  # depth 5 now: the limit
    assert all(isinstance(r, QueueFull) for r in results[7:])
    assert records.queue_depths() == {"high": 2, "normal": 1, "low": 2}
    assert client.status(jobs[2]["jobId"])["state"] == "queued"
    with pytest.raises(JobNotFound):
        client.status(jobs[-1]["jobId"])


def test_a_repeat_of_a_job_refused_for_a_full_queue_is_refused_too(make_job, settings_env):
    settings_env(PREVIEW_QUEUE_MAX="1")
    first, full = make_job(), make_job()
    results = mobius_preview.submit_many([first, full, full])
    assert results[0].created
    assert isinstance(results[1], QueueFull) and results[2] is results[1]


def test_submitted_in_bulk_jobs_all_run_once(worker, make_job):
    jobs = [make_job(priority=("high", "normal", "low")[n % 3]) for n in range(60)]
    assert all(r.created for r in mobius_preview.submit_many(jobs))
    finals = [client.wait(j["jobId"], timeout=60) for j in jobs]
    assert {f["state"] for f in finals} == {"succeeded"}
    assert all(f["completions"] == 1 for f in finals)


@pytest.fixture
def sent_events():
    """task-sent events as Flower would see them: a real event receiver on this Redis."""
    with task_events("task-sent") as seen:
        yield seen


def test_task_sent_events_name_only_the_jobs_accepted(make_job, settings_env, sent_events):
    settings_env(PREVIEW_QUEUE_MAX="4")
    single = make_job("catan-intro.json", priority="high")
    mobius_preview.submit(single)
    mobius_preview.submit(single)  # a duplicate: no second event
    fresh = [make_job() for _ in range(2)]
    mobius_preview.submit_many(fresh)  # all accepted: sent by the accept script itself
    mixed = [make_job(), single, make_job(), make_job()]  # one exists; the last finds the queue full
    results = mobius_preview.submit_many(mixed)
    assert [r.created for r in results[:2]] == [True, False]
    assert all(isinstance(r, QueueFull) for r in results[2:])
    accepted = [single["jobId"], *(j["jobId"] for j in fresh),
                *(j["jobId"] for j, r in zip(mixed, results, strict=True) if getattr(r, "created", False))]
    deadline = time.monotonic() + 10
    while len(sent_events) < len(accepted) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # nothing more arrives
    assert [e["uuid"] for e in sent_events] == accepted
    first = sent_events[0]
    assert first["name"] == "mobius_preview.render_preview" and first["queue"].endswith(".high")
    # The event shows who the job is, not its whole payload (Flower shows this too).
    assert single["jobId"] in first["args"] and "steps" in first["args"]
    assert single["previewRequest"]["steps"][0]["text"] not in first["args"]


def test_the_message_is_celerys_own_with_a_short_argsrepr(make_job):
    job = make_job()
    mobius_preview.submit(job)
    raw = records.client().lindex(layout.queue_keys()[1], 0)
    message = json.loads(raw)
    headers = message["headers"]
    assert headers["id"] == job["jobId"] and headers["task"] == "mobius_preview.render_preview"
    assert headers["argsrepr"].startswith(f"({{'jobId': {job['jobId']!r}")
    assert message["content-type"] == "application/json"
    body = json.loads(base64.b64decode(message["body"]))
    assert body[0] == [job]  # the payload travels whole, as JSON
    # Nothing is left capturing: a plain Celery publish on the pool's channel goes out.
    with mobius_preview.app.producer_or_acquire() as producer:
        assert producer.channel._capture_sink is None
