"""A private Redis (appendonly yes, appendfsync everysec) stopped or killed while jobs wait
and run, then started again: what it had acknowledged as accepted is not lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO, PrivateRedis, WorkerProcess, fake_ffmpeg, tiny_render_job, wait_for

from mobius_preview.render import manifest

pytestmark = pytest.mark.worker

CLIENT = """
import json, sys, time, mobius_preview
from mobius_preview import BrokerUnavailable
action, arg = sys.argv[1], sys.argv[2]
if action == "submit":
    for job in json.load(open(arg)):
        mobius_preview.submit(job)
    print("submitted")
elif action == "try":
    start = time.monotonic()
    try:
        mobius_preview.submit(json.load(open(arg))[0])
        print("accepted")
    except BrokerUnavailable as exc:
        print(f"refused in {time.monotonic() - start:.1f} s: {exc}")
elif action == "wait":
    states = [mobius_preview.wait(job["jobId"], timeout=120)["state"] for job in json.load(open(arg))]
    print(json.dumps(states))
elif action == "stream":  # submit until refused; a line per acknowledged acceptance, as it comes
    template, n = json.load(open(arg))[0], 0
    with open(arg + ".accepted", "a", buffering=1) as accepted:
        while True:
            n += 1
            job = dict(template, jobId=f"{template['jobId']}-{n}")
            job["previewRequest"] = dict(template["previewRequest"], title=f"stream {n}")
            try:
                mobius_preview.submit(job)
            except BrokerUnavailable:
                break
            accepted.write(f"{job['jobId']} {time.time()}\\n")
            time.sleep(0.1)
    print("refused")
elif action == "outcomes":  # each accepted job's end: state, completions, manifest
    outcomes = {}
    for line in open(arg + ".accepted").read().splitlines():
        job_id = line.split()[0]
        try:
            final = mobius_preview.wait(job_id, timeout=120)
            outcomes[job_id] = [final["state"], final["completions"], final["artifacts"].get("manifest.json")]
        except mobius_preview.JobNotFound:
            outcomes[job_id] = ["not found", 0, None]
    print(json.dumps(outcomes))
"""


def _succeeded_in_log(worker: WorkerProcess) -> int:
    return worker.output().count("] succeeded in ")


def _broker_lost_in_log(worker: WorkerProcess) -> bool:
    return "Connection to broker lost" in worker.output()


@pytest.mark.slow(25)
def test_jobs_survive_a_redis_restart(tmp_path):
    redis = PrivateRedis(tmp_path)
    redis.start()
    # Short limits and visibility timeout: this judges a Redis restart (AOF, reconnects),
    # not the loss of a worker, which test_liveness.py judges with the shipped defaults.
    overrides = {"REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
           "REDIS_KEY_PREFIX": f"restart-{uuid.uuid4().hex[:6]}:", "DATA_DIR": str(tmp_path / "data"),
           "PREVIEW_VISIBILITY_TIMEOUT": "15", "PREVIEW_SOFT_TIME_LIMIT": "8", "PREVIEW_TIME_LIMIT": "10",
           "PREVIEW_RESTORE_INTERVAL": "1", "FFMPEG_BINARY": str(fake_ffmpeg(tmp_path, sleep=0.3))}
    env = {**os.environ, **overrides}
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([tiny_render_job(resolution="160x90") for _ in range(30)]))

    def client(action: str, timeout: float = 180) -> str:
        proc = subprocess.run([sys.executable, "-c", CLIENT, action, str(jobs)], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.strip()

    worker = WorkerProcess(env=overrides, concurrency=2).start()
    try:
        assert client("submit") == "submitted"
        wait_for(lambda: _succeeded_in_log(worker) >= 2, timeout=60)  # some done, some running, most waiting
        redis.stop()
        outage = client("try", timeout=60)
        assert outage.startswith("refused in") and "the job was not accepted" in outage, outage
        assert float(outage.split()[2]) < 10  # a clear error, not a hang
        wait_for(lambda: _broker_lost_in_log(worker), timeout=30)  # the worker has seen Redis go
        redis.start()
        states = json.loads(client("wait"))
        assert states == ["succeeded"] * 30, states
        assert worker.proc.poll() is None  # the worker reconnected by itself
    finally:
        worker.stop(signal.SIGKILL, timeout=10)
        redis.stop()


# How long before a crash an acknowledged write may still be lost. Redis writes each
# command to the AOF (the kernel's page cache) before it answers the client, so killing
# the redis-server process alone loses nothing it acknowledged, except when everysec's
# background fsync is slow: Redis then postpones that write, answering meanwhile, for at
# most 2 s before it writes anyway. (A crash of the whole machine also loses what the
# kernel had not yet written to disk, about the last second with everysec; a test on one
# machine cannot cause that.)
AT_RISK_SECONDS = 2.0


@pytest.mark.slow(30)
def test_accepted_jobs_survive_a_redis_crash(tmp_path):
    """SIGKILL, not a shutdown, of a Redis with appendonly yes and appendfsync everysec,
    while jobs stream in, wait and run; then Redis is started again on its AOF.

    What is promised, and asserted: every job whose acceptance Redis acknowledged more than
    AT_RISK_SECONDS before the crash finishes, once, with a complete preview. A job
    acknowledged within the last AT_RISK_SECONDS may be gone, but only whole: the accept
    script writes its record and its message in one step (one AOF entry), so no job is left
    with a record and no message (stuck queued) or run twice. Every accepted job ends
    succeeded or not found, and the worker carries on by itself.
    """
    redis = PrivateRedis(tmp_path)
    redis.start()
    overrides = {"REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
                 "REDIS_KEY_PREFIX": f"crash-{uuid.uuid4().hex[:6]}:", "DATA_DIR": str(tmp_path / "data"),
                 "PREVIEW_VISIBILITY_TIMEOUT": "15", "PREVIEW_SOFT_TIME_LIMIT": "8",
                 "PREVIEW_TIME_LIMIT": "10", "PREVIEW_RESTORE_INTERVAL": "1"}
    env = {**os.environ, **overrides}
    template = tmp_path / "jobs.json"
    template.write_text(json.dumps([tiny_render_job(resolution="160x90")]))
    accepted_file = tmp_path / "jobs.json.accepted"

    def accepted() -> dict[str, float]:
        lines = accepted_file.read_text().splitlines() if accepted_file.exists() else []
        return {job_id: float(at) for job_id, at in (line.split() for line in lines if line.count(" ") == 1)}

    worker = WorkerProcess(env=overrides, concurrency=2).start()
    stream = subprocess.Popen([sys.executable, "-c", CLIENT, "stream", str(template)], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Jobs done, running and waiting, and enough of them accepted well before the crash.
        wait_for(lambda: _succeeded_in_log(worker) >= 2
                 and sum(at < time.time() - AT_RISK_SECONDS - 0.5 for at in accepted().values()) >= 10,
                 timeout=60)
        crashed_at = time.time()
        redis.crash()
        out, err = stream.communicate(timeout=60)
        assert out.strip() == "refused", err[-3000:]
        wait_for(lambda: _broker_lost_in_log(worker), timeout=30)
        redis.start()  # the same folder: the AOF as the crash left it
        proc = subprocess.run([sys.executable, "-c", CLIENT, "outcomes", str(template)], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outcomes = json.loads(proc.stdout)
        assert worker.proc.poll() is None  # the worker reconnected by itself
    finally:
        if stream.poll() is None:
            stream.kill()
        worker.stop(signal.SIGKILL, timeout=10)
        redis.stop()
    at = accepted()
    assert set(outcomes) == set(at) and len(at) >= 10
    old = {job_id for job_id, t in at.items() if t < crashed_at - AT_RISK_SECONDS}
    gone = {job_id for job_id, (state, _, _) in outcomes.items() if state == "not found"}
    print(f"{len(at)} accepted, {len(old)} more than {AT_RISK_SECONDS} s before the crash; "
          f"gone: {len(gone)}, acknowledged {sorted(round(crashed_at - at[j], 2) for j in gone)} s before it")
    assert len(old) >= 10 and not old & gone, sorted(old & gone)
    assert {state for state, _, _ in outcomes.values()} <= {"succeeded", "not found"}, outcomes
    done = [(runs, path) for state, runs, path in outcomes.values() if state == "succeeded"]
    assert all(runs == 1 for runs, _ in done), done  # none ran twice
    assert all(manifest.verify(Path(path).parent) == [] for _, path in done)
