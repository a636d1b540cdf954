"""Many hosts that share no disk: two workers and the API with a DATA_DIR each, sharing only
Redis and a real SeaweedFS (PREVIEW_STORAGE_URL). As root each process runs in a mount
namespace where the other hosts' DATA_DIRs are empty tmpfs mounts, so no file can cross;
otherwise the test checks that no path of one host appears in another's answers.

Also: the store killed in the middle of a publish leaves nothing that looks done, and a
job whose store dies mid-render is retried and ends with one complete preview.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest
import seaweed
from conftest import RUN_DIR, WorkerProcess, free_port, tiny_render_job, wait_for

import mobius_preview
from mobius_preview import client, config, objectstore, storage
from mobius_preview.errors import ObjectMissing, StoreUnavailable

pytestmark = pytest.mark.worker
BUCKET = "mobius-hosts"
KEY = "hosts-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
ISOLATED = os.geteuid() == 0 and os.path.exists("/usr/bin/unshare")


@pytest.fixture(scope="module")
def store_server(tmp_path_factory):
    srv = seaweed.start(tmp_path_factory.mktemp("weed"))
    srv.bucket_create(BUCKET)
    yield srv
    srv.kill()


@pytest.fixture
def hosts(store_server, monkeypatch):
    """Three DATA_DIRs and the environment each host runs with (this process takes the
    API's settings, so storage.* here reads the bucket as the API host does)."""
    base = RUN_DIR / f"hosts-{uuid.uuid4().hex[:8]}"
    dirs = {name: base / name for name in ("a", "b", "api")}
    for folder in dirs.values():
        folder.mkdir(parents=True)
    url = f"s3://{BUCKET}/run-{uuid.uuid4().hex[:8]}"
    common = {**store_server.env(), "PREVIEW_STORAGE_URL": url, "PREVIEW_API_KEYS": KEY,
              "PREVIEW_SIGNING_KEY": ""}
    envs = {name: {**common, "DATA_DIR": str(folder)} for name, folder in dirs.items()}
    for name, value in envs["api"].items():
        monkeypatch.setenv(name, value)
    config.reload()
    yield dirs, envs
    for name in common:
        monkeypatch.delenv(name, raising=False)
    config.reload()


def hidden(dirs: dict[str, Path], me: str) -> list[str]:
    """A command prefix that runs the command with the other hosts' DATA_DIRs covered by
    empty tmpfs mounts (a private mount namespace); nothing when not root."""
    if not ISOLATED:
        return []
    others = [str(d) for name, d in dirs.items() if name != me]
    script = " && ".join(f'mount -t tmpfs tmpfs "${i + 1}"' for i in range(len(others)))
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f'{script} && shift {len(others)} && exec "$@"', "sh", *others]


def start_worker(dirs, envs, name: str) -> WorkerProcess:
    worker = WorkerProcess(env=envs[name], name=f"host-{name}-{uuid.uuid4().hex[:4]}")
    worker.args = hidden(dirs, name) + worker.args
    return worker.start()


class Api:
    def __init__(self, dirs, envs) -> None:
        self.port = free_port()
        exe = str(Path(sys.executable).parent / "mobius-preview")
        cmd = [*hidden(dirs, "api"), exe, "api", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env={**os.environ, **envs["api"]}, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(self._up, timeout=30)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("API exited")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30, **kw)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=20)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _complete(api: Api, job_id: str) -> dict:
    """The job's status; every file its manifest lists served whole, matching its sha256."""
    status = api.get(f"/v1/previews/{job_id}", headers=AUTH).json()
    assert status["state"] == "succeeded", status
    served = api.get(f"/v1/previews/{job_id}/artifacts/manifest.json", headers=AUTH)
    assert served.status_code == 200, served.text
    listed = json.loads(served.content)
    for entry in listed["files"]:
        got = api.get(f"/v1/previews/{job_id}/artifacts/{entry['name']}", headers=AUTH)
        body = got.content
        if entry["name"] == "preview.m3u8":  # served with the reader's signed query on each URI
            body = re.sub(rb"\?expires=[^\s\"]+", b"", body)
        assert got.status_code == 200 and _sha(body) == entry["sha256"], entry["name"]
    return status


def test_two_worker_hosts_and_an_api_host_share_only_redis_and_the_store(hosts):
    dirs, envs = hosts
    api = Api(dirs, envs)
    worker_a = start_worker(dirs, envs, "a")
    try:
        first = tiny_render_job()
        # Its picture is in the bucket, not on a host's disk: an s3:// URL, as an upload returns it.
        cfg = config.settings()
        where = "assets/proj-catan-demo/images/board.png"
        storage.remote().put_file(where, cfg.assets_dir / "proj-catan-demo" / "images" / "board.png")
        first["previewRequest"]["assets"] = [{"id": "board", "type": "image",
                                              "url": f"{cfg.storage_url}/{where}"}]
        mobius_preview.submit(first)
        done = client.wait(first["jobId"], timeout=120)
        assert done["state"] == "succeeded" and not done["cacheHit"], done
        assert all(v.startswith("s3://") for v in done["artifacts"].values()), done["artifacts"]

        # The API host serves A's video from the store: whole, and a range of it.
        status = _complete(api, first["jobId"])
        video = api.get(f"/v1/previews/{first['jobId']}/artifacts/preview.mp4", headers=AUTH)
        part = api.get(f"/v1/previews/{first['jobId']}/artifacts/preview.mp4",
                       headers={**AUTH, "Range": "bytes=10-99"})
        assert part.status_code == 206 and part.content == video.content[10:100]
        assert part.headers["content-range"] == f"bytes 10-99/{len(video.content)}"
        missing = api.get(f"/v1/previews/{first['jobId']}/artifacts/nothing.mp4", headers=AUTH)
        assert missing.status_code == 404
    finally:
        worker_a.stop()

    # A is gone; a one-step edit goes to B, which has never seen any of A's files.
    worker_b = start_worker(dirs, envs, "b")
    try:
        edit = json.loads(json.dumps(first))
        edit["jobId"] = first["jobId"] + "-edit"
        edit["previewRequest"]["steps"][1]["title"] = "Two, edited"
        mobius_preview.submit(edit)
        done = client.wait(edit["jobId"], timeout=120)
        assert done["state"] == "succeeded" and not done["cacheHit"], done
        made = json.loads(api.get(f"/v1/previews/{edit['jobId']}/artifacts/manifest.json",
                                  headers=AUTH).content)["output"]["segments"]
        assert (made["video"]["rendered"], made["audio"]["rendered"]) == (1, 0), made
        _complete(api, edit["jobId"])

        # The review page opens with its signed link, and so do the files it links to.
        page_link = api.get(f"/v1/previews/{edit['jobId']}", headers=AUTH).json()["links"]["page"]
        page = api.get(page_link)
        assert page.status_code == 200 and "<video" in page.text
        src = page.text.split('<video', 1)[1].split('src="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        assert api.get(src).status_code == 200
    finally:
        worker_b.stop()
        api.stop()
    # Nothing a host wrote names another host's folder (with namespaces it could not anyway).
    assert not any(str(dirs["a"]) in v for v in done["artifacts"].values())
    assert not (dirs["api"] / "previews").exists() and not (dirs["b"] / "previews").exists()
    assert status["links"]["artifacts"]["preview.mp4"].startswith("/v1/")
    assert any((dirs["b"] / "segments").iterdir())  # B's cache holds what it fetched from the store


def _kill_on(server, operation: str, after: int) -> list[str]:
    """An observer that kills the store once ``after`` requests of ``operation`` succeeded."""
    seen: list[str] = []

    def observe(op: str, seconds: float, error: str | None) -> None:
        if op == operation and error is None:
            seen.append(op)
            if len(seen) == after:
                server.kill()

    objectstore.observers.append(observe)
    return seen


def test_store_killed_mid_publish_leaves_nothing_that_looks_done(hosts, store_server):
    from mobius_preview import render  # the API host's settings are in place now

    job = tiny_render_job()
    identified = render.identify(job, config.settings().assets_dir)
    prepared = render.prepare(identified, 900)
    work = storage.new_workdir(identified.key)
    render.render(prepared, work, timeout=60, segments=storage.segment_store())
    _kill_on(store_server, "put", 1)  # the first file is uploaded, then the store dies
    try:
        with pytest.raises(StoreUnavailable):
            storage.publish(work, identified.key)
    finally:
        objectstore.observers.pop()
        store_server.restart()
    assert storage.lookup(identified.key) is None  # no manifest: not a preview
    with pytest.raises(ObjectMissing):
        storage.stored(f"{storage.remote().url}/previews/{identified.key}")
    work = storage.new_workdir(identified.key)
    render.render(prepared, work, timeout=60, segments=storage.segment_store())
    where = storage.publish(work, identified.key)
    stored = storage.stored(where)
    for entry in stored.manifest["files"]:
        data = storage.read_range(stored.files[entry["name"]], 0, entry["size"])
        assert _sha(data) == entry["sha256"]


def test_two_workers_publishing_one_key_end_with_one(hosts):
    from mobius_preview import render

    job = tiny_render_job()
    identified = render.identify(job, config.settings().assets_dir)
    prepared = render.prepare(identified, 900)
    works = [storage.new_workdir(identified.key) for _ in range(3)]
    for work in works:
        render.render(prepared, work, timeout=60, segments=storage.segment_store())
    places, errors = [], []

    def go(work):
        try:
            places.append(storage.publish(work, identified.key))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(w,)) for w in works]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(places)) == 1
    keys = [h.key for h in storage.remote().list(f"previews/{identified.key}/")]
    token = storage.stored(places[0]).manifest["objectFolder"]
    assert sum(k.endswith("/manifest.json") for k in keys) == 1
    assert {k.split("/")[2] for k in keys if not k.endswith("manifest.json")} == {token}, keys


def test_a_job_whose_store_dies_mid_render_is_retried_to_one_complete_preview(hosts, store_server):
    dirs, envs = hosts
    worker = start_worker(dirs, envs, "a")
    api = Api(dirs, envs)
    try:
        job = tiny_render_job()
        mobius_preview.submit(job)
        wait_for(lambda: client.status(job["jobId"])["state"] == "running", timeout=60, step=0.01)
        store_server.kill()
        wait_for(lambda: client.status(job["jobId"])["state"] in ("retrying", "succeeded", "dead"),
                 timeout=60)
        # While the store is down nothing of the job is served as done.
        assert api.get(f"/v1/previews/{job['jobId']}/artifacts/preview.mp4",
                       headers=AUTH).status_code in (404, 503)
        store_server.restart()
        done = client.wait(job["jobId"], timeout=120)
        assert done["state"] == "succeeded", done
        assert done["attempts"] >= 2
        _complete(api, job["jobId"])
        key = done["key"]
        assert sum(h.key.endswith("/manifest.json") for h in storage.remote().list(f"previews/{key}/")) == 1
    finally:
        worker.stop()
        api.stop()


def test_a_worker_with_a_wrong_secret_says_so_at_start_naming_the_variable(hosts):
    _dirs, envs = hosts
    env = {**envs["a"], "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
    proc = subprocess.run(WorkerProcess(env=env).args, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    line = [ln for ln in proc.stderr.splitlines() if "AWS_SECRET_ACCESS_KEY" in ln]
    assert line and line[0].startswith("mobius-preview: AWS_SECRET_ACCESS_KEY"), proc.stderr[-2000:]


def test_readyz_reports_the_store_down(hosts, store_server):
    from fastapi.testclient import TestClient

    from mobius_preview.api import create_app

    with TestClient(create_app()) as http:
        body = http.get("/readyz").json()
        assert body["store"]["ok"] is True
    store_server.kill()
    try:
        with TestClient(create_app()) as http:
            answer = http.get("/readyz")
            assert answer.status_code == 503 and answer.json()["store"]["ok"] is False
    finally:
        store_server.restart()
