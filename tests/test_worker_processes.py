"""Real `celery -A mobius_preview worker` processes: crashes and shutdowns lose nothing."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from conftest import encode_count, fake_ffmpeg, wait_for

import mobius_preview
from mobius_preview import client, records
from mobius_preview.render import manifest


def _state(job_id: str) -> str | None:
    return (records.get(job_id) or {}).get("state")


@pytest.mark.slow(20)
def test_sigkill_mid_job_the_job_still_completes_once(worker_process, tiny_job, tmp_path):
    slow = fake_ffmpeg(tmp_path, sleep=3)
    # Short limits and visibility timeout: this judges kombu's own restore of an unacked
    # message (the last resort); the shipped defaults are judged in test_liveness.py.
    env = {"FFMPEG_BINARY": str(slow), "PREVIEW_SOFT_TIME_LIMIT": "8", "PREVIEW_TIME_LIMIT": "10",
           "PREVIEW_VISIBILITY_TIMEOUT": "15"}
    job = tiny_job()
    first = worker_process(env=env)
    mobius_preview.submit(job)
    wait_for(lambda: _state(job["jobId"]) == "running" and encode_count(tmp_path) == 1, timeout=30)
    first.kill_hard()  # the machine dies: main process, pool child and ffmpeg
    assert _state(job["jobId"]) == "running"

    # A new worker takes the message back once the visibility timeout has passed.
    worker_process(env=env)
    st = client.wait(job["jobId"], timeout=90)
    assert st["state"] == "succeeded", st
    assert st["renders"] == 1  # completed exactly once
    assert encode_count(tmp_path) == 2  # the killed encode, then the one that finished
    folder = Path(st["artifacts"]["manifest.json"]).parent
    assert manifest.verify(folder) == []


def test_sigterm_finishes_the_job_in_hand(worker_process, tiny_job, tmp_path):
    slow = fake_ffmpeg(tmp_path, sleep=2)
    job = tiny_job()
    w = worker_process(env={"FFMPEG_BINARY": str(slow)})
    mobius_preview.submit(job)
    wait_for(lambda: encode_count(tmp_path) == 1, timeout=30)
    assert w.stop(signal.SIGTERM, timeout=60) == 0
    st = client.status(job["jobId"])
    assert st["state"] == "succeeded" and st["renders"] == 1, w.output()[-2000:]
    assert records.queue_depths() == {"high": 0, "normal": 0, "low": 0}
