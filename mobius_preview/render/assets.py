"""Resolving a job's assets safely and proving they are usable, each when first needed.

An asset ``path`` is relative to ``ASSETS_DIR/<projectId>/``. It is resolved with
symlinks followed and must stay inside that folder. An asset ``url`` (s3:// or
http(s)://) is downloaded once per host into a content-addressed cache (``fetch``).
Either must be a regular file of bounded size, match its ``sha256`` when one is
given, and open (images with Pillow, with a pixel cap against decompression bombs;
audio by decoding it with ffmpeg). Every failure is an ``AssetError`` naming the
asset's JSON path and the reason: retrying cannot fix it; only a download that met a
server error or a timeout (``AssetUnavailable``) is retried.

The checks are lazy (``Inspector``) so a render's first step is out early: an image's
header is read before the plan, its pixels decoded before its slide is drawn; an
audio clip is decoded (its length and loudness) before the plan only when the plan
needs its length, else before the first audio segment that mixes it. Every asset is
checked before the render ends. What was learnt is kept by sha256 (files in
``cache_dir``, and in memory for the process), and a file's sha256 is kept in memory
by its path, inode, size and times, so an edit neither hashes nor decodes again.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
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
    checked: bool = False  # opened and decoded whole: the facts above are known


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


# sha256 of files already hashed by this process, by (path, device, inode, size, mtime_ns,
# ctime_ns): writing a file changes its times (ctime cannot be set back), replacing it its
# inode, so a changed file is hashed again. A file changed less than _SETTLED_NS ago is not
# remembered: file times come from a coarse clock (a few ms), and a second write within the
# same tick would leave them as they were (git's "racy" files). Bounded: cleared when full.
_HASHED: dict[tuple[str, int, int, int, int, int], str] = {}
_HASHED_MAX = 100_000
_HASHED_LOCK = threading.Lock()
_SETTLED_NS = 1_000_000_000


def _stamp(path: Path, st: os.stat_result) -> tuple[str, int, int, int, int, int]:
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _sha256(path: Path, st: os.stat_result | None = None) -> str:
    """The file's sha256, from this process's memory when the file is unchanged since."""
    st = st or path.stat()
    stamp = _stamp(path, st)
    known = _HASHED.get(stamp)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    # A write during the read changes the times: keep the digest only when they held.
    settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) >= _SETTLED_NS
    if settled and _stamp(path, path.stat()) == stamp:
        with _HASHED_LOCK:
            if len(_HASHED) >= _HASHED_MAX:
                _HASHED.clear()
            _HASHED[stamp] = digest.hexdigest()
    return digest.hexdigest()


def _check_image(path: Path, where: str, *, decode: bool = True) -> tuple[int, int]:
    """The image's size, refusing bombs; ``decode``: its pixels decoded too (a truncated
    or corrupt file fails here, not while its slide is drawn)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise AssetError(
                        f"{where}: image is {im.width}x{im.height}, more than "
                        f"{MAX_IMAGE_PIXELS:,} pixels"
                    )
                if decode:
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
            st = path.stat()
            size = st.st_size
            if size > limit:
                raise AssetError(f"{where}: file is {size:,} bytes, the limit is {limit:,}")
            digest = _sha256(path, st)
        if expected and expected.lower() != digest:
            raise AssetError(f"{where}.sha256: file's sha256 is {digest}, payload says {expected}")
        located[spec["id"]] = Asset(spec["id"], spec["type"], path, digest, size, where=where)
    return located


def _check(asset: Asset) -> Asset:
    """Open the image / decode the audio clip whole: the asset with its facts."""
    if asset.type == "image":
        return replace(asset, dimensions=_check_image(asset.path, asset.where), checked=True)
    duration, loudness = _check_audio(asset.path, asset.where)
    return replace(asset, duration=duration, loudness=loudness, checked=True)


class Inspector:
    """One render's asset checks, each run once, by the first thread that needs it (others
    needing it meanwhile wait for it), so the checks follow the render's order: the first
    step's assets are checked first, not every asset before the first step.

    ``asset(id)`` is the asset as known so far; ``learn(asset)`` checks it (or waits for the
    thread checking it) and returns it with its facts; an unusable asset raises
    ``AssetError`` to every thread that needs it. ``started`` lists the ids in the order
    their checks began (what tests and the benchmark look at).
    """

    def __init__(self, located: dict[str, Asset], cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self._checks: dict[str, Future[Asset]] = {}
        self._located = dict(located)
        self.started: list[str] = []
        for asset in located.values():
            known = _cache_read(cache_dir, asset)
            if known is not None:
                done: Future[Asset] = Future()
                done.set_result(known)
                self._checks[asset.id] = done

    def asset(self, asset_id: str) -> Asset:
        """The asset with its facts when they are known (``checked``), else as located."""
        check = self._checks.get(asset_id)
        if check is not None and check.done() and check.exception() is None:
            return check.result()
        return self._located[asset_id]

    def assets(self) -> dict[str, Asset]:
        return {aid: self.asset(aid) for aid in self._located}

    def learn(self, asset: Asset) -> Asset:
        """``asset`` checked: now on this thread, unless another thread has begun it."""
        with self._lock:
            check = self._checks.get(asset.id)
            mine = check is None
            if check is None:
                check = self._checks[asset.id] = Future()
                self.started.append(asset.id)
        if mine:
            try:
                checked = _check(self._located[asset.id])
            except BaseException as exc:
                check.set_exception(exc)
                raise
            _cache_write(self.cache_dir, checked)
            check.set_result(checked)
        return check.result()

    def learn_all(self, assets: Iterable[Asset], threads: int = INSPECT_THREADS) -> dict[str, Asset]:
        """Check these assets, ``threads`` at a time (decoding audio is an ffmpeg process per
        clip), started in the order given; every one learnt, or the first error raised."""
        wanted = list({a.id: a for a in assets}.values())
        todo = [a for a in wanted if not self.asset(a.id).checked]
        if len(todo) > 1:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(self.learn, todo))
        return {a.id: self.learn(a) for a in wanted}

    def header_checks(self) -> None:
        """What is cheap to prove before the plan: every image not known yet opens, with its
        size within the limit (its pixels are decoded before its slide is drawn)."""
        for asset in self._located.values():
            if asset.type == "image" and not self.asset(asset.id).checked:
                _check_image(asset.path, asset.where, decode=False)


def inspect(located: dict[str, Asset], cache_dir: Path | None = None) -> dict[str, Asset]:
    """Open every image and decode every audio clip at once: proof they are usable, their
    sizes, each clip's length and loudness (for callers that need everything up front)."""
    return Inspector(located, cache_dir).learn_all(located.values())


def _cache_path(cache_dir: Path, asset: Asset) -> Path:
    return cache_dir / f"{asset.sha256}.{asset.type}.json"


# Facts read or written by this process, by their file's path (its name is the sha256 and
# type: what it says never changes).
_FACTS: dict[str, dict[str, Any]] = {}


def forget() -> None:
    """Drop what this process remembers of files' hashes and facts (a benchmark's "new
    assets"; a worker never needs to: a changed file is noticed, and facts never change)."""
    with _HASHED_LOCK:
        _HASHED.clear()
        _FACTS.clear()


def _cache_read(cache_dir: Path | None, asset: Asset) -> Asset | None:
    if cache_dir is None:
        return None
    path = _cache_path(cache_dir, asset)
    facts = _FACTS.get(str(path))
    if facts is None:
        try:
            facts = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(facts, dict):
            return None
    found = _from_facts(asset, facts)
    if found is not None:
        _FACTS[str(path)] = facts
    return found


def _from_facts(asset: Asset, facts: dict[str, Any]) -> Asset | None:
    if asset.type == "image" and isinstance(facts.get("dimensions"), list):
        return replace(asset, dimensions=tuple(facts["dimensions"]), checked=True)
    if (asset.type == "audio" and isinstance(facts.get("duration"), float | int)
            and "loudness" in facts):  # facts written before loudness was kept are learnt again
        loudness = facts["loudness"]
        return replace(asset, duration=float(facts["duration"]),
                       loudness=float(loudness) if isinstance(loudness, float | int) else None,
                       checked=True)
    return None


def _cache_write(cache_dir: Path | None, asset: Asset) -> None:
    if cache_dir is None:
        return
    facts = {"duration": asset.duration, "loudness": asset.loudness, "dimensions": asset.dimensions}
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{asset.sha256}.{os.getpid()}.{threading.get_ident()}"
        tmp.write_text(json.dumps(facts))
        os.replace(tmp, _cache_path(cache_dir, asset))
    except OSError:
        return  # a cache that cannot be written only costs time
    _FACTS[str(_cache_path(cache_dir, asset))] = json.loads(json.dumps(facts))
