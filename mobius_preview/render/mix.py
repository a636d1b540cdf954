"""The audio of one window of the timeline: narration, the music bed ducked under it, levels.

The same graph makes one segment of the track and a whole track (a window from
0 to the end), so the two can be compared sample for sample. Narration clips are
decoded from their start and trimmed after resampling, and the music is looped
from a PCM copy at a known phase, so a sample's value never depends on where the
window began (only the compressor and limiter have state, and the window starts
early enough for them to settle: see ``segments``). Every input of a mix is cut to
the window's exact length and mixed with ``duration=longest``: with ``first``, amix
ends when the bed does, whether or not the other inputs' last samples have arrived,
and the track's end would change from run to run.
"""

from __future__ import annotations

import threading
from pathlib import Path

from . import ffmpeg
from .assets import Asset
from .plan import Plan
from .segments import PEAK_LIMIT, SAMPLE_RATE, AudioRun, clip_gain_db
from .store import SegmentStore

_FORMAT = f"aformat=sample_fmts=fltp:sample_rates={SAMPLE_RATE}:channel_layouts=stereo"
DUCKING = "sidechaincompress=threshold=0.02:ratio=8:attack=20:release=400"


def music_pcm(music: Asset, store: SegmentStore, *, timeout: float,
              stop: threading.Event | None = None) -> tuple[Path, int]:
    """The music decoded once to 48 kHz stereo float, kept by its sha256, and its length in
    samples: looping PCM keeps the bed's phase exact at every segment."""
    name = f"music-{music.sha256}"
    found = store.get(name, ".f32") or store.write_one(name, ".f32", lambda tmp: ffmpeg.run(
        ["-v", "error", "-y", "-i", str(music.path), "-map", "0:a:0",
         "-af", f"aresample={SAMPLE_RATE},{_FORMAT}", "-f", "f32le", str(tmp)],
        timeout=timeout, what=f"decoding {music.path.name}", stop=stop))
    return found, found.stat().st_size // 8


def window(plan: Plan, segment: AudioRun, music: Path | None) -> tuple[list[str], str]:
    """ffmpeg inputs and a graph whose ``[aout]`` is samples ``encode_start..end`` of the track.

    The narration is laid end to end (concat: each clip padded with silence to its step's
    length, silence where a step has none), so the cost grows with the window's length,
    not with the number of clips in it.
    """
    length = segment.mix_end - segment.mix_start
    inputs: list[str] = []
    graph: list[str] = []
    pieces: list[str] = []
    cursor = 0

    def silence(samples: int) -> None:
        graph.append(f"anullsrc=r={SAMPLE_RATE}:cl=stereo,{_FORMAT},atrim=end_sample={samples}"
                     f"[p{len(pieces)}]")
        pieces.append(f"[p{len(pieces)}]")

    for clip in segment.clips:
        if clip.offset > cursor:
            silence(clip.offset - cursor)
        start, end = max(0, -clip.offset), min(clip.length, length - clip.offset)
        graph.append(f"[{inputs.count('-i')}:a]aresample={SAMPLE_RATE},{_FORMAT},apad,"
                     f"atrim=start_sample={start}:end_sample={end},asetpts=N/SR/TB,"
                     f"volume={clip.gain}dB[p{len(pieces)}]")
        inputs += ["-i", str(clip.asset.path)]
        pieces.append(f"[p{len(pieces)}]")
        cursor = clip.offset + end
    if cursor < length:
        silence(length - cursor)
    graph.append(f"{''.join(pieces)}concat=n={len(pieces)}:v=0:a=1[narr]")
    if music is not None and plan.music is not None:
        level = clip_gain_db(plan.music, plan.normalize)
        graph.append(f"[{inputs.count('-i')}:a]{_FORMAT},atrim=start_sample={segment.music_phase}:"
                     f"end_sample={segment.music_phase + length},asetpts=N/SR/TB,"
                     f"volume={level}dB,volume={plan.music_volume:.3f}[music]")
        inputs += ["-stream_loop", "-1", "-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "2",
                   "-i", str(music)]
        graph.append(f"[narr]asplit=2[voice][key];[music][key]{DUCKING}[ducked]")
        graph.append("[voice][ducked]amix=inputs=2:normalize=0:duration=longest[mixed]")
    else:
        graph.append("[narr]anull[mixed]")
    limiter = f"alimiter=limit={PEAK_LIMIT:.4f}:level=0:latency=1," if plan.normalize else ""
    graph.append(f"[mixed]{limiter}atrim=start_sample={segment.encode_start - segment.mix_start}:"
                 f"end_sample={segment.end - segment.mix_start},asetpts=N/SR/TB[aout]")
    return inputs, ";".join(graph)


def encode_run(plan: Plan, run: AudioRun, music: Path | None, codec: list[str], targets: list[Path], *,
               timeout: float, stop: threading.Event | None = None) -> None:
    """Mix the run's window and encode it to ADTS AAC: the packets each segment owns go
    to its file in ``targets``, the pre-roll and post-roll packets nowhere."""
    inputs, graph = window(plan, run, music)
    kept = [k for k in run.keeps if k is not None]
    drop = [f"lt(n\\,{run.keep_from})"] if run.keep_from else []
    if run.keeps[-1] is not None:
        drop.append(f"gte(n\\,{run.keep_from + sum(kept)})")
    trim = ["-bsf:a", f"noise=drop={'+'.join(drop)}"] if drop else []
    if len(targets) == 1:
        output = ["-f", "adts", str(targets[0])]
    else:  # cut at packet counts; the segment muxer counts what is left after the drop
        pattern = targets[0].with_name(targets[0].name + ".%04d")
        cuts = ",".join(str(sum(kept[:n + 1])) for n in range(len(targets) - 1))
        output = ["-f", "segment", "-segment_format", "adts", "-segment_frames", cuts, str(pattern)]
    where = (f"step {run.segments[0].index + 1}" if len(run.segments) == 1 else
             f"steps {run.segments[0].index + 1}-{run.segments[-1].index + 1}")
    ffmpeg.run(["-v", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[aout]", *codec,
                *trim, *output], timeout=timeout, what=f"audio of {where}", stop=stop)
    if len(targets) > 1:
        for n, target in enumerate(targets):
            Path(str(pattern) % n).replace(target)


def mix_to_wav(plan: Plan, segment: AudioRun, music: Path | None, target: Path, *, timeout: float,
               stop: threading.Event | None = None) -> None:
    """The window as 16-bit PCM (a whole track, for formats encoded in one piece)."""
    inputs, graph = window(plan, segment, music)
    ffmpeg.run(["-v", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[aout]",
                "-c:a", "pcm_s16le", str(target)],
               timeout=timeout, what="mixing audio", stop=stop)
