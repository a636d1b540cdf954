"""Cost of line breaking by ICU (UAX #14, CJK rules, Thai dictionary) against the
greedy space-splitting wrap it replaced, on the 60 slides of a 60-step job.

Both wraps measure with the same font chain and shaping; what differs is where they
look for breaks. Figures: time spent in ``text.wrap`` while drawing the 60 slides
(title, step text with its shrink-to-fit tries, burnt caption), and the whole
drawing time, per language, in CPU seconds (steady on a busy machine), median of
the rounds, the two wraps alternated.

    .venv/bin/python bench/linebreak.py [--rounds 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse
import statistics
import time
from collections.abc import Callable

from mobius_preview import render
from mobius_preview.render import slides, text
from mobius_preview.render.text import clusters, measure

ASSETS = HERE.parent / "schemas" / "examples" / "assets"
STEPS = 60
TEXT = {
    "en": ("Step {n}: setting up", "Place the board (hexagonal tiles) in the middle of the table, then each "
           "player takes the pieces of one colour and puts two settlements on free corners, step {n}."),
    "zh-Hans": ("第{n}步：准备", "我们今天学习如何设置游戏。首先，把棋盘放在桌子中间，然后每位玩家拿一种颜色的棋子，"
                "把两个定居点放在空的交叉点上（第{n}步）。"),
    "ja": ("ステップ{n}：準備", "「カタン」の準備をしましょう。まず、ボードを机の中央に置きます。ちょっと待って、"
           "各プレイヤーは開拓地を二つ置きます（ステップ{n}）。"),
    "th": ("ขั้นตอน {n}", "วันนี้เราจะเรียนรู้วิธีตั้งค่าเกมกระดาน วางกระดานไว้กลางโต๊ะ "
           "ผู้เล่นแต่ละคนวางนิคมสองแห่งบนมุมที่ว่าง ขั้นตอนที่ {n}"),
    "ar": ("الخطوة {n}", "ضع اللوح في منتصف الطاولة، ثم يأخذ كل لاعب قطع لون واحد ويضع مستوطنتين "
           "على زاويتين فارغتين (الخطوة {n})."),
}


def old_wrap(body: str, width: int, size: int, bold: bool = False, language: str = "") -> list[str]:
    """The wrap before ICU (commit 2bc8f45): split at spaces, a word wider than the line
    (or a CJK or Thai sentence, which has no spaces) cut between clusters anywhere."""
    lines: list[str] = []
    for paragraph in body.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}".strip()
            if measure(candidate, size, bold, language) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            parts = clusters(word)
            while parts and measure("".join(parts), size, bold, language) > width:
                cut = len(parts)
                while cut > 1 and measure("".join(parts[:cut]), size, bold, language) > width:
                    cut -= 1
                lines.append("".join(parts[:cut]))
                parts = parts[cut:]
            line = "".join(parts)
        lines.append(line)
    return lines


def plan(language: str) -> render.Plan:
    title, body = TEXT[language]
    steps = [{"id": f"s{n}", "title": title.format(n=n + 1), "text": body.format(n=n + 1), "durationSec": 10,
              "image": "board"} for n in range(STEPS)]
    job = {"jobId": "bench-lb", "projectId": "proj-catan-demo", "requestId": "r", "dryRun": True,
           "previewRequest": {"title": "Line breaks", "steps": steps,
                              "assets": [{"id": "board", "type": "image", "path": "images/board.png"}],
                              "audio": {}, "options": {"resolution": "1280x720", "language": language,
                                                       "burnCaptions": True}}}
    return render.prepare(render.identify(job, ASSETS), 3600).plan


def draw_all(p: render.Plan, wrap: Callable[..., list[str]]) -> tuple[float, float]:
    """(seconds in wrap, seconds drawing the 60 slides) with ``wrap`` as the text wrap."""
    spent = 0.0

    def timed(*args: object, **kwargs: object) -> list[str]:
        nonlocal spent
        start = time.process_time()
        try:
            return wrap(*args, **kwargs)
        finally:
            spent += time.process_time() - start

    text._segments.cache_clear()  # each round as a fresh render process would see it
    new = text.wrap
    text.wrap = timed
    try:
        start = time.process_time()
        for slide in p.slides:
            slides.draw(p, slide)
        return spent, time.process_time() - start
    finally:
        text.wrap = new


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    text.warm()
    icu = text.wrap
    print(f"{STEPS} slides at 1280x720 (title, text, caption), median of {args.rounds}; seconds per job")
    print(f"{'language':9} {'wrap old':>9} {'wrap ICU':>9} {'ratio':>6} {'draw old':>9} {'draw ICU':>9} {'extra':>7}")
    for language in TEXT:
        p = plan(language)
        draw_all(p, icu)  # warm the fonts at these sizes
        old: list[tuple[float, float]] = []
        new: list[tuple[float, float]] = []
        for r in range(args.rounds):
            for impl, into in ((old_wrap, old), (icu, new)) if r % 2 == 0 else ((icu, new), (old_wrap, old)):
                into.append(draw_all(p, impl))
        wo, do = (statistics.median(x[i] for x in old) for i in (0, 1))
        wn, dn = (statistics.median(x[i] for x in new) for i in (0, 1))
        print(f"{language:9} {wo:9.3f} {wn:9.3f} {wn / wo:5.2f}x {do:9.3f} {dn:9.3f} {(dn - do) / do:+6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
