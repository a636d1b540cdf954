"""Probes for load balancers and Prometheus: /healthz, /readyz, /metrics (no key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import health, metrics

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: answered on the event loop, touching nothing, however busy Redis is."""
    return {"status": "alive"}


@router.get("/readyz", responses={503: {"description": "down"}})
def readyz() -> Response:
    report = health.check()
    return JSONResponse(report, status_code=503 if report["status"] == "down" else 200)


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus_metrics() -> Response:
    return Response(generate_latest(metrics.registry()), media_type=CONTENT_TYPE_LATEST)
