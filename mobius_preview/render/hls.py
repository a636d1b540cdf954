"""The HLS preview: fMP4 (CMAF) media segments at step boundaries and a playlist that grows.

Each step's stored video segment (H.264) and audio segment (ADTS AAC) are muxed by
stream copy into one fragmented MP4 (``mux``); its moof+mdat is the step's media
segment (``<key>.m4s``), and step 0's ftyp+moov the preview's init segment
(``<key>.init.mp4``). Nothing is encoded again, so the HLS audio is the MP4's, sample
for sample.

Timeline: video in 1/90000 s with tfdt at the step's first frame; audio in 1/48000
with tfdt = first packet x 1024, i.e. packet ``j`` of the whole track at media time
``j*1024``. The init's audio edit list starts at 1024: the encoder's priming (packet
0, in step 0 only) is cut once, and every later step continues the same packet grid,
so joins have no gap and no second priming. The last step's last packet lasts only
up to the plan's end (as ``encode.assemble`` does). EXTINF is each step's video length:
they add up to the plan exactly.

A media segment's key covers its inputs *and its position* (the audio segment's key
holds only relative offsets), so an edit that moves later steps muxes them again
(~20 ms each) and an edit that does not reuses them as they are.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

from . import artifacts, ffmpeg
from .plan import Plan
from .segments import PACKET, SAMPLE_RATE, AudioSegment, VideoSegment, total_samples
from .store import SegmentStore

# Part of every HLS segment key: raise it whenever the bytes a media segment is made of change.
HLS_FORMAT = 1
MEDIA_SUFFIX = ".m4s"
INIT_SUFFIX = ".init.mp4"
_FLAGS = "+frag_keyframe+empty_moov+delay_moov+default_base_moof"


@dataclass(frozen=True)
class MediaSegment:
    """One step of the HLS preview: which stored segments it is muxed from, and where it sits."""

    index: int
    video: VideoSegment
    audio: AudioSegment
    start_frame: int
    first_packet: int  # the whole track's packet index of the audio segment's first packet
    last_packet_tail: int | None  # last step only: samples of its last packet within the plan
    packets_left: int  # packets of the track from first_packet on (the last one's index + 1)
    seconds: float  # EXTINF: the step's video length
    key: str


def _key(plan: Plan, video: VideoSegment, audio: AudioSegment, frame: int, first_packet: int,
         tail: int | None) -> str:
    facts = {"hls": HLS_FORMAT, "video": video.key, "audio": audio.key, "frame": frame,
             "packet": first_packet, "fps": plan.fps, "tail": tail}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def media_segments(plan: Plan, videos: list[VideoSegment], audios: list[AudioSegment]) -> list[MediaSegment]:
    """The plan's media segments, one per step, keyed by their inputs and position (an audio
    segment still ``pending`` gives a provisional key: ``with_audio`` once it is known)."""
    total = total_samples(plan)
    packets = -(-total // PACKET) + 1
    tail = total + PACKET - (packets - 1) * PACKET
    found, frame = [], 0
    for video, audio in zip(videos, audios, strict=True):
        last = video.index == len(videos) - 1
        first_packet = audio.encode_start // PACKET + audio.keep_from
        key = _key(plan, video, audio, frame, first_packet, tail if last else None)
        found.append(MediaSegment(video.index, video, audio, frame, first_packet, tail if last else None,
                                  packets - first_packet, video.frames / plan.fps, key))
        frame += video.frames
    return found


def with_audio(plan: Plan, seg: MediaSegment, audio: AudioSegment) -> MediaSegment:
    """``seg`` with its audio segment's key known (same place, same timing)."""
    return replace(seg, audio=audio, key=_key(plan, seg.video, audio, seg.start_frame, seg.first_packet,
                                              seg.last_packet_tail))


def _boxes(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The top-level ISO-BMFF boxes of ``data``: (type, whole box)."""
    at = 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        kind = data[at + 4:at + 8]
        if size == 1:
            size = int.from_bytes(data[at + 8:at + 16], "big")
        elif size == 0:
            size = len(data) - at
        if size < 8:
            break
        yield kind, data[at:at + size]
        at += size


def mux(plan: Plan, seg: MediaSegment, video: Path, audio: Path, scratch: Path, *, timeout: float,
        stop: threading.Event | None = None) -> tuple[bytes, bytes]:
    """(init, media) of one step, by stream copy. ``-copyts`` with ``frag_discont`` and an
    edit list keep the offsets below as the fragments' tfdt; step 0 shifts its audio by
    the priming instead, which writes the init's edit list (and must not use frag_discont:
    its tfdt would go negative)."""
    first = seg.index == 0
    audio_at = -PACKET / SAMPLE_RATE if first else seg.first_packet * PACKET / SAMPLE_RATE
    bsf = "aac_adtstoasc"
    if seg.last_packet_tail is not None:
        last = seg.packets_left - 1
        bsf += (f",setts=duration=if(eq(N\\,{last})\\,DURATION*{seg.last_packet_tail}/{PACKET}"
                f"\\,DURATION)")
    out = scratch / f"hls-{seg.key}.{threading.get_ident()}.mp4"
    try:
        ffmpeg.run(["-v", "error", "-y", "-copyts", "-itsoffset", f"{seg.start_frame / plan.fps:.6f}",
                    "-i", str(video), "-itsoffset", f"{audio_at:.9f}", "-f", "aac", "-i", str(audio),
                    "-map", "0:v", "-map", "1:a", "-c", "copy", "-bsf:a", bsf,
                    "-video_track_timescale", "90000", "-use_editlist", "1", "-f", "mp4",
                    "-movflags", _FLAGS + ("" if first else "+frag_discont"), str(out)],
                   timeout=timeout, what=f"HLS segment of step {seg.index + 1}", stop=stop,
                   binary=ffmpeg.muxer_exe())
        data = out.read_bytes()
    finally:
        out.unlink(missing_ok=True)
    init = b"".join(box for kind, box in _boxes(data) if kind in (b"ftyp", b"moov"))
    media = b"".join(box for kind, box in _boxes(data) if kind in (b"moof", b"mdat"))
    return init, media


def init_name(segments: list[MediaSegment]) -> str:
    return f"{segments[0].key}{INIT_SUFFIX}"


def media_name(seg: MediaSegment) -> str:
    return f"{seg.key}{MEDIA_SUFFIX}"


def target_duration(segments: list[MediaSegment]) -> int:
    """EXT-X-TARGETDURATION: fixed from the plan before the first segment (it must not
    change while an EVENT playlist grows), the longest step rounded up."""
    return max(1, -int(-max(s.seconds for s in segments) // 1))


def playlist(segments: list[MediaSegment], count: int) -> str:
    """The playlist of the first ``count`` segments: an EVENT playlist while it grows,
    ended (``#EXT-X-ENDLIST``) once it holds them all."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{target_duration(segments)}",
             "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-INDEPENDENT-SEGMENTS",
             f'#EXT-X-MAP:URI="{init_name(segments)}"']
    for seg in segments[:count]:
        lines += [f"#EXTINF:{seg.seconds:.6f},", media_name(seg)]
    if count >= len(segments):
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


Publish = Callable[[list[Path], str], None]


class Publisher:
    """Makes (or finds) each step's media segment in step order as soon as its video and
    audio segments exist, links it into the preview's folder and hands the new files and
    the playlist so far to ``publish`` (the caller puts them where players can fetch them).
    Runs on its own thread beside the encodes."""

    def __init__(self, plan: Plan, store: SegmentStore, segments: list[MediaSegment], out: Path,
                 scratch: Path, publish: Publish, left: Callable[[], float],
                 stop: threading.Event) -> None:
        self.plan, self.store, self.segments, self.out = plan, store, list(segments), out
        self.scratch, self.publish, self.left, self.stop = scratch, publish, left, stop
        self.video_ready: dict[int, Future[None]] = {s.index: Future() for s in segments}
        self.audio_ready: dict[int, Future[None]] = {s.index: Future() for s in segments}
        self.muxed = 0
        self.first = threading.Event()  # the first segment is published, or never will be

    def ready(self, kind: str, indexes: list[int], error: BaseException | None = None) -> None:
        """Steps' video (``kind`` "video") or audio segments are stored, or failed."""
        table = self.video_ready if kind == "video" else self.audio_ready
        for index in indexes:
            if not table[index].done():
                if error is None:
                    table[index].set_result(None)
                else:
                    table[index].set_exception(error)

    def audio_known(self, audios: list[AudioSegment]) -> None:
        """The keys of these steps' audio segments are known (their clips' loudness measured):
        called before ``ready`` for them, so the publishing thread sees the final keys."""
        for audio in audios:
            self.segments[audio.index] = with_audio(self.plan, self.segments[audio.index], audio)

    def fail_all(self, error: BaseException) -> None:
        """The render failed: nothing more will be ready."""
        self.ready("video", list(self.video_ready), error)
        self.ready("audio", list(self.audio_ready), error)
        self.first.set()

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.first.set()

    def _run(self) -> None:
        for count in range(1, len(self.segments) + 1):
            self.video_ready[count - 1].result()
            self.audio_ready[count - 1].result()
            seg = self.segments[count - 1]  # read once ready: its audio key is final
            if self.stop.is_set():
                return
            files = self._made(seg)
            for path in files:
                _link(path, self.out / path.name)
            text = playlist(self.segments, count)
            if count == len(self.segments):
                (self.out / artifacts.PLAYLIST).write_text(text, encoding="utf-8")
            self.publish(files, text)
            self.first.set()

    def _made(self, seg: MediaSegment) -> list[Path]:
        """The segment's files (and the init with step 0's), muxed unless stored."""
        store = self.store
        suffixes = [MEDIA_SUFFIX, INIT_SUFFIX] if seg.index == 0 else [MEDIA_SUFFIX]
        found = [store.get(seg.key, suffix) for suffix in suffixes]
        if all(path is not None for path in found):
            return [p for p in found if p is not None][::-1]
        init, media = mux(self.plan, seg, store.path(seg.video.key, ".mp4"),
                          store.path(seg.audio.key, ".aac"), self.scratch, timeout=self.left(),
                          stop=self.stop)
        self.muxed += 1
        made = [store.write_one(seg.key, MEDIA_SUFFIX, lambda p: p.write_bytes(media))]
        if seg.index == 0:
            made.insert(0, store.write_one(seg.key, INIT_SUFFIX, lambda p: p.write_bytes(init)))
        return made


def _link(source: Path, target: Path) -> None:
    """A stored file into the preview's folder: a hard link (same file system, no copy;
    it outlives the store's pruning), else a copy."""
    if target.exists():
        return
    try:
        target.hardlink_to(source)
    except OSError:
        target.write_bytes(source.read_bytes())
