"""Turning a valid preview job into files. Knows nothing of Celery, Redis or queues.

Three steps, so a cache hit stays cheap: ``identify`` resolves and hashes the assets
and computes the content key (everything that changes the output); ``prepare`` opens
and decodes them and lays out the plan; ``render`` writes the preview into a folder
it is given. Errors are ``PermanentError`` (the job is at fault) or ``EncoderError``
(transient).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import unicodedata
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from . import assets as asset_checks
from . import captions, encode, ffmpeg, manifest, slides, text
from .control import Control
from .plan import Plan, build

RENDERER_VERSION = "1.1.0"  # 1.1: Noto fonts per character, shaping, mirrored right-to-left
# Fields of a job that never change the output: left out of the content key.
_NOT_CONTENT = ("jobId", "projectId", "requestId", "priority", "attempts", "createdAt", "updatedAt",
                "webhook")
THUMB_WIDTH = 320


@dataclass(frozen=True)
class Identified:
    job: dict[str, Any]
    assets: dict[str, asset_checks.Asset]
    key: str


@dataclass(frozen=True)
class Prepared:
    job: dict[str, Any]
    assets: dict[str, asset_checks.Asset]
    plan: Plan
    key: str


def content_key(job: dict[str, Any], assets: dict[str, asset_checks.Asset]) -> str:
    content = {k: v for k, v in job.items() if k not in _NOT_CONTENT}
    request = dict(content.get("previewRequest", {}))
    request.pop("metadata", None)
    content["previewRequest"] = request
    content["dryRun"] = bool(job.get("dryRun"))
    content["assetBytes"] = {aid: a.sha256 for aid, a in sorted(assets.items())}
    content["renderer"] = RENDERER_VERSION
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def identify(job: dict[str, Any], assets_dir: Path) -> Identified:
    """Locate and hash the assets (safely) and compute the content key."""
    project_root = assets_dir / job["projectId"]
    located = asset_checks.locate(project_root, job["previewRequest"].get("assets") or [])
    return Identified(job, located, content_key(job, located))


def prepare(identified: Identified, max_seconds: float, cache_dir: Path | None = None) -> Prepared:
    """Open every asset and lay out the plan; raises PermanentError on bad input.

    ``cache_dir`` keeps what was learnt about each asset's bytes (see assets.inspect).
    """
    inspected = asset_checks.inspect(identified.assets, cache_dir)
    plan = build(identified.job, inspected, max_seconds)
    return Prepared(identified.job, inspected, plan, identified.key)


class _Stages:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def timed(self, name: str, fn, *args, **kwargs):
        with self.stage(name):
            return fn(*args, **kwargs)

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 4)


def render(prepared: Prepared, out: Path, *, timeout: float,
           control: Control | None = None) -> dict[str, Any]:
    """Write the preview (or, for a dry run, only the manifest) into ``out``.

    ``control`` follows it (progress) and can stop it (Cancelled).
    """
    control = control or Control()
    job, plan = prepared.job, prepared.plan
    stages = _Stages()
    info: dict[str, Any] = {
        "manifestVersion": 1,
        "rendererVersion": RENDERER_VERSION,
        "jobId": job["jobId"],
        "projectId": job["projectId"],
        "requestId": job["requestId"],
        "key": prepared.key,
        "dryRun": bool(job.get("dryRun")),
        "createdAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": plan.as_dict(),
        "assets": [
            {"id": a.id, "type": a.type, "file": a.path.name, "sha256": a.sha256, "size": a.size}
            for a in prepared.assets.values()
        ],
        "binaries": ffmpeg.describe_binaries(),
        "warnings": text_warnings(plan),
    }
    if not job.get("dryRun"):
        info["output"] = _render_media(plan, out, stages, timeout, control)
    info["timings"] = stages.seconds
    return manifest.write(out, info)


def text_warnings(plan: Plan) -> list[str]:
    """What will not look right on the slides: characters no shipped font has (drawn
    from the last resort, as boxes), and text that cannot be shaped here."""
    warnings = []
    if not text.SHAPING:
        warnings.append("text shaping is off (Pillow's raqm needs libfribidi): Arabic, Hebrew, "
                        "Devanagari and Thai are drawn unshaped")
    for slide in plan.slides:
        where = f"step {slide.step_id!r}" if slide.step_id is not None else f"slide {slide.index}"
        found = text.uncovered(f"{slide.title}\n{slide.text}\n{slide.caption}", plan.language)
        if found:
            listed = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, '?')}" for c in found)
            warnings.append(f"{where}: no shipped font has {listed}; drawn from "
                            f"{text.last_resort().name} (a box)")
    return warnings


def warm() -> None:
    """Load what every render needs (font character maps) before a worker forks."""
    text.warm()


def _render_media(plan: Plan, out: Path, stages: _Stages, timeout: float, control: Control) -> dict[str, Any]:
    """Audio on one thread; slides, then the video, on this one; the audio thread writes the file."""
    scratch = out / ".scratch"
    scratch.mkdir()
    video = out / f"preview.{plan.format}"
    video_ready: Future[Path] = Future()
    with ThreadPoolExecutor(max_workers=1) as pool:
        audio = pool.submit(stages.timed, "audio_and_mux", encode.audio_and_mux, plan, scratch,
                            video_ready, video, timeout=timeout, stop=control.stop)
        try:
            video_ready.set_result(_slides_and_video(plan, out, scratch, stages, timeout, control))
        except BaseException as exc:
            video_ready.set_exception(exc)
            raise
        finally:
            with stages.stage("wait_audio"):
                control.progress("audio", 90)
                gain = audio.result()
    shutil.rmtree(scratch)
    with stages.stage("probe"):
        facts = ffmpeg.probe(video)
    return {"file": video.name, "gainDb": gain, **facts}


def _slides_and_video(plan: Plan, out: Path, scratch: Path, stages: _Stages, timeout: float,
                      control: Control) -> Path:
    frames: list[tuple[Path, float]] = []
    thumbs = []
    with stages.stage("slides"):
        for slide in plan.slides:
            control.check()
            control.progress(f"slides {slide.index + 1}/{len(plan.slides)}",
                             10 + 50 * slide.index / len(plan.slides))
            picture = slides.draw(plan, slide)
            path = scratch / f"slide-{slide.index:03d}.bmp"  # uncompressed: quickest both ways
            picture.save(path)
            if slide.index == 0:
                picture.save(out / "poster.png", compress_level=6)
            thumbs.append(picture.resize((THUMB_WIDTH, THUMB_WIDTH * plan.height // plan.width),
                                         Image.Resampling.BILINEAR, reducing_gap=2.0))
            frames.append((path, slide.duration))
    with stages.stage("video"):
        control.progress("video", 60)
        encoding, track = encode.start_video(plan, frames, scratch)
        slides.contact_sheet(thumbs).save(out / "contact-sheet.png", compress_level=6)
        if plan.include_captions:
            (out / "captions.srt").write_text(captions.srt(plan), encoding="utf-8")
            (out / "captions.vtt").write_text(captions.vtt(plan), encoding="utf-8")
        encoding.finish(timeout, control.stop)
    return track


def planned_duration(folder: Path) -> float:
    """The planned length of a stored preview, from its manifest."""
    data = json.loads((folder / manifest.NAME).read_text(encoding="utf-8"))
    return float(data["plan"]["duration"])
