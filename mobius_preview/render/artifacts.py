"""The files of a stored preview, each named once: render writes them, storage finds a
finished preview by its manifest, the API serves them with these media types.
"""

from __future__ import annotations

from typing import Final

MANIFEST: Final = "manifest.json"  # written last: a folder with it is complete
POSTER: Final = "poster.png"  # the first step's slide, full size
CONTACT_SHEET: Final = "contact-sheet.png"  # every step's thumbnail on one picture
CAPTIONS_SRT: Final = "captions.srt"
CAPTIONS_VTT: Final = "captions.vtt"
_VIDEO_STEM: Final = "preview"


def video(fmt: str) -> str:
    """The video's file name for an output format (``mp4`` or ``webm``)."""
    return f"{_VIDEO_STEM}.{fmt}"


def is_video(name: str) -> bool:
    return name.startswith(f"{_VIDEO_STEM}.")


# What the API answers as Content-Type for each file a preview can hold.
MEDIA_TYPES: Final[dict[str, str]] = {
    video("mp4"): "video/mp4",
    video("webm"): "video/webm",
    POSTER: "image/png",
    CONTACT_SHEET: "image/png",
    CAPTIONS_SRT: "application/x-subrip; charset=utf-8",
    CAPTIONS_VTT: "text/vtt; charset=utf-8",
    MANIFEST: "application/json",
}
