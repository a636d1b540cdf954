"""Lose a machine, not a job: real `celery -A mobius_preview worker` processes killed
with SIGKILL (main process, pool children, ffmpeg), the shipped PREVIEW_STALLED_SECONDS
(30) and the shipped visibility timeout (not shortened: it is not what brings jobs back)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import bulk_ffmpeg, fake_ffmpeg, small_job, wait_for

import mobius_preview
from mobius_preview import client, layout, liveness, records
from mobius_preview.config import settings
from mobius_preview.render import manifest

# The suite's own environment shortens the time limits and the visibility timeout;
# these workers run with what a deployment gets (600 s, 660 s, 2 x (660 + 5) s): only
# the heartbeat sweep can bring jobs back within seconds.
SHIPPED = {"PREVIEW_SOFT_TIME_LIMIT": "600", "PREVIEW_TIME_LIMIT": "660",
           "PREVIEW_VISIBILITY_TIMEOUT": "1330", "PREVIEW_STALLED_SECONDS": "30"}



def _running_on(job_id: str, name: str) -> dict | None:
    st = client.status(job_id)
    return st if st["state"] == "running" and (st["worker"] or "").startswith(f"{name}@") else None


@pytest.mark.slow(35)
def test_a_killed_workers_job_runs_again_within_the_stalled_seconds(worker_process, tmp_path):
    assert settings().stalled_seconds == 30  # the shipped default
    slow = fake_ffmpeg(tmp_path, sleep=500, sleep_first=1)  # the first encode "renders" for 500 s
    env = {**SHIPPED, "FFMPEG_BINARY": str(slow)}
    first = worker_process(env=env, name="first")
    job = small_job()
    mobius_preview.submit(job)
    wait_for(lambda: _running_on(job["jobId"], "first"), timeout=30)
    worker_process(env=env, name="second")
    running = client.status(job["jobId"])
    assert running["workerLastSeen"] is not None  # the worker proves it is alive
    first.kill_hard()
    killed = time.monotonic()
    again = wait_for(lambda: _running_on(job["jobId"], "second") or
                     (client.status(job["jobId"])["state"] == "succeeded" and client.status(job["jobId"])),
                     timeout=30 + 10, step=0.2)
    print(f"kill to running again: {time.monotonic() - killed:.1f} s")
    final = client.wait(job["jobId"], timeout=60)
    assert final["state"] == "succeeded" and final["completions"] == 1
    assert final["recovered"] == 1 and final["lostWorker"].startswith("first@"), final
    assert again["worker"].startswith("second@")
    kinds = [e.get("state") for _, kind, e in records.events(job["jobId"]) if kind == "state"]
    assert kinds == ["queued", "running", "queued", "running", "succeeded"], kinds


@pytest.mark.slow(45)
def test_a_slow_worker_keeps_its_job(worker_process, tmp_path):
    """A render outlasting PREVIEW_STALLED_SECONDS on a living worker, shipped timings.

    The sweep takes a message delivered more than PREVIEW_STALLED_SECONDS ago unless a
    worker whose heartbeat (a key expiring PREVIEW_STALLED_SECONDS after each beat) lives
    holds it. So the encode is held until both have been put to the test: the message past
    that age through at least two sweeps of each of two sweepers, and the busy worker's
    heartbeat renewed after the moment its beat from the delivery would have expired. A
    longer render only repeats these same checks; the job must stay with its worker.
    """
    assert settings().stalled_seconds == 30  # the shipped default
    release = tmp_path / "release"
    slow = fake_ffmpeg(tmp_path, hold=release, sleep_first=1)  # the first encode runs until released
    env = {**SHIPPED, "FFMPEG_BINARY": str(slow)}
    worker_process(env=env, name="busy")
    job = small_job()
    mobius_preview.submit(job)
    busy = wait_for(lambda: _running_on(job["jobId"], "busy"), timeout=30)["worker"]
    worker_process(env=env, name="idle")  # a living sweeper that would take the job if it could
    ((_, delivered),) = records.client().zrange(layout.unacked_index_key(), 0, -1, withscores=True)
    stalled = settings().stalled_seconds
    sweeps_every = max(1.0, stalled / 6)  # liveness.Heartbeat's tick

    def judged_and_kept() -> bool:
        st = client.status(job["jobId"])
        assert st["state"] == "running" and st["worker"] == busy and st["recovered"] == 0, st
        beat = liveness.last_seen(busy)
        return time.time() > delivered + stalled + 2 * sweeps_every + 1 and (beat or 0) > delivered + stalled

    wait_for(judged_and_kept, timeout=3 * stalled, step=0.5)
    print(f"held {time.time() - delivered:.1f} s after delivery")
    release.touch()
    final = client.wait(job["jobId"], timeout=60)
    record = records.get(job["jobId"])
    assert final["state"] == "succeeded" and final["renders"] == 1 and final["completions"] == 1
    assert record["deliveries"] == "1" and final["recovered"] == 0, record


@pytest.mark.slow(95)
@pytest.mark.timeout(900)  # its jobs are waited for with their own timeouts
def test_a_storm_of_whole_worker_kills_loses_no_job_and_runs_none_twice(worker_process, tmp_path):
    """20 SIGKILLs of whole workers across 300 jobs on 3 workers."""
    env = {**SHIPPED, "FFMPEG_BINARY": str(fake_ffmpeg(tmp_path, sleep=0.3, real=bulk_ffmpeg()))}
    jobs = [small_job() for _ in range(300)]
    workers = [worker_process(env=env, concurrency=2) for _ in range(3)]
    for job in jobs:
        mobius_preview.submit(job)
    rng = random.Random(11)
    for _ in range(20):
        time.sleep(rng.uniform(1.0, 2.5))
        victim = workers.pop(rng.randrange(len(workers)))
        victim.kill_hard()
        workers.append(worker_process(env=env, concurrency=2))
    finals = [client.wait(job["jobId"], timeout=300) for job in jobs]
    assert {f["state"] for f in finals} == {"succeeded"}
    assert all(f["completions"] == 1 for f in finals), [f for f in finals if f["completions"] != 1]
    assert all(f["renders"] <= 1 for f in finals), [f for f in finals if f["renders"] > 1]
    folders = {Path(f["artifacts"]["manifest.json"]).parent for f in finals}
    assert len(folders) == 300  # one stored preview per job, each complete
    assert all(manifest.verify(folder) == [] for folder in folders)
    recovered = sum(f["recovered"] for f in finals)
    print(f"20 kills, {recovered} jobs put back by the sweep")
    assert recovered >= 1


def test_the_sweep_restores_a_dead_workers_message_once_and_leaves_a_living_ones(redis_conn, make_job):
    """The sweep's rules on kombu's own unacked structures, four sweepers racing (threads
    with a connection each, as workers have, let go at once)."""
    queue = layout.queue_keys()[1]
    stale = time.time() - 60
    entries = {}
    for name, job in (("dead", make_job()), ("alive", make_job())):
        mobius_preview.submit(job)
        message = redis_conn.rpop(queue)  # as a worker's BRPOP would: now it is only in unacked
        tag = f"tag-{name}-{uuid.uuid4().hex[:6]}"
        redis_conn.hset(layout.unacked_key(), tag, f'[{message}, "", "{layout.queue("normal")}"]')
        redis_conn.zadd(layout.unacked_index_key(), {tag: stale})
        records.start(job["jobId"], state="running", worker=f"{name}@host")
        entries[name] = (tag, job["jobId"])
    liveness.beat(redis_conn, "alive@host", [entries["alive"][0]])
    racers, results = threading.Barrier(4), []

    def sweeper() -> None:
        conn = records.connect()
        conn.ping()  # connected before the race starts
        racers.wait()
        results.append(liveness.sweep(conn))

    threads = [threading.Thread(target=sweeper) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results, key=len) == [[], [], [], [entries["dead"][1]]], results  # one of them, once
    assert redis_conn.llen(queue) == 1  # put back once, at the front
    assert redis_conn.hexists(layout.unacked_key(), entries["alive"][0])  # a living worker keeps its own
    dead = client.status(entries["dead"][1])
    assert dead["state"] == "queued" and dead["recovered"] == 1 and dead["lostWorker"] == "dead@host"
    running = client.status(entries["alive"][1])
    assert running["state"] == "running" and running["workerLastSeen"] is not None
    liveness.forget(redis_conn, "alive@host")
    assert liveness.sweep(redis_conn) == [entries["alive"][1]]  # stopped: swept at once
    redis_conn.delete(layout.unacked_key(), layout.unacked_index_key())
