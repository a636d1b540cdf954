"""The render plan: what each slide shows and exactly when, on the frame grid.

A step lasts ``durationSec`` when given, else the length of its narration clip plus
a short pause, else a reading-time estimate of its text. Every duration is rounded
to whole frames so the video, the audio and the captions share one timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..errors import LimitExceeded
from .assets import Asset

WORDS_PER_SECOND = 2.5
MIN_STEP_SECONDS = 2.0
MAX_ESTIMATED_SECONDS = 20.0
NARRATION_PAUSE = 0.5
TITLE_CARD_SECONDS = 3.0


@dataclass(frozen=True)
class Slide:
    index: int
    step_id: str | None
    title: str
    text: str
    caption: str
    start: float
    duration: float
    image: Asset | None = None
    narration: Asset | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "stepId": self.step_id,
            "start": self.start,
            "duration": self.duration,
            "image": self.image.path.name if self.image else None,
            "narration": self.narration.path.name if self.narration else None,
        }


@dataclass(frozen=True)
class Plan:
    width: int
    height: int
    fps: int
    format: str
    language: str
    include_captions: bool
    burn_captions: bool
    title: str
    slides: list[Slide]
    music: Asset | None
    music_volume: float
    normalize: bool
    total_frames: int

    @property
    def duration(self) -> float:
        return self.total_frames / self.fps

    def as_dict(self) -> dict[str, Any]:
        return {
            "resolution": f"{self.width}x{self.height}",
            "fps": self.fps,
            "format": self.format,
            "language": self.language,
            "duration": round(self.duration, 3),
            "captions": {"included": self.include_captions, "burnt": self.burn_captions},
            "audio": {
                "music": self.music.path.name if self.music else None,
                "musicVolume": self.music_volume,
                "normalize": self.normalize,
            },
            "slides": [s.as_dict() for s in self.slides],
        }


def with_assets(plan: Plan, assets: dict[str, Asset]) -> Plan:
    """The plan with its narration clips and music replaced by ``assets``' (the same files
    with the facts learnt since the plan was laid out)."""

    def swap(asset: Asset | None) -> Asset | None:
        return assets.get(asset.id, asset) if asset is not None else None

    slides = [replace(s, narration=swap(s.narration)) if s.narration is not None else s for s in plan.slides]
    return replace(plan, slides=slides, music=swap(plan.music))


def lengths_needed(job: dict[str, Any]) -> list[str]:
    """The narration clips whose length the plan needs (steps without ``durationSec``), in
    step order: the only audio decoded before the plan exists."""
    steps = job["previewRequest"].get("steps") or []
    return list(dict.fromkeys(s["narration"] for s in steps
                              if s.get("narration") and s.get("durationSec") is None))


def estimate_seconds(text: str) -> float:
    words = len(text.split())
    return min(MAX_ESTIMATED_SECONDS, max(MIN_STEP_SECONDS, 1.0 + words / WORDS_PER_SECOND))


def _frames(seconds: float, fps: int) -> int:
    return max(1, round(seconds * fps))


def build(job: dict[str, Any], assets: dict[str, Asset], max_seconds: float) -> Plan:
    """Lay out a valid job on the frame grid; refuse plans longer than ``max_seconds``."""
    request = job["previewRequest"]
    options = request.get("options") or {}
    audio = request.get("audio") or {}
    width, height = (int(v) for v in options.get("resolution", "1280x720").split("x"))
    fps = int(options.get("fps", 30))
    language = options.get("language", "en")
    title = request.get("title") or ""

    slides: list[Slide] = []
    frame = 0
    steps = request.get("steps") or []
    for index, step in enumerate(steps):
        narration = assets.get(step["narration"]) if step.get("narration") else None
        if step.get("durationSec") is not None:
            seconds = float(step["durationSec"])
        elif narration is not None and narration.duration:
            seconds = narration.duration + NARRATION_PAUSE
        else:
            seconds = estimate_seconds(step["text"])
        frames = _frames(seconds, fps)
        text = step.get("textFr") if language == "fr" and step.get("textFr") else step["text"]
        slides.append(
            Slide(
                index=index,
                step_id=step["id"],
                title=step.get("title") or f"Step {index + 1}",
                text=text,
                caption=text,
                start=frame / fps,
                duration=frames / fps,
                image=assets.get(step["image"]) if step.get("image") else None,
                narration=narration,
            )
        )
        frame += frames
    if not slides:
        frames = _frames(TITLE_CARD_SECONDS, fps)
        slides.append(
            Slide(
                index=0,
                step_id=None,
                title=title or "Preview",
                text=request.get("description") or "",
                caption=title,
                start=0.0,
                duration=frames / fps,
            )
        )
        frame = frames
    if frame / fps > max_seconds:
        raise LimitExceeded(
            f"$.previewRequest.steps: the plan lasts {frame / fps:.1f} s, "
            f"the limit is {max_seconds:.0f} s (PREVIEW_MAX_VIDEO_SECONDS)"
        )
    music = assets.get(audio["music"]) if audio.get("music") else None
    return Plan(
        width=width,
        height=height,
        fps=fps,
        format=options.get("format", "mp4"),
        language=language,
        include_captions=bool(options.get("includeCaptions", True)),
        burn_captions=bool(options.get("burnCaptions", False)),
        title=title,
        slides=slides,
        music=music,
        music_volume=float(audio.get("musicVolume", 0.3)),
        normalize=bool(audio.get("normalize", False)),
        total_frames=frame,
    )

