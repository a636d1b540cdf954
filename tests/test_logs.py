"""Structured logs: JSON lines carrying the job's fields, secrets masked."""

from __future__ import annotations

import io
import json
import logging

from conftest import fake_ffmpeg, tiny_render_job

import mobius_preview
from mobius_preview import client, logs
from mobius_preview.config import mask_url


def test_worker_logs_json_lines_with_job_fields(worker_process, tmp_path):
    job = tiny_render_job()
    job["priority"] = "high"
    w = worker_process(env={"LOG_FORMAT": "json",
                            "FFMPEG_BINARY": str(fake_ffmpeg(tmp_path, fail_first=1))})
    mobius_preview.submit(job)
    assert client.wait(job["jobId"], timeout=60)["state"] == "succeeded"
    w.stop()
    lines = [json.loads(line) for line in w.output().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("jobId") == job["jobId"]]
    messages = [line["message"] for line in mine]
    assert any(m == "job started" for m in messages)
    assert any(m.startswith("job failed (EncoderError") for m in messages)
    assert any(m.startswith("job succeeded in") for m in messages)
    assert any("received" in m for m in messages)  # Celery's own line, tagged by its id
    for line in mine:
        if line["message"].startswith("job "):
            assert line["requestId"] == job["requestId"] and line["projectId"] == job["projectId"]
            assert line["priority"] == "high" and line["attempt"] in (1, 2)
            assert {"time", "level", "logger"} <= set(line)
    attempts = {line["attempt"] for line in mine if line["message"].startswith("job ")}
    assert attempts == {1, 2}


def test_text_format_and_masking(settings_env):
    settings_env(REDIS_URL="redis://app:hunter2@127.0.0.1:6390/0", LOG_FORMAT="text")
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [h for h in root.handlers if not getattr(h, "_mobius", False)]
    try:
        logs.configure(stream)
        with logs.job_context(jobId="j1", requestId="r1", projectId="p1", attempt=1, priority="low"):
            logging.getLogger("some.library").warning("connecting to redis://app:hunter2@127.0.0.1:6390/0")
    finally:
        root.handlers = saved
    out = stream.getvalue()
    assert "hunter2" not in out and "redis://app:***@127.0.0.1:6390/0" in out
    assert "jobId=j1" in out and "requestId=r1" in out and not out.startswith("{")
    assert mask_url("rediss://:pw@h:1/0") == "rediss://:***@h:1/0"
