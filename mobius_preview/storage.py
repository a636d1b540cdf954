"""The artifact store under DATA_DIR: content-addressed previews, a job index, temp space.

Layout::

    DATA_DIR/previews/<key>/        one finished preview (its files: render/artifacts.py)
    DATA_DIR/index/<projectId>/<day>.<host>.<pid>.jsonl   which key each job ended with
    DATA_DIR/tmp/<key>.<random>/    renders in progress (same file system as previews/)
    DATA_DIR/asset-facts/<sha256>.<type>.json   durations, sizes and loudness of asset files
    DATA_DIR/segments/<key>.<kind>   rendered steps (video, audio, thumbnail, HLS) shared by renders
    DATA_DIR/live/<jobId>/          a running job's HLS preview: its playlist so far and the
                                    segments it lists (hard links into segments/)

A render is written into tmp/ and moved into previews/ with one rename, so a preview
is either complete or absent; when two workers race on the same key, the first
rename wins and the loser's copy is discarded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path

from .config import settings
from .render.artifacts import MANIFEST

_KEY = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def root() -> Path:
    return settings().data_dir


def _checked(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.match(value):
        raise ValueError(f"unsafe {what}: {value!r}")
    return value


def preview_dir(key: str) -> Path:
    return root() / "previews" / _checked(_KEY, key, "key")


def asset_facts_dir() -> Path:
    """Where the renderer keeps what it learnt about asset files, by their sha256."""
    return root() / "asset-facts"


def segments_dir() -> Path:
    """Where rendered segments are kept by their keys, for the next render that needs them."""
    return root() / "segments"


def live_dir(job_id: str) -> Path:
    """Where a running job's HLS preview is published while it grows."""
    return root() / "live" / _checked(_ID, job_id, "jobId")


def publish_live(job_id: str, files: list[Path], playlist: str, playlist_name: str) -> None:
    """Publish a running job's HLS preview as it grows: the new segment files first, then
    the playlist listing them, replaced in one rename, so a player never sees a playlist
    naming a segment that is not there yet.

    The one place a growing preview is put where players fetch it: an object store
    (issue 19) puts the same files there, in the same order.
    """
    folder = live_dir(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        target = folder / path.name
        if target.exists():
            continue
        try:
            target.hardlink_to(path)
        except FileExistsError:
            continue
        except OSError:
            shutil.copyfile(path, target)
    tmp = folder / f".{playlist_name}.{os.getpid()}.{threading.get_ident()}"
    tmp.write_text(playlist, encoding="utf-8")
    os.replace(tmp, folder / playlist_name)


def live_file(job_id: str, name: str) -> Path | None:
    """A file of a running job's HLS preview, if published (``name`` checked by the caller)."""
    if Path(name).name != name:
        return None
    path = live_dir(job_id) / name
    return path if path.is_file() else None


def drop_live(job_id: str) -> None:
    """The job ended: its preview (HLS included) is served from previews/ from now on."""
    shutil.rmtree(live_dir(job_id), ignore_errors=True)


def lookup(key: str) -> Path | None:
    """The stored preview for ``key`` if it is complete (its manifest exists)."""
    path = preview_dir(key)
    return path if (path / MANIFEST).is_file() else None


def new_workdir(key: str) -> Path:
    tmp = root() / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{_checked(_KEY, key, 'key')}.", dir=tmp))


def publish(workdir: Path, key: str) -> Path:
    """Move a finished render into place atomically; the first of two racing renders wins."""
    final = preview_dir(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(workdir, final)
    except OSError:
        if lookup(key) is None:
            raise
        shutil.rmtree(workdir, ignore_errors=True)
    return final


def discard(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)


class _Journals:
    """Open append-only index files of this process, a few at a time (closed on eviction)."""

    def __init__(self, size: int = 32) -> None:
        self._size = size
        self._open: OrderedDict[Path, int] = OrderedDict()
        self._lock = threading.Lock()

    def fd(self, path: Path) -> int:
        with self._lock:
            if path in self._open:
                self._open.move_to_end(path)
                return self._open[path]
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._open[path] = fd
            while len(self._open) > self._size:
                os.close(self._open.popitem(last=False)[1])
            return fd


_journals = _Journals()
_HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:64] or "host"


def index_dir(project_id: str) -> Path:
    return root() / "index" / _checked(_ID, project_id, "projectId")


def index_job(project_id: str, job_id: str, key: str, *, cache_hit: bool) -> None:
    """Note which key a job ended with: one line in this process's journal for the project.

    Each process appends to its own file (``<day>.<host>.<pid>.jsonl``): one write per
    job, no file per job (a file per job cost each dry run about a third of its time,
    and fills a folder with millions of inodes), and one writer per file even on a
    shared file system. A line is one write() of a few hundred bytes.
    """
    _checked(_ID, job_id, "jobId")
    day = time.strftime("%Y-%m-%d", time.gmtime())
    entry = {"projectId": project_id, "jobId": job_id, "key": key, "cacheHit": cache_hit,
             "at": datetime.now(UTC).isoformat(timespec="milliseconds")}
    path = index_dir(project_id) / f"{day}.{_HOST}.{os.getpid()}.jsonl"
    os.write(_journals.fd(path), (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8"))


def find_job(project_id: str, job_id: str) -> Path | None:
    """The preview folder a job ended with, if any (its latest entry in the journals)."""
    _checked(_ID, job_id, "jobId")
    folder = index_dir(project_id)
    needle = f'"jobId": {json.dumps(job_id)}'
    latest: tuple[str, str] | None = None
    for journal in folder.glob("*.jsonl") if folder.is_dir() else ():
        with journal.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if needle not in line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:  # a line cut short by a crash
                    continue
                if entry.get("jobId") == job_id and (latest is None or entry.get("at", "") >= latest[0]):
                    latest = (entry.get("at", ""), entry.get("key", ""))
    if latest is None or not _KEY.match(str(latest[1])):
        return None
    return lookup(latest[1])


def artifacts(folder: Path) -> dict[str, str]:
    """Every file of a stored preview by name, as absolute paths."""
    return {p.name: str(p) for p in sorted(folder.iterdir()) if p.is_file()}


def clean_stale(max_age_seconds: float) -> int:
    """Remove temp folders left by renders that crashed, and the live previews of jobs that
    never finished (died, or their worker did); returns how many went."""
    cutoff = time.time() - max_age_seconds
    removed = 0
    for entry in [*_entries(root() / "tmp"), *_entries(root() / "live")]:
        try:
            if entry.is_dir() and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def _entries(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []
