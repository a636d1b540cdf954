"""Operator endpoints: queue depths, the dead letters listed and replayed, projects paused
and resumed (an API key limited to no project)."""

from __future__ import annotations

from fastapi import APIRouter, Security
from fastapi.responses import JSONResponse, Response

from .. import client, dlq
from ..errors import InvalidPayload
from .auth import operator_key

router = APIRouter(tags=["operators"], dependencies=[Security(operator_key)],
                   responses={401: {"description": "no or wrong API key"},
                              403: {"description": "a key limited to projects"}})


@router.get("/v1/queues")
def queues() -> Response:
    return JSONResponse(client.queue_stats())


@router.get("/v1/dead-letters")
def dead_letters() -> Response:
    return JSONResponse(dlq.list_letters())


@router.post("/v1/dead-letters/{job_id}/replay",
             responses={404: {"description": "no dead letter for this job"}})
def replay(job_id: str) -> Response:
    try:
        return JSONResponse(dlq.replay(job_id), status_code=202)
    except InvalidPayload as exc:
        # Say whose payload it is (not the request's: it has none); errors.py answers.
        raise InvalidPayload(exc.issues, source="the dead letter's payload") from exc


@router.post("/v1/projects/{project}/pause", responses={422: {"description": "not a projectId"}})
def pause(project: str) -> Response:
    """Hold the project's jobs (accepted, kept, none started) until it is resumed."""
    return JSONResponse(client.pause_project(project))


@router.post("/v1/projects/{project}/resume", responses={422: {"description": "not a projectId"}})
def resume(project: str) -> Response:
    return JSONResponse(client.resume_project(project))
