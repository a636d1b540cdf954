"""Assets by URL: downloaded once per host into a content-addressed cache under DATA_DIR.

``s3://bucket/key`` is read with the service's own credentials (the AWS variables and
files, as for ``PREVIEW_STORAGE_URL``); inside the service's bucket and prefix a job
may read only its own project's uploads (``assets/<projectId>/``), never previews,
segments or another project's files. ``https://...`` is fetched through the shared
request-forgery guard (``guard``): every address public unless ``PREVIEW_ASSET_ALLOW``
names it, the checked address connected to, each redirect checked again.
``http://`` is refused unless the allow list names the host or its address: on the
open internet a plain download can be read and altered on the way, so it is kept for
an operator's own servers on a network they trust (the sha256 in the job is optional).

The cache holds each file once under its sha256 (``sha256/<digest>``) and, per URL,
what it last held (``urls/<sha256 of the URL>.json``, with the ETag and Last-Modified):
a job giving ``sha256`` for a file this host has is served without any request; one
without asks the server whether the file changed (a conditional GET, an S3 HEAD) and
downloads only when it did. Bounded by ``PREVIEW_ASSET_MAX_BYTES`` and, in time, by
``PREVIEW_ASSET_TIMEOUT`` for a whole download.

Errors name the asset's JSON path: missing (404), refused (the guard), too large, or
unreadable: ``AssetError``, permanent; a 5xx, 408, 429, a timeout or no connection:
``AssetUnavailable``, retried.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import certifi
import httpx

from .. import guard
from ..config import settings
from ..errors import (
    AssetError,
    AssetUnavailable,
    ObjectMissing,
    StoreConfigError,
    StoreUnavailable,
    UrlRefused,
)
from ..objectstore import ObjectStore, parse_url

CACHE_FOLDER = "asset-cache"
MAX_REDIRECTS = 5
CHUNK = 1 << 20
_RETRYABLE_STATUS = {408, 425, 429}


@dataclass(frozen=True)
class Fetched:
    """A downloaded asset: its file in the cache, its sha256 and size."""

    path: Path
    sha256: str
    size: int


def cache_root() -> Path:
    return settings().data_dir / CACHE_FOLDER


def upload_key(project_id: str, path: str) -> str:
    """The store key (under PREVIEW_STORAGE_URL's prefix) of a project's uploaded asset."""
    return f"assets/{project_id}/{path}"


def fetch(url: str, where: str, *, limit: int, project_id: str, sha256: str | None = None,
          root: Path | None = None) -> Fetched:
    """The asset at ``url`` as a local file, downloaded at most once per host.

    ``where`` is the URL's JSON path (``$.previewRequest.assets[2].url``) for errors;
    ``sha256``, when the job gives it, finds a cached copy without asking anyone.
    """
    root = root or cache_root()
    if sha256:
        cached = _by_content(root, sha256.lower())
        if cached is not None:
            return cached
    if url.startswith("s3://"):
        return _from_s3(url, where, limit, project_id, root)
    return _from_http(url, where, limit, root)


# ---------------------------------------------------------------- the cache

def _content_path(root: Path, digest: str) -> Path:
    return root / "sha256" / digest


def _by_content(root: Path, digest: str) -> Fetched | None:
    path = _content_path(root, digest)
    try:
        size = path.stat().st_size
    except OSError:
        return None
    os.utime(path)  # last used: what an age-based clean-up would look at
    return Fetched(path, digest, size)


def _index_path(root: Path, url: str) -> Path:
    return root / "urls" / f"{hashlib.sha256(url.encode()).hexdigest()}.json"


def _index_read(root: Path, url: str) -> tuple[Fetched, dict[str, Any]] | None:
    """What ``url`` held when last downloaded here, if its file is still cached."""
    try:
        entry = json.loads(_index_path(root, url).read_text(encoding="utf-8"))
        cached = _by_content(root, str(entry["sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None if cached is None else (cached, entry)


def _index_write(root: Path, url: str, fetched: Fetched, validators: dict[str, str]) -> None:
    entry = {"url": url, "sha256": fetched.sha256, "size": fetched.size, **validators}
    _atomic_write(_index_path(root, url), json.dumps(entry).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _keep(root: Path, part: Path, digest: str, size: int) -> Fetched:
    """Move a complete download into the cache under its sha256 (a rename: readers see
    the whole file or none; two hosts' threads writing the same bytes agree)."""
    final = _content_path(root, digest)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, final)
    return Fetched(final, digest, size)


def _part(root: Path) -> Path:
    folder = root / "partial"
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, suffix=".part")
    os.close(fd)
    return Path(name)


# ---------------------------------------------------------------- s3://

def _store(bucket: str) -> ObjectStore:
    """A client for ``bucket`` with the service's endpoint and credentials (built per
    download, which costs far less than the request: no process-wide state to go stale)."""
    return ObjectStore.from_url(f"s3://{bucket}")


def _check_own_bucket(bucket: str, key: str, project_id: str, where: str) -> None:
    """Inside the service's own bucket and prefix, only the project's uploads."""
    configured = settings().storage_url
    if not configured:
        return
    own_bucket, prefix = parse_url(configured)
    if bucket != own_bucket:
        return
    ours = f"{prefix}/" if prefix else ""
    if key.startswith(ours) and not key.startswith(ours + upload_key(project_id, "")):
        raise AssetError(f"{where}: s3://{bucket}/{key} is in the service's own store outside "
                         f"this project's assets ({ours}{upload_key(project_id, '')}): refused")


def _from_s3(url: str, where: str, limit: int, project_id: str, root: Path) -> Fetched:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    _check_own_bucket(bucket, key, project_id, where)
    store = _store(bucket)
    try:
        head = store.head(key)
        if head.size > limit:
            raise AssetError(f"{where}: {url} is {head.size:,} bytes, the limit is {limit:,}")
        known = _index_read(root, url)
        if known is not None and head.etag and known[1].get("etag") == head.etag:
            return known[0]
        part = _part(root)
        try:
            digest = store.get_file(key, part)
            size = part.stat().st_size
            if size > limit:
                raise AssetError(f"{where}: {url} is {size:,} bytes, the limit is {limit:,}")
            fetched = _keep(root, part, digest, size)
        finally:
            part.unlink(missing_ok=True)
    except ObjectMissing:
        raise AssetError(f"{where}: {url} not found (no such key)") from None
    except StoreUnavailable as exc:
        raise AssetUnavailable(f"{where}: {url}: the store did not answer: {exc}") from None
    except StoreConfigError as exc:
        if exc.variable == "PREVIEW_STORAGE_URL":  # the bucket does not exist
            raise AssetError(f"{where}: {url} not found (no such bucket)") from None
        raise
    _index_write(root, url, fetched, {"etag": head.etag} if head.etag else {})
    return fetched


# ---------------------------------------------------------------- http(s)://

@lru_cache(maxsize=4)
def _tls(ca_file: Path | None) -> ssl.SSLContext:
    """The public CAs (certifi) plus PREVIEW_ASSET_CA_FILE's, for an operator's own CA."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def _target(url: str, where: str) -> guard.Target:
    """The guard's verdict on one URL (the first or a redirect's), plus the http:// rule."""
    cfg = settings()
    try:
        target = guard.check(url, cfg.asset_allow, what=where, setting="PREVIEW_ASSET_ALLOW")
    except UrlRefused as exc:
        raise AssetError(str(exc)) from None
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            raise AssetError(f"{where}: host of {url!r} does not exist: {exc}") from None
        raise AssetUnavailable(f"{where}: host of {url!r} did not resolve: {exc}") from None
    if target.scheme == "http" and not target.allowed:
        raise AssetError(f"{where}: {url!r} is plain http:// to a host PREVIEW_ASSET_ALLOW does not "
                         f"name: refused (use https://)")
    return target


@dataclass
class _Download:
    """One download's bounds: where it is for errors, the size limit, the deadline."""

    url: str
    where: str
    limit: int
    deadline: float
    root: Path


def _from_http(url: str, where: str, limit: int, root: Path) -> Fetched:
    cfg = settings()
    known = _index_read(root, url)
    conditional: dict[str, str] = {}
    if known is not None:
        if known[1].get("etag"):
            conditional["if-none-match"] = known[1]["etag"]
        if known[1].get("lastModified"):
            conditional["if-modified-since"] = known[1]["lastModified"]
    job = _Download(url, where, limit, time.monotonic() + cfg.asset_timeout, root)
    timeout = httpx.Timeout(cfg.asset_timeout)
    with httpx.Client(follow_redirects=False, timeout=timeout, trust_env=False,
                      verify=_tls(cfg.asset_ca_file)) as http:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            outcome = _get(http, _target(current, where), conditional, job)
            if isinstance(outcome, str):  # a redirect: its target is checked on the next turn
                current = urljoin(current, outcome)
                continue
            if outcome is None:  # 304: what this host has is current
                if known is None:
                    raise AssetUnavailable(f"{where}: {url} answered 304 to a plain GET")
                return known[0]
            fetched, validators = outcome
            _index_write(root, url, fetched, validators)
            return fetched
    raise AssetError(f"{where}: {url} redirects more than {MAX_REDIRECTS} times")


_Outcome = tuple[Fetched, dict[str, str]] | str | None


def _get(http: httpx.Client, target: guard.Target, conditional: dict[str, str],
         job: _Download) -> _Outcome:
    """One GET to the checked addresses in turn (the next one only if a connection fails)."""
    failure: Exception | None = None
    for address in target.addresses:
        url, headers, extensions = target.pinned(address)
        headers.update(conditional)
        headers["user-agent"] = "mobius-preview-assets"
        try:
            with http.stream("GET", url, headers=headers, extensions=extensions) as response:
                return _answer(response, target, job)
        except httpx.ConnectError as exc:
            failure = exc
        except httpx.TimeoutException as exc:
            raise AssetUnavailable(f"{job.where}: {target.url} timed out ({exc or 'no answer'})") from None
        except httpx.TransportError as exc:
            raise AssetUnavailable(f"{job.where}: {target.url}: {exc}") from None
    raise AssetUnavailable(f"{job.where}: cannot connect to {target.host}: {failure}")


def _answer(response: httpx.Response, target: guard.Target, job: _Download) -> _Outcome:
    status = response.status_code
    if status in (301, 302, 303, 307, 308) and response.headers.get("location"):
        return response.headers["location"]
    if status == 304:
        return None
    if status >= 500 or status in _RETRYABLE_STATUS:
        raise AssetUnavailable(f"{job.where}: {target.url} answered {status}")
    if status != 200:
        raise AssetError(f"{job.where}: {target.url} answered {status}"
                         + (" (not found)" if status in (404, 410) else ""))
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > job.limit:
        raise AssetError(f"{job.where}: {target.url} is {int(declared):,} bytes, the limit is {job.limit:,}")
    validators = {name: response.headers[header] for name, header in
                  (("etag", "etag"), ("lastModified", "last-modified")) if header in response.headers}
    return _save(response, target, job), validators


def _save(response: httpx.Response, target: guard.Target, job: _Download) -> Fetched:
    """Stream the body into the cache, hashing it, within the size limit and the deadline."""
    digest = hashlib.sha256()
    size = 0
    part = _part(job.root)
    try:
        with part.open("wb") as fh:
            for chunk in response.iter_bytes(CHUNK):
                size += len(chunk)
                if size > job.limit:
                    raise AssetError(f"{job.where}: {target.url} is more than {job.limit:,} bytes, "
                                     f"the limit")
                if time.monotonic() > job.deadline:
                    raise AssetUnavailable(f"{job.where}: {target.url} took longer than "
                                           f"PREVIEW_ASSET_TIMEOUT ({settings().asset_timeout} s)")
                digest.update(chunk)
                fh.write(chunk)
        return _keep(job.root, part, digest.hexdigest(), size)
    finally:
        part.unlink(missing_ok=True)
