"""The API as `mobius-preview api` processes: links across processes, several workers,
and an event loop that never waits on Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import PrivateRedis, free_port

KEY = "process-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


class ApiProcess:
    def __init__(self, env: dict[str, str], workers: int = 1):
        self.port = free_port()
        exe = str(Path(sys.executable).parent / "mobius-preview")
        self.proc = subprocess.Popen(
            [exe, "api", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)],
            env={**os.environ, "PREVIEW_API_KEYS": KEY, **env}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"API did not start: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=20)


@pytest.fixture
def api_process():
    started: list[ApiProcess] = []

    def start(env: dict[str, str] | None = None, workers: int = 1) -> ApiProcess:
        api = ApiProcess({"PREVIEW_SIGNING_KEY": "", **(env or {})}, workers)
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


def _signed_links(api: ApiProcess, job_id: str, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(f"{api.url}/v1/previews/{job_id}", headers=AUTH, timeout=10).json()
        if body["state"] == "succeeded":
            return body["links"]["artifacts"]
        time.sleep(0.2)
    raise TimeoutError(job_id)


@pytest.mark.slow(8)
def test_a_link_signed_by_one_api_process_opens_in_another(api_process, worker, tiny_job):
    """No PREVIEW_SIGNING_KEY: every process derives the same key from PREVIEW_API_KEYS."""
    one, two = api_process(), api_process(workers=2)
    job = tiny_job()
    assert httpx.post(f"{one.url}/v1/previews", json=job, headers=AUTH, timeout=30).status_code == 202
    links = _signed_links(one, job["jobId"])
    poster = links["poster.png"]
    for _ in range(10):  # two processes behind one port: both get some of these
        response = httpx.get(f"{two.url}{poster}", timeout=10)
        assert response.status_code == 200 and response.content[:8] == b"\x89PNG\r\n\x1a\n"
    query = urlsplit(poster).query.replace("sig=", "sig=0")
    assert httpx.get(f"{two.url}{urlsplit(poster).path}?{query}", timeout=10).status_code == 403


@pytest.mark.slow(5)
def test_healthz_answers_while_redis_is_stalled_and_readyz_says_why(api_process, tmp_path):
    redis = PrivateRedis(tmp_path)
    redis.start()
    api = api_process({"REDIS_URL": f"redis://127.0.0.1:{redis.port}/0"})
    assert httpx.get(f"{api.url}/v1/queues", headers=AUTH, timeout=10).status_code == 200
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        stuck: dict[str, float] = {}

        def slow_request() -> None:  # waits on the stalled Redis (its socket timeout)
            start = time.monotonic()
            try:
                httpx.get(f"{api.url}/v1/queues", headers=AUTH, timeout=30)
            finally:
                stuck["done"] = time.monotonic() - start

        threads = [threading.Thread(target=slow_request) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # the four requests are waiting on Redis now
        alive = httpx.get(f"{api.url}/healthz", timeout=10)
        assert alive.status_code == 200 and alive.json() == {"status": "alive"}
        assert "done" not in stuck, "healthz waited for the requests stuck on Redis"
        ready = httpx.get(f"{api.url}/readyz", timeout=30)
        assert ready.status_code == 503
        assert any("broker unreachable" in reason for reason in ready.json()["reasons"]), ready.json()
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
        for t in threads:
            t.join(timeout=60)
        redis.stop()
