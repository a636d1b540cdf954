"""Render benchmark: our renderer against plain ffmpeg on the same frames and audio.

    .venv/bin/python bench/render.py [--runs 3] [--seconds 60]

Builds a 10-step job (1280x720, narration on every step, looped music, loudness
normalisation), then measures in one run, each the median of --runs:
  ours   the full render: slides, audio mix + loudness, encode, probe, manifest;
  floor  plain ffmpeg encoding the very same slide pictures and mixed audio
         (one command, same codecs, distinct frames only): the least any renderer
         of this job must spend;
  naive  plain ffmpeg encoding the same pictures and audio at a constant 30 fps;
  cache  worker time of a job whose result is already stored (tasks.execute);
  zh     the same job with its titles and text in Chinese (zh-Hans, Noto Sans CJK),
         against English, renders alternating, known assets;
and the peak memory of a render at two video lengths (separate processes).
Prints a table with the three ratios the render issue asks for.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's queue module: keep this folder off the path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

WORK = Path(tempfile.mkdtemp(prefix="mobius-bench-"))
os.environ.setdefault("DATA_DIR", str(WORK / "data"))
os.environ.setdefault("ASSETS_DIR", str(WORK / "assets"))
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")  # not contacted

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from PIL import Image, ImageDraw

from mobius_preview import render, storage
from mobius_preview.render import encode, ffmpeg, slides

PROJECT = "proj-bench"


def make_assets(steps: int, step_seconds: float) -> None:
    root = Path(os.environ["ASSETS_DIR"]) / PROJECT
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(exist_ok=True)
    for n in range(steps):
        im = Image.new("RGB", (1024, 768), (30 + 20 * n, 90, 160))
        d = ImageDraw.Draw(im)
        for k in range(12):
            d.ellipse((40 + 70 * k, 60 + 40 * (k % 5), 140 + 70 * k, 160 + 40 * (k % 5)),
                      fill=(200, 40 * (k % 6), 90))
        im.save(root / "img" / f"step{n}.png")
        ffmpeg.run(["-v", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=f={300 + 40 * n}:d={step_seconds - 1:.2f}", "-ac", "1", "-ar", "24000",
                    "-c:a", "libmp3lame", "-b:a", "48k", str(root / "audio" / f"voice{n}.mp3")])
    ffmpeg.run(["-v", "error", "-y", "-f", "lavfi", "-i",
                "aevalsrc=0.2*sin(2*PI*220*t)*(0.5+0.5*sin(2*PI*2*t)):s=44100:d=8", "-ac", "2",
                "-c:a", "libmp3lame", "-b:a", "96k", str(root / "audio" / "music.mp3")])


TEXT = {
    "en": ("Step {n}", "Place your settlement where three terrain hexes meet. " * 3),
    "zh-Hans": ("第 {n} 步", "把你的定居点放在三块地形相交的地方，然后沿着边修建一条道路。" * 2),  # noqa: RUF001
}


def make_job(steps: int, step_seconds: float, job_id: str = "bench", language: str = "en") -> dict:
    title, text = TEXT[language]
    return {
        "jobId": job_id, "projectId": PROJECT, "requestId": "bench", "dryRun": False,
        "previewRequest": {
            "title": "Benchmark",
            "steps": [{"id": f"s{n}", "title": title.format(n=n + 1), "durationSec": step_seconds,
                       "text": text,
                       "image": f"i{n}", "narration": f"v{n}"} for n in range(steps)],
            "assets": [*({"id": f"i{n}", "type": "image", "path": f"img/step{n}.png"} for n in range(steps)),
                       *({"id": f"v{n}", "type": "audio", "path": f"audio/voice{n}.mp3"}
                         for n in range(steps)),
                       {"id": "music", "type": "audio", "path": "audio/music.mp3"}],
            "audio": {"music": "music", "musicVolume": 0.3, "normalize": True},
            "options": {"resolution": "1280x720", "format": "mp4", "fps": 30, "language": language},
        },
    }


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ours(job: dict, warm: bool = False) -> tuple[float, Path]:
    """One full render; ``warm``: asset facts already known (the same assets seen before)."""
    out = WORK / f"ours-{time.monotonic_ns()}"
    out.mkdir()
    facts = storage.asset_facts_dir() if warm else None

    def go():
        prepared = render.prepare(render.identify(job, Path(os.environ["ASSETS_DIR"])), 3600, facts)
        render.render(prepared, out, timeout=600)

    return timed(go), out


def plain_inputs(job: dict) -> tuple[Path, Path, render.Prepared]:
    """The slide pictures and the mixed audio, made once, for the plain ffmpeg runs."""
    prepared = render.prepare(render.identify(job, Path(os.environ["ASSETS_DIR"])), 3600)
    folder = WORK / "plain"
    folder.mkdir(exist_ok=True)
    frames = []
    for s in prepared.plan.slides:
        path = folder / f"slide-{s.index:03d}.png"
        slides.draw(prepared.plan, s).save(path, compress_level=1)
        frames.append((path, s.duration))
    script = folder / "slides.ffconcat"
    script.write_text(encode.concat_list(prepared.plan, frames))
    wav = folder / "audio.wav"
    encode.start_mix(prepared.plan, wav).finish(600)
    return script, wav, prepared


def plain(script: Path, wav: Path, seconds: float, naive: bool) -> float:
    rate = ["-fps_mode", "cfr", "-r", "30"] if naive else ["-fps_mode", "vfr"]
    video = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"]
    args = ["-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(script), "-i", str(wav),
            "-map", "0:v", "-map", "1:a", *rate, *video, "-c:a", "aac", "-b:a", "192k",
            "-movflags", "+faststart", "-t", f"{seconds:.3f}", str(WORK / "plain.mp4")]
    return timed(lambda: ffmpeg.run(args))


def cache_hit(job: dict) -> float:
    from mobius_preview import tasks

    tasks.execute(job)  # make sure it is stored
    again = dict(job, jobId="bench-cache-hit")
    runs = []
    for _ in range(20):
        start = time.perf_counter()
        outcome = tasks.execute(again)
        runs.append(time.perf_counter() - start)
        assert outcome["cacheHit"]
    return statistics.median(runs)


def peak_memory(steps: int, step_seconds: float) -> tuple[float, float]:
    """Peak RSS (MiB) of the Python render process and of its largest ffmpeg child."""
    code = (
        "import importlib.util as u,json,resource;s=u.spec_from_file_location('b','bench/render.py');"
        "b=u.module_from_spec(s);s.loader.exec_module(b);"
        f"b.make_assets({steps},{step_seconds});b.ours(b.make_job({steps},{step_seconds}));"
        "s=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "c=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;print(json.dumps([s,c]))"
    )
    env = {**os.environ, "ASSETS_DIR": str(WORK / f"mem-{step_seconds}"),
           "DATA_DIR": str(WORK / f"mem-data-{step_seconds}")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parent.parent, check=True).stdout
    self_kb, child_kb = json.loads(out.strip().splitlines()[-1])
    return self_kb / 1024, child_kb / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0, help="video length (10 steps)")
    args = parser.parse_args()
    steps, step_seconds = 10, args.seconds / 10
    make_assets(steps, step_seconds)
    job = make_job(steps, step_seconds)
    print(f"ffmpeg: {ffmpeg.ffmpeg_exe()}\nvideo: {args.seconds:.0f} s, 1280x720, {steps} steps, "
          f"narration + music + loudness; median of {args.runs} runs\n")

    ours_runs, warm_runs, out = [], [], None
    for _ in range(args.runs):
        seconds, out = ours(job)
        ours_runs.append(seconds)
    ours(job, warm=True)  # learn the asset facts
    for _ in range(args.runs):
        warm_runs.append(ours(job, warm=True)[0])
    manifest = json.loads((out / "manifest.json").read_text())
    chinese = make_job(steps, step_seconds, "bench-zh", "zh-Hans")
    ours(chinese, warm=True)  # fonts loaded, as in a worker that has rendered before
    en_runs, zh_runs = [], []
    for _ in range(args.runs):
        en_runs.append(ours(job, warm=True)[0])
        zh_runs.append(ours(chinese, warm=True)[0])
    script, wav, prepared = plain_inputs(job)
    floor_runs = [plain(script, wav, prepared.plan.duration, naive=False) for _ in range(args.runs)]
    naive_runs = [plain(script, wav, prepared.plan.duration, naive=True) for _ in range(args.runs)]
    hit = cache_hit(job)
    mem_short = peak_memory(steps, step_seconds)
    mem_long = peak_memory(steps, step_seconds * 4)

    t_ours, t_warm, t_floor, t_naive, t_en, t_zh = (
        statistics.median(r) for r in (ours_runs, warm_runs, floor_runs, naive_runs, en_runs, zh_runs))
    rows = [
        ("ours: full render, new assets", f"{t_ours:.3f} s", f"stages {manifest['timings']}"),
        ("ours: full render, known assets", f"{t_warm:.3f} s", "asset facts cached by sha256"),
        ("floor: plain ffmpeg, distinct frames", f"{t_floor:.3f} s", "same pictures and mixed audio"),
        ("naive: plain ffmpeg, 30 fps", f"{t_naive:.3f} s", "same pictures and mixed audio"),
        ("cache hit (worker time)", f"{hit * 1000:.1f} ms", "tasks.execute on a stored key; aim < 50 ms"),
        ("ours: English, known assets", f"{t_en:.3f} s", "alternating with the Chinese render"),
        ("ours: Chinese (zh-Hans), known assets", f"{t_zh:.3f} s", "same job, text in Chinese"),
        ("Chinese / English", f"{t_zh / t_en:.2f}x", "aim: within 10%"),
        ("ours / floor", f"{t_ours / t_floor:.2f}x (known assets {t_warm / t_floor:.2f}x)", "aim <= 1.5x"),
        ("real time / ours", f"{args.seconds / t_ours:.0f}x", "aim >= 40x"),
        ("naive / ours", f"{t_naive / t_ours:.1f}x", "aim >= 5x"),
        (f"peak RSS, {args.seconds:.0f} s video",
         f"{mem_short[0]:.0f} MiB py, {mem_short[1]:.0f} MiB ffmpeg", ""),
        (f"peak RSS, {args.seconds * 4:.0f} s video",
         f"{mem_long[0]:.0f} MiB py, {mem_long[1]:.0f} MiB ffmpeg", "bounded by frame size, not length"),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    for name, value, note in rows:
        print(f"{name.ljust(width)}  {value.rjust(vwidth)}  {note}")
    shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
