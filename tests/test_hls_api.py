"""The HLS preview while the job runs: announced (``playable`` event, ``links.playlist``),
served signed, and played by a real browser before the job ends.

Real Redis, a real worker, a live uvicorn. The job is held in its last stage (the MP4
join) by an ffmpeg wrapper that waits for a gate file the test opens when it has seen
what it waits for, so "before the job ends" is certain, not a race.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import tiny_render_job
from test_api import AUTH, wait_done
from test_api import api_url as api_url  # fixtures
from test_api import http as http

from mobius_preview.render import ffmpeg as ff

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def gated_ffmpeg(tmp_path: Path) -> tuple[Path, Path]:
    """An ffmpeg whose MP4 join (the render's last stage) waits until ``gate`` exists."""
    gate, script = tmp_path / "gate", tmp_path / "ffmpeg"
    script.write_text(f"""#!/bin/sh
case "$*" in
  *slides.ffconcat*) n=0; while [ ! -e {gate} ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done ;;
esac
exec {ff.ffmpeg_exe()} "$@"
""")
    script.chmod(0o755)
    return script, gate


def until_playable(http: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """The job's events as the API streams them, up to its ``playable`` one."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with http.stream("GET", f"/v1/previews/{job_id}/events", headers=AUTH, timeout=60) as response:
        for line in response.iter_lines():
            if not line:
                if "data" in current:
                    events.append(current)
                    ended = current["data"].get("state") in ("succeeded", "dead")
                    if current["event"] == "playable" or ended:
                        break
                current = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                current[field] = value.strip() if field != "data" else json.loads(value)
    return events


def job_of(steps: int, seconds: float) -> dict[str, Any]:
    job = tiny_render_job(fps=10)
    first = job["previewRequest"]["steps"][0]
    job["previewRequest"]["steps"] = [dict(first, id=f"s{n}", title=f"Step {n + 1}", durationSec=seconds,
                                           text=f"{first['text']} {n}") for n in range(steps)]
    return job


@pytest.fixture(scope="module")
def store_server(tmp_path_factory):
    """A real SeaweedFS for the store variant (started once for this module)."""
    import seaweed

    srv = seaweed.start(tmp_path_factory.mktemp("weed"))
    srv.bucket_create("mobius-hls")
    yield srv
    srv.kill()


@pytest.fixture(params=["disk", "store"])
def where(request, settings_env) -> Iterator[str]:
    """The growing preview published on this host's disk, or in the object store
    (live/<jobId>/ in the bucket), from where the API serves it to any host."""
    if request.param == "store":
        server = request.getfixturevalue("store_server")
        settings_env(**server.env(), PREVIEW_STORAGE_URL=f"s3://mobius-hls/run-{os.getpid()}-{time.time_ns()}")
    yield request.param


def test_playable_event_and_playlist_link_come_before_the_job_ends(http, worker, settings_env, tmp_path,
                                                                   where):
    script, gate = gated_ffmpeg(tmp_path)
    settings_env(FFMPEG_BINARY=str(script))
    job = job_of(4, 1.0)
    job_id = job["jobId"]
    assert http.post("/v1/previews", json=job, headers=AUTH).status_code == 202
    try:
        events = until_playable(http, job_id)
        assert events[-1]["event"] == "playable", events
        status = http.get(f"/v1/previews/{job_id}", headers=AUTH).json()
        assert status["state"] == "running" and status["playable"] is True
        links = status["links"]
        assert links["playlist"] and links["page"], links
        # Signed like the other artifacts: no link, no playlist.
        assert http.get(links["playlist"].split("?")[0]).status_code == 403
        r = http.get(links["playlist"])
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.apple.mpegurl")
        assert r.headers["cache-control"] == "no-store"
        text = r.text
        assert "#EXT-X-PLAYLIST-TYPE:EVENT" in text and "#EXT-X-ENDLIST" not in text  # still growing
        query = links["playlist"].split("?")[1]
        uris = [line for line in text.splitlines() if line and not line.startswith("#")]
        init = re.search(r'URI="([^"]+)"', text).group(1)
        assert uris and all(u.endswith("?" + query) for u in [*uris, init])
        base = links["playlist"].rsplit("/", 1)[0]
        segment = http.get(f"{base}/{uris[0]}")
        assert segment.status_code == 200 and segment.content[4:8] == b"moof"
        assert http.get(f"{base}/{init}").content[4:8] == b"ftyp"
        assert http.get(f"{base}/../../x/{uris[0]}").status_code == 404
        page = http.get(links["page"])
        assert page.status_code == 200 and 'data-running="1"' in page.text and "hls.light.min.js" in page.text
        assert http.get(f"/v1/previews/{job_id}", headers=AUTH).json()["state"] == "running"
    finally:
        gate.touch()
    done = wait_done(http, job_id)
    assert done["state"] == "succeeded"
    final = http.get(done["links"]["playlist"]).text
    assert final.rstrip().endswith("#EXT-X-ENDLIST") and len(re.findall("#EXTINF", final)) == 4
    assert "preview.m3u8" in done["links"]["artifacts"]  # the finished preview keeps it, from its folder
    from mobius_preview import results, storage

    if where == "store":  # the live copy went with the job's end; the finished one is in the bucket
        assert (storage.lookup(results.status(job_id)["key"]) or "").startswith("s3://")
        assert not list(storage.remote().list(f"live/{job_id}/"))
    else:
        assert not storage.live_dir(job_id).exists()


class Chromium:
    """Headless Chromium driven over --remote-debugging-pipe (fd 3 in, fd 4 out, JSON + NUL):
    the standard library only, no port."""

    FLAGS = ["--headless=new", "--no-sandbox", "--autoplay-policy=no-user-gesture-required",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--disable-quic", "--disable-gpu", "--mute-audio", "--disable-dev-shm-usage",
             "--window-size=1000,900", "--remote-debugging-pipe", "about:blank"]

    def __init__(self, binary: str, profile: Path) -> None:
        r3, self.w3 = os.pipe()
        self.r4, w4 = os.pipe()

        def child_fds() -> None:  # the pipe ends onto 3 and 4, through high numbers so none is clobbered
            a, b = os.dup2(r3, 100), os.dup2(w4, 101)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([binary, f"--user-data-dir={profile}", *self.FLAGS],
                                     preexec_fn=child_fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(r3)
        os.close(w4)
        self.buf, self.id = b"", 0
        target = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                 page=False)["sessionId"]

    def send(self, method: str, params: dict[str, Any] | None = None, page: bool = True) -> dict[str, Any]:
        self.id += 1
        message: dict[str, Any] = {"id": self.id, "method": method, "params": params or {}}
        if page and getattr(self, "session", None):
            message["sessionId"] = self.session
        os.write(self.w3, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buf:
                chunk = os.read(self.r4, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed its debugging pipe")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str) -> Any:
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return reply["result"].get("value")

    def close(self) -> None:
        try:
            self.send("Browser.close", page=False)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_chromium_plays_the_review_page_while_the_job_still_runs(http, worker, settings_env, tmp_path):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        print("SKIP REASON: chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium not installed")
    script, gate = gated_ffmpeg(tmp_path)
    settings_env(FFMPEG_BINARY=str(script))
    job = job_of(4, 2.0)
    job_id = job["jobId"]
    assert http.post("/v1/previews", json=job, headers=AUTH).status_code == 202
    browser = None
    try:
        assert until_playable(http, job_id)[-1]["event"] == "playable"
        links = http.get(f"/v1/previews/{job_id}", headers=AUTH).json()["links"]
        page = str(http.base_url).rstrip("/") + links["page"]
        browser = Chromium(binary, tmp_path / "profile")
        browser.send("Page.enable")
        browser.send("Page.navigate", {"url": page})
        seen: list[tuple[float, str]] = []
        deadline = time.monotonic() + 60
        probe = ("JSON.stringify({t: (document.getElementById('player') || {}).currentTime,"
                 " player: document.body && document.body.dataset.player,"
                 " error: document.body && document.body.dataset.hlsError})")
        while time.monotonic() < deadline:
            now = json.loads(browser.evaluate(probe) or "{}")
            state = http.get(f"/v1/previews/{job_id}", headers=AUTH).json()["state"]
            seen.append((now.get("t") or 0.0, state))
            if len([t for t, s in seen if t > 0 and s == "running"]) >= 2 and seen[-1][0] > 1.0:
                break
            browser.send("Runtime.evaluate", {"expression": "new Promise(r => setTimeout(r, 200))",
                                              "awaitPromise": True})  # the browser's clock paces the poll
        print("currentTime and job state as polled:", seen[-5:], now)
        running = [t for t, s in seen if s == "running"]
        assert now.get("player") == "hls.js" and not now.get("error"), now
        assert running[-1] > 1.0 and running[-1] > min(t for t in running if t > 0), seen
        ARTIFACTS.mkdir(exist_ok=True)
        shot = browser.send("Page.captureScreenshot", {"format": "png"})["data"]
        (ARTIFACTS / "review-page-hls-running.png").write_bytes(base64.b64decode(shot))
        assert http.get(f"/v1/previews/{job_id}", headers=AUTH).json()["state"] == "running"
    finally:
        gate.touch()
        if browser is not None:
            browser.close()
    assert wait_done(http, job_id)["state"] == "succeeded"
