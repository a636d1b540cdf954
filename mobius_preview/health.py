"""One answer to "is the service working": broker, workers, queues, disk, ffmpeg.

Status is ``healthy`` (exit 0), ``degraded`` (1: works, but a threshold is crossed)
or ``down`` (2: jobs cannot be accepted or run). Every check has a short timeout so
the answer comes in well under two seconds even with the broker gone.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import redis

from . import records, storage
from .app import app
from .config import settings
from .errors import StoreConfigError, StoreError
from .render import ffmpeg

OLDEST_WAIT_DEGRADED = 300.0  # seconds
MIN_FREE_BYTES = 1 << 30
CODES = {"healthy": 0, "degraded": 1, "down": 2}


def _broker() -> dict[str, Any]:
    start = time.perf_counter()
    try:
        conn = records.connect(socket_connect_timeout=0.5, socket_timeout=0.5)
        conn.ping()
    except redis.RedisError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "latencyMs": round((time.perf_counter() - start) * 1000, 2)}


def _workers() -> dict[str, Any]:
    try:
        replies = app.control.ping(timeout=0.8) or []
    except Exception as exc:
        return {"count": 0, "error": str(exc)}
    names = sorted(name for reply in replies for name in reply)
    return {"count": len(names), "names": names}


def _store() -> dict[str, Any] | None:
    """The object store of PREVIEW_STORAGE_URL, reached with one LIST (None: not used)."""
    if not settings().storage_url:
        return None
    start = time.perf_counter()
    try:
        url = storage.check()
    except StoreConfigError as exc:
        return {"ok": False, "error": str(exc), "variable": exc.variable}
    except StoreError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "url": url, "latencyMs": round((time.perf_counter() - start) * 1000, 2)}


def check() -> dict[str, Any]:
    """Run every check; the result says the status, its exit code and the reasons."""
    cfg = settings()
    reasons: list[str] = []
    status = "healthy"

    def worse(level: str, reason: str) -> None:
        nonlocal status
        reasons.append(reason)
        if CODES[level] > CODES[status]:
            status = level

    report: dict[str, Any] = {"broker": _broker()}
    if not report["broker"]["ok"]:
        worse("down", f"broker unreachable: {report['broker']['error']}")
    else:
        report["workers"] = _workers()
        if report["workers"]["count"] == 0:
            worse("down", "no worker answered a ping")
        facts = records.queue_facts()
        depth, ages, dead = facts["depth"], facts["oldestAgeSeconds"], facts["deadLetters"]
        report["queues"] = {"depth": depth, "oldestAgeSeconds": ages, "limit": cfg.queue_max,
                            "deadLetters": dead}
        waiting = sum(depth.values())
        if waiting >= cfg.queue_max:
            worse("degraded", f"queue full: {waiting} waiting, limit {cfg.queue_max}")
        elif waiting >= 0.8 * cfg.queue_max:
            worse("degraded", f"queue at {waiting}/{cfg.queue_max}")
        oldest = max((a for a in ages.values() if a is not None), default=0.0)
        if oldest > OLDEST_WAIT_DEGRADED:
            worse("degraded", f"oldest waiting job has waited {oldest:.0f} s")
        if dead:
            worse("degraded", f"{dead} jobs in the dead-letter queue")
    store = _store()
    if store is not None:
        report["store"] = store
        if not store["ok"]:
            worse("down", f"object store: {store['error']}")
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cfg.data_dir).free
    report["disk"] = {"path": str(cfg.data_dir), "freeBytes": free}
    if free < MIN_FREE_BYTES:
        worse("degraded", f"only {free // (1 << 20)} MiB free under DATA_DIR")
    try:
        report["ffmpeg"] = ffmpeg.describe_binaries()
    except Exception as exc:
        report["ffmpeg"] = {"error": str(exc)}
        worse("down", f"ffmpeg not found: {exc}")
    return {"status": status, "code": CODES[status], "reasons": reasons, **report}
