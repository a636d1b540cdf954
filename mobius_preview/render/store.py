"""Rendered segments kept by key, shared by every render: in one folder, or in an object
store with that folder as a bounded local cache in front of it.

A segment is written under a private temporary name and renamed into place
(``write``), so it is either complete or absent; two renders making the same segment both
succeed and the bytes are the same. Using a segment touches it, so ``prune`` removes the
ones no render has needed for a while.

With a ``remote`` store (PREVIEW_STORAGE_URL), a segment made here is uploaded under
``segments/<name><suffix>``; one missing here is fetched from there once (then it is a
local file like any other), so an edit on any host reuses the segments every host made.
The folder is then a cache of at most ``cache_bytes``: the least recently used files go
first, never one used in the last ``keep_seconds`` (a render in progress may still join it).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import ObjectMissing
from ..objectstore import ObjectStore

_NAME = re.compile(r"^[0-9a-z][0-9a-z-]{0,100}$")
FETCH_THREADS = 8  # segments fetched at once from the object store (small files: latency-bound)
REMOTE_PREFIX = "segments/"


class SegmentStore:
    def __init__(self, folder: Path, remote: ObjectStore | None = None, *, cache_bytes: int | None = None,
                 keep_seconds: float = 3600.0) -> None:
        self.folder = folder
        self.remote = remote
        self.cache_bytes = cache_bytes
        self.keep_seconds = keep_seconds
        self.fetched = 0  # segments this store brought from the remote (each once)
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str, suffix: str) -> Path:
        if not _NAME.match(name):
            raise ValueError(f"unsafe segment name: {name!r}")
        return self.folder / f"{name}{suffix}"

    def get(self, name: str, suffix: str) -> Path | None:
        """The stored segment, touched (it is in use), or None; fetched from the remote
        store when this host has no copy yet."""
        path = self.path(name, suffix)
        try:
            os.utime(path)
        except FileNotFoundError:
            return self._fetch(name, suffix)
        return path

    def get_many(self, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Path | None]:
        """``get`` for many files at once (the remote's round trips overlap)."""
        items = list(dict.fromkeys(wanted))
        if self.remote is None or len(items) < 2:
            return {item: self.get(*item) for item in items}
        with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:
            found = dict(zip(items, pool.map(lambda item: self.get(*item), items), strict=True))
        self._trim()
        return found

    def _fetch(self, name: str, suffix: str) -> Path | None:
        if self.remote is None:
            return None
        path = self.path(name, suffix)
        try:
            self.remote.get_file(f"{REMOTE_PREFIX}{path.name}", path)  # complete or absent
        except ObjectMissing:
            return None
        self.fetched += 1
        return path

    def write(self, names: list[str], suffix: str, make: Callable[[list[Path]], object]) -> list[Path]:
        """Store one file per name, all made by one call of ``make`` under private names
        (a name may repeat: each copy gets its own) and then renamed into place; nothing
        is left behind when ``make`` fails. With a remote store each is uploaded too
        (a failed upload raises: the render fails and is retried)."""
        tmps = [self.folder / f".{self.path(name, '').name}.{os.getpid()}.{threading.get_ident()}.{n}{suffix}"
                for n, name in enumerate(names)]
        try:
            make(tmps)
            placed = [self._put(tmp, name, suffix) for name, tmp in zip(names, tmps, strict=True)]
        finally:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)
        if self.remote is not None:
            for path in dict.fromkeys(placed):
                self.remote.put_file(f"{REMOTE_PREFIX}{path.name}", path)
            self._trim()
        return placed

    def write_one(self, name: str, suffix: str, make: Callable[[Path], object]) -> Path:
        return self.write([name], suffix, lambda tmps: make(tmps[0]))[0]

    def _put(self, tmp: Path, name: str, suffix: str) -> Path:
        final = self.path(name, suffix)
        os.replace(tmp, final)
        return final

    def _trim(self) -> None:
        if self.cache_bytes is not None:
            trim(self.folder, self.cache_bytes, self.keep_seconds)


def trim(folder: Path, max_bytes: int, keep_seconds: float) -> int:
    """Remove the least recently used segments until the folder holds ``max_bytes`` or
    less, sparing those used in the last ``keep_seconds``; returns how many went."""
    entries = []
    for entry in os.scandir(folder):
        try:
            if entry.is_file() and not entry.name.startswith("."):
                stat = entry.stat()
                entries.append((stat.st_mtime, stat.st_size, entry.path))
        except FileNotFoundError:
            continue
    total = sum(size for _, size, _ in entries)
    if total <= max_bytes:
        return 0
    spared_after = time.time() - keep_seconds
    removed = 0
    for mtime, size, path in sorted(entries):
        if total <= max_bytes or mtime >= spared_after:
            break
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        total -= size
        removed += 1
    return removed


def prune(folder: Path, max_age_seconds: float) -> int:
    """Remove segments (and abandoned temporary files) unused for ``max_age_seconds``."""
    if not folder.is_dir():
        return 0
    cutoff = time.time() - max_age_seconds
    removed = 0
    for entry in folder.iterdir():
        try:
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
