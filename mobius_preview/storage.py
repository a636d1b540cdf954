"""The artifact store under DATA_DIR: content-addressed previews, a job index, temp space.

Layout::

    DATA_DIR/previews/<key>/        one finished preview (video, poster, captions, manifest.json)
    DATA_DIR/index/<projectId>/<jobId>.json   which key a job ended with
    DATA_DIR/tmp/<key>.<random>/    renders in progress (same file system as previews/)
    DATA_DIR/asset-facts/<sha256>.<type>.json   durations and sizes of asset files

A render is written into tmp/ and moved into previews/ with one rename, so a preview
is either complete or absent; when two workers race on the same key, the first
rename wins and the loser's copy is discarded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .config import settings

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


def lookup(key: str) -> Path | None:
    """The stored preview for ``key`` if it is complete (its manifest exists)."""
    path = preview_dir(key)
    return path if (path / "manifest.json").is_file() else None


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


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write a small JSON file whole or not at all (temp file, then one rename).

    The temp name is unique per process and thread, so no mkstemp name search; the
    folder is made only when missing.
    """
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    text = json.dumps(data, indent=2, sort_keys=True).encode("utf-8")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def index_path(project_id: str, job_id: str) -> Path:
    return (
        root() / "index" / _checked(_ID, project_id, "projectId") / f"{_checked(_ID, job_id, 'jobId')}.json"
    )


def index_job(project_id: str, job_id: str, key: str, *, cache_hit: bool) -> None:
    """Note which key a job ended with.

    A job's entry is written once, nearly always: so it is created in place with one
    small write (every dry run writes one; a temp file and a rename cost a third
    more). A second run of the same job (a redelivery) replaces it atomically.
    """
    path = index_path(project_id, job_id)
    entry = {"projectId": project_id, "jobId": job_id, "key": key, "cacheHit": cache_hit}
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, flags, 0o644)
    except FileExistsError:
        _write_json_atomic(path, entry)
        return
    with os.fdopen(fd, "wb") as fh:
        fh.write(json.dumps(entry, indent=2, sort_keys=True).encode("utf-8"))


def find_job(project_id: str, job_id: str) -> Path | None:
    """The preview folder a job ended with, if any."""
    try:
        entry = json.loads(index_path(project_id, job_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    key = entry.get("key", "")
    return lookup(key) if isinstance(key, str) and _KEY.match(key) else None


def artifacts(folder: Path) -> dict[str, str]:
    """Every file of a stored preview by name, as absolute paths."""
    return {p.name: str(p) for p in sorted(folder.iterdir()) if p.is_file()}


def clean_stale(max_age_seconds: float) -> int:
    """Remove temp folders left by renders that crashed; returns how many went."""
    tmp = root() / "tmp"
    if not tmp.is_dir():
        return 0
    cutoff = time.time() - max_age_seconds
    removed = 0
    for entry in tmp.iterdir():
        try:
            if entry.is_dir() and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        except FileNotFoundError:
            continue
    return removed
