"""The renderer on its own (no Celery): real files, checked with ffprobe (or ffmpeg -i)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import RUN_DIR, encode_count, fake_ffmpeg, tiny_render_job
from PIL import Image, ImageChops, ImageStat

import mobius_preview
from mobius_preview import client, render, storage
from mobius_preview.errors import AssetError, LimitExceeded
from mobius_preview.render import captions, ffmpeg, manifest, slides
from mobius_preview.render.plan import NARRATION_PAUSE, estimate_seconds

ASSETS = RUN_DIR / "assets"
PROJECT = ASSETS / "proj-catan-demo"
EXAMPLE = Path(__file__).resolve().parent.parent / "schemas" / "examples" / "catan-intro.json"


def catan(**options) -> dict:
    job = json.loads(EXAMPLE.read_text())
    job["previewRequest"]["options"].update(options)
    return job


def rendered(job: dict, tmp_path: Path) -> tuple[render.Prepared, Path, dict]:
    prepared = render.prepare(render.identify(job, ASSETS), 900)
    out = tmp_path / "out"
    out.mkdir()
    data = render.render(prepared, out, timeout=120)
    return prepared, out, data


def stream(info: dict, kind: str) -> dict:
    return next(s for s in info["streams"] if s["type"] == kind)


@pytest.mark.parametrize(
    ("fmt", "vcodec", "acodec"), [("mp4", "h264", "aac"), ("webm", "vp9", "opus")]
)
def test_video_matches_the_plan(tmp_path, fmt, vcodec, acodec):
    prepared, out, data = rendered(catan(format=fmt, resolution="640x360"), tmp_path)
    video = out / f"preview.{fmt}"
    info = ffmpeg.probe(video)  # ffprobe when installed
    assert abs(info["duration"] - prepared.plan.duration) <= 0.05, (info, prepared.plan.duration)
    v, a = stream(info, "video"), stream(info, "audio")
    assert (v["codec"], v["width"], v["height"]) == (vcodec, 640, 360)
    assert a["codec"] == acodec and a["sampleRate"] == 48000
    assert data["output"]["streams"] == info["streams"]
    assert manifest.verify(out) == []
    assert {f["name"] for f in data["files"]} == {
        f"preview.{fmt}", "poster.png", "contact-sheet.png", "captions.srt", "captions.vtt"
    }


def top_level_boxes(data: bytes) -> list[str]:
    """The MP4's top-level boxes in file order (ISO BMFF: 32-bit size, type, 64-bit size if 1)."""
    boxes, at = [], 0
    while at + 8 <= len(data):
        size, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[at + 8:at + 16], "big")
        elif size == 0:  # to the end of the file
            size = len(data) - at
        assert size >= 8, (kind, size, at)
        boxes.append(kind)
        at += size
    assert at == len(data), "a box runs past the end of the file"
    return boxes


def test_mp4_is_streamable_faststart(tmp_path):
    _, out, _ = rendered(catan(resolution="320x180"), tmp_path)
    boxes = top_level_boxes((out / "preview.mp4").read_bytes())
    # A player streaming the file needs the index (moov) before the media data (mdat).
    assert boxes[0] == "ftyp" and "moov" in boxes and "mdat" in boxes, boxes
    assert boxes.index("moov") < boxes.index("mdat"), boxes


def test_step_timing_rules(tmp_path):
    prepared = render.prepare(render.identify(catan(), ASSETS), 900)
    plan = prepared.plan
    setup, cards, dice, trade = plan.slides
    narration = prepared.assets["voice-setup"].duration
    assert abs(setup.duration - (narration + NARRATION_PAUSE)) <= 1 / plan.fps  # narration length
    assert dice.duration == 4.5  # durationSec wins
    assert abs(trade.duration - estimate_seconds(trade.text)) <= 1 / plan.fps  # reading time
    assert trade.duration >= 2.0
    assert [s.start for s in plan.slides] == pytest.approx(
        [0, setup.duration, setup.duration + cards.duration,
         setup.duration + cards.duration + dice.duration]
    )


def test_captions_one_cue_per_step_timed_to_steps_in_the_language(tmp_path):
    prepared, out, _ = rendered(catan(language="fr", resolution="320x180"), tmp_path)
    vtt = (out / "captions.vtt").read_text()
    srt = (out / "captions.srt").read_text()
    assert vtt.startswith("WEBVTT")
    cues = re.findall(r"(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(.+)", vtt)
    assert len(cues) == 4 == srt.count(" --> ")
    assert cues[0][2].startswith("Mélangez les tuiles")  # textFr
    assert cues[3][2].startswith("Trade with other players")  # no textFr: falls back to text

    def secs(stamp: str) -> float:
        h, m, s = stamp.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    for (start, end, _), slide in zip(cues, prepared.plan.slides, strict=True):
        assert secs(start) == pytest.approx(slide.start, abs=0.001)
        assert secs(end) == pytest.approx(slide.start + slide.duration, abs=0.001)


def test_no_steps_renders_a_title_card_with_silent_audio(tmp_path):
    job = json.loads(EXAMPLE.read_text())
    job["previewRequest"].update(steps=[], assets=[], audio={})
    prepared, out, _ = rendered(job, tmp_path)
    assert len(prepared.plan.slides) == 1 and prepared.plan.slides[0].title == job["previewRequest"]["title"]
    info = ffmpeg.probe(out / "preview.mp4")
    assert stream(info, "audio")["codec"] == "aac"
    assert abs(info["duration"] - prepared.plan.duration) <= 0.05


def _frame_at(video: Path, seconds: float, size: tuple[int, int], out: Path) -> Image.Image:
    """The picture a player shows at ``seconds`` (the stream is VFR: resample to CFR first)."""
    ffmpeg.run(["-v", "error", "-y", "-i", str(video), "-vf",
                f"fps=30,trim=start={seconds:.3f},setpts=PTS-STARTPTS", "-frames:v", "1",
                "-s", f"{size[0]}x{size[1]}", str(out)])
    return Image.open(out).convert("RGB")


def _diff(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


# A few seconds of renders: left to `make test`, so `make check` stays under a minute.
@pytest.mark.slow(3)
@pytest.mark.parametrize("burn", [False, True])
def test_each_step_midpoint_shows_its_slide(tmp_path, burn):
    prepared, out, _ = rendered(catan(resolution="480x270", burnCaptions=burn), tmp_path)
    plan = prepared.plan
    drawn = [slides.draw(plan, s) for s in plan.slides]
    for slide in plan.slides:
        frame = _frame_at(out / "preview.mp4", slide.start + slide.duration / 2, (480, 270),
                          tmp_path / f"f{slide.index}.png")
        diffs = [_diff(frame, d) for d in drawn]
        assert diffs[slide.index] < 6, diffs  # the right slide, within compression noise
        assert diffs[slide.index] == min(diffs), diffs  # and not another step's


def test_burnt_captions_change_the_picture():
    plan = render.prepare(render.identify(catan(burnCaptions=True), ASSETS), 900).plan
    plain = render.prepare(render.identify(catan(), ASSETS), 900).plan
    assert _diff(slides.draw(plan, plan.slides[0]), slides.draw(plain, plain.slides[0])) > 0.5


def integrated_lufs(path: Path, start: float = 0.0, seconds: float | None = None) -> float:
    span = ["-ss", f"{start:.3f}"] + (["-t", f"{seconds:.3f}"] if seconds else [])
    err = ffmpeg.run(["-nostats", *span, "-i", str(path), "-map", "0:a", "-af", "ebur128", "-f", "null", "-"])
    return float(re.findall(r"I:\s+(-?\d+\.\d) LUFS", err)[-1])


def test_loudness_is_normalised_clip_by_clip_to_minus_16_lufs(tmp_path):
    prepared, out, data = rendered(catan(resolution="320x180"), tmp_path)  # normalize: true
    setup = prepared.plan.slides[0]
    # The narration sets the level: a narrated step measures -16 LUFS (music ducked under it).
    assert -17.0 <= integrated_lufs(out / "preview.mp4", setup.start, setup.duration) <= -15.0
    clips = data["output"]["loudness"]["clips"]
    assert data["output"]["loudness"]["method"] == "per-clip"
    assert set(clips) == {"voice-setup", "voice-cards", "voice-dice", "music"}
    assert all(round(c["lufs"] + c["gainDb"], 1) == -16.0 for c in clips.values())
    # The step with music alone sits at -16 + 20 log10(musicVolume 0.25) = -28 LUFS; the whole
    # track lands between (the figure the docs give against a whole-track measurement).
    assert -20.0 <= integrated_lufs(out / "preview.mp4") <= -16.0


def test_manifest_verification_catches_tampering(tmp_path):
    _, out, data = rendered(catan(resolution="320x180"), tmp_path)
    assert data["rendererVersion"] == render.RENDERER_VERSION
    assert data["timings"]["segments"] > 0 and data["timings"]["join"] > 0
    assert [s["stepId"] for s in data["plan"]["slides"]] == ["setup", "cards", "dice", "trade"]
    with (out / "poster.png").open("ab") as fh:
        fh.write(b"x")
    (out / "extra.txt").write_text("?")
    problems = manifest.verify(out)
    assert any(p.startswith("poster.png: size") for p in problems)
    assert "extra.txt: not in the manifest" in problems
    from mobius_preview.cli import main

    assert main(["verify", str(out)]) == 1


# Bad input: each is a permanent error naming the asset and the reason.

def _job_with_asset(path: str, kind: str = "image", **extra) -> dict:
    job = tiny_render_job()
    asset = {"id": "board", "type": kind, "path": path, **extra}
    job["previewRequest"]["assets"] = [asset]
    if kind == "audio":
        job["previewRequest"]["steps"][1].pop("image")
        job["previewRequest"]["steps"][1]["narration"] = "board"
    return job


def _identify_and_prepare(job: dict) -> None:
    render.prepare(render.identify(job, ASSETS), 900)


@pytest.fixture
def bad_files():
    made = []

    def make(name: str, content: bytes | None = None, link_to: str | None = None) -> str:
        path = PROJECT / "bad" / name
        path.parent.mkdir(exist_ok=True)
        if link_to:
            path.symlink_to(link_to)
        elif content is None:
            os.mkfifo(path)
        else:
            path.write_bytes(content)
        made.append(path)
        return f"bad/{name}"

    yield make
    shutil.rmtree(PROJECT / "bad", ignore_errors=True)


def test_bad_assets_are_permanent_errors_naming_the_asset(bad_files):
    secret = RUN_DIR / "secret.png"
    secret.write_bytes((PROJECT / "images" / "board.png").read_bytes())
    cases = [
        (_job_with_asset("images/none.png"), "file not found: 'images/none.png'"),
        (_job_with_asset(bad_files("broken.png", b"not an image at all")), "Pillow cannot open"),
        (_job_with_asset(bad_files("noise.mp3", os.urandom(4000)), kind="audio"),
         "ffmpeg cannot decode the audio"),
        (_job_with_asset("images/board.png", sha256="0" * 64), "sha256: file's sha256 is"),
        (_job_with_asset(bad_files("escape.png", link_to=str(secret))), "resolves outside the project"),
        (_job_with_asset(bad_files("device.png", link_to="/dev/zero")), "resolves outside the project"),
        (_job_with_asset(bad_files("fifo.png")), "is not a regular file"),
        (_job_with_asset("../proj-other/x.png"), "must be relative, without '..'"),
    ]
    for job, reason in cases:
        with pytest.raises(AssetError) as caught:
            _identify_and_prepare(job)
        assert "$.previewRequest.assets[0]" in str(caught.value) and reason in str(caught.value), (
            str(caught.value))


def test_decompression_bomb_is_refused(bad_files):
    from io import BytesIO

    buf = BytesIO()
    Image.new("1", (12000, 12000)).save(buf, "PNG")  # 144 Mpx, a few KB on disk
    job = _job_with_asset(bad_files("bomb.png", buf.getvalue()))
    with pytest.raises(AssetError, match=r"(decompression bomb|more than)"):
        _identify_and_prepare(job)


def test_a_plan_longer_than_the_limit_is_refused():
    job = tiny_render_job()
    job["previewRequest"]["steps"] = [{"id": f"s{i}", "text": "t", "durationSec": 100} for i in range(10)]
    with pytest.raises(LimitExceeded, match=r"the plan lasts 1000\.0 s, the limit is 900 s"):
        render.prepare(render.identify(job, ASSETS), 900)


def test_bad_asset_through_the_worker_leaves_the_store_clean(worker, bad_files):
    def listing(sub: str) -> set:
        folder = storage.root() / sub
        return set(folder.iterdir()) if folder.exists() else set()

    before = (listing("previews"), listing("tmp"))
    job = _job_with_asset(bad_files("broken2.png", b"\x89PNG garbage"))
    mobius_preview.submit(job)
    st = client.wait(job["jobId"], timeout=30)
    assert st["state"] == "dead" and st["attempts"] == 1 and "Pillow cannot open" in st["error"]
    assert (listing("previews"), listing("tmp")) == before  # nothing stored, nothing left over


def test_cache_hit_under_a_new_job_id_does_no_encoding(worker, settings_env, tmp_path):
    settings_env(FFMPEG_BINARY=str(fake_ffmpeg(tmp_path)))
    first = tiny_render_job()
    second = json.loads(json.dumps(first))
    second["jobId"] = first["jobId"] + "-again"
    second["requestId"] = "another-request"
    mobius_preview.submit(first)
    a = client.wait(first["jobId"], timeout=60)
    mobius_preview.submit(second)
    b = client.wait(second["jobId"], timeout=60)
    assert a["state"] == b["state"] == "succeeded"
    assert (a["cacheHit"], b["cacheHit"]) == (False, True)
    assert a["key"] == b["key"] and a["artifacts"] == b["artifacts"]
    assert encode_count(tmp_path) == 1
    assert b["renders"] == 0
    stored = Path(b["artifacts"]["manifest.json"]).parent
    assert storage.find_job(second["projectId"], second["jobId"]) == stored


def test_concurrent_renders_of_one_key_end_with_one_complete_copy(tmp_path):
    job = tiny_render_job()
    identified = render.identify(job, ASSETS)
    prepared = render.prepare(identified, 900)
    folders, errors = [], []

    def go():
        try:
            work = storage.new_workdir(identified.key)
            render.render(prepared, work, timeout=60)
            folders.append(storage.publish(work, identified.key))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(folders)) == 1
    assert manifest.verify(folders[0]) == []
    assert not [p for p in (storage.root() / "tmp").iterdir() if p.name.startswith(identified.key)]


def test_stale_temporary_folders_are_cleaned(tmp_path):
    old = storage.new_workdir("a" * 64)
    (old / "partial.mp4").write_bytes(b"x")
    os.utime(old, (0, 0))
    fresh = storage.new_workdir("b" * 64)
    assert storage.clean_stale(3600) >= 1
    assert not old.exists() and fresh.exists()
    storage.discard(fresh)


def test_ffmpeg_choice_and_error_output(settings_env, tmp_path):
    assert Path(ffmpeg.ffmpeg_exe()).exists()
    with pytest.raises(Exception) as caught:
        ffmpeg.run(["-i", str(tmp_path / "missing.wav"), "-f", "null", "-"])
    assert "exit code" in str(caught.value) and "missing.wav" in str(caught.value)
    settings_env(FFMPEG_BINARY=shutil.which("true") or "/bin/true")
    assert ffmpeg.ffmpeg_exe().endswith("true")


def test_captions_escape_markup():
    job = tiny_render_job()
    job["previewRequest"]["steps"][0]["text"] = "Use <b>bold</b> & arrows --> here"
    plan = render.prepare(render.identify(job, ASSETS), 900).plan
    assert "&lt;b>bold&lt;/b> &amp; arrows --&gt; here" in captions.vtt(plan)


def test_ffprobe_is_used_when_present():
    if not shutil.which("ffprobe"):
        print("ffprobe not on PATH: media facts come from ffmpeg -i")
    info = ffmpeg.probe(EXAMPLE.parent / "assets" / "proj-catan-demo" / "audio" / "narration-01.mp3")
    assert info["tool"] == ("ffprobe" if shutil.which("ffprobe") else "ffmpeg")
    assert 2.0 < info["duration"] < 2.6


def test_subprocess_cli_verify_ok(tmp_path):
    _, out, _ = rendered(catan(resolution="320x180"), tmp_path)
    proc = subprocess.run(
        [str(Path(os.sys.executable).parent / "mobius-preview"), "verify", str(out)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK")


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
@pytest.mark.parametrize("fps", [1, 10, 60])
def test_every_format_and_frame_rate_encodes_to_the_planned_length(tmp_path, fmt, fps):
    job = tiny_render_job(resolution="160x90", fps=fps, format=fmt)
    prepared, out, _ = rendered(job, tmp_path)
    info = ffmpeg.probe(out / f"preview.{fmt}")
    assert abs(info["duration"] - prepared.plan.duration) <= 0.05, (info["duration"], prepared.plan.duration)


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_the_wheels_ffmpeg_renders_too(tmp_path, settings_env, fmt):
    """A fresh machine has only imageio-ffmpeg's binary: render with it even where ffmpeg is installed."""
    import imageio_ffmpeg

    settings_env(FFMPEG_BINARY=imageio_ffmpeg.get_ffmpeg_exe())
    assert ffmpeg.ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()
    prepared, out, data = rendered(catan(format=fmt, resolution="320x180", fps=10), tmp_path)
    assert data["binaries"]["ffmpeg"] == imageio_ffmpeg.get_ffmpeg_exe()
    assert abs(ffmpeg.probe(out / f"preview.{fmt}")["duration"] - prepared.plan.duration) <= 0.05
