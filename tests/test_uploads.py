"""PUT /v1/projects/{projectId}/assets/{path} on a live uvicorn, a real Redis, a real worker,
and (for the store) a real SeaweedFS: round trips, limits, escapes, and jobs naming the upload."""

from __future__ import annotations

import hashlib
import os
import uuid

import httpx
import pytest
import seaweed
from assetserver import unique_png
from conftest import RUN_DIR, api_in_thread, tiny_render_job

import mobius_preview
from mobius_preview import client

# A live uvicorn and a real SeaweedFS: not in `make check`; `make test` starts them first.
pytestmark = pytest.mark.slow(4)

KEY = "test-upload-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
BUCKET = "uploads"


@pytest.fixture(scope="module")
def api_url():
    with api_in_thread({"PREVIEW_API_KEYS": KEY}) as url:
        yield url


@pytest.fixture
def http(api_url):
    with httpx.Client(base_url=api_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def weed(tmp_path_factory):
    srv = seaweed.start(tmp_path_factory.mktemp("weed"))
    srv.bucket_create(BUCKET)
    yield srv
    srv.kill()


def project() -> str:
    return f"proj-{uuid.uuid4().hex[:8]}"


def job_with(project_id: str, asset: dict) -> dict:
    job = tiny_render_job()
    job["projectId"] = project_id
    job["previewRequest"]["assets"] = [{"id": "board", "type": "image", **asset}]
    return job


def run(job: dict) -> dict:
    mobius_preview.submit(job)
    return client.wait(job["jobId"], timeout=90)


def test_round_trip_on_disk_then_a_job_naming_it_renders(http, worker):
    pid, png = project(), unique_png()
    answer = http.put(f"/v1/projects/{pid}/assets/images/board.png", content=png, headers=AUTH)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    digest = hashlib.sha256(png).hexdigest()
    assert body == {"projectId": pid, "path": "images/board.png", "sha256": digest, "size": len(png),
                    "url": None, "asset": {"path": "images/board.png", "sha256": digest}}
    stored = RUN_DIR / "assets" / pid / "images" / "board.png"
    assert stored.read_bytes() == png
    assert not [p for p in stored.parent.iterdir() if p.name.endswith(".part")]  # nothing left over
    done = run(job_with(pid, body["asset"]))
    assert done["state"] == "succeeded", done["error"]


def test_no_key_is_401_and_a_wrong_checksum_stores_nothing(http):
    pid = project()
    assert http.put(f"/v1/projects/{pid}/assets/a.png", content=b"x").status_code == 401
    wrong = http.put(f"/v1/projects/{pid}/assets/a.png", content=b"x", headers=AUTH,
                     params={"sha256": hashlib.sha256(b"y").hexdigest()})
    assert wrong.status_code == 422 and "sha256" in wrong.json()["error"]
    assert not (RUN_DIR / "assets" / pid / "a.png").exists()


def test_the_size_limit_holds_with_and_without_a_content_length(http, settings_env):
    settings_env(PREVIEW_ASSET_MAX_BYTES="1000")
    pid = project()
    declared = http.put(f"/v1/projects/{pid}/assets/big.png", content=os.urandom(1001), headers=AUTH)
    assert declared.status_code == 413 and "PREVIEW_ASSET_MAX_BYTES" in declared.json()["error"]

    def chunks():
        for _ in range(4):
            yield os.urandom(400)

    streamed = http.put(f"/v1/projects/{pid}/assets/big.png", content=chunks(), headers=AUTH)
    assert streamed.status_code == 413, streamed.text
    folder = RUN_DIR / "assets" / pid
    assert not folder.exists() or not any(folder.iterdir())  # no file, no leftover part
    exact = http.put(f"/v1/projects/{pid}/assets/ok.bin", content=os.urandom(1000), headers=AUTH)
    assert exact.status_code == 201 and exact.json()["size"] == 1000


@pytest.mark.parametrize("raw_path", [
    "%2e%2e/%2e%2e/escaped.png", "images/%2e%2e/%2e%2e/%2e%2e/escaped.png", "%2Fetc%2Fescaped.png",
    "images//escaped.png", "%2e/escaped.png", "images%5C..%5Cescaped.png",
])
def test_a_path_cannot_escape_the_project(api_url, raw_path):
    pid = project()
    # A raw request: httpx would tidy the dots away before sending.
    with httpx.Client(timeout=30) as raw:
        request = raw.build_request("PUT", f"{api_url}/v1/projects/{pid}/assets/x", content=b"data",
                                    headers=AUTH)
        request.url = request.url.copy_with(raw_path=f"/v1/projects/{pid}/assets/{raw_path}".encode())
        answer = raw.send(request)
    assert answer.status_code in (404, 422), answer.text
    if answer.status_code == 422:
        assert answer.json()["path"] == "path"
    assert not list(RUN_DIR.rglob("escaped.png"))


def test_a_symlink_inside_the_project_cannot_lead_out(http, tmp_path):
    pid = project()
    root = RUN_DIR / "assets" / pid
    root.mkdir(parents=True)
    (root / "elsewhere").symlink_to(tmp_path)
    answer = http.put(f"/v1/projects/{pid}/assets/elsewhere/x.png", content=b"data", headers=AUTH)
    assert answer.status_code == 422 and "outside" in answer.json()["error"]
    assert not (tmp_path / "x.png").exists()


def test_a_bad_project_id_is_refused(http):
    answer = http.put("/v1/projects/.hidden/assets/x.png", content=b"data", headers=AUTH)
    assert answer.status_code == 422 and answer.json()["path"] == "projectId"


def test_with_a_store_the_upload_goes_to_the_project_prefix_and_its_url_renders(
        http, weed, settings_env, worker):
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    settings_env(PREVIEW_STORAGE_URL=f"s3://{BUCKET}/{prefix}", **weed.env())
    pid, png = project(), unique_png()
    answer = http.put(f"/v1/projects/{pid}/assets/images/board.png", content=png, headers=AUTH)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    url = f"s3://{BUCKET}/{prefix}/assets/{pid}/images/board.png"
    assert body["url"] == url and body["asset"] == {"url": url, "sha256": hashlib.sha256(png).hexdigest()}
    assert not (RUN_DIR / "assets" / pid).exists()  # in the store, not on this disk
    done = run(job_with(pid, body["asset"]))
    assert done["state"] == "succeeded", done["error"]
    # Another project may not read it through the service's credentials.
    other = run(job_with(project(), {"url": url}))
    assert other["state"] == "dead" and other["attempts"] == 1, other
    assert "$.previewRequest.assets[0].url" in other["error"] and "outside this project" in other["error"]
