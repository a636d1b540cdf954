"""health(): one answer, fast, with reasons; the CLI exits 0/1/2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mobius_preview import health, layout, records


def cli_health(env: dict | None = None) -> tuple[int, dict, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "mobius-preview"), "health"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )
    return proc.returncode, json.loads(proc.stdout), time.monotonic() - started


def test_healthy_with_a_worker(worker_process):
    worker_process()
    report = health.check()
    assert report["status"] == "healthy", report["reasons"]
    assert report["code"] == 0 and report["workers"]["count"] == 1
    assert report["broker"]["ok"] and report["broker"]["latencyMs"] < 1000
    assert report["disk"]["freeBytes"] > 0 and report["ffmpeg"]["ffmpeg"]


def test_degraded_with_dead_letters(worker_process):
    worker_process()
    records.client().hset(layout.dead_key(), "some-job", json.dumps({"jobId": "some-job"}))
    report = health.check()
    assert report["status"] == "degraded" and report["code"] == 1
    assert "1 jobs in the dead-letter queue" in report["reasons"]


@pytest.mark.slow(25)
def test_down_without_workers():
    code, report, _ = cli_health()
    assert code == 2 and report["status"] == "down"
    assert "no worker answered a ping" in report["reasons"]


@pytest.mark.slow(12)
def test_down_when_the_broker_is_unreachable(settings_env):
    code, report, _ = cli_health({"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert code == 2 and report["status"] == "down"
    assert report["reasons"][0].startswith("broker unreachable")
    # A broker that accepts connections and never answers (a hung Redis), on loopback.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        settings_env(REDIS_URL=f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        started = time.monotonic()
        report = health.check()
        print(f"health with a silent broker answered in {time.monotonic() - started:.2f} s")
    assert report["status"] == "down" and report["broker"]["error"]
