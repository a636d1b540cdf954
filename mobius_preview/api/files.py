"""A finished preview's files and its review page (an API key or the job's signed link)."""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from .. import access, client, data
from ..access import Principal
from ..errors import JobNotFound
from ..render import artifacts
from .auth import Reader, reachable
from .errors import Refused

router = APIRouter(responses={403: {"description": "bad or expired signature"}})
templates = Jinja2Templates(directory=data.path("api", "templates"))  # autoescapes .html


@dataclass(frozen=True)
class FinishedPreview:
    status: dict[str, Any]
    folder: Path
    files: dict[str, dict[str, Any]]  # the manifest's entries by name, the manifest itself too
    manifest: dict[str, Any]


def finished_preview(job_id: str, reader: Principal) -> FinishedPreview:
    """A finished job's preview folder and what its manifest says; JobNotFound until then,
    and for a job ``reader`` may not reach."""
    status = reachable(reader, client.status(job_id))
    path = (status.get("artifacts") or {}).get(artifacts.MANIFEST)
    if not path:
        raise JobNotFound(job_id)
    folder = Path(path).parent
    manifest = json.loads((folder / artifacts.MANIFEST).read_text(encoding="utf-8"))
    files = {f["name"]: f for f in manifest.get("files", [])}
    files[artifacts.MANIFEST] = {"name": artifacts.MANIFEST, "sha256": None}
    return FinishedPreview(status, folder, files, manifest)


@router.get("/v1/previews/{job_id}/artifacts/{name}", tags=["previews"],
            responses={404: {"description": "no such job or file"}, 206: {"description": "a range"}})
def artifact(job_id: str, name: str, request: Request, reader: Reader) -> Response:
    preview = finished_preview(job_id, reader)
    # Only names the manifest lists: nothing can point outside the preview's folder.
    if name not in preview.files or Path(name).name != name:
        raise Refused(404, f"job {job_id!r} has no file {name!r}")
    entry = preview.files[name]
    etag = f'"{entry["sha256"]}"' if entry.get("sha256") else None
    if etag and request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    media = artifacts.MEDIA_TYPES.get(name) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    response = FileResponse(preview.folder / name, media_type=media)
    if etag:
        response.headers["etag"] = etag
    response.headers["cache-control"] = "private, max-age=3600"
    return response


@router.get("/previews/{job_id}", response_class=HTMLResponse, tags=["review"],
            responses={404: {"description": "no such job, or no preview yet"}})
def review_page(job_id: str, request: Request, reader: Reader) -> Response:
    """The review page: player with captions, poster, contact sheet, the main facts."""
    preview = finished_preview(job_id, reader)
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
