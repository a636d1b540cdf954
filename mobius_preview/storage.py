"""The artifact store: content-addressed previews, a job index, asset facts, segments;
under DATA_DIR, or in an object store (PREVIEW_STORAGE_URL=s3://bucket/prefix).

Layout under DATA_DIR (PREVIEW_STORAGE_URL unset)::

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

Layout in the bucket, under its prefix (DATA_DIR then holds tmp/ and caches only)::

    previews/<key>/<token>/<file>    one publish attempt's files (token: random, per attempt)
    previews/<key>/manifest.json     written last, create-only: what makes the preview exist;
                                     its "objectFolder" names the token whose files it lists
    segments/<name><suffix>          rendered steps; DATA_DIR/segments/ is a bounded LRU cache
    asset-facts/<sha256>.<type>.json what was learnt about an asset file
    index/<projectId>/<jobId>.json   which key a job ended with
    live/<jobId>/<file>              a running job's HLS preview: its segments, then its playlist
                                     (one PUT each); deleted when the job ends

Each attempt uploads its files under a fresh token, so two workers publishing one key
never overwrite each other's files, and the one whose create-only manifest lands is the
preview; the other deletes its files. An upload cut short (StoreUnavailable: transient,
the task is retried) leaves files no manifest names: nothing looks done.
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from .config import settings
from .errors import ObjectExists, ObjectMissing, StoreConfigError, StoreError
from .objectstore import ObjectStore
from .render.artifacts import MANIFEST, MEDIA_TYPES
from .render.assets import Asset
from .render.store import SegmentStore

UPLOAD_THREADS = 4  # a preview's files are uploaded side by side

_KEY = re.compile(r"^[0-9a-f]{64}$")
_TOKEN = re.compile(r"^[0-9a-f]{32}$")
_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def root() -> Path:
    return settings().data_dir


@lru_cache(maxsize=4)
def _store_for(url: str, pid: int) -> ObjectStore:
    """One client per process: obstore's runtime and connections do not survive a fork
    (a pool child using its parent's client hangs), so each process makes its own."""
    return ObjectStore.from_url(url)


def remote() -> ObjectStore | None:
    """The object store of PREVIEW_STORAGE_URL, or None when files stay under DATA_DIR."""
    url = settings().storage_url
    return _store_for(url, os.getpid()) if url else None


def check() -> str | None:
    """Reach the object store (if any) as a render would: StoreConfigError naming the
    variable to fix, StoreUnavailable when it does not answer. Returns its URL."""
    store = remote()
    if store is None:
        return None
    store.check()
    return store.url


def _checked(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.match(value):
        raise ValueError(f"unsafe {what}: {value!r}")
    return value


def check_forked() -> str | None:
    """``check`` in a forked child, for a process that forks workers afterwards: obstore's
    runtime, once started in a parent, hangs every request its forked children make."""
    if not settings().storage_url:
        return None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: check, report, leave without running the parent's exit hooks
        os.close(read)
        try:
            answer: dict[str, Any] = {"url": check()}
        except StoreConfigError as exc:
            answer = {"config": str(exc).split(": ", 1)[-1], "variable": exc.variable}
        except BaseException as exc:  # the parent raises it as a StoreError
            answer = {"error": str(exc) or type(exc).__name__}
        os.write(write, json.dumps(answer).encode("utf-8"))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        raw = fh.read()
    os.waitpid(pid, 0)
    answer = json.loads(raw or b'{"error": "the store check died"}')
    if "config" in answer:
        raise StoreConfigError(answer["config"], answer["variable"])
    if "error" in answer:
        raise StoreError(answer["error"])
    return str(answer["url"])


def preview_dir(key: str) -> Path:
    return root() / "previews" / _checked(_KEY, key, "key")


def asset_facts_dir() -> Path:
    """Where the renderer keeps what it learnt about asset files, by their sha256."""
    return root() / "asset-facts"


def segments_dir() -> Path:
    """Where rendered segments are kept by their keys, for the next render that needs them."""
    return root() / "segments"


def segment_store() -> SegmentStore:
    """The segments every render shares: DATA_DIR/segments, or the bucket's with that
    folder as a bounded cache (PREVIEW_SEGMENT_CACHE_MB)."""
    cfg = settings()
    store = remote()
    if store is None:
        return SegmentStore(segments_dir())
    return SegmentStore(segments_dir(), store, cache_bytes=cfg.segment_cache_bytes,
                        keep_seconds=2 * cfg.time_limit)


def live_dir(job_id: str) -> Path:
    """Where a running job's HLS preview is published while it grows (without a store)."""
    return root() / "live" / _checked(_ID, job_id, "jobId")


def _live_key(job_id: str, name: str = "") -> str:
    """The object key of a running job's HLS file (or folder) in the store."""
    return f"live/{_checked(_ID, job_id, 'jobId')}/{name}"


# Per running job, the live files this process has put in the store already: the
# publisher of a job lives in one process, so it need not ask the store again.
_uploaded: dict[str, set[str]] = {}
_uploaded_lock = threading.Lock()


def publish_live(job_id: str, files: list[Path], playlist: str, playlist_name: str) -> None:
    """Publish a running job's HLS preview as it grows: the new segment files first, then
    the playlist listing them (one rename, or one PUT, which readers see whole or not at
    all), so a player never sees a playlist naming a segment that is not there yet.

    The one place a growing preview is put where players fetch it: DATA_DIR/live/<jobId>/,
    or the store's live/<jobId>/ so that an API on any host serves it.
    """
    store = remote()
    if store is not None:
        with _uploaded_lock:
            done = _uploaded.setdefault(job_id, set())
        for path in files:
            if path.name not in done:
                store.put_file(_live_key(job_id, path.name), path)
                done.add(path.name)
        store.put_bytes(_live_key(job_id, playlist_name), playlist.encode("utf-8"))
        return
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


def live_file(job_id: str, name: str) -> str | None:
    """Where a file of a running job's HLS preview is, if published (a path, or an
    ``s3://`` location); ``name`` is checked by the caller."""
    if Path(name).name != name:
        return None
    store = remote()
    if store is not None:
        key = _live_key(job_id, name)
        return f"{store.url}/{key}" if store.exists(key) else None
    path = live_dir(job_id) / name
    return str(path) if path.is_file() else None


def drop_live(job_id: str) -> None:
    """The job ended: its preview (HLS included) is served from previews/ from now on."""
    with _uploaded_lock:
        _uploaded.pop(job_id, None)
    store = remote()
    if store is not None:
        for head in list(store.list(_live_key(job_id))):
            store.delete(head.key)
        return
    shutil.rmtree(live_dir(job_id), ignore_errors=True)


def lookup(key: str) -> str | None:
    """Where the stored preview for ``key`` is, if it is complete (its manifest exists):
    a folder, or ``s3://bucket/prefix/previews/<key>``."""
    path = preview_dir(key)
    store = remote()
    if store is None:
        return str(path) if (path / MANIFEST).is_file() else None
    return f"{store.url}/previews/{key}" if store.exists(f"previews/{key}/{MANIFEST}") else None


def new_workdir(key: str) -> Path:
    tmp = root() / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{_checked(_KEY, key, 'key')}.", dir=tmp))


def publish(workdir: Path, key: str) -> str:
    """Put a finished render in place, all or nothing; the first of two racing renders wins.
    Returns where it is (as ``lookup``)."""
    store = remote()
    if store is not None:
        return _publish_remote(store, workdir, key)
    final = preview_dir(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(workdir, final)
    except OSError:
        if lookup(key) is None:
            raise
        shutil.rmtree(workdir, ignore_errors=True)
    return str(final)


def _publish_remote(store: ObjectStore, workdir: Path, key: str) -> str:
    """Upload the files under a fresh token, then the manifest, create-only, naming it."""
    _checked(_KEY, key, "key")
    where = f"{store.url}/previews/{key}"
    manifest_key = f"previews/{key}/{MANIFEST}"
    if store.exists(manifest_key):  # published meanwhile (another worker, an earlier try)
        discard(workdir)
        return where
    token = uuid.uuid4().hex
    files = sorted(p for p in workdir.iterdir() if p.is_file() and p.name != MANIFEST)
    uploaded = [f"previews/{key}/{token}/{p.name}" for p in files]
    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        list(pool.map(lambda pair: store.put_file(pair[0], pair[1], content_type=_media_type(pair[1].name)),
                      zip(uploaded, files, strict=True)))
    manifest = json.loads((workdir / MANIFEST).read_text(encoding="utf-8"))
    manifest["objectFolder"] = token
    try:
        store.put_bytes(manifest_key, json.dumps(manifest, indent=2).encode("utf-8"), create_only=True,
                        content_type="application/json")
    except ObjectExists:  # another worker's manifest landed first: theirs is the preview
        for name in uploaded:
            try:
                store.delete(name)
            except StoreError:
                break  # left for the bucket's lifecycle rule; no manifest names them
    discard(workdir)
    return where


def _media_type(name: str) -> str:
    return MEDIA_TYPES.get(name) or mimetypes.guess_type(name)[0] or "application/octet-stream"


@dataclass(frozen=True)
class Stored:
    """A published preview: where it is, its manifest, and each file's location (a path,
    or an s3:// URL), the manifest's own too."""

    location: str
    manifest: dict[str, Any]
    files: dict[str, str]


def _remote_key(location: str) -> tuple[ObjectStore, str]:
    """The store and key of an ``s3://`` location this host's store holds."""
    store = remote()
    if store is None:
        raise StoreConfigError(f"the preview is in an object store ({location}); this host has none",
                               "PREVIEW_STORAGE_URL")
    if not location.startswith(store.url + "/"):
        raise ObjectMissing(location, f"not under this host's store {store.url}")
    return store, location[len(store.url) + 1:]


def stored(location: str) -> Stored:
    """Read a published preview's manifest (ObjectMissing if it is not there)."""
    if not location.startswith("s3://"):
        folder = Path(location)
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ObjectMissing(str(folder / MANIFEST), "not on this host's disk") from None
        return Stored(location, manifest, artifacts(folder))
    store, key = _remote_key(location)
    manifest = json.loads(store.get_bytes(f"{key}/{MANIFEST}"))
    token = _checked(_TOKEN, str(manifest.get("objectFolder", "")), "objectFolder")
    names = [str(f["name"]) for f in manifest.get("files", [])
             if Path(str(f.get("name"))).name == f.get("name")]  # a plain name: it stays in its folder
    files = {name: f"{location}/{token}/{name}" for name in names}
    files[MANIFEST] = f"{location}/{MANIFEST}"
    return Stored(location, manifest, dict(sorted(files.items())))


def file_size(location: str) -> int:
    """Bytes in one stored file (ObjectMissing if it is gone)."""
    if not location.startswith("s3://"):
        try:
            return Path(location).stat().st_size
        except FileNotFoundError:
            raise ObjectMissing(location, "not on this host's disk") from None
    store, key = _remote_key(location)
    return store.head(key).size


def read_range(location: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of one stored file."""
    if not location.startswith("s3://"):
        with open(location, "rb") as fh:
            fh.seek(start)
            return fh.read(end - start)
    store, key = _remote_key(location)
    return store.get_range(key, start, end)


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
    """Note which key a job ended with: one line in this process's journal for the project
    (in the bucket: one object per job, ``index/<projectId>/<jobId>.json``).

    Each process appends to its own file (``<day>.<host>.<pid>.jsonl``): one write per
    job, no file per job (a file per job cost each dry run about a third of its time,
    and fills a folder with millions of inodes), and one writer per file even on a
    shared file system. A line is one write() of a few hundred bytes.
    """
    _checked(_ID, job_id, "jobId")
    day = time.strftime("%Y-%m-%d", time.gmtime())
    entry = {"projectId": project_id, "jobId": job_id, "key": key, "cacheHit": cache_hit,
             "at": datetime.now(UTC).isoformat(timespec="milliseconds")}
    store = remote()
    if store is not None:
        _checked(_ID, project_id, "projectId")
        store.put_bytes(f"index/{project_id}/{job_id}.json", json.dumps(entry).encode("utf-8"),
                        content_type="application/json")
        return
    path = index_dir(project_id) / f"{day}.{_HOST}.{os.getpid()}.jsonl"
    os.write(_journals.fd(path), (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8"))


def find_job(project_id: str, job_id: str) -> str | None:
    """Where the preview a job ended with is, if any (its latest entry in the journals)."""
    _checked(_ID, job_id, "jobId")
    store = remote()
    if store is not None:
        _checked(_ID, project_id, "projectId")
        try:
            entry = json.loads(store.get_bytes(f"index/{project_id}/{job_id}.json"))
        except ObjectMissing:
            return None
        return lookup(entry["key"]) if _KEY.match(str(entry.get("key"))) else None
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
    """Every file of a stored preview (a folder) by name, as absolute paths."""
    return {p.name: str(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _facts_name(asset: Asset) -> str:
    return f"{asset.sha256}.{asset.type}.json"  # as render/assets.py names its cache files


def pull_facts(assets: Iterable[Asset]) -> list[Asset]:
    """Bring what the bucket knows of these assets into the local facts folder; returns
    the ones it knew nothing of (to ``push_facts`` once they are learnt)."""
    store = remote()
    if store is None:
        return []
    folder = asset_facts_dir()

    def pull(asset: Asset) -> Asset | None:
        path = folder / _facts_name(asset)
        if path.is_file():
            return None
        try:
            store.get_file(f"asset-facts/{path.name}", path)
        except ObjectMissing:
            return asset
        return None

    wanted = list({a.sha256 + a.type: a for a in assets}.values())
    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        return [a for a in pool.map(pull, wanted) if a is not None]


def push_facts(assets: Iterable[Asset]) -> None:
    """Upload the facts learnt here for assets the bucket knew nothing of."""
    store = remote()
    if store is None:
        return
    for asset in assets:
        path = asset_facts_dir() / _facts_name(asset)
        if path.is_file():
            store.put_file(f"asset-facts/{path.name}", path, content_type="application/json")


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
