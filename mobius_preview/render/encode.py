"""ffmpeg work of a render: the audio mix, then one encode of slides and audio.

Audio is mixed first, into a WAV in the scratch folder, while Pillow draws the
slides (two processes, two cores): a silent bed of exactly the video's length,
narration clips delayed to their steps' start times, music looped and trimmed and
ducked under the narration with a sidechain compressor. When the job asks for
normalisation the same pass measures integrated loudness (EBU R128, ``ebur128``),
and the encode applies the gain to -16 LUFS with a limiter at -1.5 dBFS: a
measured linear gain, several times faster than ffmpeg's one-pass ``loudnorm``.

Slides are still pictures, so only the distinct frames are encoded: variable frame
rate through the concat demuxer, each picture held for its step's duration, on the
requested frame grid (video time base 1/fps).
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import Future
from pathlib import Path

from . import ffmpeg
from .plan import Plan

SAMPLE_RATE = 48000
TARGET_LUFS = -16.0
PEAK_LIMIT = 10 ** (-1.5 / 20)  # -1.5 dBFS as a linear amplitude

CODECS = {
    "mp4": {
        "video": ["-c:v", "libx264", "-preset", "veryfast", "-tune", "stillimage", "-crf", "23", "-bf", "0",
                  "-pix_fmt", "yuv420p"],
        "audio": ["-c:a", "aac", "-b:a", "192k"],
        "container": ["-movflags", "+faststart"],
    },
    "webm": {
        "video": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1",
                  "-b:v", "0", "-crf", "36", "-pix_fmt", "yuv420p"],
        "audio": ["-c:a", "libopus", "-b:a", "128k"],
        "container": [],
    },
}


def concat_list(plan: Plan, frames: list[tuple[Path, float]]) -> str:
    """The concat demuxer script: each picture and how long it stays on screen.

    The last picture is listed once more, one frame before the end, so the video
    stream itself (not only the audio) lasts exactly the planned duration.
    """
    tick = 1 / plan.fps
    lines = ["ffconcat version 1.0"]
    for n, (path, seconds) in enumerate(frames):
        if n == len(frames) - 1:
            seconds -= tick
        lines.append(f"file '{path.name}'")
        if seconds > 0:
            lines.append(f"duration {seconds:.6f}")
    lines += [f"file '{frames[-1][0].name}'", f"duration {tick:.6f}"]
    return "\n".join(lines) + "\n"


def audio_graph(plan: Plan) -> tuple[list[str], str]:
    """Input arguments and filter graph producing ``[aout]`` of exactly plan.duration."""
    total = plan.duration
    fmt = f"aresample={SAMPLE_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo"
    inputs: list[str] = ["-f", "lavfi", "-t", f"{total:.6f}", "-i",
                         f"anullsrc=r={SAMPLE_RATE}:cl=stereo"]
    graph = [f"[0:a]{fmt}[bed]"]
    voices = []
    n = 1
    for slide in plan.slides:
        if slide.narration is None:
            continue
        inputs += ["-i", str(slide.narration.path)]
        delay = round(slide.start * 1000)
        label = f"[n{len(voices)}]"
        graph.append(f"[{n}:a]{fmt},atrim=0:{slide.duration:.6f},adelay={delay}:all=1{label}")
        voices.append(label)
        n += 1
    mix = ["[bed]"]
    if len(voices) > 1:
        graph.append(f"{''.join(voices)}amix=inputs={len(voices)}:normalize=0:duration=longest[narr]")
    elif voices:
        graph.append(f"{voices[0]}anull[narr]")
    if plan.music is not None:
        inputs += ["-stream_loop", "-1", "-i", str(plan.music.path)]
        graph.append(f"[{n}:a]{fmt},atrim=0:{total:.6f},volume={plan.music_volume:.3f}[mus]")
        if voices:
            graph.append("[narr]asplit=2[narr1][key]")
            graph.append("[mus][key]sidechaincompress=threshold=0.02:ratio=8:attack=20:release=400[duck]")
            mix += ["[narr1]", "[duck]"]
        else:
            mix.append("[mus]")
    elif voices:
        mix.append("[narr]")
    tail = f"atrim=0:{total:.6f},asetpts=N/SR/TB"
    if plan.normalize:
        tail += ",ebur128"
    if len(mix) > 1:
        graph.append(f"{''.join(mix)}amix=inputs={len(mix)}:normalize=0:duration=first,{tail}[aout]")
    else:
        graph.append(f"[bed]{tail}[aout]")
    return inputs, ";".join(graph)


def start_mix(plan: Plan, wav: Path) -> ffmpeg.Running:
    """Start mixing the plan's audio into ``wav`` (measuring its loudness when asked)."""
    inputs, graph = audio_graph(plan)
    args = ["-v", "info", "-nostats", "-y", *inputs, "-filter_complex", graph,
            "-map", "[aout]", "-c:a", "pcm_s16le", str(wav)]
    return ffmpeg.Running(args, "mixing audio", wav.with_suffix(".log"))


_INTEGRATED = re.compile(r"I:\s+(-?\d+(?:\.\d+)?|-inf) LUFS")


def gain_db(plan: Plan, mix_log: str) -> float | None:
    """Gain that brings the measured mix to TARGET_LUFS (None when not normalising)."""
    if not plan.normalize:
        return None
    found = _INTEGRATED.findall(mix_log)
    if not found or found[-1] == "-inf":
        return 0.0  # silence: nothing to normalise
    return round(min(30.0, TARGET_LUFS - float(found[-1])), 2)


def audio_and_mux(plan: Plan, scratch: Path, video_ready: Future[Path], out: Path, *,
                  timeout: float, stop: threading.Event | None = None) -> float | None:
    """Mix and measure the audio, then encode it into ``out`` beside the finished video.

    Runs on its own thread while the slides are drawn and the video is encoded:
    audio encoding is single-threaded and the longest step, so it starts as soon as
    the mix is measured and writes the final file itself (video stream copied).
    Returns the gain applied (None when the job does not normalise).
    """
    wav = scratch / "audio.wav"
    gain = gain_db(plan, start_mix(plan, wav).finish(timeout, stop))
    video = video_ready.result(timeout=timeout)
    level = ["-af", f"volume={gain}dB,alimiter=limit={PEAK_LIMIT:.4f}:level=0"] if gain is not None else []
    codec = CODECS[plan.format]
    ffmpeg.run(["-v", "error", "-y", "-i", str(wav), "-i", str(video), "-map", "1:v", "-map", "0:a",
                "-c:v", "copy", *level, *codec["audio"], *codec["container"],
                "-t", f"{plan.duration:.6f}", str(out)],
               timeout=timeout, what=f"encoding audio into {out.name}", stop=stop)
    return gain


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
