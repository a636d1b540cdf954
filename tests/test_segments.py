"""Segments: each step rendered alone, kept by key, joined by stream copy.

Judged on decoded output: the joined audio against a whole render of the same job,
sample for sample; exact lengths; every step's first frame against its audio; and
which segments an edit renders again.
"""

from __future__ import annotations

import array
import copy
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import imageio_ffmpeg
import pytest
from conftest import RUN_DIR, fake_ffmpeg

from mobius_preview import render
from mobius_preview.errors import EncoderError
from mobius_preview.render import encode, ffmpeg, mix, segments
from mobius_preview.render.store import SegmentStore, prune

ASSETS = RUN_DIR / "assets"
PROJECT = "proj-segments"
RATE = segments.SAMPLE_RATE


@pytest.fixture(scope="module")
def tones() -> Path:
    """Narration clips that start sharply (sines, a different pitch each), a busy music loop."""
    root = ASSETS / PROJECT
    (root / "audio").mkdir(parents=True, exist_ok=True)
    for n in range(6):
        ffmpeg.run(["-v", "error", "-y", "-f", "lavfi", "-i", f"sine=f={330 + 55 * n}:d=1.7:r=24000",
                    "-af", "volume=0.4", "-c:a", "libmp3lame", "-b:a", "64k",
                    str(root / "audio" / f"voice{n}.mp3")])
    ffmpeg.run(["-v", "error", "-y", "-f", "lavfi", "-i",
                "aevalsrc=0.25*sin(2*PI*110*t)*(0.6+0.4*sin(2*PI*3*t))+0.05*sin(2*PI*2200*t)"
                ":s=44100:d=1.37", "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k",
                str(root / "audio" / "music.mp3")])
    return root


def tone_job(steps: int = 6, *, fps: int = 30, music: bool = True, normalize: bool = True,
             seconds: tuple[float, ...] = (2.0, 2.5, 2.2, 3.1, 2.0, 2.7)) -> dict:
    request = {
        "title": "Segments",
        "steps": [{"id": f"s{n}", "title": f"Step {n + 1}", "text": f"Do the thing number {n + 1}.",
                   "durationSec": seconds[n % len(seconds)], "narration": f"v{n}"} for n in range(steps)],
        "assets": [{"id": f"v{n}", "type": "audio", "path": f"audio/voice{n}.mp3"} for n in range(steps)],
        "audio": {"musicVolume": 0.3, "normalize": normalize},
        "options": {"resolution": "320x180", "fps": fps, "format": "mp4"},
    }
    if music:
        request["assets"].append({"id": "music", "type": "audio", "path": "audio/music.mp3"})
        request["audio"]["music"] = "music"
    return {"jobId": "seg", "projectId": PROJECT, "requestId": "seg", "previewRequest": request}


def rendered(job: dict, out: Path, store: Path, threads: int = 2) -> tuple[render.Prepared, dict]:
    prepared = render.prepare(render.identify(job, ASSETS), 900)
    out.mkdir(parents=True)
    return prepared, render.render(prepared, out, timeout=120, segments=store, threads=threads)


def pcm(path: Path) -> array.array:
    """The first audio stream decoded to interleaved stereo float samples.

    Decoded by the wheel's ffmpeg (9.x) whatever renders: Debian's ffmpeg 5.1 honours an
    MP4 edit list's start but not its end, and would hand back the encoder's padding too.
    """
    data = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0",
                           "-f", "f32le", "-ac", "2", "-ar", str(RATE), "-"],
                          capture_output=True, check=True).stdout
    return array.array("f", data)


def frame_times(path: Path) -> list[float]:
    err = ffmpeg.run(["-i", str(path), "-map", "0:v", "-vf", "showinfo", "-f", "null", "-"])
    return [float(t) for t in re.findall(r"pts_time:([\d.]+)", err)]


def whole_reference(prepared: render.Prepared, store: Path, out: Path) -> Path:
    """The same job's audio mixed and encoded in one piece (one window from 0 to the end),
    put beside the same video by the same join: what a segmented track must sound like."""
    plan = prepared.plan
    codec = encode.CODECS["mp4"]
    parts = SegmentStore(store)
    music, samples = mix.music_pcm(plan.music, parts, timeout=60) if plan.music else (None, None)
    whole = segments.run_of(segments.audio_segments(plan, codec["audio"], samples, whole=True))
    out.mkdir()
    track = out / "whole.aac"
    mix.encode_run(plan, whole, music, codec["audio"], [track], timeout=60)
    videos = [parts.path(s.key, ".mp4") for s in segments.video_segments(plan, codec["video"])]
    encode.assemble(plan, videos, [track], out, out / "whole.mp4", timeout=60)
    return out / "whole.mp4"


def joins(prepared: render.Prepared) -> list[int]:
    plan = prepared.plan
    return [segments.sample_at(plan, round(s.start * plan.fps)) for s in plan.slides[1:]]


# A few seconds of renders: left to `make test`, so `make check` stays under a minute.
@pytest.mark.slow(4)
def test_joined_audio_matches_a_whole_render_sample_for_sample(tmp_path, tones):
    # Six threads: every step its own encode, so every join is between two encoders (as
    # after edits); fewer threads cut runs of steps out of one encode.
    prepared, data = rendered(tone_job(), tmp_path / "seg", tmp_path / "store", threads=6)
    assert data["output"]["segments"]["audio"]["encodes"] == 6
    joined = pcm(tmp_path / "seg" / "preview.mp4")
    whole = pcm(whole_reference(prepared, tmp_path / "store", tmp_path / "whole"))
    total = segments.total_samples(prepared.plan)
    assert len(joined) == len(whole) == 2 * total  # exactly as planned, both
    assert data["output"]["segments"]["audio"]["rendered"] == len(prepared.plan.slides)

    near = set()
    for j in joins(prepared):
        near.update(range(2 * (j - 2048), 2 * (j + 2048)))
    diff = [abs(a - b) for a, b in zip(joined, whole, strict=True)]
    at_joins = max(diff[k] for k in near)
    elsewhere = max(d for k, d in enumerate(diff) if k not in near)
    print(f"largest difference from the whole render: {at_joins:.4f} within 2048 samples of a join, "
          f"{elsewhere:.4f} elsewhere (full scale 1.0)")
    # Two encodes of the same audio differ by coding noise everywhere; a join adds no more than that
    # (a gap, a click or a misaligned packet would be of the signal's size, 0.3 and up).
    assert at_joins <= max(0.05, 1.5 * elsewhere), (at_joins, elsewhere)


@pytest.mark.parametrize("fps", [1, 10, 25, 30, 60])
def test_length_is_exactly_as_planned_at_every_frame_rate(tmp_path, tones, fps):
    prepared, data = rendered(tone_job(3, fps=fps, music=False), tmp_path / "out", tmp_path / "store")
    video = tmp_path / "out" / "preview.mp4"
    assert len(pcm(video)) == 2 * segments.total_samples(prepared.plan)
    starts = frame_times(video)
    assert abs(data["output"]["duration"] - prepared.plan.duration) < 0.5 / fps
    for slide in prepared.plan.slides:  # each step begins with its own frame, on the grid
        assert min(abs(t - slide.start) for t in starts) < 1e-3


def test_every_step_starts_within_one_frame_of_its_audio(tmp_path, tones):
    """Narration alone (a sine starting at its step's first sample), silence between."""
    job = tone_job(music=False, normalize=False)
    prepared, _ = rendered(job, tmp_path / "out", tmp_path / "store")
    video = tmp_path / "out" / "preview.mp4"
    samples, starts = pcm(video), frame_times(video)
    for slide in prepared.plan.slides:
        first = segments.sample_at(prepared.plan, round(slide.start * prepared.plan.fps))
        onset = next(k for k in range(max(0, first - RATE // 10), len(samples) // 2)
                     if abs(samples[2 * k]) > 0.02)
        frame = min(starts, key=lambda t: abs(t - slide.start))
        assert abs(onset / RATE - frame) <= 1 / prepared.plan.fps, (slide.index, onset / RATE, frame)


def render_an_edit(tmp_path: Path, edit) -> tuple[render.Prepared, dict, dict]:
    """Render the tone job, then the job as ``edit`` changes it, with one store."""
    job = tone_job()
    _, first = rendered(job, tmp_path / "a", tmp_path / "store")
    edited = copy.deepcopy(job)
    edit(edited["previewRequest"]["steps"])
    prepared, second = rendered(edited, tmp_path / "b", tmp_path / "store")
    return prepared, first, second


def changed(first: dict, second: dict, kind: str) -> list[int]:
    """The steps whose ``kind`` segment has another key in ``second``."""
    keys = zip(first["output"]["segments"][kind]["keys"], second["output"]["segments"][kind]["keys"],
               strict=True)
    return [n for n, (x, y) in enumerate(keys) if x != y]


@pytest.mark.slow(4)
def test_a_text_edit_renders_one_video_segment_and_reuses_the_audio(tmp_path, tones):
    prepared, first, second = render_an_edit(
        tmp_path, lambda steps: steps[3].update(text="Now something else entirely."))
    made = second["output"]["segments"]
    assert (made["video"]["rendered"], made["audio"]["rendered"]) == (1, 0)
    assert changed(first, second, "video") == [3]
    assert pcm(tmp_path / "a" / "preview.mp4") == pcm(tmp_path / "b" / "preview.mp4")
    assert second["key"] != first["key"]  # the whole preview is still addressed by its content
    assert len(frame_times(tmp_path / "b" / "preview.mp4")) == 2 * len(prepared.plan.slides)
    # One segment encoded alone among five cut from a run: the joined stream decodes cleanly.
    assert ffmpeg.run(["-v", "error", "-i", str(tmp_path / "b" / "preview.mp4"), "-f", "null", "-"]) == ""


@pytest.mark.slow(4)
def test_a_narration_edit_renders_only_the_audio_around_it(tmp_path, tones):
    _, first, second = render_an_edit(tmp_path, lambda steps: steps[2].update(narration="v5"))
    audio = changed(first, second, "audio")
    # Its own step, and the neighbours whose pre-roll or post-roll hears it.
    assert 2 in audio and set(audio) <= {1, 2, 3}, audio
    assert second["output"]["segments"]["video"]["rendered"] == 0


@pytest.mark.slow(4)
def test_threads_change_how_audio_is_cut_into_encodes_not_what_is_heard(tmp_path, tones):
    """One thread: one encode for all six steps, cut at packet boundaries; three threads:
    three runs of consecutive steps. Same keys, same length, the same sound."""
    prepared, one = rendered(tone_job(), tmp_path / "one", tmp_path / "store1", threads=1)
    _, three = rendered(tone_job(), tmp_path / "three", tmp_path / "store3", threads=3)
    made = one["output"]["segments"]["audio"], three["output"]["segments"]["audio"]
    assert (made[0]["encodes"], made[1]["encodes"]) == (1, 3)
    assert made[0]["keys"] == made[1]["keys"]
    assert one["output"]["segments"]["video"]["keys"] == three["output"]["segments"]["video"]["keys"]
    a, b = pcm(tmp_path / "one" / "preview.mp4"), pcm(tmp_path / "three" / "preview.mp4")
    assert len(a) == len(b) == 2 * segments.total_samples(prepared.plan)
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 0.05


def test_a_failed_render_keeps_finished_segments_and_no_half_written_one(tmp_path, tones, settings_env):
    settings_env(FFMPEG_BINARY=str(fake_ffmpeg(tmp_path, fail_first=1)))  # the join fails once
    store = tmp_path / "store"
    job = tone_job(3)
    prepared = render.prepare(render.identify(job, ASSETS), 900)
    (tmp_path / "a").mkdir()
    with pytest.raises(EncoderError):
        render.render(prepared, tmp_path / "a", timeout=60, segments=store)
    assert not [p for p in store.iterdir() if p.name.startswith(".")]
    _, again = rendered(job, tmp_path / "b", store)
    assert again["output"]["segments"]["video"]["rendered"] == 0
    assert again["output"]["segments"]["audio"]["rendered"] == 0


def test_store_refuses_unsafe_names_and_prunes_what_no_render_used(tmp_path):
    store = SegmentStore(tmp_path / "s")
    for bad in ("../x", "a/b", "", "A" * 3, ".hidden"):
        with pytest.raises(ValueError):
            store.path(bad, ".aac")
    old, fresh = store.path("a" * 64, ".aac"), store.path("b" * 64, ".aac")
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    past = time.time() - 10 * 86400
    os.utime(old, (past, past))
    os.utime(fresh, (past, past))
    assert store.get("b" * 64, ".aac") == fresh  # using a segment keeps it

    def half_written(tmps: list[Path]) -> None:
        tmps[0].write_bytes(b"part of it")
        raise EncoderError("the encoder died")

    with pytest.raises(EncoderError):
        store.write(["c" * 64, "c" * 64], ".aac", half_written)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [old.name, fresh.name]
    assert prune(tmp_path / "s", 7 * 86400) == 1
    assert not old.exists() and fresh.exists()


def test_a_starting_worker_prunes_segments_no_render_used_for_days():
    from mobius_preview import storage, worker  # worker: loaded by workers only, as in production

    folder = storage.segments_dir()
    folder.mkdir(parents=True, exist_ok=True)
    old, recent = folder / f"{'c' * 64}.aac", folder / f"{'d' * 64}.aac"
    old.write_bytes(b"x")
    recent.write_bytes(b"y")
    os.utime(old, (0, 0))
    worker._clean_leftovers()
    assert not old.exists() and recent.exists()


def test_steps_that_share_a_segment_render_once_and_join_right(tmp_path, tones):
    """Silent steps of one length fall on the packet grid alike every few steps: same key."""
    job = tone_job(9, music=False, seconds=(2.0,))
    for step in job["previewRequest"]["steps"]:
        del step["narration"]
    job["previewRequest"]["assets"] = []
    prepared, data = rendered(job, tmp_path / "out", tmp_path / "store")
    keys = data["output"]["segments"]["audio"]["keys"]
    assert len(set(keys)) < len(keys)
    assert len(pcm(tmp_path / "out" / "preview.mp4")) == 2 * segments.total_samples(prepared.plan)


@pytest.mark.slow(5)
def test_renders_racing_on_one_store_all_finish_with_the_same_sound(tmp_path, tones):
    """Three renders of one job at once, one shared store (as worker processes share
    DATA_DIR): each makes or takes every segment, none sees a half-written one."""
    results, errors = {}, []

    def go(n: int) -> None:
        try:
            results[n] = rendered(tone_job(), tmp_path / f"out{n}", tmp_path / "store", threads=2)[1]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({json.dumps(r["output"]["segments"]["audio"]["keys"]) for r in results.values()}) == 1
    sounds = [pcm(tmp_path / f"out{n}" / "preview.mp4") for n in range(3)]
    assert all(len(s) == len(sounds[0]) for s in sounds)
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".")]
