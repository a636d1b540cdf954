"""A finished preview's files and its review page (an API key or the job's signed link)."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Security
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates

from .. import access, client, data, storage
from ..errors import JobNotFound
from ..render import artifacts
from .auth import Reader, key_or_link
from .errors import Refused

router = APIRouter(responses={403: {"description": "bad or expired signature"}})
templates = Jinja2Templates(directory=data.path("api", "templates"))  # autoescapes .html


CHUNK = 4 << 20  # bytes per read from the object store while streaming a file


@dataclass(frozen=True)
class FinishedPreview:
    status: dict[str, Any]
    stored: storage.Stored  # where each file is: this host's disk or the object store
    files: dict[str, dict[str, Any]]  # the manifest's entries by name, the manifest itself too
    manifest: dict[str, Any]


def finished_preview(job_id: str) -> FinishedPreview:
    """A finished job's preview and what its manifest says; JobNotFound until then,
    ObjectMissing (404) when its files are gone, StoreUnavailable (503) when unreachable."""
    status = client.status(job_id)
    path = (status.get("artifacts") or {}).get(artifacts.MANIFEST)
    if not path:
        raise JobNotFound(job_id)
    stored = storage.stored(path.rsplit("/", 1)[0])
    manifest = stored.manifest
    files = {f["name"]: f for f in manifest.get("files", []) if f.get("name") in stored.files}
    files[artifacts.MANIFEST] = {"name": artifacts.MANIFEST, "sha256": None}
    return FinishedPreview(status, stored, files, manifest)


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range as [start, end), or None for the whole file; Refused 416."""
    if not header:
        return None
    spec = header.strip()
    if not spec.startswith("bytes=") or "," in spec:
        return None  # not one byte range: the whole file, as RFC 9110 allows
    first, _, last = spec[6:].partition("-")
    try:
        if first:
            start, end = int(first), min(int(last) + 1 if last else size, size)
        else:
            start, end = max(size - int(last), 0), size
    except ValueError:
        return None
    if start >= size or start >= end:
        raise Refused(416, f"range {spec!r} is outside the file's {size} bytes",
                      headers={"Content-Range": f"bytes */{size}"})
    return start, end


def _streamed(location: str, start: int, end: int) -> Iterator[bytes]:
    for at in range(start, end, CHUNK):
        yield storage.read_range(location, at, min(at + CHUNK, end))


def _from_store(location: str, request: Request, media: str, headers: dict[str, str]) -> Response:
    """Stream a file of the object store through the API, honouring one byte range."""
    size = storage.file_size(location)
    wanted = _range(request.headers.get("range"), size)
    start, end = wanted or (0, size)
    first = storage.read_range(location, start, min(start + CHUNK, end)) if end > start else b""

    def body() -> Iterator[bytes]:  # the first chunk was read before answering: errors are 404/503
        yield first
        yield from _streamed(location, start + len(first), end)

    headers = {**headers, "accept-ranges": "bytes", "content-length": str(end - start)}
    if wanted is None:
        return StreamingResponse(body(), media_type=media, headers=headers)
    headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(body(), status_code=206, media_type=media, headers=headers)


@router.get("/v1/previews/{job_id}/artifacts/{name}", tags=["previews"],
            dependencies=[Security(key_or_link)],
            responses={404: {"description": "no such job or file"}, 206: {"description": "a range"}})
def artifact(job_id: str, name: str, request: Request) -> Response:
    preview = finished_preview(job_id)
    # Only names the manifest lists: nothing can point outside the preview's folder.
    if name not in preview.files or Path(name).name != name:
        raise Refused(404, f"job {job_id!r} has no file {name!r}")
    entry = preview.files[name]
    etag = f'"{entry["sha256"]}"' if entry.get("sha256") else None
    if etag and request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    media = artifacts.MEDIA_TYPES.get(name) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    headers = {"cache-control": "private, max-age=3600", **({"etag": etag} if etag else {})}
    location = preview.stored.files[name]
    if location.startswith("s3://"):
        return _from_store(location, request, media, headers)
    if not Path(location).is_file():
        raise Refused(404, f"job {job_id!r}: {name!r} is not on this host's disk (another host's "
                           "DATA_DIR? set PREVIEW_STORAGE_URL on every host)")
    response = FileResponse(location, media_type=media)
    response.headers.update(headers)
    return response


@router.get("/previews/{job_id}", response_class=HTMLResponse, tags=["review"],
            responses={404: {"description": "no such job, or no preview yet"}})
def review_page(job_id: str, request: Request, reader: Reader) -> Response:
    """The review page: player with captions, poster, contact sheet, the main facts."""
    preview = finished_preview(job_id)
    # The page's own links open the files the way the page was opened: the same signed
    # link, or (opened with a key, which a <video> cannot send) a fresh one.
    link = ({"expires": request.query_params["expires"], "sig": request.query_params["sig"]}
            if reader.via == "link" else access.sign(job_id))
    query = urlencode(link)

    def url(name: str) -> str | None:
        return f"/v1/previews/{job_id}/artifacts/{name}?{query}" if name in preview.files else None

    status, plan = preview.status, preview.manifest.get("plan", {})
    output = preview.manifest.get("output", {})
    video = next((n for n in preview.files if artifacts.is_video(n)), None)
    facts = [("state", status["state"]), ("project", status["projectId"]),
             ("length", f"{plan.get('duration', 0):.2f} s"), ("resolution", plan.get("resolution")),
             ("format", plan.get("format")), ("steps", len(plan.get("slides", []))),
             ("cache hit", status.get("cacheHit")), ("renderer", preview.manifest.get("rendererVersion")),
             ("bit rate", f"{output.get('bitRate', 0) // 1000} kb/s" if output else "-")]
    return templates.TemplateResponse(request, "review.html", {
        "job_id": job_id,
        "facts": facts,
        "video": url(video) if video else None,
        "video_type": artifacts.MEDIA_TYPES.get(video or ""),
        "poster": url(artifacts.POSTER),
        "captions": url(artifacts.CAPTIONS_VTT),
        "language": plan.get("language", "en"),
        "contact_sheet": url(artifacts.CONTACT_SHEET),
        "manifest": url(artifacts.MANIFEST),
        "manifest_name": artifacts.MANIFEST,
    })
