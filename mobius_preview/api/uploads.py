"""PUT /v1/projects/{projectId}/assets/{path}: an asset uploaded by a host that speaks only HTTP.

The body is the file (any type; the render checks it opens), at most
``PREVIEW_ASSET_MAX_BYTES``; its sha256 is computed on the way. With an object store
(``PREVIEW_STORAGE_URL``) it is written under the project's prefix
(``<prefix>/assets/<projectId>/<path>``, one PUT, so a reader sees the old or the new
file whole) and the answer's ``url`` is the ``s3://`` URL a job names; without one it
is written under ``ASSETS_DIR/<projectId>/<path>`` (a rename, same guarantee) and a job
names it by ``path``. The answer's ``asset`` holds exactly the fields to put in a job.

Uploads go through the API rather than presigned PUT URLs: the API checks the key,
the project, the path and the size, hashes the file, and the host needs no route to
the store (which presigned URLs embed) and no S3 signing; the cost, the bytes passing
through the API, is small for pictures and narration. ``path`` follows the job's own
rule (relative, no '..', no empty or '.' segments) so it cannot leave the project.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..config import settings
from ..errors import StoreError
from ..objectstore import ObjectStore
from ..render import fetch
from ..schema import schema
from .auth import KeyHolder, api_key
from .errors import Refused

router = APIRouter(tags=["assets"], dependencies=[Security(api_key)],
                   responses={401: {"description": "no or wrong API key"}})
_stores: dict[str, ObjectStore] = {}
_lock = threading.Lock()


def _rules() -> tuple[re.Pattern[str], re.Pattern[str], int]:
    """The job schema's own rules for a project id and an asset path (one source of truth)."""
    defs = schema()["$defs"]
    path = defs["asset"]["properties"]["path"]
    return re.compile(defs["id"]["pattern"]), re.compile(path["pattern"]), int(path["maxLength"])


def checked(project_id: str, path: str) -> str:
    """``path`` when it is a safe asset path of a valid project; else a 422 saying why."""
    id_rule, path_rule, max_length = _rules()
    if len(project_id) > 128 or not id_rule.fullmatch(project_id):
        raise Refused(422, "projectId must be 1-128 characters of [A-Za-z0-9._-], "
                      "not starting with '.' or '-'", path="projectId")
    segments = path.split("/")
    if (len(path) > max_length or not path_rule.fullmatch(path)
            or any(s in ("", ".", "..") for s in segments)):
        raise Refused(422, "path must be a relative path inside the project folder (no leading '/', "
                      f"no '..', '.' or empty segments, at most {max_length} characters)", path="path")
    return path


def _store(url: str) -> ObjectStore:
    with _lock:
        if url not in _stores:
            _stores[url] = ObjectStore.from_url(url)
        return _stores[url]


@router.put(
    "/v1/projects/{project_id}/assets/{path:path}", status_code=201,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
    responses={201: {"description": "stored: its sha256, size, and the asset fields for a job"},
               403: {"description": "this key may not write to the project"},
               413: {"description": "larger than PREVIEW_ASSET_MAX_BYTES"},
               422: {"description": "a bad project id, path or sha256"},
               503: {"description": "the object store is unavailable"}},
)
async def upload_asset(project_id: str, path: str, request: Request, principal: KeyHolder,
                       sha256: str | None = None) -> JSONResponse:
    """Store the body as the project's asset ``path``; ``?sha256=`` (optional) is checked."""
    checked(project_id, path)
    if principal.projects is not None and project_id not in principal.projects:
        raise Refused(403, f"this key may not write to project {project_id!r}")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise Refused(422, "sha256 must be 64 hexadecimal characters", path="sha256")
    limit = settings().asset_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the asset is larger than PREVIEW_ASSET_MAX_BYTES ({limit} bytes)")
    folder = await run_in_threadpool(_spool_folder, project_id, path)
    fd, tmp = tempfile.mkstemp(prefix=".upload.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            digest, size = await _receive(request, fh, limit)
        if sha256 is not None and sha256.lower() != digest:
            raise Refused(422, f"the body's sha256 is {digest}, ?sha256= says {sha256}", path="sha256")
        asset = await run_in_threadpool(_place, Path(tmp), project_id, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    body: dict[str, Any] = {"projectId": project_id, "path": path, "sha256": digest, "size": size,
                            "url": asset.get("url"), "asset": {**asset, "sha256": digest}}
    return JSONResponse(body, status_code=201)


async def _receive(request: Request, fh: IO[bytes], limit: int) -> tuple[str, int]:
    """Write the body to ``fh`` (in the thread pool: the event loop never waits on the disk)."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the asset is larger than PREVIEW_ASSET_MAX_BYTES ({limit} bytes)")
        digest.update(chunk)
        await run_in_threadpool(fh.write, chunk)
    return digest.hexdigest(), size


def _spool_folder(project_id: str, path: str) -> Path:
    """Where the body is written while it arrives: beside its final place on disk (so the
    rename is atomic), or under DATA_DIR when it goes to the store."""
    cfg = settings()
    if cfg.storage_url:
        folder = cfg.data_dir / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return _local_folder(project_id, path)


def _local_folder(project_id: str, path: str) -> Path:
    """The asset's folder under ASSETS_DIR/<projectId>/, created, and still inside it once
    symlinks are followed."""
    root = settings().assets_dir / project_id
    root.mkdir(parents=True, exist_ok=True)
    folder = (root / path).parent
    folder.mkdir(parents=True, exist_ok=True)
    real = folder.resolve()
    if not real.is_relative_to(root.resolve()):
        raise Refused(422, "path leads outside the project folder (a symlink)", path="path")
    return real


def _place(tmp: Path, project_id: str, path: str) -> dict[str, str]:
    """Move the complete upload into place; the fields a job's asset names it by."""
    cfg = settings()
    if not cfg.storage_url:
        final = _local_folder(project_id, path) / Path(path).name
        if final.is_dir():
            raise Refused(422, f"path {path!r} is a folder", path="path")
        os.replace(tmp, final)
        return {"path": path}
    store = _store(cfg.storage_url)
    key = fetch.upload_key(project_id, path)
    try:
        store.put_file(key, tmp)
    except StoreError as exc:
        raise Refused(503, f"the object store is unavailable: {type(exc).__name__}") from None
    return {"url": f"{store.url}/{key}"}
