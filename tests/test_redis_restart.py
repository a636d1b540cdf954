"""A private Redis (appendonly yes) restarted while jobs wait and run: nothing accepted is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from conftest import REPO, PrivateRedis, WorkerProcess, fake_ffmpeg, tiny_render_job

CLIENT = """
import json, sys, time, mobius_preview
from mobius_preview import BrokerUnavailable
action, arg = sys.argv[1], sys.argv[2]
if action == "submit":
    for job in json.load(open(arg)):
        mobius_preview.submit(job)
    print("submitted")
elif action == "try":
    start = time.monotonic()
    try:
        mobius_preview.submit(json.load(open(arg))[0])
        print("accepted")
    except BrokerUnavailable as exc:
        print(f"refused in {time.monotonic() - start:.1f} s: {exc}")
elif action == "wait":
    states = [mobius_preview.wait(job["jobId"], timeout=120)["state"] for job in json.load(open(arg))]
    print(json.dumps(states))
"""


@pytest.mark.slow
def test_jobs_survive_a_redis_restart(tmp_path):
    redis = PrivateRedis(tmp_path)
    redis.start()
    # Short limits and visibility timeout: this judges a Redis restart (AOF, reconnects),
    # not the loss of a worker, which test_liveness.py judges with the shipped defaults.
    overrides = {"REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
           "REDIS_KEY_PREFIX": f"restart-{uuid.uuid4().hex[:6]}:", "DATA_DIR": str(tmp_path / "data"),
           "PREVIEW_VISIBILITY_TIMEOUT": "15", "PREVIEW_SOFT_TIME_LIMIT": "8", "PREVIEW_TIME_LIMIT": "10",
           "PREVIEW_RESTORE_INTERVAL": "1", "FFMPEG_BINARY": str(fake_ffmpeg(tmp_path, sleep=0.3))}
    env = {**os.environ, **overrides}
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([tiny_render_job(resolution="160x90") for _ in range(30)]))

    def client(action: str, timeout: float = 180) -> str:
        proc = subprocess.run([sys.executable, "-c", CLIENT, action, str(jobs)], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.strip()

    worker = WorkerProcess(env=overrides, concurrency=2).start()
    try:
        assert client("submit") == "submitted"
        time.sleep(1.0)  # some jobs done, some running, most waiting
        redis.stop()
        outage = client("try", timeout=60)
        assert outage.startswith("refused in") and "the job was not accepted" in outage, outage
        assert float(outage.split()[2]) < 10  # a clear error, not a hang
        time.sleep(2)
        redis.start()
        states = json.loads(client("wait"))
        assert states == ["succeeded"] * 30, states
        assert worker.proc.poll() is None  # the worker reconnected by itself
    finally:
        worker.stop(signal.SIGKILL, timeout=10)
        redis.stop()
