"""The object store (objectstore.py) against a real SeaweedFS (tests/seaweed.py): round trips,
create-only and its race, presigning, each configuration error naming its variable, a
profile from the AWS files, and a store killed mid-request. No mocks.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
import seaweed
from conftest import wait_for

from mobius_preview import objectstore
from mobius_preview.errors import (
    ObjectExists,
    ObjectMissing,
    PermanentError,
    StoreConfigError,
    StoreUnavailable,
    TransientError,
)
from mobius_preview.objectstore import ObjectStore

# A real SeaweedFS each: not in `make check`; `make test` starts them first.
pytestmark = pytest.mark.slow(4)

BUCKET = "previews"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = seaweed.start(tmp_path_factory.mktemp("weed"))
    srv.bucket_create(BUCKET)
    yield srv
    srv.kill()


def env_for(srv, **over):
    env = {"PREVIEW_STORAGE_URL": f"s3://{BUCKET}/t-{uuid.uuid4().hex[:8]}", **srv.env()}
    env.update(over)
    return {k: v for k, v in env.items() if v is not None}


def open_store(env, **kw):
    return ObjectStore.from_url(env.get("PREVIEW_STORAGE_URL", ""), env, **kw)


@pytest.fixture
def store(server):
    return open_store(env_for(server))


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ------------------------------------------------------------------ basic operations

def test_put_get_head_list_delete(store):
    etag = store.put_bytes("jobs/j1/status.json", b'{"state":"done"}',
                           content_type="application/json")
    assert etag
    assert store.get_bytes("jobs/j1/status.json") == b'{"state":"done"}'
    h = store.head("jobs/j1/status.json")
    assert h.size == 16 and h.key == "jobs/j1/status.json"
    assert store.exists("jobs/j1/status.json")
    store.put_bytes("jobs/j2/status.json", b"x")
    store.put_bytes("segments/ab/abc.mp4", b"y" * 10)
    assert sorted(o.key for o in store.list("jobs/")) == ["jobs/j1/status.json",
                                                           "jobs/j2/status.json"]
    assert len(list(store.list())) == 3
    store.delete("jobs/j1/status.json")
    assert not store.exists("jobs/j1/status.json")
    store.delete("jobs/j1/status.json")  # idempotent


def test_prefix_isolates(server):
    a = open_store(env_for(server))
    b = open_store(env_for(server))
    a.put_bytes("k", b"a")
    assert not b.exists("k")
    assert list(b.list()) == []


def test_missing_key(store):
    with pytest.raises(ObjectMissing) as ei:
        store.get_bytes("nope")
    assert ei.value.key == "nope"
    with pytest.raises(ObjectMissing):
        store.head("nope")
    assert not store.exists("nope")
    with pytest.raises(ObjectMissing):
        store.get_file("nope", "/tmp/never-written")


def test_files_roundtrip_atomic(store, tmp_path):
    src = tmp_path / "src.bin"
    data = os.urandom(3 * 1024 * 1024 + 7)
    src.write_bytes(data)
    store.put_file("previews/p1/preview.mp4", src)
    dest = tmp_path / "cache" / "preview.mp4"
    digest = store.get_file("previews/p1/preview.mp4", dest)
    assert dest.read_bytes() == data
    assert digest == hashlib.sha256(data).hexdigest()
    assert [p.name for p in dest.parent.iterdir()] == ["preview.mp4"]  # no .part left


def test_create_only(store):
    store.put_bytes("manifest.json", b"first", create_only=True)
    with pytest.raises(ObjectExists):
        store.put_bytes("manifest.json", b"second", create_only=True)
    assert store.get_bytes("manifest.json") == b"first"
    store.put_bytes("manifest.json", b"third")  # plain PUT overwrites
    assert store.get_bytes("manifest.json") == b"third"


def test_create_only_race_has_one_winner(store):
    wins, losses = [], []

    def go(i):
        try:
            store.put_bytes("race/manifest.json", f"w{i}".encode(), create_only=True)
            wins.append(i)
        except ObjectExists:
            losses.append(i)
    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(wins) == 1 and len(losses) == 7
    assert store.get_bytes("race/manifest.json") == f"w{wins[0]}".encode()


def test_presign_get(store):
    store.put_bytes("previews/p/preview.mp4", b"video bytes")
    url = store.presign_get("previews/p/preview.mp4", 60)
    assert http_get(url) == (200, b"video bytes")
    req = urllib.request.Request(url, headers={"Range": "bytes=0-4"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert (r.status, r.read()) == (206, b"video")
    short = store.presign_get("previews/p/preview.mp4", 1)
    assert http_get(short)[0] == 200
    wait_for(lambda: http_get(short)[0] == 403, timeout=10)
    assert http_get(store.presign_get("previews/p/none", 60))[0] == 404


# ------------------------------------------------------------------ configuration errors

def test_missing_bucket_named(server):
    s = open_store(env_for(server, PREVIEW_STORAGE_URL="s3://no-such-bucket/x"))
    with pytest.raises(StoreConfigError) as ei:
        s.check()
    assert ei.value.variable == "PREVIEW_STORAGE_URL"
    with pytest.raises(StoreConfigError):  # needs -s3.autoCreateBucket=false on SeaweedFS
        s.put_bytes("k", b"1")
    with pytest.raises(StoreConfigError):
        s.get_bytes("k")


def test_bad_secret_named(server):
    s = open_store(env_for(server, AWS_SECRET_ACCESS_KEY="wrong"))
    with pytest.raises(StoreConfigError) as ei:
        s.check()
    assert ei.value.variable == "AWS_SECRET_ACCESS_KEY"


def test_unknown_access_key_named(server):
    s = open_store(env_for(server, AWS_ACCESS_KEY_ID="nobody"))
    with pytest.raises(StoreConfigError) as ei:
        s.put_bytes("k", b"1")
    assert ei.value.variable == "AWS_ACCESS_KEY_ID"


@pytest.mark.parametrize("url", ["", "file:///data", "s3://", "/local/path"])
def test_bad_url_named(server, url):
    with pytest.raises(StoreConfigError) as ei:
        open_store(env_for(server, PREVIEW_STORAGE_URL=url))
    assert ei.value.variable == "PREVIEW_STORAGE_URL"


def test_half_credentials_named(server):
    with pytest.raises(StoreConfigError) as ei:
        open_store(env_for(server, AWS_SECRET_ACCESS_KEY=None))
    assert ei.value.variable == "AWS_SECRET_ACCESS_KEY"


def test_profile_from_aws_files(server, tmp_path):
    (tmp_path / "credentials").write_text(
        f"[mobius]\naws_access_key_id = {server.access_key}\n"
        f"aws_secret_access_key = {server.secret_key}\n")
    (tmp_path / "config").write_text(
        f"[profile mobius]\nregion = us-east-1\nendpoint_url = {server.endpoint_url}\n")
    env = {"PREVIEW_STORAGE_URL": f"s3://{BUCKET}/prof", "AWS_PROFILE": "mobius"}
    old = {k: os.environ.get(k) for k in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")}
    os.environ["AWS_CONFIG_FILE"] = str(tmp_path / "config")
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "credentials")
    try:
        s = open_store(env)
        s.check()
        s.put_bytes("via-profile", b"ok")
        assert s.get_bytes("via-profile") == b"ok"
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------ store down mid-way

@pytest.fixture
def own_server(tmp_path):
    srv = seaweed.start(tmp_path)
    srv.bucket_create(BUCKET)
    yield srv
    srv.kill()


def test_killed_store_is_transient_then_recovers(own_server, tmp_path):
    s = open_store(env_for(own_server), max_retries=1, retry_timeout=3)
    s.put_bytes("segments/a.mp4", b"a" * 1000)
    own_server.kill()
    for op in (lambda: s.get_bytes("segments/a.mp4"),
               lambda: s.put_bytes("segments/b.mp4", b"b"),
               lambda: s.head("segments/a.mp4"),
               lambda: list(s.list("segments/")),
               lambda: s.get_file("segments/a.mp4", tmp_path / "dl" / "a.mp4"),
               s.check):
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            op()
        assert time.monotonic() - t0 < 5
    assert not (tmp_path / "dl" / "a.mp4").exists()
    assert list((tmp_path / "dl").iterdir()) == []  # no .part left behind
    own_server.restart()
    assert s.get_bytes("segments/a.mp4") == b"a" * 1000  # same client object, data survived
    assert not s.exists("segments/b.mp4")


def test_kill_during_large_put_leaves_nothing_or_whole(own_server):
    s = open_store(env_for(own_server), max_retries=0, retry_timeout=2)
    data = os.urandom(64 * 1024 * 1024)
    result = {}

    def put():
        try:
            s.put_bytes("previews/big.mp4", data, create_only=True)
            result["ok"] = True
        except Exception as e:
            result["err"] = e
    t = threading.Thread(target=put)
    t.start()
    own_server.kill()
    t.join(30)
    assert not t.is_alive()
    own_server.restart()
    if "err" in result:
        assert isinstance(result["err"], StoreUnavailable), result["err"]
        # a failed PUT leaves no object: a reader sees ObjectMissing, never a partial one
        with pytest.raises(ObjectMissing):
            s.head("previews/big.mp4")
    else:  # finished before the kill: must be whole
        assert s.get_bytes("previews/big.mp4") == data


def test_get_file_killed_midway_leaves_no_dest(own_server, tmp_path):
    s = open_store(env_for(own_server), max_retries=0, retry_timeout=2)
    s.put_bytes("big", os.urandom(64 * 1024 * 1024))
    dest = tmp_path / "c" / "big"
    result = {}

    def get():
        try:
            s.get_file("big", dest)
            result["ok"] = True
        except Exception as e:
            result["err"] = e
    t = threading.Thread(target=get)
    t.start()
    wait_for(lambda: any(dest.parent.glob("*.part")), timeout=10)  # the download has begun
    own_server.kill()
    t.join(30)
    if "err" in result:
        assert isinstance(result["err"], StoreUnavailable), result["err"]
        assert not dest.exists()
    else:
        assert dest.stat().st_size == 64 * 1024 * 1024
    assert [p for p in dest.parent.iterdir() if p.name.endswith(".part")] == []


def test_errors_are_classified_as_the_worker_retries_them():
    """A missing object is permanent; a store that is down is transient (retried)."""
    assert issubclass(ObjectMissing, PermanentError)
    assert issubclass(StoreUnavailable, TransientError)
    assert not issubclass(StoreConfigError, PermanentError)  # not the job's fault


def test_observers_see_each_request_with_its_error_kind(store):
    seen = []
    objectstore.observers.append(lambda op, seconds, error: seen.append((op, error)))
    try:
        store.put_bytes("o/k", b"1")
        with pytest.raises(ObjectMissing):
            store.get_bytes("o/none")
    finally:
        objectstore.observers.pop()
    assert seen == [("put", None), ("get", "missing")]


def test_get_range(store):
    store.put_bytes("r/k", b"0123456789")
    assert store.get_range("r/k", 2, 5) == b"234"
