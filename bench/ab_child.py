"""One measurement of our queue layer alone, for bench/ab.py: run with cwd = a checkout.

Prints one JSON line: .delay() and submit_many rates, client CPU and Redis CPU per job
(INFO cpu of a Redis this run has to itself), and the drain of 1,000 dry runs by one
prefork worker (x2): its rate, Redis CPU per job, the worker's CPU (main + children).
REDIS_URL must be set (bench/ab.py starts an embedded Redis).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds bench/queue.py, named like the standard library's queue module: keep
# it off the path; put the checkout's package first (not the installed one).
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(Path.cwd()))

import json
import os
import subprocess
import tempfile
import time
import uuid

os.environ["REDIS_KEY_PREFIX"] = f"ab-{uuid.uuid4().hex[:6]}:"
os.environ["PREVIEW_QUEUE_MAX"] = "1000000"
os.environ["LOG_LEVEL"] = "WARNING"
os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="mobius-ab-data-"))

import mobius_preview
from mobius_preview import layout, records


def job(n: int) -> dict:
    return {"jobId": f"b-{uuid.uuid4().hex[:12]}-{n}", "projectId": "bench", "requestId": f"r{n}",
            "dryRun": True, "priority": "normal", "previewRequest": {"steps": [], "assets": [], "audio": {}}}


def clear() -> None:
    conn = records.client()
    for key in conn.scan_iter(match=os.environ["REDIS_KEY_PREFIX"] + "*", count=1000):
        if "_kombu.binding" not in key:
            conn.delete(key)


def redis_cpu() -> float:
    info = records.client().info("cpu")
    return float(info["used_cpu_sys"] + info["used_cpu_user"])


def submissions(out: dict[str, float]) -> None:
    mobius_preview.render_preview.delay(job(-1))  # warm: scripts loaded, connections open
    clear()
    jobs = [job(i) for i in range(1000)]
    wall, cpu, rcpu = time.perf_counter(), time.process_time(), redis_cpu()
    for j in jobs:
        mobius_preview.render_preview.delay(j)
    out["delay"] = 1000 / (time.perf_counter() - wall)
    out["delay_cpu_ms"] = (time.process_time() - cpu) * 1000 / 1000
    out["delay_redis_us"] = (redis_cpu() - rcpu) * 1e6 / 1000
    clear()
    jobs = [job(i) for i in range(3000)]
    wall, cpu, rcpu = time.perf_counter(), time.process_time(), redis_cpu()
    for i in range(0, 3000, 500):
        mobius_preview.submit_many(jobs[i:i + 500])
    out["bulk"] = 3000 / (time.perf_counter() - wall)
    out["bulk_cpu_us"] = (time.process_time() - cpu) * 1e6 / 3000
    out["bulk_redis_us"] = (redis_cpu() - rcpu) * 1e6 / 3000
    clear()


def drain(out: dict[str, float]) -> None:
    jobs = [job(i) for i in range(1000)]
    mobius_preview.submit_many(jobs)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "mobius_preview", "worker", "--pool=prefork",
         "--concurrency=2", "--loglevel=WARNING", "--without-gossip", "--without-mingle",
         f"--hostname=ab{uuid.uuid4().hex[:4]}@%h"],
        cwd=os.getcwd(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conn = records.client()
    rcpu = redis_cpu()
    deadline = time.monotonic() + 300
    while sum(records.queue_depths().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    while time.monotonic() < deadline:
        pipe = conn.pipeline(transaction=False)
        for j in jobs:
            pipe.hmget(layout.job_key(j["jobId"]), "state", "startedTs", "finishedTs")
        rows = pipe.execute()
        if all(r[0] == "succeeded" for r in rows):
            break
        time.sleep(0.05)
    out["drain_redis_us"] = (redis_cpu() - rcpu) * 1e6 / 1000
    worker.terminate()
    _, _, usage = os.wait4(worker.pid, 0)
    out["drain_worker_cpu_s"] = usage.ru_utime + usage.ru_stime
    out["drain"] = len(rows) / (max(float(r[2]) for r in rows) - min(float(r[1]) for r in rows))
    clear()


if __name__ == "__main__":
    results: dict[str, float] = {}
    submissions(results)
    drain(results)
    print(json.dumps(results))
