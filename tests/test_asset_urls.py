"""Assets by URL against real servers: an HTTPS server on loopback (its own CA, by trustme),
a real SeaweedFS for s3://, a real Redis and a real worker. Nothing is mocked."""

from __future__ import annotations

import hashlib
import uuid

import pytest
import seaweed
from assetserver import Answer, AssetServer, unique_png
from conftest import tiny_render_job

import mobius_preview
from mobius_preview import client

# Real renders and servers: not in `make check`; `make test` starts them first.
pytestmark = pytest.mark.slow(6)

BUCKET = "asset-urls"


@pytest.fixture
def assets(tmp_path, settings_env):
    """An HTTPS asset server the guard allows (PREVIEW_ASSET_ALLOW=localhost), its CA trusted."""
    server = AssetServer(tmp_path)
    settings_env(PREVIEW_ASSET_ALLOW="localhost", PREVIEW_ASSET_CA_FILE=str(server.ca_file))
    yield server
    server.close()


@pytest.fixture(scope="module")
def weed(tmp_path_factory):
    srv = seaweed.start(tmp_path_factory.mktemp("weed"))
    srv.bucket_create(BUCKET)
    yield srv
    srv.kill()


def job_with(url: str, **asset: str) -> dict:
    job = tiny_render_job()
    job["previewRequest"]["assets"] = [{"id": "board", "type": "image", "url": url, **asset}]
    return job


def run(job: dict) -> dict:
    mobius_preview.submit(job)
    return client.wait(job["jobId"], timeout=90)


def test_an_https_asset_renders_and_is_downloaded_once_per_host(assets, worker):
    png = unique_png()
    path = assets.add(f"/img/{uuid.uuid4().hex}.png", Answer(body=png))
    first = run(job_with(assets.url(path)))
    assert first["state"] == "succeeded", first["error"]
    assert assets.downloads(path) == 1
    # Another job naming the same URL: the server is asked (ETag) and answers 304.
    second = run(job_with(assets.url(path)))
    assert second["state"] == "succeeded", second["error"]
    assert assets.downloads(path) == 1 and assets.requests(path) == 2
    assert assets.seen[-1].headers["if-none-match"] == '"' + hashlib.sha256(png).hexdigest() + '"'
    assert assets.seen[-1].headers["host"] == f"localhost:{assets.port}"
    # With its sha256 in the job, the cached copy is used without asking at all.
    third = run(job_with(assets.url(path), sha256=hashlib.sha256(png).hexdigest()))
    assert third["state"] == "succeeded", third["error"]
    assert assets.requests(path) == 2


def test_an_asset_on_a_refused_address_is_dead_lettered_at_once_with_its_json_path(
        tmp_path, settings_env, worker):
    server = AssetServer(tmp_path)  # allowed by nothing: loopback is refused
    try:
        settings_env(PREVIEW_ASSET_CA_FILE=str(server.ca_file))
        path = server.add("/board.png", Answer(body=unique_png()))
        done = run(job_with(server.url(path, host="127.0.0.1")))
        assert done["state"] == "dead" and done["attempts"] == 1, done
        assert "$.previewRequest.assets[0].url" in done["error"], done["error"]
        assert "loopback address: refused (server-side request forgery guard" in done["error"]
        assert "PREVIEW_ASSET_ALLOW" in done["error"] and server.requests(path) == 0
    finally:
        server.close()


def test_a_redirect_into_a_refused_address_is_not_followed(assets, worker):
    path = assets.add("/moved.png", Answer(302, headers={"Location": "http://169.254.169.254/latest/"}))
    done = run(job_with(assets.url(path)))
    assert done["state"] == "dead" and done["attempts"] == 1, done
    assert "$.previewRequest.assets[0].url" in done["error"] and "link-local" in done["error"]


def test_plain_http_is_refused_for_a_host_the_allow_list_does_not_name(worker, settings_env):
    settings_env(PREVIEW_ASSET_ALLOW="")
    done = run(job_with("http://8.8.8.8/board.png"))  # public: the guard passes it, http does not
    assert done["state"] == "dead" and done["attempts"] == 1, done
    assert "plain http://" in done["error"] and "$.previewRequest.assets[0].url" in done["error"]


def test_plain_http_works_for_an_allowed_host(tmp_path, settings_env, worker):
    server = AssetServer(tmp_path, tls=False)
    try:
        settings_env(PREVIEW_ASSET_ALLOW="127.0.0.1")
        path = server.add("/board.png", Answer(body=unique_png()))
        done = run(job_with(server.url(path, host="127.0.0.1")))
        assert done["state"] == "succeeded", done["error"]
        assert server.downloads(path) == 1
    finally:
        server.close()


def test_a_sha256_mismatch_is_permanent(assets, worker):
    path = assets.add("/board.png", Answer(body=unique_png()))
    done = run(job_with(assets.url(path), sha256=hashlib.sha256(b"other bytes").hexdigest()))
    assert done["state"] == "dead" and done["attempts"] == 1, done
    assert "$.previewRequest.assets[0].sha256" in done["error"]


def test_a_missing_file_is_permanent_and_a_5xx_is_retried(assets, worker):
    missing = run(job_with(assets.url("/nothing-here.png")))
    assert missing["state"] == "dead" and missing["attempts"] == 1, missing
    assert "$.previewRequest.assets[0].url" in missing["error"] and "404" in missing["error"]

    path = assets.add("/flaky.png", Answer(503), Answer(body=unique_png()))
    done = run(job_with(assets.url(path)))
    assert done["state"] == "succeeded" and done["attempts"] == 2, done
    assert [s.status for s in assets.seen if s.path == path] == [503, 200]


def test_a_file_over_the_size_limit_is_permanent(assets, settings_env, worker):
    settings_env(PREVIEW_ASSET_MAX_BYTES="1000")
    path = assets.add("/big.png", Answer(body=unique_png(128)))
    done = run(job_with(assets.url(path)))
    assert done["state"] == "dead" and done["attempts"] == 1, done
    assert "$.previewRequest.assets[0].url" in done["error"] and "the limit is 1,000" in done["error"]


def test_s3_assets_render_and_a_missing_key_is_dead_lettered(weed, settings_env, worker):
    import obstore
    from obstore.store import S3Store

    settings_env(**weed.env())
    key = f"uploads/{uuid.uuid4().hex}/board.png"
    raw = S3Store(BUCKET, endpoint=weed.endpoint_url, access_key_id=weed.access_key,
                  secret_access_key=weed.secret_key, region="us-east-1", client_options={"allow_http": True},
                  virtual_hosted_style_request=False)
    obstore.put(raw, key, unique_png())
    done = run(job_with(f"s3://{BUCKET}/{key}"))
    assert done["state"] == "succeeded", done["error"]

    missing = run(job_with(f"s3://{BUCKET}/uploads/{uuid.uuid4().hex}/none.png"))
    assert missing["state"] == "dead" and missing["attempts"] == 1, missing
    assert "$.previewRequest.assets[0].url" in missing["error"] and "not found" in missing["error"]
    no_bucket = run(job_with(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/board.png"))
    assert no_bucket["state"] == "dead" and no_bucket["attempts"] == 1, no_bucket
    assert "$.previewRequest.assets[0].url" in no_bucket["error"], no_bucket["error"]
