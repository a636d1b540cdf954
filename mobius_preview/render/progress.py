"""Every stage a running job reports, and the stretch of the percent bar it covers.

A job goes through the stages in the order below, so its percent only rises: an MP4
through ``segments`` and ``join``, a WebM through ``video`` and ``audio``; both end at
90 before ``publish``. The render (``render``) and the task around it (``tasks``) both
take their numbers from here; the label a stage is reported under may add a count
(``slides 3/12``).
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Stretch(NamedTuple):
    start: float  # percent when the stage begins
    end: float  # percent when its last part is done


STAGES: Final[dict[str, Stretch]] = {
    "assets": Stretch(5, 5),  # the task opens and measures the assets
    "slides": Stretch(10, 40),  # each step's slide drawn
    "segments": Stretch(40, 90),  # MP4: each run of segments encoded
    "join": Stretch(90, 90),  # MP4: the segments joined by stream copy
    "video": Stretch(40, 90),  # WebM: the whole video encoded
    "audio": Stretch(90, 90),  # WebM: waiting for the audio track and the mux
    "publish": Stretch(97, 97),  # the task moves the preview into the store
    "done": Stretch(100, 100),  # the job ended (what a finished job's status shows)
}


def percent(stage: str, done: int = 0, total: int = 1) -> float:
    """Where the bar stands ``done`` parts of ``total`` into ``stage``."""
    start, end = STAGES[stage]
    return start + (end - start) * done / total if total else start
