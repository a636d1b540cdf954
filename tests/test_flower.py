"""Flower against our app: basic auth from the environment, metrics and API answer."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import REPO, RUN_DIR, free_port

import mobius_preview
from mobius_preview import client


def get(url: str, auth: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def flower():
    port = free_port()
    log = (RUN_DIR / "flower.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "mobius_preview", "flower", f"--port={port}"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "FLOWER_BASIC_AUTH": "ops:s3cret-pass"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if get(f"{base}/healthcheck")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError((RUN_DIR / "flower.log").read_text())
        time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(timeout=20)


def test_flower_auth_metrics_and_api(flower, worker_process, make_job):
    worker_process()
    job = make_job()
    mobius_preview.submit(job)
    client.wait(job["jobId"], timeout=60)
    assert get(f"{flower}/")[0] == 401  # the dashboard needs the password
    assert get(f"{flower}/", auth="ops:wrong")[0] == 401
    assert get(f"{flower}/", auth="ops:s3cret-pass")[0] == 200
    status, text = get(f"{flower}/metrics")  # served without authentication
    assert status == 200 and "flower_events_total" in text
    assert get(f"{flower}/api/workers")[0] == 401
    deadline = time.monotonic() + 20
    while True:
        status, body = get(f"{flower}/api/workers?refresh=1", auth="ops:s3cret-pass")
        if (status == 200 and json.loads(body)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200 and json.loads(body), body


def test_flower_binds_to_localhost_by_default():
    import flowerconfig

    assert flowerconfig.address == "127.0.0.1"
