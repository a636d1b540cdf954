"""Caption files (SRT and WebVTT): one cue per slide, on the plan's timeline, UTF-8.

A right-to-left cue (mostly Arabic or Hebrew) starts with a RIGHT-TO-LEFT MARK, so a
player that takes the direction from the first strong character (both formats do)
reads it right to left even when it begins with a number or a Latin name.
"""

from __future__ import annotations

from .plan import Plan
from .text import direction

RLM = "\u200f"


def _stamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cues(plan: Plan) -> list[tuple[float, float, str]]:
    return [
        (s.start, s.start + s.duration, _directed(" ".join(s.caption.split())))
        for s in plan.slides
        if s.caption.strip()
    ]


def _directed(text: str) -> str:
    return RLM + text if direction(text) == "rtl" else text


def srt(plan: Plan) -> str:
    blocks = [
        f"{n}\n{_stamp(a, ',')} --> {_stamp(b, ',')}\n{text}\n"
        for n, (a, b, text) in enumerate(_cues(plan), start=1)
    ]
    return "\n".join(blocks)


def vtt(plan: Plan) -> str:
    blocks = [
        f"{_stamp(a, '.')} --> {_stamp(b, '.')}\n{_vtt_text(text)}\n" for a, b, text in _cues(plan)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _vtt_text(text: str) -> str:
    """WebVTT cue text is markup: escape what would start a tag or end a cue."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("-->", "--&gt;")
