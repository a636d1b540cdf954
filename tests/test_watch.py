"""Following and stopping a running job: progress out, cancel in (real worker, Redis, ffmpeg)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from conftest import RUN_DIR, fake_ffmpeg, task_events, tiny_render_job, wait_for

import mobius_preview
from mobius_preview import client, dlq, records
from mobius_preview.watch import JobWatch


def long_job() -> dict:
    """A 300-second preview: 10 steps of 30 s."""
    job = tiny_render_job()
    step = job["previewRequest"]["steps"][1]
    job["previewRequest"]["steps"] = [dict(step, id=f"s{n}", durationSec=30, text=f"Step {n} {uuid.uuid4()}")
                                      for n in range(10)]
    return job


def test_cancelling_a_running_render_stops_it_cleans_up_and_the_worker_goes_on(
        tmp_path, settings_env, worker):
    # Joining the segments takes 120 s here, so the render is surely running when cancelled.
    settings_env(FFMPEG_BINARY=str(fake_ffmpeg(tmp_path, sleep=120)))
    tmp = RUN_DIR / "data" / "tmp"
    before = set(tmp.iterdir()) if tmp.exists() else set()  # left by other tests' killed workers
    job = long_job()
    mobius_preview.submit(job)
    wait_for(lambda: (client.status(job["jobId"])["progress"] or {}).get("stage") == "join", timeout=60)
    started = time.monotonic()
    asked = client.cancel(job["jobId"])
    assert asked["state"] == "running" and asked["cancelRequested"]
    final = client.wait(job["jobId"], timeout=30)
    stopped = time.monotonic() - started
    print(f"cancel to stopped: {stopped:.2f} s")
    assert final["state"] == "cancelled" and final["error"] == "cancelled" and final["attempts"] == 1
    assert job["jobId"] not in {letter["jobId"] for letter in dlq.list_letters()}
    assert not tmp.exists() or set(tmp.iterdir()) == before
    # The worker takes the next job at once; the cancelled jobId may be submitted again.
    settings_env(FFMPEG_BINARY="")
    nxt = tiny_render_job()
    mobius_preview.submit(nxt)
    assert client.wait(nxt["jobId"], timeout=60)["state"] == "succeeded"
    again = mobius_preview.submit(dict(job, previewRequest=nxt["previewRequest"]))
    assert again.created
    assert client.wait(job["jobId"], timeout=60)["state"] == "succeeded"
    kinds = [(k, e.get("state")) for _, k, e in records.events(job["jobId"])]
    assert kinds[0] == ("state", "queued") and kinds[-1] == ("state", "succeeded")


def test_cancelling_a_queued_job_is_immediate_and_final(make_job):
    job = make_job()
    mobius_preview.submit(job)
    assert client.cancel(job["jobId"])["state"] == "cancelled"
    events = [e for _, _, e in records.events(job["jobId"])]
    assert [e["state"] for e in events] == ["queued", "cancelled"]
    assert client.cancel(job["jobId"])["state"] == "cancelled"  # again: nothing changes


def test_progress_never_goes_down_and_is_throttled(make_job):
    job = make_job()
    mobius_preview.submit(job)
    sent: list[tuple[str, dict]] = []
    watch = JobWatch(job["jobId"], lambda kind, **fields: sent.append((kind, fields)))
    for n in range(50):  # fifty slides in a burst: one update for the stage, not fifty
        watch.report(f"slides {n + 1}/50", 10 + n)
    watch.report("video", 30)  # a lower percent keeps the highest so far (59)
    progress = [e for _, kind, e in records.events(job["jobId"]) if kind == "progress"]
    assert [p["stage"] for p in progress] == ["slides 1/50", "video"]
    assert [p["percent"] for p in progress] == [10.0, 59.0]
    assert sent == [("task-progress", {"stage": "slides 1/50", "percent": 10.0}),
                    ("task-progress", {"stage": "video", "percent": 59.0})]
    assert client.status(job["jobId"])["progress"] == {"stage": "video", "percent": 59.0}


def test_progress_reaches_task_events_and_the_piped_cli_prints_each_change(worker):
    """task-progress events as Flower would see them, and `status --wait` into a pipe."""
    job = tiny_render_job()
    with task_events("task-progress") as seen:
        mobius_preview.submit(job)
        cli = subprocess.run([str(Path(sys.executable).parent / "mobius-preview"), "status", job["jobId"],
                              "--wait", "--timeout", "60"], capture_output=True, text=True, timeout=90)
        wait_for(lambda: any(e.get("stage") == "publish" for e in seen), timeout=10)
    assert {e["uuid"] for e in seen} == {job["jobId"]}
    assert [e["percent"] for e in seen] == sorted(e["percent"] for e in seen)
    lines = cli.stdout.splitlines()
    assert cli.returncode == 0, cli.stderr
    assert lines[0] == "queued" and lines[1].startswith("running")
    assert any(line.startswith("progress") and "slides" in line for line in lines)
    final = lines.index("{")  # then the status as JSON
    assert lines[final - 1].startswith("succeeded")
    assert json.loads("\n".join(lines[final:]))["state"] == "succeeded"
