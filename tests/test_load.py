"""2,000 jobs of mixed priority through 2 workers: 5% poisoned, 5% flaky; nothing lost."""

from __future__ import annotations

import random
import statistics
import time
import uuid

import pytest
from conftest import bulk_ffmpeg, tiny_render_job

import mobius_preview
from mobius_preview import client, dlq, records

TOTAL = 2000


def flaky_ffmpeg(tmp_path):
    """ffmpeg whose first join of each content key fails (a transient error that heals)."""
    markers = tmp_path / "flaky"
    markers.mkdir()
    script = tmp_path / "ffmpeg-flaky"
    script.write_text(f"""#!/bin/sh
case "$*" in
  *slides.ffconcat*)
    key=$(echo "$*" | sed -n 's#.*/tmp/\\([0-9a-f]\\{{64\\}}\\)\\..*#\\1#p')
    if [ -n "$key" ] && mkdir {markers}/$key 2>/dev/null; then echo "flaky encoder" >&2; exit 1; fi ;;
esac
exec {bulk_ffmpeg()} "$@"
""")
    script.chmod(0o755)
    return script


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def mixed_jobs(rng, make_job):
    """TOTAL jobs at random priorities, 5% poisoned (a missing image), 5% flaky, shuffled."""
    kinds = ["poison"] * (TOTAL // 20) + ["flaky"] * (TOTAL // 20)
    kinds += ["plain"] * (TOTAL - len(kinds))
    rng.shuffle(kinds)
    jobs = []
    for kind in kinds:
        priority = rng.choice(["high", "normal", "low"])
        if kind == "plain":
            job = make_job(priority=priority)
        else:
            job = tiny_render_job(resolution="160x90", fps=5)
            job["priority"] = priority
            job["previewRequest"]["steps"][0]["text"] = uuid.uuid4().hex
            if kind == "poison":
                job["previewRequest"]["assets"][0]["path"] = "images/poison.png"
        jobs.append((kind, job))
    return jobs


def check_outcomes(finals):
    """Poisoned jobs dead after one attempt, flaky ones succeeded on the second, the rest on the first."""
    letters = {letter["jobId"]: letter for letter in dlq.list_letters()}
    for kind, final in finals.values():
        if kind == "poison":
            assert final["state"] == "dead" and final["attempts"] == 1  # never retried
            assert "file not found: 'images/poison.png'" in letters[final["jobId"]]["error"]
        elif kind == "flaky":
            assert final["state"] == "succeeded" and final["attempts"] == 2
        else:
            assert final["state"] == "succeeded" and final["attempts"] == 1


@pytest.mark.slow(50)
@pytest.mark.timeout(900)  # its jobs are waited for with their own timeouts
def test_two_thousand_jobs(worker_process, tmp_path, make_job, settings_env):
    settings_env(PREVIEW_QUEUE_MAX=str(2 * TOTAL))
    jobs = mixed_jobs(random.Random(2026), make_job)

    started = time.monotonic()
    for _, job in jobs:
        mobius_preview.submit(job)
    submitted = time.monotonic() - started
    env = {"FFMPEG_BINARY": str(flaky_ffmpeg(tmp_path))}
    worker_process(env=env, concurrency=2, name="load-a")
    worker_process(env=env, concurrency=2, name="load-b")
    finals = {}
    for kind, job in jobs:
        finals[job["jobId"]] = (kind, client.wait(job["jobId"], timeout=600, poll=0.2))
    drained = time.monotonic() - started

    succeeded = [f for _, f in finals.values() if f["state"] == "succeeded"]
    dead = [f for _, f in finals.values() if f["state"] == "dead"]
    assert len(succeeded) + len(dead) == TOTAL
    assert all(f["completions"] == 1 for f in succeeded)
    check_outcomes(finals)
    assert len(dead) == TOTAL // 20

    waits = {"high": [], "normal": [], "low": []}
    for job_id, (_kind, final) in finals.items():
        if final["attempts"] == 1:
            record = records.get(job_id)
            waits[final["priority"]].append(float(record["startedTs"]) - float(record["submittedTs"]))
    lines = [f"{TOTAL} jobs submitted in {submitted:.1f} s, all finished {drained:.1f} s after the first "
             f"submission: {len(succeeded)} succeeded, {len(dead)} dead (all poisoned)"]
    for priority, values in waits.items():
        lines.append(f"  wait {priority:6s} n={len(values):4d} p50={percentile(values, .5):6.2f} s "
                     f"p90={percentile(values, .9):6.2f} s max={max(values):6.2f} s")
    print("\n" + "\n".join(lines))
    medians = [statistics.median(waits[p]) for p in ("high", "normal", "low")]
    assert medians == sorted(medians) and medians[0] < medians[2]
    assert percentile(waits["high"], 0.9) < percentile(waits["low"], 0.1)
