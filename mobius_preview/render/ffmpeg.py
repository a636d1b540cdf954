"""Finding and running ffmpeg/ffprobe, and reading what they say about a media file.

Choice of binary: FFMPEG_BINARY when set, else ``ffmpeg`` on PATH, else the static
build shipped in the imageio-ffmpeg wheel. ffprobe is used when one is found
(FFPROBE_BINARY or PATH); otherwise media facts are read from ``ffmpeg -i``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..config import settings
from ..errors import Cancelled, EncoderError
from .control import POLL_SECONDS

_TAIL = 3000


@lru_cache(maxsize=4)
def _find_ffmpeg(override: str | None) -> str:
    if override:
        return override
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg  # the wheel's static build: a fallback, loaded only when it is used

    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


def ffmpeg_exe() -> str:
    return _find_ffmpeg(settings().ffmpeg_binary)


@lru_cache(maxsize=1)
def muxer_exe() -> str:
    """The ffmpeg for short stream-copy muxes (the HLS segments): the wheel's static build,
    which starts in ~20 ms where a distribution's dynamically linked one takes 70-200 ms
    (measured with Debian's 5.1); any ffmpeg does a stream copy alike. ffmpeg_exe when
    the wheel has no binary for this platform."""
    try:
        import imageio_ffmpeg  # the wheel's binary, looked up only when a mux needs it

        exe: str = imageio_ffmpeg.get_ffmpeg_exe()
        return exe
    except Exception:  # no wheel binary here: the configured one does the same copy
        return ffmpeg_exe()


def ffprobe_exe() -> str | None:
    return settings().ffprobe_binary or shutil.which("ffprobe")


def describe_binaries() -> dict[str, str | None]:
    return {"ffmpeg": ffmpeg_exe(), "ffprobe": ffprobe_exe()}


def run(args: list[str], *, timeout: float | None = None, what: str = "ffmpeg",
        stop: threading.Event | None = None, binary: str | None = None) -> str:
    """Run ffmpeg (``binary``, else ffmpeg_exe) with ``args``; raise EncoderError carrying
    the end of its output on failure, Cancelled (the process killed) as soon as ``stop`` is set."""
    cmd = [binary or ffmpeg_exe(), "-hide_banner", "-nostdin", *args]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                errors="replace")
    except OSError as exc:
        raise EncoderError(f"{what} could not start ({cmd[0]}): {exc}") from exc
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks: list[str] = []
    try:
        while True:
            try:
                _, err = proc.communicate(timeout=_poll(deadline, stop))
                chunks.append(err)
                break
            except subprocess.TimeoutExpired:
                _stop_or_time_out(proc, what, timeout, deadline, stop)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = "".join(chunks)
    if proc.returncode != 0:
        raise EncoderError(f"{what} failed with exit code {proc.returncode}:\n{stderr[-_TAIL:].strip()}")
    return stderr


def _poll(deadline: float | None, stop: threading.Event | None) -> float | None:
    """How long to wait on ffmpeg before looking at ``stop`` and the deadline again."""
    if stop is None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())
    left = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - time.monotonic())
    return max(0.0, left)


def _stop_or_time_out(proc: subprocess.Popen[str] | subprocess.Popen[bytes], what: str,
                      timeout: float | None, deadline: float | None, stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        proc.kill()
        raise Cancelled(f"{what}: cancelled")
    if deadline is not None and time.monotonic() >= deadline:
        proc.kill()
        raise EncoderError(f"{what} timed out after {timeout:.0f} s")


class Running:
    """An ffmpeg process started in the background; ``finish`` waits and checks it."""

    def __init__(self, args: list[str], what: str, log: Path):
        self.what = what
        self.log = log
        self._fh = log.open("w+", encoding="utf-8", errors="replace")
        try:
            self.proc = subprocess.Popen(
                [ffmpeg_exe(), "-hide_banner", "-nostdin", *args],
                stdout=subprocess.DEVNULL, stderr=self._fh,
            )
        except OSError as exc:
            self._fh.close()
            raise EncoderError(f"{what} could not start: {exc}") from exc

    def finish(self, timeout: float | None, stop: threading.Event | None = None) -> str:
        """Wait for the process; EncoderError on failure or time-out, Cancelled on ``stop``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    code = self.proc.wait(timeout=_poll(deadline, stop))
                    break
                except subprocess.TimeoutExpired:
                    _stop_or_time_out(self.proc, self.what, timeout, deadline, stop)
        except BaseException:
            self._fh.close()
            raise
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._fh.seek(0)
        output = self._fh.read()
        self._fh.close()
        if code != 0:
            raise EncoderError(f"{self.what} failed with exit code {code}:\n{output[-_TAIL:].strip()}")
        return output


_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_TIME = re.compile(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)")
_BITRATE = re.compile(r"bitrate: (\d+) kb/s")
_STREAM = re.compile(r"Stream #\d+:\d+(?:\[\w+\])?(?:\(\w+\))?: (Video|Audio|Subtitle): (\w+)(.*)")


def _seconds(match: re.Match[str]) -> float:
    h, m, s = match.groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


_INTEGRATED = re.compile(r"I:\s+(-?\d+(?:\.\d+)?|-inf) LUFS")


def audio_facts(path: Path) -> tuple[float, float | None]:
    """Decode an audio file fully: its length and its integrated loudness (EBU R128,
    LUFS; None when it is too short or silent to have one)."""
    err = run(
        ["-v", "info", "-nostats", "-stats", "-i", str(path), "-map", "0:a:0",
         "-af", "ebur128=framelog=verbose", "-f", "null", "-"],
        what=f"decoding {path.name}",
    )
    found = _INTEGRATED.findall(err)
    loudness = float(found[-1]) if found and found[-1] != "-inf" and float(found[-1]) > -70 else None
    return _decoded_seconds(err, path), loudness


def _decoded_seconds(err: str, path: Path) -> float:
    times = _TIME.findall(err)
    if not times:
        raise EncoderError(f"decoding {path.name}: ffmpeg reported no duration")
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def probe(path: Path) -> dict[str, Any]:
    """Container and stream facts of a rendered file, from ffprobe when present."""
    exe = ffprobe_exe()
    if exe:
        proc = subprocess.run(
            [exe, "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        if proc.returncode == 0:
            return _from_ffprobe(json.loads(proc.stdout))
    return _from_ffmpeg(path)


def _from_ffprobe(data: dict[str, Any]) -> dict[str, Any]:
    fmt = data.get("format", {})
    streams = []
    for s in data.get("streams", []):
        entry: dict[str, Any] = {"type": s.get("codec_type"), "codec": s.get("codec_name")}
        if s.get("codec_type") == "video":
            entry.update(width=s.get("width"), height=s.get("height"), pixFmt=s.get("pix_fmt"))
        elif s.get("codec_type") == "audio":
            entry.update(sampleRate=int(s.get("sample_rate", 0)), channels=s.get("channels"))
        streams.append(entry)
    return {
        "tool": "ffprobe",
        "format": fmt.get("format_name"),
        "duration": round(float(fmt.get("duration", 0.0)), 3),
        "bitRate": int(fmt.get("bit_rate", 0) or 0),
        "streams": streams,
    }


def _from_ffmpeg(path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    text = proc.stderr
    duration = _DURATION.search(text)
    bitrate = _BITRATE.search(text)
    streams = []
    for kind, codec, rest in _STREAM.findall(text):
        entry: dict[str, Any] = {"type": kind.lower(), "codec": codec}
        if kind == "Video":
            size = re.search(r"\b(\d{2,5})x(\d{2,5})\b", rest)
            pix = re.search(r", (yuv\w+|rgb\w+|gray\w*)", rest)
            if size:
                entry.update(width=int(size.group(1)), height=int(size.group(2)))
            entry["pixFmt"] = pix.group(1) if pix else None
        elif kind == "Audio":
            rate = re.search(r"(\d+) Hz", rest)
            entry["sampleRate"] = int(rate.group(1)) if rate else None
            entry["channels"] = 2 if "stereo" in rest else 1 if "mono" in rest else None
        streams.append(entry)
    fmt = re.search(r"Input #0, ([\w,]+), from", text)
    return {
        "tool": "ffmpeg",
        "format": fmt.group(1) if fmt else None,
        "duration": round(_seconds(duration), 3) if duration else 0.0,
        "bitRate": int(bitrate.group(1)) * 1000 if bitrate else 0,
        "streams": streams,
    }
