"""Rendered segments kept by key in one folder, shared by every render on the machine.

A segment is written under a private temporary name and renamed into place
(``write``), so it is either complete or absent; two renders making the same segment both succeed and the
bytes are the same. Using a segment touches it, so ``prune`` removes the ones no
render has needed for a while.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

_NAME = re.compile(r"^[0-9a-z][0-9a-z-]{0,100}$")


class SegmentStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str, suffix: str) -> Path:
        if not _NAME.match(name):
            raise ValueError(f"unsafe segment name: {name!r}")
        return self.folder / f"{name}{suffix}"

    def get(self, name: str, suffix: str) -> Path | None:
        """The stored segment, touched (it is in use), or None."""
        path = self.path(name, suffix)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def write(self, names: list[str], suffix: str, make: Callable[[list[Path]], object]) -> list[Path]:
        """Store one file per name, all made by one call of ``make`` under private names
        (a name may repeat: each copy gets its own) and then renamed into place; nothing
        is left behind when ``make`` fails."""
        tmps = [self.folder / f".{self.path(name, '').name}.{os.getpid()}.{threading.get_ident()}.{n}{suffix}"
                for n, name in enumerate(names)]
        try:
            make(tmps)
            return [self._put(tmp, name, suffix) for name, tmp in zip(names, tmps, strict=True)]
        finally:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)

    def write_one(self, name: str, suffix: str, make: Callable[[Path], object]) -> Path:
        return self.write([name], suffix, lambda tmps: make(tmps[0]))[0]

    def _put(self, tmp: Path, name: str, suffix: str) -> Path:
        final = self.path(name, suffix)
        os.replace(tmp, final)
        return final


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
