"""Faults with real processes: SIGKILL storms, hung renders, a broken or full DATA_DIR."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from conftest import bulk_ffmpeg, encode_count, fake_ffmpeg, small_job, tiny_render_job

import mobius_preview
from mobius_preview import client, records
from mobius_preview.render import manifest

# Short limits and visibility timeout on purpose: these tests judge the time limits and
# kombu's visibility-timeout restore, the last resort behind the heartbeat sweep. What
# the shipped defaults do when a worker is lost is judged in test_liveness.py.
SHORT = {"PREVIEW_SOFT_TIME_LIMIT": "8", "PREVIEW_TIME_LIMIT": "10", "PREVIEW_VISIBILITY_TIMEOUT": "15",
         "PREVIEW_RESTORE_INTERVAL": "1"}



@pytest.mark.slow(60)
@pytest.mark.timeout(900)  # its jobs are waited for with their own timeouts
def test_sigkill_storm_every_job_succeeds_exactly_once(worker_process, tmp_path):
    env = {**SHORT, "FFMPEG_BINARY": str(fake_ffmpeg(tmp_path, sleep=0.05, real=bulk_ffmpeg()))}
    jobs = [small_job() for _ in range(200)]
    w = worker_process(env=env, concurrency=2)
    for job in jobs:
        mobius_preview.submit(job)
    kills = 0
    rng = random.Random(7)
    while kills < 4:
        time.sleep(rng.uniform(2, 4))
        w.kill_hard()  # main process, pool children and ffmpeg, mid-render
        kills += 1
        w = worker_process(env=env, concurrency=2)
    finals = [client.wait(job["jobId"], timeout=240) for job in jobs]
    states = {f["state"] for f in finals}
    assert states == {"succeeded"}, states
    assert all(f["completions"] == 1 for f in finals), [f for f in finals if f["completions"] != 1]
    assert all(f["renders"] <= 1 for f in finals)
    folders = {Path(f["artifacts"]["manifest.json"]).parent for f in finals}
    assert len(folders) == 200  # one stored preview per job, each complete
    assert all(manifest.verify(folder) == [] for folder in folders)
    print(f"{kills} SIGKILLs; renders {sum(f['renders'] for f in finals)}, "
          f"encodes started {encode_count(tmp_path)}")


@pytest.mark.slow(10)
def test_a_hung_render_is_ended_by_the_time_limit_and_the_worker_carries_on(worker_process, tmp_path):
    hang = fake_ffmpeg(tmp_path, sleep=60)
    env = {"FFMPEG_BINARY": str(hang), "PREVIEW_SOFT_TIME_LIMIT": "3", "PREVIEW_TIME_LIMIT": "5",
           "PREVIEW_VISIBILITY_TIMEOUT": "15", "PREVIEW_MAX_TRIES": "2"}
    worker_process(env=env)
    job = small_job()
    started = time.monotonic()
    mobius_preview.submit(job)
    st = client.wait(job["jobId"], timeout=60)
    assert st["state"] == "dead" and st["attempts"] == 2 and st["errorKind"] == "transient"
    # Whichever limit fires first: ffmpeg's own timeout or Celery's soft time limit.
    assert ("timed out after 3 s" in st["error"]
            or "longer than PREVIEW_SOFT_TIME_LIMIT (3 s)" in st["error"]), st["error"]
    assert time.monotonic() - started < 30
    dry = tiny_render_job()
    dry["dryRun"] = True
    mobius_preview.submit(dry)
    assert client.wait(dry["jobId"], timeout=30)["state"] == "succeeded"  # same worker, still healthy


def _store_is_clean(data_dir: Path) -> None:
    previews = data_dir / "previews"
    assert not previews.exists() or not any(previews.iterdir())


def test_unwritable_data_dir_is_retried_then_dead_lettered_with_nothing_stored(worker_process, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "tmp").write_text("not a folder")  # every render's workspace fails to appear
    worker_process(env={"DATA_DIR": str(data), "PREVIEW_MAX_TRIES": "2"})
    job = small_job()
    mobius_preview.submit(job)
    st = client.wait(job["jobId"], timeout=60)
    assert st["state"] == "dead" and st["attempts"] == 2 and st["errorKind"] == "transient"
    assert "Error" in st["error"]
    _store_is_clean(data)


def test_full_disk_is_retried_then_dead_lettered_with_nothing_stored(worker_process, tmp_path):
    if os.geteuid() != 0 or not Path("/bin/mount").exists():
        print("SKIP REASON: a real full file system needs root to mount a small tmpfs")
        pytest.skip("needs root to mount a tmpfs")
    data = tmp_path / "full"
    data.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(data)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        print(f"SKIP REASON: cannot mount a tmpfs here: {mounted.stderr.strip()}")
        pytest.skip("cannot mount a tmpfs")
    try:
        worker_process(env={"DATA_DIR": str(data), "PREVIEW_MAX_TRIES": "2"})
        job = small_job()
        job["previewRequest"]["options"]["resolution"] = "640x360"  # frames larger than the disk
        mobius_preview.submit(job)
        st = client.wait(job["jobId"], timeout=60)
        assert st["state"] == "dead" and st["attempts"] == 2, st
        assert "No space left on device" in st["error"] or "ENOSPC" in st["error"] or "space" in st["error"]
        _store_is_clean(data)
        assert not any((data / "tmp").iterdir())  # failed renders cleaned up after themselves
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)
    assert records.queue_depths() == {"high": 0, "normal": 0, "low": 0}
