"""Cutting a plan into segments that can be rendered alone, kept, and joined by stream copy.

Each step is one video segment (its slide held for its frames) and one audio segment (its
span of the mixed track, AAC). A segment's key is a hash of everything that changes
its bytes, so an edit re-renders only the segments it touches.

Audio joins are made inaudible on a fixed grid of AAC packets (1024 samples): the
whole track's packet ``j`` decodes to samples ``[(j-1)*1024, j*1024)`` (packet 0 is
the encoder's priming). An audio segment owns the packets that start inside its step.
It is encoded from ``PRE_ROLL_PACKETS`` before its first packet, and on for
``POST_ROLL_PACKETS`` after its last one, so every kept packet was encoded with its
true neighbours; the extra packets are dropped. The mix under it (music phase,
ducking, limiter) starts ``MIX_PRE_ROLL`` samples earlier still, so the compressor
and limiter have settled when the kept audio begins, and goes on ``MIX_POST_ROLL``
past the encoder's end: ffmpeg's ducking compressor makes the last ~170 ms of a
stream differently from run to run (measured), so that stretch is mixed and thrown
away. Every position is an integer number of samples, so keys are exact.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .assets import Asset
from .plan import Plan, Slide

# Part of every segment key: raise it whenever the bytes a segment is made of change.
SEGMENT_FORMAT = 1
SAMPLE_RATE = 48000
PACKET = 1024  # samples per AAC packet
PRE_ROLL_PACKETS = 4
POST_ROLL_PACKETS = 3
MIX_PRE_ROLL = SAMPLE_RATE  # the ducking compressor's release (400 ms) falls by e^-1 every 100 ms
MIX_POST_ROLL = SAMPLE_RATE // 2
TARGET_LUFS = -16.0
MAX_GAIN_DB = 30.0
PEAK_LIMIT = 10 ** (-1.5 / 20)  # -1.5 dBFS as a linear amplitude


def _key(kind: str, facts: dict[str, Any]) -> str:
    canonical = json.dumps({"segment": kind, "format": SEGMENT_FORMAT, **facts}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def sample_at(plan: Plan, frame: int) -> int:
    """The audio sample where video frame ``frame`` starts (exact for every fps that divides 48000)."""
    return round(frame * SAMPLE_RATE / plan.fps)


def total_samples(plan: Plan) -> int:
    return sample_at(plan, plan.total_frames)


def _first_sample(plan: Plan, slide: Slide) -> int:
    return sample_at(plan, round(slide.start * plan.fps))


def clip_gain_db(asset: Asset | None, normalize: bool) -> float:
    """Per-clip normalisation: the gain that brings one clip to TARGET_LUFS on its own."""
    if not normalize or asset is None:
        return 0.0
    if not asset.checked:
        raise ValueError(f"{asset.where}: the clip's loudness is not measured yet")
    if asset.loudness is None:
        return 0.0
    return round(max(-MAX_GAIN_DB, min(MAX_GAIN_DB, TARGET_LUFS - asset.loudness)), 2)


@dataclass(frozen=True)
class VideoSegment:
    index: int
    slide: Slide
    frames: int
    key: str


@dataclass(frozen=True)
class Clip:
    """A narration clip placed in a window: ``offset`` samples after the window starts
    (negative: it began before), ``length`` samples long at most, ``gain`` dB."""

    asset: Asset
    offset: int
    length: int
    gain: float


@dataclass(frozen=True)
class AudioSegment:
    index: int
    mix_start: int  # first sample mixed (the window)
    mix_end: int  # the window's end (exclusive), past ``end``
    encode_start: int  # first sample given to the encoder: on the packet grid
    end: int  # last sample given to the encoder, exclusive
    keep_from: int  # packets of this encode to drop before the kept ones
    keep: int | None  # packets kept; None: to the end of the track
    clips: tuple[Clip, ...]
    music_phase: int  # sample of the music loop at mix_start
    key: str  # PENDING until the loudness of every clip it mixes is known

    @property
    def pending(self) -> bool:
        return self.key == PENDING


PENDING = ""  # the key of an audio segment whose clips' loudness is not measured yet


def _gain(asset: Asset | None, normalize: bool) -> float | None:
    """clip_gain_db, or None while the clip's loudness is not measured."""
    if normalize and asset is not None and not asset.checked:
        return None
    return clip_gain_db(asset, normalize)


def needs(plan: Plan, segment: AudioSegment) -> list[Asset]:
    """The assets an audio segment mixes (the music, then its clips in order): what must be
    checked (decoded, its loudness measured) before it is made."""
    found = {plan.music.id: plan.music} if plan.music is not None else {}
    found.update((c.asset.id, c.asset) for c in segment.clips)
    return list(found.values())


S = TypeVar("S", "VideoSegment", "AudioSegment")


def _first_packet(sample: int) -> int:
    return 0 if sample == 0 else -(-sample // PACKET) + 1


def video_segments(plan: Plan, codec: list[str]) -> list[VideoSegment]:
    segments = []
    for slide in plan.slides:
        frames = round(slide.duration * plan.fps)
        facts = {
            "size": [plan.width, plan.height], "fps": plan.fps, "language": plan.language,
            "burn": plan.burn_captions, "index": slide.index, "count": len(plan.slides),
            "step": slide.step_id is not None, "title": slide.title, "text": slide.text,
            "caption": slide.caption, "image": slide.image.sha256 if slide.image else None,
            "frames": frames, "codec": codec,
        }
        segments.append(VideoSegment(slide.index, slide, frames, _key("video", facts)))
    return segments


def audio_segments(plan: Plan, codec: list[str], music_samples: int | None, *,
                whole: bool = False) -> list[AudioSegment]:
    """The audio segments of ``plan``; ``whole``: one segment for the whole track (the reference
    a segmented render is compared with, and the way a WebM track is made)."""
    total = total_samples(plan)
    starts = [0] if whole else [_first_sample(plan, slide) for slide in plan.slides]
    placed = [
        (slide.narration, _first_sample(plan, slide), sample_at(plan, round(slide.duration * plan.fps)))
        for slide in plan.slides if slide.narration is not None
    ]
    music_gain = _gain(plan.music, plan.normalize)
    segments = []
    for index, start in enumerate(starts):
        last = index == len(starts) - 1
        first_packet = _first_packet(start)
        encode_packet = max(0, first_packet - PRE_ROLL_PACKETS)
        encode_start = encode_packet * PACKET
        keep = None if last else _first_packet(starts[index + 1]) - first_packet
        end = total if keep is None else min(total, (first_packet + keep + POST_ROLL_PACKETS) * PACKET)
        mix_start, mix_end = max(0, encode_start - MIX_PRE_ROLL), end + MIX_POST_ROLL
        gains = [(asset, at, length, _gain(asset, plan.normalize)) for asset, at, length in placed
                 if at < mix_end and at + length > mix_start]
        clips = tuple(Clip(asset, at - mix_start, length, 0.0 if gain is None else gain)
                      for asset, at, length, gain in gains)
        phase = mix_start % music_samples if music_samples else 0
        facts = {
            "rate": SAMPLE_RATE, "codec": codec, "normalize": plan.normalize,
            "window": [encode_start - mix_start, end - mix_start, mix_end - mix_start],
            "keep": [first_packet - encode_packet, keep],
            "clips": [[c.asset.sha256, c.offset, c.length, c.gain] for c in clips],
            "music": None if plan.music is None else
            [plan.music.sha256, phase, music_gain, plan.music_volume],
        }
        known = music_gain is not None and all(gain is not None for *_, gain in gains)
        segments.append(AudioSegment(index, mix_start, mix_end, encode_start, end,
                                     first_packet - encode_packet, keep, clips, phase,
                                     _key("audio", facts) if known else PENDING))
    return segments


@dataclass(frozen=True)
class AudioRun:
    """Consecutive audio segments made by one encode and cut apart at their packet
    boundaries: one encoder start-up and one pre-roll for the run instead of one per
    step. Each piece is a valid segment under its own key (a segment made alone would
    differ only by coding noise, and joins the same way)."""

    segments: tuple[AudioSegment, ...]
    mix_start: int
    mix_end: int
    encode_start: int
    end: int
    keep_from: int
    keeps: tuple[int | None, ...]
    clips: tuple[Clip, ...]
    music_phase: int


def run_of(group: list[AudioSegment]) -> AudioRun:
    """One encode for ``group``: consecutive segments, in order."""
    first, last = group[0], group[-1]
    placed: dict[tuple[str, int], Clip] = {}
    for seg in group:
        for clip in seg.clips:
            at = seg.mix_start + clip.offset
            placed[(clip.asset.id, at)] = Clip(clip.asset, at - first.mix_start, clip.length, clip.gain)
    return AudioRun(tuple(group), first.mix_start, last.mix_end, first.encode_start, last.end,
                    first.keep_from, tuple(seg.keep for seg in group),
                    tuple(sorted(placed.values(), key=lambda c: c.offset)), first.music_phase)


def runs(todo: list[S], pieces: int, size: Callable[[S], float], *,
         first_alone: bool = False) -> list[list[S]]:
    """Split the segments to make into runs of consecutive steps, about ``pieces`` of
    them of similar ``size`` (one per thread), so the threads finish together.
    ``first_alone``: the first step to make is a run of its own, listed first (it is what
    a viewer waits for), the others split as before."""
    if not todo:
        return []
    if first_alone:
        ordered: list[S] = sorted(todo, key=lambda s: s.index)
        head: list[list[S]] = [ordered[:1]]
        return head + runs(ordered[1:], pieces, size)
    target = sum(size(seg) for seg in todo) / max(1, pieces)
    groups: list[list[S]] = []
    length = 0.0
    for seg in sorted(todo, key=lambda s: s.index):
        fits = groups and groups[-1][-1].index == seg.index - 1 and length + size(seg) / 2 <= target
        if fits:
            groups[-1].append(seg)
            length += size(seg)
        else:
            groups.append([seg])
            length = size(seg)
    return groups
