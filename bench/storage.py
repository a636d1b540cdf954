"""Local disk against the object store, in one run: first render, one-step edit on the same
host, one-step edit on another host (an empty segment cache: every segment comes from the
bucket), cache hit, artifact GET (through the API's code path).

    .venv/bin/python bench/storage.py [--rounds 3] [--steps 10]

The store is a real SeaweedFS started here (tests/seaweed.py). Everything runs in this
process through tasks.execute (the worker's own function, no queue): the times are worker
time, submit-to-done adds the queue's round trip (bench/task.py measures that).
Aims (issue 19): an edit on another host within 1.5x of an edit on the same host; a cache
hit well under 50 ms.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "tests"))

import argparse
import copy
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid

import seaweed

WORK = Path(tempfile.mkdtemp(prefix="mobius-bench-storage-"))
os.environ.update({"DATA_DIR": str(WORK / "host-a"), "LOG_LEVEL": "WARNING",
                   "ASSETS_DIR": str(HERE.parent / "schemas" / "examples" / "assets")})

from mobius_preview import config, storage, tasks


def job(steps: int) -> dict:
    return {
        "jobId": f"bench-{uuid.uuid4().hex[:10]}", "projectId": "proj-catan-demo",
        "requestId": "r", "dryRun": False,
        "previewRequest": {
            "title": "bench", "audio": {},
            "steps": [{"id": f"s{i}", "title": f"Step {i}", "text": f"text {i} {uuid.uuid4().hex}",
                       "durationSec": 2, "image": "board"} for i in range(steps)],
            "assets": [{"id": "board", "type": "image", "path": "images/board.png"}],
            "options": {"resolution": "640x360", "fps": 15, "format": "mp4"},
        },
    }


def edited(base: dict, step: int) -> dict:
    new = copy.deepcopy(base)
    new["jobId"] = f"bench-{uuid.uuid4().hex[:10]}"
    new["previewRequest"]["steps"][step]["title"] = f"edited {uuid.uuid4().hex[:6]}"
    return new


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def host(name: str) -> None:
    """Become another host: a DATA_DIR of its own (its segment cache empty)."""
    os.environ["DATA_DIR"] = str(WORK / name)
    config.reload()
    tasks._length_and_files.cache_clear()


def get_video(outcome: dict) -> None:
    stored = storage.stored(outcome["folder"])
    location = stored.files["preview.mp4"]
    storage.read_range(location, 0, storage.file_size(location))


def one_round(steps: int, tier: str, n: int) -> dict[str, float]:
    host(f"{tier}-{n}-a")
    base = job(steps)
    out: dict[str, float] = {}
    result: dict = {}
    out["first"] = timed(lambda: result.update(tasks.execute(base)))
    out["edit_same_host"] = timed(lambda: tasks.execute(edited(base, 1)))
    host(f"{tier}-{n}-b")
    out["edit_other_host"] = timed(lambda: tasks.execute(edited(base, 2)))
    again = copy.deepcopy(base)
    again["jobId"] = f"bench-{uuid.uuid4().hex[:10]}"
    out["cache_hit"] = timed(lambda: tasks.execute(again))
    out["artifact_get"] = timed(lambda: get_video(result))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    server = seaweed.start(WORK / "weed")
    server.bucket_create("bench")
    results: dict[str, list[dict[str, float]]] = {"local": [], "s3": []}
    try:
        for n in range(args.rounds):  # alternate, so the machine's drift hits both alike
            for tier in ("local", "s3"):
                for name in ("PREVIEW_STORAGE_URL", *server.env()):
                    os.environ.pop(name, None)
                if tier == "s3":
                    os.environ.update({**server.env(), "PREVIEW_STORAGE_URL": f"s3://bench/r{n}"})
                results[tier].append(one_round(args.steps, tier, n))
    finally:
        server.kill()
        shutil.rmtree(WORK, ignore_errors=True)
    print(f"{args.steps} steps of 2 s at 640x360, {args.rounds} rounds, median ms (worker time)")
    print(f"{'measure':18} {'local disk':>11} {'object store':>13}")
    for measure in results["local"][0]:
        local = statistics.median(r[measure] for r in results["local"])
        remote = statistics.median(r[measure] for r in results["s3"])
        print(f"{measure:18} {local:11.1f} {remote:13.1f}")
    s3 = {m: statistics.median(r[m] for r in results["s3"]) for m in results["s3"][0]}
    print(f"edit on another host / same host (store): {s3['edit_other_host'] / s3['edit_same_host']:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
