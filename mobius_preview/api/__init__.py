"""The HTTP face (FastAPI): a thin layer over client, dlq, health, metrics and the store.

One router per area, each in its module: ``previews`` (submit, status, events,
cancel), ``files`` (a finished preview's files and its review page, whose HTML is
``templates/review.html``), ``operators`` (queues, dead letters), ``probes`` (health
and metrics). Who may call what is declared on each route by a dependency of
``auth`` (an API key, or a key or the job's signed link); every exception becomes
its HTTP answer in one place, ``errors``.

Nothing blocks the event loop: every handler that touches Redis or a file is a plain
``def`` (Starlette runs it in its thread pool), and the submit handler, which reads
its body asynchronously, hands the submission itself to that pool. So one slow Redis
call delays only its own request, and ``/healthz`` answers at once.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..schema import schema
from . import errors, files, operators, previews, probes, uploads

__all__ = ["create_app", "serve"]


def create_app() -> FastAPI:
    app = FastAPI(
        title="mobius-preview",
        version="1",
        description="Submit board-game tutorial preview jobs, follow them, fetch their videos.",
    )
    errors.install(app)
    for area in (previews, files, operators, probes, uploads):
        app.include_router(area.router)

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


def serve(host: str, port: int, workers: int = 1, access_log: bool = False) -> None:
    """Serve with ``workers`` processes (uvicorn's own supervisor when more than one).

    No access log by default: a JSON line per request costs more than the request's
    own work at full rate, and submissions are logged (and counted) anyway.
    """
    import uvicorn  # the server, needed only by `mobius-preview api`, not by create_app()

    uvicorn.run("mobius_preview.api:create_app", factory=True, host=host, port=port, workers=workers,
                log_config=None, proxy_headers=False, access_log=access_log)
