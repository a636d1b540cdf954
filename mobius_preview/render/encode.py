"""ffmpeg work of a render: video segments, the joining of segments, and WebM in one piece.

MP4 is made of segments (see ``segments``): each step's slide encoded alone as a short
H.264 file (distinct frames only: the picture at its first frame and again at its
last, variable frame rate on the requested grid), each step's audio as ADTS AAC.
``assemble`` joins them by stream copy: the concat demuxer lays the video segments end
to end, the AAC packets are concatenated, and the MP4 edit list drops the encoder's
priming at the start and the padding at the end, so the track is exactly as long
as planned.

WebM (VP9 and Opus) is still encoded in one piece: the slides as one video, the
whole track's mix (the same graph as a segment, one window) encoded beside it.
"""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import Future
from pathlib import Path

from . import ffmpeg, mix
from .plan import Plan
from .segments import PACKET, SAMPLE_RATE, AudioRun, VideoSegment, total_samples

CODECS = {
    "mp4": {
        "video": ["-c:v", "libx264", "-preset", "veryfast", "-tune", "stillimage", "-crf", "23", "-bf", "0",
                  "-pix_fmt", "yuv420p"],
        "audio": ["-c:a", "aac", "-b:a", "192k", "-ar", str(SAMPLE_RATE), "-ac", "2"],
        "container": ["-movflags", "+faststart"],
    },
    "webm": {
        "video": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1",
                  "-b:v", "0", "-crf", "36", "-pix_fmt", "yuv420p"],
        "audio": ["-c:a", "libopus", "-b:a", "128k"],
        "container": [],
    },
}


def _ffconcat(plan: Plan, shown: list[tuple[Path, int]]) -> str:
    """A concat demuxer script showing each picture for a number of frames. Each is read
    at the plan's frame rate, so its duration is a whole number of ticks of its own time
    base (at the image reader's default 25 fps it would be rounded)."""
    lines = ["ffconcat version 1.0"]
    for path, frames in shown:
        lines += [f"file '{path.name}'", f"option framerate {plan.fps}", f"duration {frames / plan.fps:.6f}"]
    return "\n".join(lines) + "\n"


def _held(picture: Path, frames: int) -> list[tuple[Path, int]]:
    """A picture held for ``frames``: shown at its first frame and, when it lasts longer,
    again at its last, so the stream itself lasts exactly that long."""
    return [(picture, frames - 1), (picture, 1)] if frames > 1 else [(picture, 1)]


def concat_list(plan: Plan, frames: list[tuple[Path, float]]) -> str:
    """The concat demuxer script of a whole video: each picture and how long it stays on
    screen, the last one held (see ``_held``)."""
    counts = [(path, round(seconds * plan.fps)) for path, seconds in frames]
    return _ffconcat(plan, counts[:-1] + _held(*counts[-1]))


def video_run(plan: Plan, group: list[VideoSegment], pictures: list[Path], targets: list[Path], *,
              timeout: float, stop: threading.Event | None = None) -> None:
    """Consecutive steps' videos from one encode, cut apart into ``targets``.

    Each step's picture is held (``_held``), its first frame an IDR frame (forced), so
    every piece stands alone with its exact length; the segment muxer cuts at those IDR
    frames and restarts each piece's clock at zero.
    """
    shown, starts, at = [], [], 0
    for seg, picture in zip(group, pictures, strict=True):
        starts.append(at / plan.fps)
        shown += _held(picture, seg.frames)
        at += seg.frames
    script = pictures[0].with_suffix(".ffconcat")
    script.write_text(_ffconcat(plan, shown), encoding="utf-8")
    cuts = ",".join(f"{t:.6f}" for t in starts[1:])
    if len(targets) == 1:
        output = ["-f", "mp4", str(targets[0])]
    else:
        pattern = targets[0].with_name(targets[0].name + ".%04d")
        output = ["-f", "segment", "-segment_format", "mp4", "-segment_times", cuts,
                  "-reset_timestamps", "1", str(pattern)]
    where = (f"step {group[0].index + 1}" if len(group) == 1 else
             f"steps {group[0].index + 1}-{group[-1].index + 1}")
    ffmpeg.run(["-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(script), "-map", "0:v",
                "-fps_mode", "vfr", "-enc_time_base:v", f"1/{plan.fps}", *CODECS["mp4"]["video"],
                "-force_key_frames", ",".join(f"{t:.6f}" for t in starts), *output],
               timeout=timeout, what=f"video of {where}", stop=stop)
    if len(targets) > 1:
        for n, target in enumerate(targets):
            Path(str(pattern) % n).replace(target)


def assemble(plan: Plan, videos: list[Path], audios: list[Path], scratch: Path, out: Path, *,
             timeout: float, stop: threading.Event | None = None) -> None:
    """Join the segments by stream copy into ``out`` (see the module's docstring)."""
    script = scratch / "slides.ffconcat"
    script.write_text("ffconcat version 1.0\n" + "".join(f"file '{p}'\n" for p in videos),
                      encoding="utf-8")
    track = scratch / "audio.aac"
    with track.open("wb") as sink:
        for path in audios:
            with path.open("rb") as source:
                shutil.copyfileobj(source, sink, 1 << 20)
    # The first packet (the encoder's priming) starts 1024 samples before zero, and the last
    # one lasts only up to the plan's end: the MP4 edit list then cuts both. The AAC encoder
    # makes ceil(samples / 1024) + 1 packets, so the last one's index and length are known.
    total = total_samples(plan)
    packets = -(-total // PACKET) + 1
    tail = total + PACKET - (packets - 1) * PACKET
    timing = f"setts=duration=if(eq(N\\,{packets - 1})\\,DURATION*{tail}/{PACKET}\\,DURATION)"
    ffmpeg.run(["-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(script),
                "-itsoffset", f"{-PACKET / SAMPLE_RATE:.6f}", "-f", "aac", "-i", str(track),
                "-map", "0:v", "-map", "1:a", "-c", "copy", "-bsf:a", timing,
                *CODECS["mp4"]["container"], str(out)],
               timeout=timeout, what=f"joining the segments into {out.name}", stop=stop)


def audio_and_mux(plan: Plan, segment: AudioRun, music: Path | None, scratch: Path,
                  video_ready: Future[Path], out: Path, *, timeout: float,
                  stop: threading.Event | None = None) -> None:
    """WebM: mix the whole track, then encode it into ``out`` beside the finished video.

    Runs on its own thread while the slides are drawn and the video is encoded."""
    wav = scratch / "audio.wav"
    mix.mix_to_wav(plan, segment, music, wav, timeout=timeout, stop=stop)
    video = video_ready.result(timeout=timeout)
    codec = CODECS[plan.format]
    ffmpeg.run(["-v", "error", "-y", "-i", str(wav), "-i", str(video), "-map", "1:v", "-map", "0:a",
                "-c:v", "copy", *codec["audio"], *codec["container"],
                "-t", f"{plan.duration:.6f}", str(out)],
               timeout=timeout, what=f"encoding audio into {out.name}", stop=stop)


def start_video(plan: Plan, frames: list[tuple[Path, float]], scratch: Path) -> tuple[ffmpeg.Running, Path]:
    """Start encoding the slide pictures (distinct frames only) into a video-only file."""
    script = scratch / "slides.ffconcat"
    script.write_text(concat_list(plan, frames), encoding="utf-8")
    track = scratch / ("video.mp4" if plan.format == "mp4" else "video.webm")
    # MP4: time base 1/fps, so every frame sits on the requested grid. WebM counts in
    # milliseconds anyway, and libvpx refuses some coarse time bases (1/10 fails).
    time_base = f"1/{plan.fps}" if plan.format == "mp4" else "1/1000"
    args = ["-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(script), "-an",
            "-fps_mode", "vfr", "-enc_time_base:v", time_base, *CODECS[plan.format]["video"],
            "-t", f"{plan.duration:.6f}", str(track)]
    return ffmpeg.Running(args, "encoding video", scratch / "video.log"), track
