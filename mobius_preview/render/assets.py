"""Resolving a job's assets safely and proving they are usable before any encoding.

An asset ``path`` is relative to ``ASSETS_DIR/<projectId>/``. It is resolved with
symlinks followed and must stay inside that folder. An asset ``url`` (s3:// or
http(s)://) is downloaded once per host into a content-addressed cache (``fetch``).
Either must be a regular file of bounded size, match its ``sha256`` when one is
given, and open (images with Pillow, with a
pixel cap against decompression bombs; audio by decoding it with ffmpeg). Every
failure is an ``AssetError`` naming the asset and the reason: retrying cannot fix it;
only a download that met a server error or a timeout (``AssetUnavailable``) is retried.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image

from ..config import settings
from ..errors import AssetError, EncoderError
from . import fetch, ffmpeg

MAX_IMAGE_PIXELS = 40_000_000  # ~ 8000x5000; far beyond any slide, far below a bomb
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_AUDIO_BYTES = 200 * 1024 * 1024
INSPECT_THREADS = 4


@dataclass(frozen=True)
class Asset:
    id: str
    type: str
    path: Path
    sha256: str
    size: int
    duration: float | None = None  # audio only
    loudness: float | None = None  # audio only: integrated LUFS, None when silent
    dimensions: tuple[int, int] | None = None  # images only
    where: str = ""  # JSON path of the asset in the job, for error messages


def _where(index: int) -> str:
    return f"$.previewRequest.assets[{index}]"


def resolve(project_root: Path, relative: str, where: str) -> Path:
    """The real path of an asset, refusing anything that leaves the project folder."""
    root = project_root.resolve()
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise AssetError(f"{where}.path: {relative!r} must be relative, without '..'")
    try:
        real = (root / candidate).resolve(strict=True)
    except FileNotFoundError:
        raise AssetError(f"{where}.path: file not found: {relative!r}") from None
    except (OSError, RuntimeError) as exc:  # symlink loops and the like
        raise AssetError(f"{where}.path: cannot resolve {relative!r}: {exc}") from None
    if not real.is_relative_to(root):
        raise AssetError(f"{where}.path: {relative!r} resolves outside the project folder")
    mode = real.stat().st_mode
    if not stat.S_ISREG(mode):
        raise AssetError(f"{where}.path: {relative!r} is not a regular file")
    return real


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_image(path: Path, where: str) -> tuple[int, int]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise AssetError(
                        f"{where}: image is {im.width}x{im.height}, more than "
                        f"{MAX_IMAGE_PIXELS:,} pixels"
                    )
                im.load()
                return im.width, im.height
    except AssetError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise AssetError(f"{where}: image refused as a decompression bomb: {exc}") from None
    except Exception as exc:  # Pillow raises many types for broken files
        raise AssetError(f"{where}: Pillow cannot open the image: {exc}") from None


def _check_audio(path: Path, where: str) -> tuple[float, float | None]:
    try:
        duration, loudness = ffmpeg.audio_facts(path)
    except EncoderError as exc:
        raise AssetError(f"{where}: ffmpeg cannot decode the audio: {exc}") from None
    if duration <= 0:
        raise AssetError(f"{where}: audio has no length")
    return duration, loudness


def locate(project_root: Path, specs: list[dict[str, Any]]) -> dict[str, Asset]:
    """Resolve (or download), size-check and hash every asset: enough for the content key."""
    located: dict[str, Asset] = {}
    for index, spec in enumerate(specs):
        where = _where(index)
        limit = MAX_IMAGE_BYTES if spec["type"] == "image" else MAX_AUDIO_BYTES
        expected = spec.get("sha256")
        if spec.get("url"):
            got = fetch.fetch(spec["url"], f"{where}.url", project_id=project_root.name, sha256=expected,
                              limit=min(limit, settings().asset_max_bytes))
            path, digest, size = got.path, got.sha256, got.size
        else:
            path = resolve(project_root, spec["path"], where)
            size = path.stat().st_size
            if size > limit:
                raise AssetError(f"{where}: file is {size:,} bytes, the limit is {limit:,}")
            digest = _sha256(path)
        if expected and expected.lower() != digest:
            raise AssetError(f"{where}.sha256: file's sha256 is {digest}, payload says {expected}")
        located[spec["id"]] = Asset(spec["id"], spec["type"], path, digest, size, where=where)
    return located


def inspect(located: dict[str, Asset], cache_dir: Path | None = None) -> dict[str, Asset]:
    """Open every image and decode every audio clip: proof they are usable, their sizes,
    and each clip's loudness (the renderer normalises clip by clip).

    What was learnt about a file is kept in ``cache_dir`` under its sha256, so the
    same bytes (a music loop, a board picture) are decoded once per store, not per job.
    """

    def check(asset: Asset) -> Asset:
        cached = _cache_read(cache_dir, asset)
        if cached is not None:
            return cached
        if asset.type == "image":
            checked = replace(asset, dimensions=_check_image(asset.path, asset.where))
        else:
            duration, loudness = _check_audio(asset.path, asset.where)
            checked = replace(asset, duration=duration, loudness=loudness)
        _cache_write(cache_dir, checked)
        return checked

    # Decoding audio is an ffmpeg process per clip: run them side by side.
    with ThreadPoolExecutor(max_workers=INSPECT_THREADS) as pool:
        checked = list(pool.map(check, located.values()))
    return {asset.id: asset for asset in checked}


def _cache_path(cache_dir: Path, asset: Asset) -> Path:
    return cache_dir / f"{asset.sha256}.{asset.type}.json"


def _cache_read(cache_dir: Path | None, asset: Asset) -> Asset | None:
    if cache_dir is None:
        return None
    try:
        facts = json.loads(_cache_path(cache_dir, asset).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if asset.type == "image" and isinstance(facts.get("dimensions"), list):
        return replace(asset, dimensions=tuple(facts["dimensions"]))
    if (asset.type == "audio" and isinstance(facts.get("duration"), float | int)
            and "loudness" in facts):  # facts written before loudness was kept are learnt again
        loudness = facts["loudness"]
        return replace(asset, duration=float(facts["duration"]),
                       loudness=float(loudness) if isinstance(loudness, float | int) else None)
    return None


def _cache_write(cache_dir: Path | None, asset: Asset) -> None:
    if cache_dir is None:
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{asset.sha256}.{os.getpid()}.{threading.get_ident()}"
        tmp.write_text(json.dumps({"duration": asset.duration, "loudness": asset.loudness,
                                   "dimensions": asset.dimensions}))
        os.replace(tmp, _cache_path(cache_dir, asset))
    except OSError:
        pass  # a cache that cannot be written only costs time
