"""One ffmpeg run that turns the slide pictures and the audio plan into the video.

Slides are still pictures, so only the distinct frames are encoded (variable frame
rate through the concat demuxer, each picture held for its step's duration, time
base 1/fps so every timestamp sits on the requested frame grid). That is the whole
speed-up over a constant-rate encode, with the same picture.

Audio is one filter graph: a silent bed of exactly the video's length, narration
clips delayed to their steps' start times, music looped and trimmed, ducked under
the narration with a sidechain compressor, then loudness-normalised when asked.
"""

from __future__ import annotations

from pathlib import Path

from . import ffmpeg
from .plan import Plan

SAMPLE_RATE = 48000

CODECS = {
    "mp4": {
        "video": ["-c:v", "libx264", "-preset", "veryfast", "-tune", "stillimage", "-crf", "23",
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


def concat_list(frames: list[tuple[Path, float]]) -> str:
    """The concat demuxer script: each picture and how long it stays on screen."""
    lines = ["ffconcat version 1.0"]
    for path, seconds in frames:
        lines += [f"file '{path.name}'", f"duration {seconds:.6f}"]
    # The demuxer ignores the last duration unless the last file is listed again.
    lines.append(f"file '{frames[-1][0].name}'")
    return "\n".join(lines) + "\n"


def audio_graph(plan: Plan, first_input: int) -> tuple[list[str], str]:
    """Input arguments and filter graph producing ``[aout]`` of exactly plan.duration."""
    total = plan.duration
    fmt = f"aresample={SAMPLE_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo"
    inputs: list[str] = ["-f", "lavfi", "-t", f"{total:.6f}", "-i",
                         f"anullsrc=r={SAMPLE_RATE}:cl=stereo"]
    bed = first_input
    graph = [f"[{bed}:a]{fmt}[bed]"]
    narration_labels = []
    n = first_input + 1
    for slide in plan.slides:
        if slide.narration is None:
            continue
        inputs += ["-i", str(slide.narration.path)]
        delay = round(slide.start * 1000)
        label = f"n{len(narration_labels)}"
        graph.append(f"[{n}:a]{fmt},atrim=0:{slide.duration:.6f},adelay={delay}:all=1[{label}]")
        narration_labels.append(f"[{label}]")
        n += 1
    mix_inputs = ["[bed]"]
    if narration_labels:
        if len(narration_labels) > 1:
            graph.append(f"{''.join(narration_labels)}amix=inputs={len(narration_labels)}"
                         f":normalize=0:duration=longest[narr]")
        else:
            graph.append(f"{narration_labels[0]}anull[narr]")
    if plan.music is not None:
        inputs += ["-stream_loop", "-1", "-i", str(plan.music.path)]
        graph.append(f"[{n}:a]{fmt},atrim=0:{total:.6f},volume={plan.music_volume:.3f}[mus]")
        if narration_labels:
            graph.append("[narr]asplit=2[narr1][key]")
            graph.append("[mus][key]sidechaincompress=threshold=0.02:ratio=8:attack=20:release=400[duck]")
            mix_inputs += ["[narr1]", "[duck]"]
        else:
            mix_inputs.append("[mus]")
    elif narration_labels:
        mix_inputs.append("[narr]")
    tail = f"atrim=0:{total:.6f},asetpts=N/SR/TB"
    if plan.normalize:
        tail += f",loudnorm=I=-16:TP=-1.5:LRA=11,aresample={SAMPLE_RATE}"
    if len(mix_inputs) > 1:
        graph.append(f"{''.join(mix_inputs)}amix=inputs={len(mix_inputs)}:normalize=0"
                     f":duration=first,{tail}[aout]")
    else:
        graph.append(f"[bed]{tail}[aout]")
    return inputs, ";".join(graph)


def encode(plan: Plan, frames: list[tuple[Path, float]], out: Path, *, timeout: float) -> None:
    """Encode the video file ``out`` from slide pictures and the plan's audio."""
    script = frames[0][0].parent / "slides.ffconcat"
    script.write_text(concat_list(frames), encoding="utf-8")
    audio_inputs, graph = audio_graph(plan, first_input=1)
    codec = CODECS[plan.format]
    args = [
        "-v", "error", "-y",
        "-f", "concat", "-safe", "0", "-i", str(script),
        *audio_inputs,
        "-filter_complex", graph,
        "-map", "0:v", "-map", "[aout]",
        "-fps_mode", "vfr", "-enc_time_base", f"1/{plan.fps}",
        *codec["video"], *codec["audio"], *codec["container"],
        "-t", f"{plan.duration:.6f}",
        str(out),
    ]
    ffmpeg.run(args, timeout=timeout, what=f"encoding {out.name}")
