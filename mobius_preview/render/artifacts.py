"""The files of a stored preview, each named once: render writes them, storage finds a
finished preview by its manifest, the API serves them with these media types.
"""

from __future__ import annotations

import re
from typing import Final

MANIFEST: Final = "manifest.json"  # written last: a folder with it is complete
POSTER: Final = "poster.png"  # the first step's slide, full size
CONTACT_SHEET: Final = "contact-sheet.png"  # every step's thumbnail on one picture
CAPTIONS_SRT: Final = "captions.srt"
CAPTIONS_VTT: Final = "captions.vtt"
PLAYLIST: Final = "preview.m3u8"  # the HLS preview (MP4 only): grows while the job runs
_VIDEO_STEM: Final = "preview"
# The HLS preview's segments, named by their keys (render/hls.py): <key>.m4s and <key>.init.mp4.
HLS_SEGMENT: Final = re.compile(r"^[0-9a-f]{64}(\.m4s|\.init\.mp4)$")


def video(fmt: str) -> str:
    """The video's file name for an output format (``mp4`` or ``webm``)."""
    return f"{_VIDEO_STEM}.{fmt}"


def is_video(name: str) -> bool:
    return name.startswith(f"{_VIDEO_STEM}.") and name != PLAYLIST


def is_segment(name: str) -> bool:
    """Whether ``name`` is one of the HLS preview's segments (listed by its playlist)."""
    return HLS_SEGMENT.match(name) is not None


def is_hls(name: str) -> bool:
    """Whether ``name`` is a file of the HLS preview (the playlist or a segment)."""
    return name == PLAYLIST or HLS_SEGMENT.match(name) is not None


def media_type(name: str) -> str | None:
    """The Content-Type of a preview's file, HLS segments included."""
    if name.endswith(".m4s"):
        return "video/iso.segment"
    if HLS_SEGMENT.match(name):
        return "video/mp4"
    return MEDIA_TYPES.get(name)


# What the API answers as Content-Type for each file a preview can hold.
MEDIA_TYPES: Final[dict[str, str]] = {
    video("mp4"): "video/mp4",
    video("webm"): "video/webm",
    POSTER: "image/png",
    CONTACT_SHEET: "image/png",
    CAPTIONS_SRT: "application/x-subrip; charset=utf-8",
    CAPTIONS_VTT: "text/vtt; charset=utf-8",
    MANIFEST: "application/json",
    PLAYLIST: "application/vnd.apple.mpegurl",
}
