"""Render benchmark: our renderer against one hand-written ffmpeg command, and the edit loop.

    .venv/bin/python bench/render.py [--rounds 5] [--long-rounds 1] [--skip-long]
    .venv/bin/python bench/render.py --playable [--rounds 3]   # the HLS figures alone

Jobs: 10 steps of 6 s (60 s) and 60 steps of 10 s (10 minutes), 1280x720 at 30 fps,
an image and a narration clip on every step, looped music ducked under the
narration, loudness normalised.

Measured in one run, rounds alternating so the machine's drift hits all alike:
  hand    one ffmpeg command making the same output from the same slide pictures
          (drawn beforehand, for free): narration concatenated, music looped and
          ducked under it, H.264 with one frame per slide, AAC 48 kHz stereo
          192 kb/s, no loudness pass;
  first   our full render into an empty segment store (asset facts new, and known);
  edit    a one-step text edit of a job whose segments are stored (a different step
          each round, so each is a real miss);
  cache   worker time of a job whose preview is already stored (tasks.execute);
  threads our first render on one thread, against the default (all cores);
  playable  from the start of a render (assets located, hashed, checked) to the first
          HLS segment and its playlist published (what a viewer waits for), for a first
          render with new assets and for a one-step text edit, at 10 s, 60 s and 10 minutes;
plus per-clip loudness against the whole-track target, and the peak memory of a
first render at two lengths (separate processes).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's queue module: keep this folder off the path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse
import copy
import json
import os
import re
import resource
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

from mobius_preview import render
from mobius_preview.render import encode, ffmpeg, slides
from mobius_preview.render.control import Control

PROJECT = "proj-bench"
TEXT = {
    "en": ("Step {n}", "Place your settlement where three terrain hexes meet. " * 3),
    "zh-Hans": ("第 {n} 步", "把你的定居点放在三块地形相交的地方，然后沿着边修建一条道路。" * 2),  # noqa: RUF001
}


def assets_root(steps: int, step_seconds: float) -> Path:
    return Path(os.environ["ASSETS_DIR"]) / f"{PROJECT}-{steps}x{step_seconds:g}"


def make_assets(steps: int, step_seconds: float) -> None:
    root = assets_root(steps, step_seconds)
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(exist_ok=True)
    for n in range(steps):
        im = Image.new("RGB", (1024, 768), (30 + 20 * (n % 10), 90, 160))
        d = ImageDraw.Draw(im)
        for k in range(12):
            d.ellipse((40 + 70 * k, 60 + 40 * (k % 5), 140 + 70 * k, 160 + 40 * (k % 5)),
                      fill=(200, 40 * (k % 6), 90 + n))
        im.save(root / "img" / f"step{n}.png")
        # Speech-like: a pitched tone with syllable-rate amplitude and a little noise.
        ffmpeg.run(["-v", "error", "-y", "-f", "lavfi", "-i",
                    f"aevalsrc=0.3*sin(2*PI*{180 + 7 * n}*t)*(0.55+0.45*sin(2*PI*4*t))"
                    f"+0.02*(random(0)-0.5):s=24000:d={step_seconds - 1:.2f}",
                    "-ac", "1", "-c:a", "libmp3lame", "-b:a", "48k", str(root / "audio" / f"voice{n}.mp3")])
    ffmpeg.run(["-v", "error", "-y", "-f", "lavfi", "-i",
                "aevalsrc=0.2*sin(2*PI*220*t)*(0.5+0.5*sin(2*PI*2*t))+0.05*sin(2*PI*1320*t):s=44100:d=8",
                "-ac", "2", "-c:a", "libmp3lame", "-b:a", "96k", str(root / "audio" / "music.mp3")])


def make_job(steps: int, step_seconds: float, job_id: str = "bench", language: str = "en") -> dict:
    title, text = TEXT[language]
    return {
        "jobId": job_id, "projectId": assets_root(steps, step_seconds).name, "requestId": "bench",
        "dryRun": False,
        "previewRequest": {
            "title": "Benchmark",
            "steps": [{"id": f"s{n}", "title": title.format(n=n + 1), "durationSec": step_seconds,
                       "text": text, "image": f"i{n}", "narration": f"v{n}"} for n in range(steps)],
            "assets": [*({"id": f"i{n}", "type": "image", "path": f"img/step{n}.png"} for n in range(steps)),
                       *({"id": f"v{n}", "type": "audio", "path": f"audio/voice{n}.mp3"}
                         for n in range(steps)),
                       {"id": "music", "type": "audio", "path": "audio/music.mp3"}],
            "audio": {"music": "music", "musicVolume": 0.3, "normalize": True},
            "options": {"resolution": "1280x720", "format": "mp4", "fps": 30, "language": language},
        },
    }


def edited(job: dict, step: int, round_no: int) -> dict:
    """The job with one step's text changed (a new text every time)."""
    changed = copy.deepcopy(job)
    changed["previewRequest"]["steps"][step]["text"] = f"Edited in round {round_no}: roll two dice."
    return changed


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (ffmpeg), user and system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cpu_and_wall(fn) -> tuple[float, float]:
    before = cpu_seconds()
    wall = timed(fn)
    return wall, cpu_seconds() - before


class Ours:
    """Our renders, with a segment store and asset facts that outlive one render."""

    def __init__(self, name: str) -> None:
        self.store = WORK / f"segments-{name}"
        self.facts = WORK / f"facts-{name}"
        self.last: dict = {}
        self.playable: float | None = None  # seconds from the start to the first HLS segment
        self.grown: list[float] = []  # seconds from the start to each step's playlist

    def render(self, job: dict, *, threads: int | None = None) -> float:
        out = WORK / f"out-{time.monotonic_ns()}"
        out.mkdir()

        start = time.perf_counter()
        self.playable = None

        self.grown = []

        def live(files, playlist):
            self.grown.append(time.perf_counter() - start)
            if self.playable is None:
                self.playable = self.grown[0]

        def go():
            prepared = render.prepare(render.identify(job, Path(os.environ["ASSETS_DIR"])), 3600, self.facts)
            control = Control(live=live) if "live" in Control.__dataclass_fields__ else Control()
            self.last = render.render(prepared, out, timeout=1200, segments=self.store, threads=threads,
                                      control=control)

        seconds = timed(go)
        shutil.rmtree(out)
        return seconds

    def forget(self, *, facts: bool) -> None:
        """Empty the segment store (and the asset facts): the next render is a first render."""
        shutil.rmtree(self.store, ignore_errors=True)
        if facts:
            shutil.rmtree(self.facts, ignore_errors=True)
            forget = getattr(render.assets, "forget", None)  # this process's memory of hashes and facts
            if forget is not None:
                forget()


def hand_command(job: dict) -> list[str]:
    """The hand-written baseline: slide pictures drawn once beforehand, then one ffmpeg."""
    prepared = render.prepare(render.identify(job, Path(os.environ["ASSETS_DIR"])), 3600)
    plan = prepared.plan
    folder = WORK / f"hand-{len(plan.slides)}"
    folder.mkdir(exist_ok=True)
    frames = []
    for s in plan.slides:
        path = folder / f"slide-{s.index:03d}.png"
        slides.draw(plan, s).save(path, compress_level=1)
        frames.append((path, s.duration))
    script = folder / "slides.ffconcat"
    script.write_text(encode.concat_list(plan, frames))
    inputs = ["-f", "concat", "-safe", "0", "-i", str(script)]
    graph, voices = [], []
    for n, s in enumerate(plan.slides, start=1):
        inputs += ["-i", str(s.narration.path)]
        graph.append(f"[{n}:a]aresample=48000,apad,atrim=end_sample={round(s.duration * 48000)}[n{n}]")
        voices.append(f"[n{n}]")
    music = len(plan.slides) + 1
    inputs += ["-stream_loop", "-1", "-i", str(plan.music.path)]
    graph += [
        f"{''.join(voices)}concat=n={len(voices)}:v=0:a=1,asplit=2[narr][key]",
        f"[{music}:a]aresample=48000,atrim=end={plan.duration:.6f},volume={plan.music_volume}[mus]",
        "[mus][key]sidechaincompress=threshold=0.02:ratio=8:attack=20:release=400[duck]",
        "[narr][duck]amix=inputs=2:normalize=0:duration=first[aout]",
    ]
    return ["-v", "error", "-y", *inputs, "-filter_complex", ";".join(graph), "-map", "0:v", "-map", "[aout]",
            "-fps_mode", "vfr", "-enc_time_base:v", f"1/{plan.fps}", *encode.CODECS["mp4"]["video"],
            "-c:a", "aac", "-b:a", "192k", "-ar", "48000", "-ac", "2", "-movflags", "+faststart",
            str(folder / "hand.mp4")]


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


def integrated_lufs(path: Path) -> float:
    err = ffmpeg.run(["-nostats", "-i", str(path), "-map", "0:a", "-af", "ebur128", "-f", "null", "-"])
    return float(re.findall(r"I:\s+(-?\d+\.\d) LUFS", err)[-1])


def loudness(job: dict) -> tuple[float, float]:
    """Integrated loudness of our output and of the narrated spans alone (per-clip normalisation)."""
    ours = Ours("loudness")
    out = WORK / "loudness"
    out.mkdir()
    prepared = render.prepare(render.identify(job, Path(os.environ["ASSETS_DIR"])), 3600, ours.facts)
    render.render(prepared, out, timeout=1200, segments=ours.store)
    first = prepared.plan.slides[0]
    spoken = ffmpeg.run(["-nostats", "-t", f"{first.narration.duration:.3f}", "-i", str(out / "preview.mp4"),
                         "-map", "0:a", "-af", "ebur128", "-f", "null", "-"])
    return integrated_lufs(out / "preview.mp4"), float(re.findall(r"I:\s+(-?\d+\.\d) LUFS", spoken)[-1])


def peak_memory(steps: int, step_seconds: float) -> tuple[float, float]:
    """Peak RSS (MiB) of a first render's Python process and of its largest ffmpeg child."""
    code = (
        "import importlib.util as u,json,resource;s=u.spec_from_file_location('b','bench/render.py');"
        "b=u.module_from_spec(s);s.loader.exec_module(b);"
        f"b.make_assets({steps},{step_seconds});b.Ours('mem').render(b.make_job({steps},{step_seconds}));"
        "s=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "c=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;print(json.dumps([s,c]))"
    )
    env = {**os.environ, "ASSETS_DIR": str(WORK / f"mem-{step_seconds}"),
           "DATA_DIR": str(WORK / f"mem-data-{step_seconds}")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parent.parent, check=True).stdout
    self_kb, child_kb = json.loads(out.strip().splitlines()[-1])
    return self_kb / 1024, child_kb / 1024


def edit_loop(steps: int, step_seconds: float, rounds: int) -> dict[str, float]:
    """Alternating rounds of: hand command, first render (facts new), first render (facts
    known), one-step edit. Returns medians."""
    make_assets(steps, step_seconds)
    job = make_job(steps, step_seconds)
    hand = hand_command(job)
    ours = Ours(f"{steps}")
    runs: dict[str, list[float]] = {"hand": [], "first_new": [], "first": [], "edit": []}
    cpu: dict[str, list[float]] = {"hand": [], "first": []}
    stages = {}
    for r in range(rounds):
        wall, used = cpu_and_wall(lambda: ffmpeg.run(hand))
        runs["hand"].append(wall)
        cpu["hand"].append(used)
        ours.forget(facts=True)
        runs["first_new"].append(ours.render(job))
        ours.forget(facts=False)
        before = cpu_seconds()
        runs["first"].append(ours.render(job))
        cpu["first"].append(cpu_seconds() - before)
        stages = ours.last["timings"]
        runs["edit"].append(ours.render(edited(job, (3 + 7 * r) % steps, r)))
        made = ours.last["output"]["segments"]
        assert (made["video"]["rendered"], made["audio"]["rendered"]) == (1, 0), made
    result = {k: statistics.median(v) for k, v in runs.items()}
    result["spread"] = {k: (min(v), max(v)) for k, v in runs.items()}
    result["stages"] = stages
    result["cpu"] = {k: statistics.median(v) for k, v in cpu.items()}
    return result


PLAYABLE_JOBS = {"10 s": (2, 5.0), "60 s": (10, 6.0), "10 min": (60, 10.0)}


def playable(rounds: int) -> list[tuple[str, str, str]]:
    """Time to the first playable HLS segment (first render, assets new) and from an edit's
    start to its playlist, beside the whole render's and the edit's time, at three lengths."""
    rows = []
    for name, (steps, seconds) in PLAYABLE_JOBS.items():
        make_assets(steps, seconds)
        job = make_job(steps, seconds)
        ours = Ours(f"playable-{steps}")
        got: dict[str, list[float]] = {"first": [], "first_playable": [], "edit": [], "edit_playable": []}
        for r in range(rounds):
            ours.forget(facts=True)
            got["first"].append(ours.render(job))
            got["first_playable"].append(ours.playable or float("nan"))
            step = (1 + 7 * r) % steps
            got["edit"].append(ours.render(edited(job, step, r)))
            # Playable with the change: the playlist lists the edited step (all before it too).
            got["edit_playable"].append(ours.grown[step] if len(ours.grown) > step else float("nan"))
        med = {k: statistics.median(v) for k, v in got.items()}
        rows += [(f"{name}: first render, assets new: first segment playable",
                  f"{med['first_playable']:.3f} s",
                  f"whole render {med['first']:.3f} s; runs {min(got['first_playable']):.3f}-"
                  f"{max(got['first_playable']):.3f} s"),
                 (f"{name}: one-step text edit: playable", f"{med['edit_playable']:.3f} s",
                  f"whole edit (MP4 joined) {med['edit']:.3f} s; runs {min(got['edit_playable']):.3f}-"
                  f"{max(got['edit_playable']):.3f} s")]
    return rows


def _print(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    for name, value, note in rows:
        print(f"{name.ljust(width)}  {value.rjust(vwidth)}  {note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--long-rounds", type=int, default=1)
    parser.add_argument("--skip-long", action="store_true", help="leave out the 10-minute preview")
    parser.add_argument("--playable", action="store_true", help="only the HLS figures (time to playable)")
    args = parser.parse_args()
    print(f"ffmpeg: {ffmpeg.ffmpeg_exe()}\ncores: {os.cpu_count()}; rounds: {args.rounds} "
          f"(10-minute preview: {args.long_rounds})\n")
    if args.playable:
        _print(playable(args.rounds))
        shutil.rmtree(WORK, ignore_errors=True)
        return 0

    short = edit_loop(10, 6.0, args.rounds)
    job = make_job(10, 6.0)
    one, both = [], []
    threaded = Ours("threads")
    for _ in range(args.rounds):
        threaded.forget(facts=False)
        one.append(threaded.render(job, threads=1))
        threaded.forget(facts=False)
        both.append(threaded.render(job))
    chinese = make_job(10, 6.0, "bench-zh", "zh-Hans")
    en_runs, zh_runs = [], []
    languages = Ours("languages")
    languages.render(chinese)  # fonts loaded, as in a worker that has rendered before
    for _ in range(args.rounds):
        languages.forget(facts=False)
        en_runs.append(languages.render(job))
        languages.forget(facts=False)
        zh_runs.append(languages.render(chinese))
    zh, en = statistics.median(zh_runs), statistics.median(en_runs)
    hit = cache_hit(job)
    whole_lufs, spoken_lufs = loudness(job)
    mem_short = peak_memory(10, 6.0)
    mem_long = peak_memory(10, 24.0)
    long = None if args.skip_long else edit_loop(60, 10.0, args.long_rounds)

    rows = [
        ("60 s, 10 steps: hand-written ffmpeg", f"{short['hand']:.3f} s", _spread(short, "hand")),
        ("ours: first render, assets new", f"{short['first_new']:.3f} s", _spread(short, "first_new")),
        ("ours: first render, assets known", f"{short['first']:.3f} s",
         f"{_spread(short, 'first')}; stages {short['stages']}"),
        ("ours: one-step text edit", f"{short['edit']:.3f} s", _spread(short, "edit")),
        ("CPU seconds: hand / ours (first, assets known)",
         f"{short['cpu']['hand']:.2f} / {short['cpu']['first']:.2f}", "user + system, ffmpeg included"),
        ("first render / hand", f"{short['first_new'] / short['hand']:.2f}x "
         f"(assets known {short['first'] / short['hand']:.2f}x)", "aim <= 1.0x"),
        ("edit / first render", f"{short['edit'] / short['first_new']:.0%} "
         f"(of the assets-known render {short['edit'] / short['first']:.0%})", "aim <= 25%"),
        ("ours: first render on 1 thread", f"{statistics.median(one):.3f} s",
         f"default ({os.cpu_count()} threads) {statistics.median(both):.3f} s"),
        ("cache hit (worker time)", f"{hit * 1000:.1f} ms", "tasks.execute on a stored key; aim < 10 ms"),
        ("Chinese / English, first renders", f"{zh / en:.2f}x", f"{zh:.3f} s / {en:.3f} s; aim within 10%"),
        ("loudness, whole preview", f"{whole_lufs:.1f} LUFS",
         f"per-clip; a narrated step alone {spoken_lufs:.1f} LUFS; target -16"),
        ("peak RSS, 60 s first render", f"{mem_short[0]:.0f} MiB py, {mem_short[1]:.0f} MiB ffmpeg", ""),
        ("peak RSS, 240 s first render", f"{mem_long[0]:.0f} MiB py, {mem_long[1]:.0f} MiB ffmpeg",
         "flat in length"),
    ]
    if long:
        rows += [
            ("10 min, 60 steps: hand-written ffmpeg", f"{long['hand']:.2f} s", _spread(long, "hand")),
            ("ours: first render, assets new", f"{long['first_new']:.2f} s",
             f"{long['first_new'] / long['hand']:.2f}x hand"),
            ("ours: first render, assets known", f"{long['first']:.2f} s",
             f"{long['first'] / long['hand']:.2f}x hand; stages {long['stages']}"),
            ("ours: one-step text edit", f"{long['edit']:.2f} s",
             f"{long['edit'] / long['hand']:.2f}x hand, {long['edit'] / long['first_new']:.0%} of first"),
        ]
    rows += playable(args.long_rounds)
    _print(rows)
    shutil.rmtree(WORK, ignore_errors=True)
    return 0


def _spread(result: dict, name: str) -> str:
    low, high = result["spread"][name]
    return f"runs {low:.3f}-{high:.3f} s"


if __name__ == "__main__":
    sys.exit(main())
