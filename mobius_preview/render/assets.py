"""Resolving a job's assets safely and proving they are usable before any encoding.

An asset path is relative to ``ASSETS_DIR/<projectId>/``. It is resolved with
symlinks followed and must stay inside that folder, be a regular file of bounded
size, match its ``sha256`` when one is given, and open (images with Pillow, with a
pixel cap against decompression bombs; audio by decoding it with ffmpeg). Every
failure is an ``AssetError`` naming the asset and the reason: retrying cannot fix it.
"""

from __future__ import annotations

import hashlib
import stat
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import AssetError, EncoderError
from . import ffmpeg

MAX_IMAGE_PIXELS = 40_000_000  # ~ 8000x5000; far beyond any slide, far below a bomb
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_AUDIO_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class Asset:
    id: str
    type: str
    path: Path
    sha256: str
    size: int
    duration: float | None = None  # audio only
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


def _check_audio(path: Path, where: str) -> float:
    try:
        duration = ffmpeg.decoded_duration(path, stream="a")
    except EncoderError as exc:
        raise AssetError(f"{where}: ffmpeg cannot decode the audio: {exc}") from None
    if duration <= 0:
        raise AssetError(f"{where}: audio has no length")
    return duration


def locate(project_root: Path, specs: list[dict[str, Any]]) -> dict[str, Asset]:
    """Resolve, size-check and hash every asset: enough to compute the content key."""
    located: dict[str, Asset] = {}
    for index, spec in enumerate(specs):
        where = _where(index)
        path = resolve(project_root, spec["path"], where)
        size = path.stat().st_size
        limit = MAX_IMAGE_BYTES if spec["type"] == "image" else MAX_AUDIO_BYTES
        if size > limit:
            raise AssetError(f"{where}: file is {size:,} bytes, the limit is {limit:,}")
        digest = _sha256(path)
        expected = spec.get("sha256")
        if expected and expected.lower() != digest:
            raise AssetError(f"{where}.sha256: file's sha256 is {digest}, payload says {expected}")
        located[spec["id"]] = Asset(spec["id"], spec["type"], path, digest, size, where=where)
    return located


def inspect(located: dict[str, Asset]) -> dict[str, Asset]:
    """Open every image and decode every audio clip: proof they are usable, and their sizes."""
    inspected = {}
    for asset_id, asset in located.items():
        if asset.type == "image":
            inspected[asset_id] = replace(asset, dimensions=_check_image(asset.path, asset.where))
        else:
            inspected[asset_id] = replace(asset, duration=_check_audio(asset.path, asset.where))
    return inspected
