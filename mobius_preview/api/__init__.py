"""The HTTP face (FastAPI): a thin layer over client, dlq, health, metrics and the store.

Writes, status and operator endpoints need ``Authorization: Bearer <API key>``.
Artifacts and the review page open with that key or with the expiring signed link
that a status response hands out (so a browser ``<video>`` can play it).

Nothing blocks the event loop: every handler that touches Redis or a file is a plain
``def`` (Starlette runs it in its thread pool), and the submit handler, which reads
its body asynchronously, hands the submission itself to that pool. So one slow Redis
call delays only its own request, and ``/healthz`` answers at once.
"""

from __future__ import annotations

import html
import json
import mimetypes
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from . import access, client, dlq, health, layout, metrics, records, results
from .config import settings
from .errors import BrokerUnavailable, InvalidPayload, JobNotFound, QueueFull
from .render import artifacts
from .schema import parse_json, schema

RETRY_AFTER_SECONDS = 30
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
CONTENT_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".png": "image/png",
                 ".vtt": "text/vtt; charset=utf-8", ".srt": "application/x-subrip; charset=utf-8",
                 ".json": "application/json"}


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _needs_key(request: Request) -> JSONResponse | None:
    if access.api_key_ok(access.bearer(request.headers.get("authorization"))):
        return None
    return _error(401, "an API key is required: Authorization: Bearer <key>")


def _may_read_job(request: Request, job_id: str) -> bool:
    if access.api_key_ok(access.bearer(request.headers.get("authorization"))):
        return True
    q = request.query_params
    return access.signature_ok(job_id, q.get("expires"), q.get("sig"))


def _with_links(status: dict[str, Any]) -> dict[str, Any]:
    """Status plus URLs: artifacts and the review page, signed for an hour."""
    job_id = status["jobId"]
    query = urlencode(access.sign(job_id))
    names = sorted(status.pop("artifacts", {}) or {})
    status["links"] = {
        "self": f"/v1/previews/{job_id}",
        "artifacts": {n: f"/v1/previews/{job_id}/artifacts/{n}?{query}" for n in names},
        "page": f"/previews/{job_id}?{query}" if names else None,
    }
    status.pop("key", None)
    return status


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _stored(job_id: str) -> tuple[Path, dict[str, dict[str, Any]], dict[str, Any]]:
    """A finished job's preview folder, its files by name (from the manifest), the manifest."""
    status = client.status(job_id)
    path = (status.get("artifacts") or {}).get(artifacts.MANIFEST)
    if not path:
        raise JobNotFound(job_id)
    folder = Path(path).parent
    data = json.loads((folder / artifacts.MANIFEST).read_text(encoding="utf-8"))
    files = {f["name"]: f for f in data.get("files", [])}
    files[artifacts.MANIFEST] = {"name": artifacts.MANIFEST, "sha256": None}
    return folder, files, data


async def _events(job_id: str, after: str, request: Request) -> AsyncIterator[dict[str, str]]:
    """The job's stream from ``after`` on, until its last state (asyncio Redis: no thread held)."""
    conn = records.async_client()
    key = layout.events_key(job_id)
    while not await request.is_disconnected():
        reply = await conn.xread({key: after}, block=int(records.EVENT_BLOCK * 1000), count=100)
        for _, entries in reply or []:
            for ident, fields in entries:
                after = ident
                yield {"id": ident, "event": fields["type"], "data": fields["data"]}
                if fields["type"] == "state" and json.loads(fields["data"]).get("state") in records.ENDED:
                    return


def create_app() -> FastAPI:
    app = FastAPI(
        title="mobius-preview",
        version="1",
        description="Submit board-game tutorial preview jobs, follow them, fetch their videos.",
    )

    @app.exception_handler(JobNotFound)
    async def _not_found(_: Request, exc: JobNotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(BrokerUnavailable)
    async def _broker(_: Request, exc: BrokerUnavailable) -> JSONResponse:
        return _error(503, "the queue is unavailable; the job was not accepted")

    @app.post(
        "/v1/previews", status_code=202, tags=["previews"],
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/PreviewJob"}}}}},
        responses={200: {"description": "this jobId already exists: its status"},
                   202: {"description": "accepted"}, 401: {"description": "no or wrong API key"},
                   413: {"description": "body too large"}, 422: {"description": "invalid job"},
                   429: {"description": "queue full"}, 503: {"description": "broker unavailable"}},
    )
    async def submit_preview(request: Request) -> Response:
        if (denied := _needs_key(request)) is not None:
            return denied
        limit = settings().api_max_body
        body = await _read_body(request, limit)
        if body is None:
            return _error(413, f"the body is larger than {limit} bytes")
        return await run_in_threadpool(_submit, body)

    def _submit(body: bytes) -> Response:
        try:
            result = client.submit(parse_json(body))
        except InvalidPayload as exc:
            return _error(422, "invalid preview job", issues=[i.as_dict() for i in exc.issues])
        except QueueFull as exc:
            return JSONResponse({"error": str(exc), "depth": exc.depth, "limit": exc.limit},
                                status_code=429, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        # A job this call created is known already (queued, as recorded): no second read.
        now = results.from_record(result.id, result.record) if result.record else client.status(result.id)
        body_out = _with_links(now)
        return JSONResponse(body_out, status_code=202 if result.created else 200,
                            headers={"Location": f"/v1/previews/{result.id}"})

    @app.get("/v1/previews/{job_id}", tags=["previews"],
             responses={401: {"description": "no API key"}, 404: {"description": "unknown job"}})
    def preview_status(job_id: str, request: Request) -> Response:
        if (denied := _needs_key(request)) is not None:
            return denied
        return JSONResponse(_with_links(client.status(job_id)))

    @app.get("/v1/previews/{job_id}/events", tags=["previews"],
             responses={200: {"description": "text/event-stream of the job's changes"},
                        400: {"description": "bad Last-Event-ID"}, 404: {"description": "unknown job"}})
    async def preview_events(job_id: str, request: Request) -> Response:
        """Server-Sent Events: every change of the job (state, progress, error) in order,
        ending with its last state. Reconnect with ``Last-Event-ID`` to miss nothing."""
        if (denied := _needs_key(request)) is not None:
            return denied
        after = request.headers.get("last-event-id") or "0-0"
        if not _STREAM_ID.match(after):
            return _error(400, "Last-Event-ID must be an id this stream sent (like 1700000000000-0)")
        await run_in_threadpool(client.status, job_id)  # 404 for an unknown job
        return EventSourceResponse(_events(job_id, after, request), ping=15)

    @app.delete("/v1/previews/{job_id}", tags=["previews"], status_code=202,
                responses={202: {"description": "cancelled, or asked to stop (running)"},
                           404: {"description": "unknown job"}})
    def cancel_preview(job_id: str, request: Request) -> Response:
        if (denied := _needs_key(request)) is not None:
            return denied
        return JSONResponse(_with_links(client.cancel(job_id)), status_code=202)

    @app.get("/v1/previews/{job_id}/artifacts/{name}", tags=["previews"],
             responses={403: {"description": "bad or expired signature"},
                        404: {"description": "no such job or file"}, 206: {"description": "a range"}})
    def artifact(job_id: str, name: str, request: Request) -> Response:
        if not _may_read_job(request, job_id):
            return _error(403, "a valid signed link or an API key is required")
        folder, files, _ = _stored(job_id)
        # Only names the manifest lists: nothing can point outside the preview's folder.
        if name not in files or Path(name).name != name:
            return _error(404, f"job {job_id!r} has no file {name!r}")
        entry = files[name]
        etag = f'"{entry["sha256"]}"' if entry.get("sha256") else None
        if etag and request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        media = (CONTENT_TYPES.get(Path(name).suffix) or mimetypes.guess_type(name)[0]
                 or "application/octet-stream")
        response = FileResponse(folder / name, media_type=media)
        if etag:
            response.headers["etag"] = etag
        response.headers["cache-control"] = "private, max-age=3600"
        return response

    @app.get("/previews/{job_id}", response_class=HTMLResponse, tags=["review"])
    def review_page(job_id: str, request: Request) -> Response:
        if not _may_read_job(request, job_id):
            return _error(403, "a valid signed link or an API key is required")
        status = client.status(job_id)
        _, files, data = _stored(job_id)
        return HTMLResponse(_page(status, files, data, request.query_params))

    @app.get("/v1/queues", tags=["operators"])
    def queues(request: Request) -> Response:
        if (denied := _needs_key(request)) is not None:
            return denied
        return JSONResponse(client.queue_stats())

    @app.get("/v1/dead-letters", tags=["operators"])
    def dead_letters(request: Request) -> Response:
        if (denied := _needs_key(request)) is not None:
            return denied
        return JSONResponse(dlq.list_letters())

    @app.post("/v1/dead-letters/{job_id}/replay", tags=["operators"],
              responses={404: {"description": "no dead letter for this job"}})
    def replay(job_id: str, request: Request) -> Response:
        if (denied := _needs_key(request)) is not None:
            return denied
        try:
            return JSONResponse(dlq.replay(job_id), status_code=202)
        except InvalidPayload as exc:
            return _error(422, "the dead letter's payload is invalid",
                          issues=[i.as_dict() for i in exc.issues])
        except QueueFull as exc:
            return JSONResponse({"error": str(exc)}, status_code=429,
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "down"}})
    def readyz() -> Response:
        report = health.check()
        return JSONResponse(report, status_code=503 if report["status"] == "down" else 200)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry()), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description,
                              routes=app.routes)
            doc.setdefault("components", {}).setdefault("schemas", {}).update(_job_schemas())
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _job_schemas() -> dict[str, Any]:
    """schemas/preview-job.schema.json as OpenAPI components (its $defs become siblings)."""
    text = json.dumps(schema()).replace('"#/$defs/', '"#/components/schemas/')
    job = json.loads(text)
    defs = job.pop("$defs", {})
    for key in ("$schema", "$id"):
        job.pop(key, None)
    return {"PreviewJob": job, **defs}


def _page(status: dict[str, Any], files: dict[str, Any], data: dict[str, Any], query: Any) -> str:
    """The review page: player with captions, poster, contact sheet, the main facts."""
    job_id = status["jobId"]
    sig = urlencode({"expires": query.get("expires", ""), "sig": query.get("sig", "")}) \
        if query.get("sig") else ""

    def url(name: str) -> str:
        return html.escape(f"/v1/previews/{job_id}/artifacts/{name}" + (f"?{sig}" if sig else ""))

    plan = data.get("plan", {})
    video = next((n for n in files if n.startswith("preview.")), None)
    output = data.get("output", {})
    facts = [("state", status["state"]), ("project", status["projectId"]),
             ("length", f"{plan.get('duration', 0):.2f} s"), ("resolution", plan.get("resolution")),
             ("format", plan.get("format")), ("steps", len(plan.get("slides", []))),
             ("cache hit", status.get("cacheHit")), ("renderer", data.get("rendererVersion")),
             ("bit rate", f"{output.get('bitRate', 0) // 1000} kb/s" if output else "-")]
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in facts)
    player = ""
    if video:
        lang = html.escape(plan.get("language", "en"))
        track = (f'<track kind="captions" src="{url("captions.vtt")}" srclang="{lang}" default>'
                 if "captions.vtt" in files else "")
        player = (f'<video id="player" controls preload="metadata" width="100%" poster="{url("poster.png")}">'
                  f'<source src="{url(video)}" type="{CONTENT_TYPES[Path(video).suffix]}">{track}</video>')
    sheet = f'<h2>Steps</h2><img alt="contact sheet" src="{url("contact-sheet.png")}">' \
        if "contact-sheet.png" in files else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Preview {html.escape(job_id)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}
img,video{{max-width:100%}}table{{border-collapse:collapse}}th{{text-align:left;padding-right:1em}}</style>
</head><body data-job="{html.escape(job_id)}">
<h1>Preview {html.escape(job_id)}</h1>
{player}
<table>{rows}</table>
{sheet}
<p><a href="{url("manifest.json")}">manifest.json</a></p>
<script>
const v = document.getElementById("player");
if (v) v.addEventListener("loadedmetadata", () => {{ document.body.dataset.duration = v.duration; }});
</script>
</body></html>"""


def serve(host: str, port: int, workers: int = 1, access_log: bool = False) -> None:
    """Serve with ``workers`` processes (uvicorn's own supervisor when more than one).

    No access log by default: a JSON line per request costs more than the request's
    own work at full rate, and submissions are logged (and counted) anyway.
    """
    import uvicorn  # the server, needed only by `mobius-preview api`, not by create_app()

    uvicorn.run("mobius_preview.api:create_app", factory=True, host=host, port=port, workers=workers,
                log_config=None, proxy_headers=False, access_log=access_log)
