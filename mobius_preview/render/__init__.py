"""Turning a valid preview job into files. Knows nothing of Celery, Redis or queues.

Three steps, so a cache hit stays cheap: ``identify`` resolves and hashes the assets
and computes the content key (everything that changes the output); ``prepare`` checks
what the plan needs of them and lays out the plan; ``render`` writes the preview into a
folder it is given, checking each asset before its first use (a step's clips before its
audio, its picture before its slide), so the first step is out before the last clip is
decoded, and every asset before it ends. Errors are ``PermanentError`` (the job is at
fault) or ``EncoderError`` (transient).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from ..config import settings
from . import artifacts, captions, encode, ffmpeg, hls, manifest, mix, progress, segments, slides, text
from . import assets as asset_checks
from .control import Control
from .plan import Plan, build, lengths_needed, with_assets
from .store import SegmentStore
from .store import prune as prune_segments

__all__ = ["RENDERER_VERSION", "Identified", "Prepared", "artifacts", "content_key", "identify",
           "planned_duration", "prepare", "progress", "prune_segments", "render", "text_warnings", "warm"]

# 1.1: Noto fonts per character, shaping, mirrored right-to-left.
# 1.2: MP4 joined from per-step segments; loudness normalised clip by clip.
RENDERER_VERSION = "1.2.0"
# Fields of a job that never change the output: left out of the content key.
_NOT_CONTENT = ("jobId", "projectId", "requestId", "priority", "attempts", "createdAt", "updatedAt",
                "webhook")
THUMB_WIDTH = 320
_T = TypeVar("_T")


@dataclass(frozen=True)
class Identified:
    job: dict[str, Any]
    assets: dict[str, asset_checks.Asset]
    key: str


@dataclass(frozen=True)
class Prepared:
    job: dict[str, Any]
    assets: dict[str, asset_checks.Asset]  # as known when the plan was laid out
    plan: Plan
    key: str
    inspector: asset_checks.Inspector  # the checks still to make, made by ``render``

    def learnt(self) -> Plan:
        """The plan with every asset fact learnt so far (after ``render``: every clip's loudness)."""
        return with_assets(self.plan, self.inspector.assets())


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
    """Check what the plan needs and lay it out; raises PermanentError on bad input.

    Before the plan: every image opens (its header), and the narration clips of steps
    without ``durationSec`` are decoded (the plan needs their lengths). The other checks
    are left to ``render``. ``cache_dir`` keeps what was learnt about each asset's bytes
    (see assets.Inspector).
    """
    inspector = asset_checks.Inspector(identified.assets, cache_dir)
    inspector.header_checks()
    inspector.learn_all(identified.assets[aid] for aid in lengths_needed(identified.job)
                        if aid in identified.assets)
    assets = inspector.assets()
    plan = build(identified.job, assets, max_seconds)
    return Prepared(identified.job, assets, plan, identified.key, inspector)


class _Stages:
    """How long each part of a render took (the manifest's ``timings``, the metrics' stages)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def timed(self, name: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        with self.stage(name):
            return fn(*args, **kwargs)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 4)


def render(prepared: Prepared, out: Path, *, timeout: float, control: Control | None = None,
           segments: Path | SegmentStore | None = None, threads: int | None = None) -> dict[str, Any]:
    """Write the preview (or, for a dry run, only the manifest) into ``out``.

    ``control`` follows it (progress) and can stop it (Cancelled). ``segments`` is the
    folder of rendered segments shared by renders (none: every segment is made here and
    thrown away); ``threads`` how many segments are made at once (PREVIEW_RENDER_THREADS).
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
        "warnings": [],  # filled in after the render: not on the way to the first segment
    }
    if not job.get("dryRun"):
        media = _Media(plan, out, stages, control, time.monotonic() + timeout,
                       threads or settings().render_threads, prepared.inspector)
        info["output"] = media.render(segments)
    with stages.stage("checks"):  # every asset proven usable, used or not (mostly known by now)
        prepared.inspector.learn_all(prepared.assets.values())
    info["warnings"] = text_warnings(plan)
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


class _Media:
    """One render's video, audio, poster, contact sheet and captions."""

    def __init__(self, plan: Plan, out: Path, stages: _Stages, control: Control, deadline: float,
                 threads: int, inspector: asset_checks.Inspector) -> None:
        self.plan, self.out, self.stages, self.control = plan, out, stages, control
        self.deadline, self.threads, self.inspector = deadline, threads, inspector
        self.scratch = out / ".scratch"

    def left(self) -> float:
        """Seconds left of the render's time limit, for the next ffmpeg it starts."""
        return max(0.1, self.deadline - time.monotonic())

    def render(self, folder: Path | SegmentStore | None) -> dict[str, Any]:
        """Everything, given the stored segments (a folder, a store, or None: a private
        folder, thrown away)."""
        plan = self.plan
        self.scratch.mkdir()
        store = (folder if isinstance(folder, SegmentStore)
                 else SegmentStore(folder or self.scratch / "segments"))
        music, music_samples = None, None
        if plan.music is not None:
            with self.stages.stage("music"):
                music, music_samples = mix.music_pcm(plan.music, store, timeout=self.left(),
                                                     stop=self.control.stop)
        video = self.out / artifacts.video(plan.format)
        if plan.format == "mp4":
            made = self._segmented(store, music, music_samples, video)
        else:
            made = self._whole(music, music_samples, video)
        shutil.rmtree(self.scratch)
        self.plan = with_assets(plan, self.inspector.assets())  # every clip's loudness known
        with self.stages.stage("probe"):
            facts = ffmpeg.probe(video)
        return {"file": video.name, "loudness": self._loudness(), "segments": made, **facts}

    def _loudness(self) -> dict[str, Any] | None:
        """Per-clip normalisation: what each clip was measured at and the gain it was given."""
        plan = self.plan
        if not plan.normalize:
            return None
        clips = {s.narration.id: s.narration for s in plan.slides if s.narration is not None}
        if plan.music is not None:
            clips[plan.music.id] = plan.music
        return {
            "method": "per-clip", "targetLufs": segments.TARGET_LUFS,
            "clips": {cid: {"lufs": a.loudness, "gainDb": segments.clip_gain_db(a, True)}
                      for cid, a in sorted(clips.items())},
        }

    def _segmented(self, store: SegmentStore, music: Path | None, music_samples: int | None,
                   video: Path) -> dict[str, Any]:
        """MP4: every step a video and an audio segment, made only when not already stored,
        several at once; each step's HLS segment published in step order as soon as its two
        segments exist (``hls.Publisher``, on its own thread); then the MP4 joined by stream copy.
        An audio segment whose clips' loudness is not known yet is keyed once it is (``_Audio``)."""
        plan, control = self.plan, self.control
        codec = encode.CODECS["mp4"]
        videos = segments.video_segments(plan, codec["video"])
        audios = segments.audio_segments(with_assets(plan, self.inspector.assets()), codec["audio"],
                                         music_samples)
        found = store.get_many([(s.key, f) for s in videos for f in _video_files(s)]
                               + [(s.key, ".aac") for s in audios if not s.pending])
        todo_video = [s for s in videos if not all(found[s.key, f] for f in _video_files(s))]
        todo_audio = [s for s in audios if s.pending or not found[s.key, ".aac"]]
        media = hls.media_segments(plan, videos, audios)
        publisher = hls.Publisher(plan, store, media, self.out, self.scratch, control.live, self.left,
                                  control.stop)
        publisher.ready("video", sorted({s.index for s in videos} - {s.index for s in todo_video}))
        publisher.ready("audio", sorted({s.index for s in audios} - {s.index for s in todo_audio}))
        audio = _Audio(self, store, codec["audio"], music, music_samples, publisher, audios)

        def encode_video(group: list[segments.VideoSegment], pictures: list[Path]) -> None:
            store.write([seg.key for seg in group], ".mp4", lambda tmps: encode.video_run(
                plan, group, pictures, tmps, timeout=self.left(), stop=control.stop))
            publisher.ready("video", [seg.index for seg in group])
            for picture in pictures:
                picture.unlink()

        # Audio runs (the longest work) go to `threads` threads, one run of consecutive steps
        # each, cut apart afterwards; the first step needed is a run of its own, taken first, so
        # the first HLS segment is out early. Each run's asset checks (the loudness of its clips)
        # are queued on the same threads just before it, so they are made in step order. This
        # thread draws the slides meanwhile (Pillow holds the GIL) and hands each run of them,
        # once drawn, to one more thread for its video; then it makes the contact sheet while
        # the encodes finish.
        audio_runs = segments.runs(todo_audio, self.threads, lambda s: s.end - s.encode_start,
                                   first_alone=True)
        video_runs = segments.runs(todo_video, self.threads, lambda s: 1, first_alone=True)
        drawn: dict[int, Image.Image] = {}
        with (self.stages.stage("segments"), ThreadPoolExecutor(max_workers=self.threads) as pool,
              ThreadPoolExecutor(max_workers=1) as video_pool,
              ThreadPoolExecutor(max_workers=1) as hls_pool):
            publishing = hls_pool.submit(self.stages.timed, "hls", publisher.run)
            checks, futures = audio.submit(pool, audio_runs)
            try:
                for group in video_runs:
                    pictures = []
                    for seg in group:
                        control.check()
                        control.progress(f"slides {len(drawn) + 1}/{len(todo_video)}",
                                         progress.percent("slides", len(drawn), len(todo_video)))
                        thumb, picture = self._draw(store, seg)
                        drawn[seg.index] = thumb
                        pictures.append(picture)
                    futures.append(video_pool.submit(encode_video, group, pictures))
                self._sheet_and_captions([drawn.get(s.index) or _opened(store.path(s.key, ".thumb.png"))
                                          for s in videos])
                for done, future in enumerate(as_completed(futures), start=1):
                    future.result()
                    control.progress(f"segments {done}/{len(futures)}",
                                     progress.percent("segments", done, len(futures)))
            except BaseException as exc:
                for future in checks + futures:
                    future.cancel()
                publisher.fail_all(exc)
                raise
            audios = audio.final()
            with self.stages.stage("join"):
                control.progress("join", progress.percent("join"))
                encode.assemble(plan, [store.path(s.key, ".mp4") for s in videos],
                                [store.path(s.key, ".aac") for s in audios], self.scratch, video,
                                timeout=self.left(), stop=control.stop)
                shutil.copyfile(store.path(videos[0].key, ".poster.png"), self.out / artifacts.POSTER)
            publishing.result()
        made = {
            "video": {"count": len(videos), "rendered": len(todo_video), "encodes": len(video_runs),
                      "keys": [s.key for s in videos]},
            "audio": {"count": len(audios), "rendered": len(audio.made), "encodes": audio.encodes,
                      "keys": [s.key for s in audios]},
            "hls": {"count": len(media), "rendered": publisher.muxed,
                    "keys": [s.key for s in publisher.segments]},
        }
        return made

    def _draw(self, store: SegmentStore, seg: segments.VideoSegment) -> tuple[Image.Image, Path]:
        """Draw a step's slide: its thumbnail (and the poster) go to the store, the picture
        to a scratch file for its video."""
        if seg.slide.image is not None:
            self.inspector.learn(seg.slide.image)  # decoded whole: a broken file fails here
        picture = slides.draw(self.plan, seg.slide)
        thumb = _thumbnail(self.plan, picture)
        store.write_one(seg.key, ".thumb.png", lambda p: thumb.save(p, format="PNG"))
        if seg.index == 0:
            store.write_one(seg.key, ".poster.png", lambda p: picture.save(p, format="PNG", compress_level=6))
        bmp = self.scratch / f"slide-{seg.index:03d}.bmp"  # uncompressed: quickest both ways
        picture.save(bmp)
        return thumb, bmp

    def _sheet_and_captions(self, thumbs: list[Image.Image]) -> None:
        plan = self.plan
        with self.stages.stage("sheet"):
            slides.contact_sheet(thumbs).save(self.out / artifacts.CONTACT_SHEET, compress_level=6)
            if plan.include_captions:
                (self.out / artifacts.CAPTIONS_SRT).write_text(captions.srt(plan), encoding="utf-8")
                (self.out / artifacts.CAPTIONS_VTT).write_text(captions.vtt(plan), encoding="utf-8")

    def _whole(self, music: Path | None, music_samples: int | None,
               video: Path) -> dict[str, Any]:
        """WebM in one piece: the whole track mixed on one thread while the slides are
        drawn and encoded on this one; the audio thread writes the file."""
        control, stages = self.control, self.stages
        with stages.stage("checks"):  # one track: every clip's loudness first, 4 at a time
            wanted = [s.narration for s in self.plan.slides if s.narration is not None]
            learnt = self.inspector.learn_all([self.plan.music, *wanted] if self.plan.music else wanted)
        plan = self.plan = with_assets(self.plan, learnt)
        whole = segments.run_of(segments.audio_segments(plan, encode.CODECS[plan.format]["audio"],
                                                        music_samples, whole=True))
        video_ready: Future[Path] = Future()
        with ThreadPoolExecutor(max_workers=1) as pool:
            audio = pool.submit(stages.timed, "audio_and_mux", encode.audio_and_mux, plan, whole, music,
                                self.scratch, video_ready, video, timeout=self.left(), stop=control.stop)
            try:
                track = self._slides_and_video()
                video_ready.set_result(track)
            except BaseException as exc:
                video_ready.set_exception(exc)
                raise
            finally:
                with stages.stage("wait_audio"):
                    control.progress("audio", progress.percent("audio"))
                    audio.result()
        return {"video": {"count": 1, "rendered": 1}, "audio": {"count": 1, "rendered": 1}}

    def _slides_and_video(self) -> Path:
        """Draw every slide, then encode them as one video (the contact sheet and captions
        are written while it encodes)."""
        plan, control = self.plan, self.control
        frames: list[tuple[Path, float]] = []
        thumbs = []
        with self.stages.stage("slides"):
            for slide in plan.slides:
                control.check()
                control.progress(f"slides {slide.index + 1}/{len(plan.slides)}",
                                 progress.percent("slides", slide.index, len(plan.slides)))
                if slide.image is not None:
                    self.inspector.learn(slide.image)
                picture = slides.draw(plan, slide)
                path = self.scratch / f"slide-{slide.index:03d}.bmp"
                picture.save(path)
                if slide.index == 0:
                    picture.save(self.out / artifacts.POSTER, compress_level=6)
                thumbs.append(_thumbnail(plan, picture))
                frames.append((path, slide.duration))
        control.progress("video", progress.percent("video"))
        with self.stages.stage("video"):
            encoding, track = encode.start_video(plan, frames, self.scratch)
            self._sheet_and_captions(thumbs)
            encoding.finish(self.left(), control.stop)
        return track


class _Audio:
    """The audio side of a segmented render: each run of steps made after its clips are
    checked (decoded, loudness measured), keyed then if it was pending, made unless stored."""

    def __init__(self, media: _Media, store: SegmentStore, codec: list[str], music: Path | None,
                 music_samples: int | None, publisher: hls.Publisher,
                 audios: list[segments.AudioSegment]) -> None:
        self.media, self.store, self.codec, self.music = media, store, codec, music
        self.music_samples, self.publisher = music_samples, publisher
        self.known = {s.index: s for s in audios}
        self.made: list[int] = []  # indexes of the segments encoded here
        self.encodes = 0
        self._lock = threading.Lock()

    def submit(self, pool: ThreadPoolExecutor,
               runs: list[list[segments.AudioSegment]]) -> tuple[list[Future[Any]], list[Future[Any]]]:
        """Queue each run after the checks of the assets it needs that nothing has queued yet
        (the pool takes them in order: checks for step 1, step 1, checks for the next run, ...)."""
        plan, inspector = self.media.plan, self.media.inspector
        queued: set[str] = set()
        checks: list[Future[Any]] = []
        futures: list[Future[Any]] = []
        for number, group in enumerate(runs):
            for asset in (a for seg in group for a in segments.needs(plan, seg)):
                if asset.id not in queued and not inspector.asset(asset.id).checked:
                    queued.add(asset.id)
                    checks.append(pool.submit(inspector.learn if number == 0 else self._later, asset))
            futures.append(pool.submit(self.encode, group))
        return checks, futures

    def _later(self, asset: asset_checks.Asset) -> asset_checks.Asset:
        """A check for a run after the first: made once the first segment is out (or never
        will be), so it does not share the cores with what the viewer waits for. A run that
        needs it sooner checks it itself (``Inspector.learn``): nothing waits on this wait."""
        self.publisher.first.wait()
        return self.media.inspector.learn(asset)

    def encode(self, group: list[segments.AudioSegment]) -> None:
        media, store, control = self.media, self.store, self.media.control
        control.check()
        plan = with_assets(media.plan, {a.id: media.inspector.learn(a)
                                        for seg in group for a in segments.needs(media.plan, seg)})
        todo = group
        if any(seg.pending for seg in group):
            fresh = segments.audio_segments(plan, self.codec, self.music_samples)
            group = [fresh[seg.index] for seg in group]
            self.publisher.audio_known(group)
            found = store.get_many([(seg.key, ".aac") for seg in group])
            todo = [seg for seg in group if not found[seg.key, ".aac"]]
        with self._lock:
            self.known.update((seg.index, seg) for seg in group)
        for run in _consecutive(todo):
            whole = segments.run_of(run)

            def make(tmps: list[Path], whole: segments.AudioRun = whole) -> None:
                mix.encode_run(plan, whole, self.music, self.codec, tmps, timeout=media.left(),
                               stop=control.stop)

            store.write([seg.key for seg in run], ".aac", make)
            with self._lock:
                self.made += [seg.index for seg in run]
                self.encodes += 1
        self.publisher.ready("audio", [seg.index for seg in group])

    def final(self) -> list[segments.AudioSegment]:
        """Every step's audio segment under its final key."""
        return [self.known[index] for index in sorted(self.known)]


def _consecutive(group: list[segments.AudioSegment]) -> list[list[segments.AudioSegment]]:
    """``group`` cut where a step is missing (stored segments left out of a run)."""
    cut: list[list[segments.AudioSegment]] = []
    for seg in group:
        if cut and cut[-1][-1].index == seg.index - 1:
            cut[-1].append(seg)
        else:
            cut.append([seg])
    return cut


def _video_files(seg: segments.VideoSegment) -> tuple[str, ...]:
    return (".mp4", ".thumb.png", ".poster.png") if seg.index == 0 else (".mp4", ".thumb.png")


def _thumbnail(plan: Plan, picture: Image.Image) -> Image.Image:
    return picture.resize((THUMB_WIDTH, THUMB_WIDTH * plan.height // plan.width),
                          Image.Resampling.BILINEAR, reducing_gap=2.0)


def _opened(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im


def planned_duration(folder: Path) -> float:
    """The planned length of a stored preview, from its manifest."""
    data = json.loads((folder / artifacts.MANIFEST).read_text(encoding="utf-8"))
    return float(data["plan"]["duration"])
