"""The HLS preview beside the MP4: fMP4 segments per step, a playlist that grows in step order.

Judged on what players see: the finished playlist read end to end by ffmpeg, its EXTINF
against the plan, its decoded audio against the MP4's (whose joins test_segments checks
against a one-piece encode), the playlist handed out while the render runs, and what an
edit makes again.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import imageio_ffmpeg
import pytest
from test_segments import pcm, rendered, tone_job
from test_segments import tones as tones  # a fixture

from mobius_preview import render
from mobius_preview.render import artifacts, ffmpeg, hls, segments
from mobius_preview.render.control import Control

# Real renders with ffmpeg: not in `make check`; `make test` starts them first.
pytestmark = pytest.mark.slow(12)

EXTINF = re.compile(r"#EXTINF:([\d.]+),\n(\S+)")


def entries(playlist: str) -> list[tuple[float, str]]:
    return [(float(s), name) for s, name in EXTINF.findall(playlist)]


def test_the_finished_playlist_adds_up_ends_and_plays_end_to_end(tmp_path, tones):
    prepared, data = rendered(tone_job(), tmp_path / "out", tmp_path / "store", threads=2)
    out = tmp_path / "out"
    text = (out / artifacts.PLAYLIST).read_text()
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    listed = entries(text)
    assert len(listed) == len(prepared.plan.slides)
    assert abs(sum(s for s, _ in listed) - prepared.plan.duration) <= 0.1
    assert all((out / name).is_file() for _, name in listed)
    assert {m["name"] for m in data["files"]} >= {artifacts.PLAYLIST, *(n for _, n in listed)}
    # Read end to end (both tracks, every segment) by the ffmpeg that renders and by the wheel's.
    for exe in {ffmpeg.ffmpeg_exe(), imageio_ffmpeg.get_ffmpeg_exe()}:
        args = ["-v", "error", "-i", str(out / artifacts.PLAYLIST), "-map", "0", "-f", "null", "-"]
        assert ffmpeg.run(args, binary=exe) == "", exe


def test_hls_audio_is_the_mp4_audio_sample_for_sample(tmp_path, tones):
    """The segments are the MP4's packets muxed again: decoded, the planned samples are
    identical, so the joins are exactly the MP4's (no gap, no click, no second priming)."""
    prepared, _ = rendered(tone_job(), tmp_path / "out", tmp_path / "store", threads=6)
    total = segments.total_samples(prepared.plan)
    mp4 = pcm(tmp_path / "out" / "preview.mp4")
    played = pcm(tmp_path / "out" / artifacts.PLAYLIST)
    assert len(mp4) == 2 * total
    # The last packet is decoded whole by ffmpeg's HLS reader (at most 1023 samples past the plan).
    assert 2 * total <= len(played) < 2 * (total + segments.PACKET)
    assert max(abs(a - b) for a, b in zip(mp4, played[:2 * total], strict=True)) == 0.0


def test_the_playlist_grows_in_step_order_while_the_render_runs(tmp_path, tones):
    calls: list[tuple[list[str], str, bool]] = []
    out = tmp_path / "out"

    def live(files: list[Path], playlist: str) -> None:
        # Every file it lists exists when it is handed out, and the preview is not finished yet.
        calls.append(([f.name for f in files], playlist, (out / artifacts.MANIFEST).exists()))
        assert all(f.is_file() for f in files)

    job = tone_job()
    prepared = render.prepare(render.identify(job, tones.parent), 900)
    out.mkdir()
    render.render(prepared, out, timeout=120, segments=tmp_path / "store", threads=2,
                  control=Control(live=live))
    steps = len(prepared.plan.slides)
    assert len(calls) == steps
    for count, (files, playlist, finished) in enumerate(calls, start=1):
        assert not finished
        assert len(entries(playlist)) == count
        assert ("#EXT-X-ENDLIST" in playlist) == (count == steps)
        assert "#EXT-X-PLAYLIST-TYPE:EVENT" in playlist
        assert entries(playlist)[-1][1] in files
    assert calls[0][0][0].endswith(hls.INIT_SUFFIX)  # the init comes with the first segment
    # The target duration never changes while it grows (players refuse that).
    assert len({re.search(r"TARGETDURATION:(\d+)", p).group(1) for _, p, _ in calls}) == 1


def test_an_edit_publishes_a_playlist_reusing_the_unchanged_segments(tmp_path, tones):
    job = tone_job()
    rendered(job, tmp_path / "a", tmp_path / "store")
    edited = copy.deepcopy(job)
    edited["previewRequest"]["steps"][3]["text"] = "Now something else entirely."
    _, second = rendered(edited, tmp_path / "b", tmp_path / "store")
    made = second["output"]["segments"]["hls"]
    assert made["rendered"] == 1
    a = entries((tmp_path / "a" / artifacts.PLAYLIST).read_text())
    b = entries((tmp_path / "b" / artifacts.PLAYLIST).read_text())
    assert [n for n, (x, y) in enumerate(zip(a, b, strict=True)) if x != y] == [3]
    # The unchanged ones are the very files the first render made (linked, not copied).
    for _, name in b[:3] + b[4:]:
        assert (tmp_path / "b" / name).stat().st_ino == (tmp_path / "a" / name).stat().st_ino
    # A length edit moves every later step: those are muxed again (their audio was rendered again too).
    longer = copy.deepcopy(job)
    longer["previewRequest"]["steps"][1]["durationSec"] = 3.0
    rendered(longer, tmp_path / "c", tmp_path / "store")
    c = entries((tmp_path / "c" / artifacts.PLAYLIST).read_text())
    assert all(x[1] != y[1] for x, y in zip(a[2:], c[2:], strict=True))
