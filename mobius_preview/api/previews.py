"""/v1/previews: submit a job, read its status, follow its events, cancel it (API key).

A key limited to projects submits only for them (403 otherwise) and sees only their
jobs (another project's job is a 404, as an unknown one).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast
from urllib.parse import urlencode

from fastapi import APIRouter, Header, Request, Security
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from .. import accept, access, client, layout, records, results, states
from ..config import settings
from ..render.artifacts import PLAYLIST
from ..schema import parse_json
from .auth import KeyHolder, api_key, reachable
from .errors import Refused

router = APIRouter(tags=["previews"], dependencies=[Security(api_key)],
                   responses={401: {"description": "no or wrong API key"}})

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_XReadReply = list[tuple[str, list[tuple[str, dict[str, str]]]]] | None


def with_links(status: dict[str, Any]) -> dict[str, Any]:
    """Status plus URLs: artifacts, the HLS playlist and the review page, signed for an
    hour. The playlist and the page come as soon as the first segment is out (``playable``)."""
    job_id = status["jobId"]
    query = urlencode(access.sign(job_id))
    names = sorted(status.pop("artifacts", {}) or {})
    playable = bool(status.get("playable"))
    status["links"] = {
        "self": f"/v1/previews/{job_id}",
        "artifacts": {n: f"/v1/previews/{job_id}/artifacts/{n}?{query}" for n in names},
        "playlist": f"/v1/previews/{job_id}/artifacts/{PLAYLIST}?{query}" if playable else None,
        "page": f"/previews/{job_id}?{query}" if names or playable else None,
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


@router.post(
    "/v1/previews", status_code=202,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/PreviewJob"}}}}},
    responses={200: {"description": "this jobId already exists: its status"},
               202: {"description": "accepted"}, 401: {"description": "no or wrong API key"},
               403: {"description": "a key limited to other projects"},
               409: {"description": "this jobId is another project's job"},
               413: {"description": "body too large"}, 422: {"description": "invalid job"},
               429: {"description": "queue full"}, 503: {"description": "broker unavailable"}},
)
async def submit_preview(request: Request, principal: KeyHolder) -> Response:
    # On the event loop from end to end: the body read to its limit, the job checked and
    # its message built (CPU, under a millisecond), its one Redis round trip awaited on
    # the asyncio client. Handing it to the thread pool instead cost each request GIL
    # hand-offs around every socket call, which halved the rate over TCP (docs/benchmarks.md).
    limit = settings().api_max_body
    body = await _read_body(request, limit)
    if body is None:
        raise Refused(413, f"the body is larger than {limit} bytes")
    payload = parse_json(body)
    project = payload.get("projectId") if isinstance(payload, dict) else None
    if principal.projects is not None and isinstance(project, str) and project not in principal.projects:
        raise Refused(403, f"this key may not submit for project {project!r}")
    result = await accept.submit_async(payload)
    if result.record:  # a job this call created is known already (queued, as recorded)
        now = results.from_record(result.id, result.record)
    else:
        now = await run_in_threadpool(client.status, result.id)
    if not principal.may_reach(result.id, now.get("projectId")):
        # The jobId is another project's job: nothing was accepted, and nothing of it is shown.
        raise Refused(409, "this jobId is taken: choose another (jobIds are unique across projects)")
    return JSONResponse(with_links(now), status_code=202 if result.created else 200,
                        headers={"Location": f"/v1/previews/{result.id}"})


@router.get("/v1/previews/{job_id}", responses={404: {"description": "unknown job"}})
def preview_status(job_id: str, principal: KeyHolder) -> Response:
    return JSONResponse(with_links(reachable(principal, client.status(job_id))))


@router.get("/v1/previews/{job_id}/events",
            responses={200: {"description": "text/event-stream of the job's changes"},
                       400: {"description": "bad Last-Event-ID"}, 404: {"description": "unknown job"}})
async def preview_events(
    job_id: str, request: Request, principal: KeyHolder,
    last_event_id: Annotated[str | None, Header(description="resume after this event")] = None,
) -> Response:
    """Server-Sent Events: every change of the job (state, progress, error, ``playable``
    once its HLS preview can be played) in order, ending with its last state. Reconnect
    with ``Last-Event-ID`` to miss nothing."""
    after = last_event_id or "0-0"
    if not _STREAM_ID.match(after):
        raise Refused(400, "Last-Event-ID must be an id this stream sent (like 1700000000000-0)")
    reachable(principal, await run_in_threadpool(client.status, job_id))  # 404 for an unknown job
    return EventSourceResponse(_events(job_id, after, request), ping=15)


async def _events(job_id: str, after: str, request: Request) -> AsyncIterator[dict[str, str]]:
    """The job's stream from ``after`` on, until its last state (asyncio Redis: no thread held)."""
    conn = records.async_client()
    key = layout.events_key(job_id)
    block: int | None = None  # the first read does not wait: a late reader is answered at once
    while not await request.is_disconnected():
        # RESP2 with decoded strings (records' clients): [(stream, [(id, fields)])], or None.
        reply = cast(_XReadReply, await conn.xread({key: after}, block=block, count=100))
        block = int(records.EVENT_BLOCK * 1000)
        for _, entries in reply or []:
            for ident, fields in entries:
                after = ident
                yield {"id": ident, "event": fields["type"], "data": fields["data"]}
                if fields["type"] == "state" and json.loads(fields["data"]).get("state") in states.ENDED:
                    return
        if not reply:
            current = await run_in_threadpool(client.status, job_id)
            if current["state"] in states.ENDED:  # its stream is gone: the events window has passed
                yield {"event": "state", "data": json.dumps(results.final_event(current))}
                return


@router.delete("/v1/previews/{job_id}", status_code=202,
               responses={202: {"description": "cancelled, or asked to stop (running)"},
                          404: {"description": "unknown job"}})
def cancel_preview(job_id: str, principal: KeyHolder) -> Response:
    reachable(principal, client.status(job_id))
    return JSONResponse(with_links(client.cancel(job_id)), status_code=202)
