"""The HTTP API on a live uvicorn (loopback), a real Redis and a real worker."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from conftest import RUN_DIR, api_in_thread, tiny_render_job, wait_for

from mobius_preview import access

KEY = "test-api-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEAM_KEY = "team-key-limited-to-two-projects"  # PREVIEW_API_KEYS entry: TEAM_KEY:proj-catan-demo+proj-team
TEAM = {"Authorization": f"Bearer {TEAM_KEY}"}


@pytest.fixture(scope="module")
def api_url():
    """uvicorn serving the API on a loopback port, in a thread of this process."""
    with api_in_thread({"PREVIEW_API_KEYS": f"other-key,{KEY},{TEAM_KEY}:proj-catan-demo+proj-team",
                        "PREVIEW_SIGNING_KEY": "signing-secret-for-tests"}) as url:
        yield url


@pytest.fixture
def http(api_url):
    with httpx.Client(base_url=api_url, timeout=30) as c:
        yield c


def wait_done(http, job_id: str, timeout: float = 60) -> dict:
    """The job's status once it has ended; a job still going after ``timeout`` fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        body = http.get(f"/v1/previews/{job_id}", headers=AUTH).json()
        if body["state"] in ("succeeded", "dead", "failed"):
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {body['state']} after {timeout} s: {body}")
        time.sleep(0.1)


def test_submit_status_and_idempotent_resubmission(http, worker):
    job = tiny_render_job()
    first = http.post("/v1/previews", json=job, headers=AUTH)
    assert first.status_code == 202, first.text
    assert first.headers["location"] == f"/v1/previews/{job['jobId']}"
    again = http.post("/v1/previews", json=job, headers=AUTH)
    assert again.status_code == 200 and again.json()["jobId"] == job["jobId"]
    done = wait_done(http, job["jobId"])
    assert done["state"] == "succeeded" and done["renders"] == 1
    assert set(done["links"]["artifacts"]) >= {"preview.mp4", "poster.png", "captions.vtt", "manifest.json"}
    assert "key" not in done and done["links"]["page"].startswith(f"/previews/{job['jobId']}?")


def test_status_codes_for_bad_requests(http, make_job, settings_env):
    assert http.post("/v1/previews", json=make_job()).status_code == 401
    assert http.post("/v1/previews", json=make_job(),
                     headers={"Authorization": "Bearer nope"}).status_code == 401
    bad = http.post("/v1/previews", json=make_job(dryRun="yes", priority="urgent"), headers=AUTH)
    assert bad.status_code == 422
    issues = {(i["path"], i["rule"]) for i in bad.json()["issues"]}
    assert issues == {("$.dryRun", "type"), ("$.priority", "enum")}
    garbled = http.post("/v1/previews", content=b"{not json", headers=AUTH)
    assert garbled.status_code == 422 and garbled.json()["issues"][0]["rule"] == "json"
    huge = http.post("/v1/previews", content=b"{" + b" " * 2_000_000 + b"}", headers=AUTH)
    assert huge.status_code == 413
    assert http.get("/v1/previews/never-submitted", headers=AUTH).status_code == 404
    settings_env(PREVIEW_QUEUE_MAX="1")
    assert http.post("/v1/previews", json=make_job(), headers=AUTH).status_code == 202
    full = http.post("/v1/previews", json=make_job(), headers=AUTH)
    assert full.status_code == 429 and int(full.headers["retry-after"]) > 0


def test_broker_down_is_503_and_nothing_half_accepted(http, make_job, settings_env):
    settings_env(REDIS_URL="redis://127.0.0.1:1/0")
    job = make_job()
    response = http.post("/v1/previews", json=job, headers=AUTH)
    assert response.status_code == 503 and "not accepted" in response.json()["error"]
    assert "127.0.0.1:1" not in response.text  # no internals in error bodies


def _done_job(http) -> dict:
    job = tiny_render_job()
    assert http.post("/v1/previews", json=job, headers=AUTH).status_code == 202
    done = wait_done(http, job["jobId"])
    assert done["state"] == "succeeded", done
    return done


def test_artifacts_types_etag_and_ranges(http, worker):
    done = _done_job(http)
    video_url = done["links"]["artifacts"]["preview.mp4"]
    full = http.get(video_url)
    assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
    digest = hashlib.sha256(full.content).hexdigest()
    assert full.headers["etag"] == f'"{digest}"' and full.headers["accept-ranges"] == "bytes"
    assert http.get(video_url, headers={"If-None-Match": f'"{digest}"'}).status_code == 304
    part = http.get(video_url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == full.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(full.content)}"
    tail = http.get(video_url, headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == full.content[-50:]
    assert http.get(video_url, headers={"Range": f"bytes={len(full.content) + 10}-"}).status_code == 416
    types = {"poster.png": "image/png", "captions.vtt": "text/vtt", "manifest.json": "application/json",
             "captions.srt": "application/x-subrip"}
    for name, kind in types.items():
        r = http.get(done["links"]["artifacts"][name])
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), name
    by_key = http.get(f"/v1/previews/{done['jobId']}/artifacts/poster.png", headers=AUTH)
    assert by_key.status_code == 200


def test_signatures_expire_cannot_be_tampered_or_reused_for_another_job(http, worker):
    a, b = _done_job(http), _done_job(http)
    url = urlsplit(a["links"]["artifacts"]["poster.png"])
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    path_b = f"/v1/previews/{b['jobId']}/artifacts/poster.png"
    assert http.get(url.path, params=q).status_code == 200
    assert http.get(url.path).status_code == 403  # no signature, no key
    assert http.get(path_b, params=q).status_code == 403  # a's signature on b's file
    flipped = q["sig"][:-1] + ("1" if q["sig"][-1] != "1" else "2")
    assert http.get(url.path, params=q | {"sig": flipped}).status_code == 403
    assert http.get(url.path, params=q | {"expires": str(int(q["expires"]) + 60)}).status_code == 403
    expired = access.sign(a["jobId"], seconds=-1)
    assert http.get(url.path, params=expired).status_code == 403
    assert http.get(f"/previews/{a['jobId']}", params=q).status_code == 200
    assert http.get(f"/previews/{b['jobId']}", params=q).status_code == 403


@pytest.mark.parametrize("name", ["../manifest.json", "..%2Fmanifest.json", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                                  "....//manifest.json", "/etc/passwd", "preview.mp4%00.png", "__manifest__",
                                  "slides.ffconcat", ".scratch"])
def test_names_that_try_to_leave_the_folder_are_refused(http, worker, name):
    done = _shared_done(http)
    r = http.get(f"/v1/previews/{done['jobId']}/artifacts/{name}", headers=AUTH)
    assert r.status_code in (404, 422), (name, r.status_code)
    assert b"root:" not in r.content


_cache: dict = {}


def _shared_done(http) -> dict:
    if "done" not in _cache:
        _cache["done"] = _done_job(http)
    return _cache["done"]


def test_operator_endpoints(http, worker, tiny_job):
    assert http.get("/v1/queues").status_code == 401
    stats = http.get("/v1/queues", headers=AUTH).json()
    assert set(stats["depth"]) == {"high", "normal", "low"}
    job = tiny_job()
    job["previewRequest"]["assets"][0]["path"] = "images/arrives-later.png"
    assert http.post("/v1/previews", json=job, headers=AUTH).status_code == 202
    assert wait_done(http, job["jobId"])["state"] == "dead"
    letters = http.get("/v1/dead-letters", headers=AUTH).json()
    assert job["jobId"] in [letter["jobId"] for letter in letters]
    assert http.post(f"/v1/dead-letters/{job['jobId']}/replay").status_code == 401
    assets = RUN_DIR / "assets" / "proj-catan-demo" / "images"
    shutil.copy(assets / "board.png", assets / "arrives-later.png")
    assert http.post(f"/v1/dead-letters/{job['jobId']}/replay", headers=AUTH).status_code == 202
    assert wait_done(http, job["jobId"])["state"] == "succeeded"
    assert http.post("/v1/dead-letters/nothing-here/replay", headers=AUTH).status_code == 404


def test_health_endpoints_and_metrics(http, worker):
    assert http.get("/healthz").json() == {"status": "alive"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["broker"]["ok"]
    text = http.get("/metrics").text
    assert "mobius_preview_queue_depth" in text


def test_readyz_is_503_without_workers(http):
    ready = http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "down"


def test_no_secret_in_responses(http, make_job):
    for r in (http.post("/v1/previews", json=make_job(dryRun=1), headers=AUTH),
              http.get("/v1/previews/x", headers=AUTH), http.get("/openapi.json")):
        assert KEY not in r.text and "signing-secret" not in r.text


# `make test` runs a bounded search that still calls every operation, in every phase;
# `make fuzz` runs the deep one (MOBIUS_FUZZ_EXAMPLES=25 or more), which takes minutes.
FUZZ_EXAMPLES = int(os.environ.get("MOBIUS_FUZZ_EXAMPLES", "3"))


@pytest.mark.slow(40)
def test_schemathesis_finds_no_server_errors(api_url):
    exe = Path(sys.executable).parent / "schemathesis"  # a dev dependency: always installed
    proc = subprocess.run(
        [str(exe), "run", f"{api_url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", str(FUZZ_EXAMPLES), "-H", f"Authorization: Bearer {KEY}", "--workers", "1",
         "--request-timeout", "10", "--exclude-checks", "positive_data_acceptance",
         # /readyz answers 503 by contract when no worker is up: not a server error.
         "--exclude-path", "/readyz"],
        capture_output=True, text=True, timeout=1800,
    )
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # Every operation but the excluded /readyz was called, however few the examples.
    selected, total = map(int, re.search(r"Selected: (\d+)/(\d+)", proc.stdout).groups())
    tested = int(re.search(r"Tested: (\d+)", proc.stdout).group(1))
    assert tested == selected == total - 1 and total >= 10, proc.stdout[-2000:]


def test_review_page_in_a_real_browser(http, worker, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("SKIP REASON: chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium not installed")
    job = tiny_render_job(format="webm")
    job["previewRequest"]["steps"][0]["durationSec"] = 2.5
    assert http.post("/v1/previews", json=job, headers=AUTH).status_code == 202
    done = wait_done(http, job["jobId"])
    page = str(http.base_url).rstrip("/") + done["links"]["page"]
    manifest = http.get(done["links"]["artifacts"]["manifest.json"]).json()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--autoplay-policy=no-user-gesture-required"]
    dom = subprocess.run([chromium, *flags, "--virtual-time-budget=8000", "--dump-dom", page],
                         capture_output=True, text=True, timeout=120).stdout
    assert f'data-job="{job["jobId"]}"' in dom and "<video" in dom and "<track" in dom
    duration = float(dom.split('data-duration="')[1].split('"')[0])
    assert abs(duration - manifest["plan"]["duration"]) < 0.1, (duration, manifest["plan"]["duration"])
    shot = tmp_path / "mobius-preview-page.png"
    subprocess.run([chromium, *flags, "--window-size=1100,1400", f"--screenshot={shot}", page],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 5000
    artifacts = Path(__file__).resolve().parent.parent / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copy(shot, artifacts / "review-page.png")


def _sse(http, job_id: str, last_id: str | None = None, limit: int | None = None) -> list[dict]:
    """Events of the job's stream as the API sends them (id, event, data), up to ``limit``."""
    headers = dict(AUTH, **({"Last-Event-ID": last_id} if last_id else {}))
    events: list[dict] = []
    current: dict = {}
    with http.stream("GET", f"/v1/previews/{job_id}/events", headers=headers, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "data" in current:
                    events.append(current)
                    if limit and len(events) >= limit:
                        break
                current = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                current[field] = value.strip() if field != "data" else json.loads(value)
    return events


def test_event_stream_shows_queued_running_progress_succeeded_and_resumes(http, worker):
    job = tiny_render_job()
    steps = job["previewRequest"]["steps"]
    job["previewRequest"]["steps"] = [dict(steps[n % 2], id=f"s{n}") for n in range(6)]  # progress steps
    assert http.post("/v1/previews", json=job, headers=AUTH).status_code == 202
    events = _sse(http, job["jobId"])
    print([(e["event"], e["data"].get("state") or e["data"].get("stage")) for e in events])
    states = [e["data"]["state"] for e in events if e["event"] == "state"]
    assert states == ["queued", "running", "succeeded"], events
    kinds = [e["event"] for e in events]
    assert kinds.index("progress") > kinds.index("state") and kinds[-1] == "state"
    assert kinds.count("playable") == 1 and kinds.index("playable") < len(kinds) - 1  # HLS before the end
    percents = [e["data"]["percent"] for e in events if e["event"] == "progress"]
    assert len(percents) >= 3 and percents == sorted(percents) and percents[-1] < 100, percents
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)  # stream ids only rise
    # Reconnecting after the third event misses nothing and repeats nothing.
    head = _sse(http, job["jobId"], limit=3)
    rest = _sse(http, job["jobId"], last_id=head[-1]["id"])
    assert [e["id"] for e in head + rest] == [e["id"] for e in events]
    status = http.get(f"/v1/previews/{job['jobId']}", headers=AUTH).json()
    assert status["progress"] == {"stage": "done", "percent": 100.0}


def test_event_stream_needs_a_key_and_a_known_job(http):
    assert http.get("/v1/previews/nope/events").status_code == 401
    assert http.get("/v1/previews/nope/events", headers=AUTH).status_code == 404
    bad = http.get("/v1/previews/nope/events", headers=dict(AUTH, **{"Last-Event-ID": "x"}))
    assert bad.status_code == 400


def test_a_reader_after_the_events_window_gets_the_final_state(http, worker, settings_env, redis_conn):
    """The stream goes PREVIEW_EVENTS_TTL after the end (1 s here, so the test sees it go);
    a reader, fresh or resuming, still gets how the job ended, from its record."""
    from mobius_preview import layout

    settings_env(PREVIEW_EVENTS_TTL="1")
    job = tiny_render_job()
    assert http.post("/v1/previews", json=job, headers=AUTH).status_code == 202
    events = _sse(http, job["jobId"])
    assert events[-1]["data"]["state"] == "succeeded" and "fromRecord" not in events[-1]["data"]
    wait_for(lambda: not redis_conn.exists(layout.events_key(job["jobId"])), timeout=10)
    for last_id in (None, events[1]["id"]):
        late = _sse(http, job["jobId"], last_id=last_id)
        assert [(e["event"], e["data"]["state"]) for e in late] == [("state", "succeeded")], late
        assert late[0]["data"]["key"] == events[-1]["data"]["key"] and late[0]["data"]["fromRecord"]


def _foreign_job(**overrides) -> dict:
    """A dry run of a project the team key is not limited to."""
    job = tiny_render_job()
    job.update({"projectId": "proj-foreign", "dryRun": True, **overrides})
    job["previewRequest"]["assets"] = []
    job["previewRequest"]["steps"][1].pop("image")
    return job


def test_a_project_key_submits_reads_follows_and_cancels_only_its_projects_jobs(http, worker):
    foreign = _foreign_job()
    assert http.post("/v1/previews", json=foreign, headers=AUTH).status_code == 202
    done = wait_done(http, foreign["jobId"])
    assert done["state"] == "succeeded"
    fid = foreign["jobId"]
    # Another project's job is answered exactly as an unknown one: its existence is not told.
    unknown = http.get("/v1/previews/never-was", headers=TEAM)
    for method, path in (("GET", f"/v1/previews/{fid}"), ("GET", f"/v1/previews/{fid}/events"),
                         ("DELETE", f"/v1/previews/{fid}"), ("GET", f"/previews/{fid}"),
                         ("GET", f"/v1/previews/{fid}/artifacts/manifest.json")):
        r = http.request(method, path, headers=TEAM)
        assert r.status_code == 404, (method, path, r.status_code)
        assert r.json()["error"].replace(fid, "X") == unknown.json()["error"].replace("never-was", "X")
    # Submitting for another project: 403, nothing recorded.
    sneaky = _foreign_job()
    refused = http.post("/v1/previews", json=sneaky, headers=TEAM)
    assert refused.status_code == 403 and "proj-foreign" in refused.json()["error"]
    assert http.get(f"/v1/previews/{sneaky['jobId']}", headers=AUTH).status_code == 404
    # Its jobId, claimed for one of the key's projects: refused, and nothing of the job shown.
    taken = http.post("/v1/previews", json=dict(foreign, projectId="proj-team"), headers=TEAM)
    assert taken.status_code == 409 and "proj-foreign" not in taken.text and "links" not in taken.text
    # A signed link stays scoped to its one job, whoever asked for it.
    link = urlsplit(done["links"]["artifacts"]["manifest.json"])
    assert http.get(link.path + "?" + link.query).status_code == 200
    # The key's own projects: everything works.
    own = tiny_render_job()
    assert http.post("/v1/previews", json=own, headers=TEAM).status_code == 202
    assert http.get(f"/v1/previews/{own['jobId']}", headers=TEAM).status_code == 200
    with http.stream("GET", f"/v1/previews/{own['jobId']}/events", headers=TEAM) as events:
        assert events.status_code == 200
    assert http.delete(f"/v1/previews/{own['jobId']}", headers=TEAM).status_code == 202


def test_a_project_key_cannot_cancel_a_waiting_job_of_another_project(http):
    assert http.post("/v1/projects/proj-foreign/pause", headers=AUTH).status_code == 200
    try:
        waiting = _foreign_job()
        assert http.post("/v1/previews", json=waiting, headers=AUTH).status_code == 202
        assert http.delete(f"/v1/previews/{waiting['jobId']}", headers=TEAM).status_code == 404
        assert http.get(f"/v1/previews/{waiting['jobId']}", headers=AUTH).json()["state"] == "queued"
        foreign = http.get("/v1/queues", headers=AUTH).json()["projects"]["proj-foreign"]
        assert foreign["paused"] and foreign["waiting"] == 1
        assert http.delete(f"/v1/previews/{waiting['jobId']}", headers=AUTH).json()["state"] == "cancelled"
    finally:
        assert http.post("/v1/projects/proj-foreign/resume", headers=AUTH).status_code == 200


def test_a_project_key_cannot_reach_the_operator_routes_or_replay_a_dead_letter(http, worker):
    dead = _foreign_job(dryRun=False)
    dead["previewRequest"]["assets"] = [{"id": "gone", "type": "image", "path": "images/missing.png"}]
    dead["previewRequest"]["steps"][1]["image"] = "gone"
    assert http.post("/v1/previews", json=dead, headers=AUTH).status_code == 202
    assert wait_done(http, dead["jobId"])["state"] == "dead"
    for method, path in (("GET", "/v1/queues"), ("GET", "/v1/dead-letters"),
                         ("POST", f"/v1/dead-letters/{dead['jobId']}/replay"),
                         ("POST", "/v1/projects/proj-catan-demo/pause"),
                         ("POST", "/v1/projects/proj-catan-demo/resume")):
        r = http.request(method, path, headers=TEAM)
        assert r.status_code == 403 and "operator" in r.json()["error"], (method, path, r.status_code)
    assert http.get(f"/v1/previews/{dead['jobId']}", headers=AUTH).json()["state"] == "dead"  # not replayed
    assert dead["jobId"] in [d["jobId"] for d in http.get("/v1/dead-letters", headers=AUTH).json()]
    assert http.post("/v1/projects/..bad/pause", headers=AUTH).status_code == 422


def test_a_project_past_its_queue_limit_gets_429_naming_it_while_others_are_accepted(http, make_job,
                                                                                        settings_env):
    settings_env(PREVIEW_PROJECT_QUEUE_MAX="1", PREVIEW_QUEUE_AHEAD="1")
    codes = [http.post("/v1/previews", json=make_job(projectId="proj-team"), headers=TEAM).status_code
             for _ in range(3)]
    assert codes == [202, 202, 429]  # one handed to Celery's queue, one waiting its turn, then full
    full = http.post("/v1/previews", json=make_job(projectId="proj-team"), headers=TEAM)
    assert full.json()["project"] == "proj-team" and full.json()["limit"] == 1
    assert int(full.headers["retry-after"]) > 0
    other = http.post("/v1/previews", json=make_job(projectId="proj-catan-demo"), headers=TEAM)
    assert other.status_code == 202
