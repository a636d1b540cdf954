"""The render task on a real worker: dry runs, renders, retries, dead letters, priority."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from conftest import encode_count, fake_ffmpeg, task_events, wait_for

import mobius_preview
from mobius_preview import client, dlq, layout, records
from mobius_preview.render import manifest


def test_dry_run_writes_a_manifest_and_renders_nothing(worker, make_job):
    job = make_job("upstream-full.json")
    mobius_preview.submit(job)
    st = client.wait(job["jobId"], timeout=30)
    assert st["state"] == "succeeded" and st["dryRun"] and st["attempts"] == 1
    assert set(st["artifacts"]) == {"manifest.json"}
    data = json.loads(Path(st["artifacts"]["manifest.json"]).read_text())
    assert data["dryRun"] is True and "output" not in data
    assert data["plan"]["format"] == "webm" and data["plan"]["resolution"] == "1280x720"
    assert st["renders"] == 0


def test_a_real_job_renders_and_verifies(worker, tiny_job):
    job = tiny_job()
    mobius_preview.submit(job)
    st = client.wait(job["jobId"], timeout=60)
    assert st["state"] == "succeeded", st["error"]
    assert {"preview.mp4", "poster.png", "manifest.json"} <= set(st["artifacts"])
    folder = st["artifacts"]["manifest.json"].rsplit("/", 1)[0]
    from pathlib import Path

    assert manifest.verify(Path(folder)) == []
    assert st["renders"] == 1 and st["cacheHit"] is False


def test_transient_failure_is_retried_with_growing_delays_then_succeeds(
    worker, tiny_job, settings_env, tmp_path
):
    settings_env(FFMPEG_BINARY=str(fake_ffmpeg(tmp_path, fail_first=2)))
    job = tiny_job()
    started = time.monotonic()
    mobius_preview.submit(job)
    st = client.wait(job["jobId"], timeout=60)
    assert st["state"] == "succeeded", st
    assert st["attempts"] == 3 and encode_count(tmp_path) == 3
    delays = st["retryDelays"]
    assert len(delays) == 2
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0  # base 1 s, doubling, jittered
    assert delays[1] >= delays[0]
    assert time.monotonic() - started >= sum(delays)
    assert not dlq.list_letters()


def test_transient_failure_that_never_heals_is_dead_lettered_after_max_tries(
    worker, tiny_job, settings_env, tmp_path
):
    settings_env(FFMPEG_BINARY=str(fake_ffmpeg(tmp_path, fail_first=99)))
    job = tiny_job()
    mobius_preview.submit(job)
    st = client.wait(job["jobId"], timeout=60)
    assert st["state"] == "dead" and st["attempts"] == 3 and st["errorKind"] == "transient"
    assert encode_count(tmp_path) == 3
    letter = dlq.show(job["jobId"])
    assert letter["attempts"] == 3 and letter["payload"] == job
    assert "simulated encoder crash" in letter["error"]
    assert "Traceback" in letter["traceback"]
    assert letter["deadAt"] and letter["firstAttemptAt"]


def test_permanent_failure_is_dead_lettered_after_one_try(worker, tiny_job, settings_env, tmp_path):
    settings_env(FFMPEG_BINARY=str(fake_ffmpeg(tmp_path)))
    job = tiny_job()
    job["previewRequest"]["assets"][0]["path"] = "images/missing.png"
    mobius_preview.submit(job)
    st = client.wait(job["jobId"], timeout=30)
    assert st["state"] == "dead" and st["attempts"] == 1 and st["errorKind"] == "permanent"
    assert "$.previewRequest.assets[0].path: file not found: 'images/missing.png'" in st["error"]
    assert encode_count(tmp_path) == 0
    assert [letter["jobId"] for letter in dlq.list_letters()] == [job["jobId"]]


def test_invalid_payload_published_around_the_client_is_dead_lettered(worker, make_job):
    job = make_job(priority="urgent")
    # Another program publishing straight to the queue, bypassing validation.
    mobius_preview.app.send_task(
        "mobius_preview.render_preview", args=[job], task_id=job["jobId"], queue="preview.normal"
    )
    st = wait_for(lambda: (records.get(job["jobId"]) or {}).get("state") == "dead", timeout=30)
    assert st
    letter = dlq.show(job["jobId"])
    assert "$.priority" in letter["error"] and letter["attempts"] == 1


def test_replay_from_the_dead_letter_queue_runs_to_success(worker, tiny_job, settings_env):
    from conftest import RUN_DIR

    job = tiny_job()
    job["previewRequest"]["assets"][0]["path"] = "images/late.png"
    mobius_preview.submit(job)
    assert client.wait(job["jobId"], timeout=30)["state"] == "dead"
    # The operator fixes the cause (the asset arrives), then replays.
    late = RUN_DIR / "assets" / "proj-catan-demo" / "images" / "late.png"
    late.write_bytes((RUN_DIR / "assets" / "proj-catan-demo" / "images" / "board.png").read_bytes())
    from mobius_preview.cli import main

    assert main(["dlq", "replay", job["jobId"]]) == 0
    st = client.wait(job["jobId"], timeout=60)
    assert st["state"] == "succeeded" and st["attempts"] == 1
    assert dlq.list_letters() == []


def redeliver(job: dict, timeout: float = 60) -> None:
    """Deliver the job's message again and wait until the worker has run it through
    (its task-succeeded event), however long that takes."""
    with task_events("task-succeeded") as done:
        mobius_preview.app.send_task("mobius_preview.render_preview", args=[job], task_id=job["jobId"],
                                     queue="preview.high")
        wait_for(lambda: any(e["uuid"] == job["jobId"] for e in done), timeout=timeout)


def test_duplicate_message_of_a_finished_job_does_not_render_again(worker, tiny_job):
    job = tiny_job()
    mobius_preview.submit(job)
    assert client.wait(job["jobId"], timeout=60)["state"] == "succeeded"
    redeliver(job)
    assert client.status(job["jobId"])["renders"] == 1


@pytest.mark.worker
def test_strict_priority_high_jobs_run_before_waiting_low_ones(make_job):
    low = [make_job(priority="low") for _ in range(30)]
    high = [make_job(priority="high") for _ in range(5)]
    for job in low + high:  # low first, so round-robin or FIFO would run them first
        mobius_preview.submit(job)
    with start_worker(mobius_preview.app, pool="solo", concurrency=1, perform_ping_check=False,
                      loglevel="WARNING"):
        for job in low + high:
            client.wait(job["jobId"], timeout=60)
    started = {j["jobId"]: float(records.get(j["jobId"])["startedTs"]) for j in low + high}
    order = sorted(started, key=started.get)
    assert set(order[:5]) == {j["jobId"] for j in high}, order[:8]


def test_the_returned_result_reads_like_a_celery_result(worker, tiny_job, make_job):
    from mobius_preview import JobFailed, render_preview

    result = render_preview.delay(tiny_job())
    outcome = result.get(timeout=60)
    assert outcome["jobId"] == result.id and "preview.mp4" in outcome["artifacts"]
    assert result.state == "SUCCESS" and result.ready() and result.successful()
    bad = make_job(dryRun=False)
    bad["previewRequest"]["assets"] = [{"id": "x", "type": "image", "path": "images/none.png"}]
    failing = render_preview.delay(bad)
    try:
        failing.get(timeout=30)
        raise AssertionError("expected JobFailed")
    except JobFailed as exc:
        assert exc.state == "dead" and "file not found" in exc.error
    assert failing.state == "FAILURE" and failing.failed()


def test_a_cache_hit_starts_and_finishes_in_one_step_and_only_once(worker, tiny_job):
    first = tiny_job()
    mobius_preview.submit(first)
    assert client.wait(first["jobId"], timeout=60)["renders"] == 1
    again = {**first, "jobId": first["jobId"] + "-again"}  # same content: its preview is stored
    mobius_preview.submit(again)
    st = client.wait(again["jobId"], timeout=30)
    assert st["state"] == "succeeded" and st["cacheHit"] is True and st["renders"] == 0
    assert st["completions"] == 1 and st["attempts"] == 1 and st["startedAt"] and st["finishedAt"]
    record = records.get(again["jobId"])
    assert record["deliveries"] == "1" and record["firstStartedAt"] == st["startedAt"]
    # Its message delivered again (the ack was lost): nothing is counted twice.
    redeliver(again)
    assert client.status(again["jobId"])["completions"] == 1


def test_a_cache_hit_delivered_too_often_is_dead_not_succeeded(worker, tiny_job):
    first = tiny_job()
    mobius_preview.submit(first)
    assert client.wait(first["jobId"], timeout=60)["state"] == "succeeded"
    poisoned = {**first, "jobId": first["jobId"] + "-poison"}
    records.client().hset(layout.job_key(poisoned["jobId"]), "deliveries", 99)  # as if it killed workers
    mobius_preview.app.send_task("mobius_preview.render_preview", args=[poisoned],
                                 task_id=poisoned["jobId"], queue="preview.high")
    st = client.wait(poisoned["jobId"], timeout=30)
    assert st["state"] == "dead" and "delivered 100 times" in st["error"] and st["completions"] == 0
