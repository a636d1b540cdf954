"""Prometheus metrics: a prefork worker's counters add up across its processes."""

from __future__ import annotations

import json

from conftest import free_port, scrape, tiny_render_job, wait_for

import mobius_preview
from mobius_preview import client, metrics, records


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_worker_metrics_count_every_outcome_across_pool_processes(worker_process, make_job):
    port = free_port()
    worker_process(env={"METRICS_PORT": str(port)}, concurrency=2)
    first = tiny_render_job()
    again = json.loads(json.dumps(first)) | {"jobId": first["jobId"] + "-again"}
    dry = make_job(priority="low")
    missing = tiny_render_job()
    missing["previewRequest"]["assets"][0]["path"] = "images/nope.png"
    for job in (first, dry, missing):
        mobius_preview.submit(job)
    for job in (first, dry, missing):
        client.wait(job["jobId"], timeout=60)
    mobius_preview.submit(again)
    client.wait(again["jobId"], timeout=60)
    invalid = make_job(priority="high", dryRun="no")
    mobius_preview.app.send_task("mobius_preview.render_preview", args=[invalid],
                                 task_id=invalid["jobId"], queue="preview.high")
    wait_for(lambda: (records.get(invalid["jobId"]) or {}).get("state") == "dead", timeout=30)

    s = scrape(f"http://127.0.0.1:{port}/metrics")
    total = "mobius_preview_jobs_total"
    assert value(s, total, outcome="succeeded", priority="normal") == 1
    assert value(s, total, outcome="cache_hit", priority="normal") == 1
    assert value(s, total, outcome="dry_run", priority="low") == 1
    assert value(s, total, outcome="dead", priority="normal") == 1
    assert value(s, total, outcome="invalid", priority="high") == 1
    assert value(s, "mobius_preview_job_duration_seconds_count", priority="normal") == 2
    assert value(s, "mobius_preview_render_stage_seconds_count", stage="segments") == 1
    assert value(s, "mobius_preview_segments_total", kind="video", outcome="rendered") >= 1
    assert value(s, "mobius_preview_queue_wait_seconds_count", priority="low") == 1
    assert value(s, "mobius_preview_jobs_in_progress") == 0
    assert value(s, "mobius_preview_broker_up") == 1
    assert ("mobius_preview_queue_depth", (("priority", "high"),)) in s
    assert value(s, "mobius_preview_dead_letters") == 2


def test_queue_metrics_and_refusals_in_process(make_job, settings_env):
    mobius_preview.submit(make_job(priority="low"))
    mobius_preview.submit(make_job(priority="low"))
    text = metrics.render_latest().decode()
    assert 'mobius_preview_queue_depth{priority="low"} 2.0' in text
    assert 'mobius_preview_queue_oldest_age_seconds{priority="low"}' in text
    settings_env(PREVIEW_QUEUE_MAX="2")
    before = metrics.REFUSED.labels("queue_full")._value.get()
    try:
        mobius_preview.submit(make_job())
    except mobius_preview.QueueFull:
        pass
    assert metrics.REFUSED.labels("queue_full")._value.get() == before + 1
