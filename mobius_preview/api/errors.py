"""Every exception a route can raise, mapped to its HTTP answer in one place.

Routes and dependencies raise: the domain's exceptions (``errors``) as they come, or
``Refused`` for an answer the HTTP layer itself decides (no key, a body too large).
Every error body is JSON ``{"error": message, ...}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..errors import (
    BrokerUnavailable,
    InvalidPayload,
    JobNotFound,
    ObjectMissing,
    QueueFull,
    StoreConfigError,
    StoreError,
)

RETRY_AFTER_SECONDS = 30  # what a 429 asks the client to wait


class Refused(Exception):
    """An answer decided by the HTTP layer: its status, message, extra fields and headers."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers, extra


def error(status: int, message: str, *, headers: dict[str, str] | None = None,
          **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


async def _refused(_: Request, exc: Refused) -> Response:
    return error(exc.status, exc.message, headers=exc.headers, **exc.extra)


async def _job_not_found(_: Request, exc: JobNotFound) -> Response:
    return error(404, str(exc))


async def _invalid(_: Request, exc: InvalidPayload) -> Response:
    # ``source`` names what was invalid when it is not the request's own body.
    message = f"{exc.source} is invalid" if exc.source else "invalid preview job"
    return error(422, message, issues=[issue.as_dict() for issue in exc.issues])


async def _queue_full(_: Request, exc: QueueFull) -> Response:
    extra = {"project": exc.project} if exc.project is not None else {}
    return error(429, str(exc), depth=exc.depth, limit=exc.limit, **extra,
                 headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _broker_unavailable(_: Request, exc: BrokerUnavailable) -> Response:
    # Not str(exc): it may name the broker's address, an internal.
    return error(503, "the queue is unavailable; the job was not accepted")


async def _object_missing(_: Request, exc: ObjectMissing) -> Response:
    # Not the detail: it may name the bucket's internals.
    return error(404, "the preview's file is missing from its store (deleted, or expired by a lifecycle)")


async def _store_error(_: Request, exc: StoreError) -> Response:
    # Unreachable, refusing our keys, or answering oddly: not the request's fault, and
    # maybe brief. The message may name an internal endpoint: only the variable goes out.
    hint = f" (check {exc.variable})" if isinstance(exc, StoreConfigError) else ""
    return error(503, f"the object store is unavailable{hint}", headers={"Retry-After": "5"})


HANDLERS: dict[type[Exception], Callable[[Request, Any], Awaitable[Response]]] = {
    Refused: _refused,
    JobNotFound: _job_not_found,
    InvalidPayload: _invalid,
    QueueFull: _queue_full,
    BrokerUnavailable: _broker_unavailable,
    ObjectMissing: _object_missing,
    StoreError: _store_error,
}


def install(app: FastAPI) -> None:
    for kind, handler in HANDLERS.items():
        app.add_exception_handler(kind, handler)
