"""Operator endpoints: queue depths and the dead letters, listed and replayed (API key)."""

from __future__ import annotations

from fastapi import APIRouter, Security
from fastapi.responses import JSONResponse, Response

from .. import client, dlq
from ..errors import InvalidPayload
from .auth import api_key

router = APIRouter(tags=["operators"], dependencies=[Security(api_key)],
                   responses={401: {"description": "no or wrong API key"}})


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
