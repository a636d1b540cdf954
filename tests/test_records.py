"""What a job leaves in Redis once it has ended: a folded record for PREVIEW_RECORD_TTL,
its event stream only for the events window (PREVIEW_EVENTS_TTL), nothing else."""

from __future__ import annotations

import json

from conftest import PREFIX, small_job, wait_for

import mobius_preview
from mobius_preview import config, layout, records, results

STATUS_FIELDS = ("projectId", "requestId", "priority", "attempts", "submittedAt", "startedAt", "finishedAt",
                 "worker", "key", "duration", "cacheHit", "dryRun")


def _job_keys(conn, job_id: str) -> set[str]:
    return {k for k in conn.scan_iter(match=f"{PREFIX}*", count=1000) if job_id in k}


def _assert_ended_keys(conn, job_id: str) -> None:
    """Only the record and the stream, each with the TTL the shipped settings give."""
    cfg = config.settings()
    record, stream = layout.job_key(job_id), layout.events_key(job_id)
    assert _job_keys(conn, job_id) == {record, stream}
    assert cfg.record_ttl - 60 < conn.ttl(record) <= cfg.record_ttl
    assert cfg.events_ttl - 60 < conn.ttl(stream) <= cfg.events_ttl < cfg.record_ttl
    assert set(conn.hkeys(record)) <= {*records.FOLD_KEEPS, "final"}, conn.hkeys(record)


def test_a_succeeded_job_keeps_a_small_folded_record_and_its_stream_for_the_window(worker, redis_conn):
    job = small_job()
    mobius_preview.submit(job)
    status = mobius_preview.wait(job["jobId"], timeout=60)
    assert status["state"] == "succeeded" and status["renders"] == 1
    _assert_ended_keys(redis_conn, job["jobId"])
    assert all(status[name] is not None for name in STATUS_FIELDS), status
    assert {"preview.mp4", "poster.png", "manifest.json"} <= set(status["artifacts"])
    folder = status["artifacts"]["manifest.json"].rsplit("/", 1)[0]
    assert all(path.startswith(f"{folder}/") for path in status["artifacts"].values())
    assert json.loads(redis_conn.hget(layout.job_key(job["jobId"]), "outcome"))["folder"] == folder
    # A record and no stream is what the job costs for the rest of its week (aim: 2 KB).
    assert redis_conn.memory_usage(layout.job_key(job["jobId"]), samples=0) <= 2048


def test_a_dead_job_folds_too(worker, redis_conn):
    dead = small_job()
    dead["previewRequest"]["assets"] = [{"id": "gone", "type": "image", "path": "images/missing.png"}]
    dead["previewRequest"]["steps"][0]["image"] = "gone"
    mobius_preview.submit(dead)
    assert mobius_preview.wait(dead["jobId"], timeout=60)["state"] == "dead"
    _assert_ended_keys(redis_conn, dead["jobId"])
    assert "missing.png" in results.status(dead["jobId"])["error"]


def test_cancelled_before_it_starts_folds(redis_conn, make_job):
    job = make_job()
    mobius_preview.submit(job)
    assert mobius_preview.cancel(job["jobId"])["state"] == "cancelled"
    _assert_ended_keys(redis_conn, job["jobId"])
    assert results.status(job["jobId"])["requestId"] == job["requestId"]


def test_a_late_duplicate_completion_is_still_counted_after_the_fold(make_job, redis_conn):
    job = make_job()
    mobius_preview.submit(job)
    where = "s3://bucket/pre/previews/" + "a" * 64
    outcome = {"jobId": job["jobId"], "key": "a" * 64, "dryRun": True, "cacheHit": False, "duration": 1.0,
               "folder": where, "seconds": 0.1,
               "artifacts": {"manifest.json": f"{where}/manifest.json",
                             "poster.png": f"{where}/t1/poster.png"}}
    records.start(job["jobId"], state="running", attempts=1, worker="w1")
    records.finish(job["jobId"], outcome, rendered=False)
    records.start(job["jobId"], state="running", attempts=2, worker="w2")  # ended: changes nothing
    records.finish(job["jobId"], outcome, rendered=True)  # a second run that got as far
    status = results.status(job["jobId"])
    assert (status["completions"], status["renders"], status["state"]) == (2, 1, "succeeded")
    assert status["worker"] == "w1" and status["requestId"] == job["requestId"]
    assert status["artifacts"] == outcome["artifacts"]  # kept as folder + places under it
    assert set(redis_conn.hkeys(layout.job_key(job["jobId"]))) <= {*records.FOLD_KEEPS, "final"}


def test_follow_after_the_events_window_ends_with_the_final_state(worker, settings_env, redis_conn):
    settings_env(PREVIEW_EVENTS_TTL="1")  # the window passes while the test waits
    job = small_job()
    mobius_preview.submit(job)
    seen = list(results.follow(job["jobId"], timeout=60))
    assert seen[-1][1]["state"] == "succeeded" and "fromRecord" not in seen[-1][1]
    wait_for(lambda: not redis_conn.exists(layout.events_key(job["jobId"])), timeout=10)
    again = list(results.follow(job["jobId"], timeout=10))
    assert [kind for kind, _ in again] == ["state"]
    assert again[0][1]["state"] == "succeeded" and again[0][1]["fromRecord"]
    assert again[0][1]["key"] == seen[-1][1]["key"]
