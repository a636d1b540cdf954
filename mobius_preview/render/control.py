"""How the caller of a render follows it and stops it, without render knowing who calls.

``progress(stage, percent)`` is called as the render goes (slides i/N, audio, video);
``live(files, playlist)`` each time the HLS preview grows by a step;
setting ``stop`` ends the render within a fraction of a second: its ffmpeg processes
are killed and ``Cancelled`` is raised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Cancelled

POLL_SECONDS = 0.2  # how often a wait on ffmpeg looks at ``stop``


def _ignore(stage: str, percent: float) -> None:
    """No one is following."""


def _unpublished(files: list[Path], playlist: str) -> None:
    """No one plays the preview while it renders."""


@dataclass
class Control:
    progress: Callable[[str, float], None] = _ignore
    # The HLS preview grew: its new files (init and media segments) and the playlist so
    # far, to put where players fetch them; called in step order, the first call makes
    # the preview playable.
    live: Callable[[list[Path], str], None] = _unpublished
    stop: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self.stop.is_set():
            raise Cancelled("the render was cancelled")
