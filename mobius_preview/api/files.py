"""A preview's files and its review page (an API key or the job's signed link).

A finished preview's files come from its folder, listed by its manifest. While the job
runs, its HLS preview (playlist and segments) comes from the live folder it grows in
(``storage.live_dir``). A playlist is answered with the reader's signed query added to
every URI it lists: players resolve them against the playlist's URL without its query.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates

from .. import access, client, data, storage
from ..access import Principal
from ..errors import JobNotFound
from ..render import artifacts
from .auth import Reader, reachable
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


def finished_preview(job_id: str, reader: Principal) -> FinishedPreview:
    """A finished job's preview and what its manifest says; JobNotFound until then and for
    a job ``reader`` may not reach, ObjectMissing (404) when its files are gone,
    StoreUnavailable (503) when the store does not answer."""
    status = reachable(reader, client.status(job_id))
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


def _link_query(job_id: str, request: Request, reader: access.Principal) -> str:
    """The query that opens the job's files the way this request was allowed: its own
    signed link, or (opened with a key, which a <video> cannot send) a fresh one."""
    if reader.via == "link":
        return urlencode({"expires": request.query_params["expires"], "sig": request.query_params["sig"]})
    return urlencode(access.sign(job_id))


def signed_playlist(text: str, query: str) -> str:
    """The playlist with ``query`` added to every URI it lists (segment lines and the init's URI)."""
    lines = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            line = f"{line}?{query}"
        elif line.startswith("#EXT-X-MAP:URI="):
            line = re.sub(r'URI="([^"?]+)"', lambda m: f'URI="{m.group(1)}?{query}"', line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def _live(job_id: str, name: str) -> str:
    """Where a file of a running job's HLS preview is; 404 until it is published."""
    location = storage.live_file(job_id, name) if artifacts.is_hls(name) else None
    if location is None:
        raise Refused(404, f"job {job_id!r} has no file {name!r} (yet)")
    return location


@router.get("/v1/previews/{job_id}/artifacts/{name}", tags=["previews"],
            responses={404: {"description": "no such job or file"}, 206: {"description": "a range"}})
def artifact(job_id: str, name: str, request: Request, reader: Reader) -> Response:
    try:
        preview = finished_preview(job_id, reader)
    except JobNotFound:
        reachable(reader, client.status(job_id))  # 404 for an unknown job, or another project's
        return _file(job_id, name, _live(job_id, name), None, request, reader, live=True)
    # Only names the manifest lists: nothing can point outside the preview's folder.
    if name not in preview.files or Path(name).name != name:
        raise Refused(404, f"job {job_id!r} has no file {name!r}")
    return _file(job_id, name, preview.stored.files[name], preview.files[name].get("sha256"), request,
                 reader, live=False)


def _file(job_id: str, name: str, location: str, sha256: str | None, request: Request,
          reader: access.Principal, *, live: bool) -> Response:
    """One file, from this host's disk or the object store (``location``)."""
    media = artifacts.media_type(name) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    if name == artifacts.PLAYLIST:
        # A growing playlist must be read again each time; a finished one is kept an hour.
        raw = storage.read_range(location, 0, storage.file_size(location)).decode("utf-8")
        text = signed_playlist(raw, _link_query(job_id, request, reader))
        return PlainTextResponse(text, media_type=media, headers={
            "cache-control": "no-store" if live else "private, max-age=3600"})
    etag = f'"{sha256}"' if sha256 else None
    if etag and request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    # Segments are named by their content: a live one never changes either.
    headers = {"cache-control": "private, max-age=3600", **({"etag": etag} if etag else {})}
    if location.startswith("s3://"):
        return _from_store(location, request, media, headers)
    if not Path(location).is_file():
        raise Refused(404, f"job {job_id!r}: {name!r} is not on this host's disk (another host's "
                           "DATA_DIR? set PREVIEW_STORAGE_URL on every host)")
    response = FileResponse(location, media_type=media)
    response.headers.update(headers)
    return response


@router.get("/review/hls.light.min.js", tags=["review"], include_in_schema=False)
def hls_js() -> Response:
    """hls.js (Apache-2.0, static/hls.js.LICENSE), shipped in the package: no CDN."""
    return FileResponse(data.path("api", "static", "hls.light.min.js"), media_type="text/javascript",
                        headers={"cache-control": "public, max-age=86400"})


@router.get("/previews/{job_id}", response_class=HTMLResponse, tags=["review"],
            responses={404: {"description": "no such job, or nothing to play yet"}})
def review_page(job_id: str, request: Request, reader: Reader) -> Response:
    """The review page: the player (the HLS preview, the MP4 where HLS cannot play) with
    captions, poster, contact sheet, the main facts; while the job runs, the growing playlist."""
    query = _link_query(job_id, request, reader)
    playlist = f"/v1/previews/{job_id}/artifacts/{artifacts.PLAYLIST}?{query}"
    try:
        preview = finished_preview(job_id, reader)
    except JobNotFound:
        status = reachable(reader, client.status(job_id))
        if not status["playable"]:
            raise
        return templates.TemplateResponse(request, "review.html", {
            "job_id": job_id, "running": True, "playlist": playlist, "video": None,
            "facts": [("state", status["state"]), ("project", status["projectId"]),
                      ("progress", f"{(status['progress'] or {}).get('percent', 0):.0f} %")],
        })

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
        "running": False,
        "facts": facts,
        "playlist": url(artifacts.PLAYLIST),
        "video": url(video) if video else None,
        "video_type": artifacts.MEDIA_TYPES.get(video or ""),
        "poster": url(artifacts.POSTER),
        "captions": url(artifacts.CAPTIONS_VTT),
        "language": plan.get("language", "en"),
        "contact_sheet": url(artifacts.CONTACT_SHEET),
        "manifest": url(artifacts.MANIFEST),
        "manifest_name": artifacts.MANIFEST,
    })
