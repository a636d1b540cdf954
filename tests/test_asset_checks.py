"""Asset checks made in step order, while the render runs, and what a process remembers.

Judged on what is observable: which clips had been decoded (their facts files, the
inspector's order) when the first HLS segment was handed out; the keys of a render that
learnt the loudness as it went against one that knew it beforehand; errors naming the
asset's JSON path wherever the check happens; and the remembered sha256 of a file that
changes.
"""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path

import pytest
from conftest import RUN_DIR
from test_segments import ASSETS, tone_job
from test_segments import tones as tones  # a fixture

from mobius_preview import render
from mobius_preview.errors import AssetError
from mobius_preview.render import assets
from mobius_preview.render.control import Control

# Real renders with ffmpeg: not in `make check`; `make test` starts them first.
pytestmark = pytest.mark.slow(8)


def facts_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")} if folder.is_dir() else set()


def facts_name(prepared: render.Prepared, asset_id: str) -> str:
    asset = prepared.assets[asset_id]
    return f"{asset.sha256}.{asset.type}.json"


def test_the_first_segment_is_out_before_the_last_clip_is_decoded(tmp_path, tones):
    assets.forget()  # new to this process too
    facts = tmp_path / "facts"
    prepared = render.prepare(render.identify(tone_job(), ASSETS), 900, facts)
    assert facts_files(facts) == set()  # durations given: nothing decoded before the plan
    seen: list[tuple[list[str], set[str]]] = []

    def live(files: list[Path], playlist: str) -> None:
        seen.append((list(prepared.inspector.started), facts_files(facts)))

    out = tmp_path / "out"
    out.mkdir()
    data = render.render(prepared, out, timeout=120, segments=tmp_path / "store", threads=2,
                         control=Control(live=live))
    started, files = seen[0]
    last = "v5"
    # Step 1's audio needs the music, its own clip and the start of step 2's: those first.
    assert started[:3] == ["music", "v0", "v1"] or set(started[:3]) == {"music", "v0", "v1"}, started
    assert last not in started and facts_name(prepared, last) not in files, (started, files)
    assert {facts_name(prepared, a) for a in ("music", "v0", "v1")} <= files
    # Every asset checked before the render ended, each once; the first steps' clips first
    # (after them the two threads' runs interleave, each in its own step order).
    assert sorted(prepared.inspector.started) == sorted(prepared.assets)
    assert facts_files(facts) == {facts_name(prepared, a) for a in prepared.assets}
    clips = [a for a in prepared.inspector.started if a.startswith("v")]
    assert clips[:2] == ["v0", "v1"] and clips.index(last) >= 2, clips
    assert set(data["output"]["loudness"]["clips"]) == set(prepared.assets)


def test_keys_learnt_on_the_way_are_the_keys_known_beforehand(tmp_path, tones):
    """A render that measured each clip's loudness as it went (audio keys pending until then)
    names and makes the same segments as one that knew every clip before it started."""
    assets.forget()
    job = tone_job()
    facts = tmp_path / "facts"
    outputs = []
    for n in range(2):  # 1: facts new (learnt while rendering); 2: facts known, empty store
        prepared = render.prepare(render.identify(job, ASSETS), 900, facts)
        pending = [s for s in render.segments.audio_segments(prepared.plan, ["-c:a", "aac"], 1000)
                   if s.pending]
        assert len(pending) == (6 if n == 0 else 0)
        out = tmp_path / f"out{n}"
        out.mkdir()
        data = render.render(prepared, out, timeout=120, segments=tmp_path / f"store{n}", threads=2)
        outputs.append(data["output"])
    first, second = (o["segments"] for o in outputs)
    for kind in ("audio", "video", "hls"):
        assert first[kind]["keys"] == second[kind]["keys"], kind
        assert first[kind]["rendered"] == second[kind]["rendered"] == 6, kind
    assert outputs[0]["loudness"] == outputs[1]["loudness"]
    assert all(isinstance(c["lufs"], float) for c in outputs[0]["loudness"]["clips"].values())


def test_stored_segments_found_once_their_keys_are_known(tmp_path, tones):
    """Facts forgotten, segments kept: the render learns the loudness again and then finds
    every audio segment stored (nothing encoded twice)."""
    assets.forget()
    job = tone_job()
    store = tmp_path / "store"
    made = []
    for n in range(2):
        prepared = render.prepare(render.identify(job, ASSETS), 900, tmp_path / f"facts{n}")
        out = tmp_path / f"out{n}"
        out.mkdir()
        data = render.render(prepared, out, timeout=120, segments=store, threads=2)
        made.append(data["output"]["segments"])
        assets.forget()
    assert (made[0]["audio"]["rendered"], made[1]["audio"]["rendered"]) == (6, 0)
    assert made[0]["audio"]["keys"] == made[1]["audio"]["keys"]
    assert made[1]["hls"]["rendered"] == 0  # the same media segments, found by the same keys


def _bad_clip_job(tones: Path, dry_run: bool = False) -> dict:
    bad = tones / "audio" / "late-noise.mp3"
    bad.write_bytes(os.urandom(4000))
    job = copy.deepcopy(tone_job())
    job["dryRun"] = dry_run
    job["previewRequest"]["assets"][5]["path"] = "audio/late-noise.mp3"
    return job


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_broken_clip_of_a_late_step_is_a_permanent_error_naming_it(tmp_path, tones, dry_run):
    assets.forget()
    prepared = render.prepare(render.identify(_bad_clip_job(tones, dry_run), ASSETS), 900, tmp_path / "facts")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AssetError) as caught:  # found while rendering, not before the plan
        render.render(prepared, out, timeout=120, segments=tmp_path / "store", threads=2)
    assert "$.previewRequest.assets[5]: ffmpeg cannot decode the audio" in str(caught.value)


def test_a_truncated_picture_fails_before_its_slide_naming_it(tmp_path):
    """The header opens (checked before the plan), the pixels do not (checked before the slide)."""
    project = RUN_DIR / "assets" / "proj-catan-demo"
    whole = (project / "images" / "board.png").read_bytes()
    (project / "bad-late").mkdir(exist_ok=True)
    (project / "bad-late" / "cut.png").write_bytes(whole[: len(whole) // 2])
    from conftest import tiny_render_job

    job = tiny_render_job()
    job["previewRequest"]["assets"] = [{"id": "board", "type": "image", "path": "bad-late/cut.png"}]
    prepared = render.prepare(render.identify(job, ASSETS), 900)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AssetError, match=r"\$\.previewRequest\.assets\[0\]: Pillow cannot open the image"):
        render.render(prepared, out, timeout=60)


def _changed(path: Path, data: bytes) -> None:
    """Write ``data`` (same size) and set the modification time back as it was: the change
    must still be noticed. Written again until the file's ctime moves (the clock ticks in ms)."""
    before = path.stat()
    while True:
        path.write_bytes(data)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        if path.stat().st_ctime_ns != before.st_ctime_ns:
            return


def test_the_remembered_sha256_notices_a_changed_file(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "_SETTLED_NS", 0)  # remember even a file written just now
    assets.forget()
    root = tmp_path / "proj"
    root.mkdir()
    path = root / "pic.bin"
    path.write_bytes(b"a" * 4096)
    spec = [{"id": "x", "type": "image", "path": "pic.bin"}]
    first = assets.locate(root, spec)["x"].sha256
    assert assets.locate(root, spec)["x"].sha256 == first
    assert len(assets._HASHED) == 1  # remembered, by path, inode, size and times

    _changed(path, b"b" * 4096)  # same size, same mtime: the ctime tells
    second = assets.locate(root, spec)["x"].sha256
    assert second != first

    other = root / "new.bin"  # replaced by another file (a new inode), same size and times
    other.write_bytes(b"c" * 4096)
    st = path.stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    other.replace(path)
    assert assets.locate(root, spec)["x"].sha256 not in (first, second)


def test_a_file_written_just_now_is_hashed_every_time(tmp_path):
    """A file whose times are within the clock's granularity of now is not remembered: a
    second write in the same tick would change nothing the cache looks at."""
    assets.forget()
    path = tmp_path / "fresh.bin"
    path.write_bytes(b"x" * 100)
    assets._sha256(path)
    assert assets._HASHED == {}


def test_facts_are_shared_by_threads_and_checked_once(tmp_path, tones):
    """Many threads needing one clip: one decode, the same answer to all."""
    assets.forget()
    located = assets.locate(tones, [{"id": "v0", "type": "audio", "path": "audio/voice0.mp3"}])
    inspector = assets.Inspector(located, tmp_path / "facts")
    got: list[assets.Asset] = []
    threads = [threading.Thread(target=lambda: got.append(inspector.learn(located["v0"]))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inspector.started == ["v0"] and len({a.loudness for a in got}) == 1 and got[0].checked
    again = assets.Inspector(located, tmp_path / "facts")  # a later render: known, not decoded
    assert again.asset("v0") == got[0] and again.started == []
