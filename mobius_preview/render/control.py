"""How the caller of a render follows it and stops it, without render knowing who calls.

``progress(stage, percent)`` is called as the render goes (slides i/N, audio, video);
setting ``stop`` ends the render within a fraction of a second: its ffmpeg processes
are killed and ``Cancelled`` is raised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import Cancelled

POLL_SECONDS = 0.2  # how often a wait on ffmpeg looks at ``stop``


def _ignore(stage: str, percent: float) -> None:
    """No one is following."""


@dataclass
class Control:
    progress: Callable[[str, float], None] = _ignore
    stop: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self.stop.is_set():
            raise Cancelled("the render was cancelled")
