"""Prometheus metrics of the worker and the queues.

Worker metrics are counted in the process that does the work. Under the prefork
pool that is a child process, so the worker runs prometheus-client in multiprocess
mode: ``PROMETHEUS_MULTIPROC_DIR`` is set (under DATA_DIR) and emptied when the
worker starts, before the pool forks, and the main process serves the aggregate on
METRICS_PORT. Queue metrics are read from Redis at scrape time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

from . import objectstore, records


class Outcome(StrEnum):
    """How one try of a job ended: the ``outcome`` label of mobius_preview_jobs_total."""

    SUCCEEDED = "succeeded"  # rendered
    CACHE_HIT = "cache_hit"  # its preview was stored already
    DRY_RUN = "dry_run"
    RETRIED = "retried"  # failed; a retry is queued
    DEAD = "dead"  # dead-lettered
    INVALID = "invalid"  # dead-lettered: its payload is invalid
    CANCELLED = "cancelled"


# Renders run from a tenth of a second (cache hits, dry runs) to the 10-minute limit.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"))
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, float("inf"))

JOBS = Counter("mobius_preview_jobs_total", "Jobs by outcome and priority", ["outcome", "priority"])
JOB_SECONDS = Histogram(
    "mobius_preview_job_duration_seconds", "Worker time per finished job", ["priority"],
    buckets=DURATION_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "mobius_preview_render_stage_seconds", "Time per render stage", ["stage"],
    buckets=DURATION_BUCKETS,
)
WAIT_SECONDS = Histogram(
    "mobius_preview_queue_wait_seconds", "Time from submission to start", ["priority"],
    buckets=WAIT_BUCKETS,
)
IN_PROGRESS = Gauge(
    "mobius_preview_jobs_in_progress", "Jobs being rendered now", multiprocess_mode="livesum"
)
RECOVERED = Counter(
    "mobius_preview_jobs_recovered_total",
    "Jobs put back on their queue because the worker holding them stopped proving alive",
)
SEGMENTS = Counter(
    "mobius_preview_segments_total", "Per-step segments a render needed, by kind and whether it made "
    "or reused them", ["kind", "outcome"],
)
STORE_SECONDS = Histogram(
    "mobius_preview_store_request_seconds", "Object store requests (PREVIEW_STORAGE_URL) by operation",
    ["operation"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf")),
)
STORE_ERRORS = Counter(
    "mobius_preview_store_errors_total", "Object store requests that failed, by operation and kind "
    "(missing, exists, unavailable, config, other)", ["operation", "kind"],
)


def store_request(operation: str, seconds: float, error: str | None) -> None:
    """One object-store request (the store calls this after each): its time, its failure."""
    STORE_SECONDS.labels(operation).observe(seconds)
    if error is not None:
        STORE_ERRORS.labels(operation, error).inc()


objectstore.observers.append(store_request)

REFUSED = Counter("mobius_preview_submissions_refused_total", "Submissions refused", ["reason"])
REJECTED = Counter(
    "mobius_preview_messages_rejected_total", "Messages the worker refused to run (kept as dead letters)",
    ["reason"],
)


def job_started(priority: str, submitted_ts: str | None) -> None:
    if submitted_ts:
        try:
            WAIT_SECONDS.labels(priority).observe(max(0.0, time.time() - float(submitted_ts)))
        except ValueError:
            pass


def job_finished(outcome: Outcome, priority: str, seconds: float | None = None) -> None:
    JOBS.labels(outcome, priority).inc()
    if seconds is not None:
        JOB_SECONDS.labels(priority).observe(seconds)


def stages(timings: dict[str, float]) -> None:
    for stage, seconds in timings.items():
        STAGE_SECONDS.labels(stage).observe(seconds)


def segments(made: dict[str, dict[str, int]]) -> None:
    """Segments rendered and reused by one render (its manifest's ``output.segments``)."""
    for kind, counts in made.items():
        SEGMENTS.labels(kind, "rendered").inc(counts["rendered"])
        SEGMENTS.labels(kind, "reused").inc(counts["count"] - counts["rendered"])


def jobs_recovered(n: int) -> None:
    RECOVERED.inc(n)


def refused(reason: str) -> None:
    REFUSED.labels(reason).inc()


def message_rejected(reason: str) -> None:
    REJECTED.labels(reason).inc()


@contextmanager
def in_progress() -> Iterator[None]:
    IN_PROGRESS.inc()
    try:
        yield
    finally:
        IN_PROGRESS.dec()


# Per-project series: the PROJECT_LABELS projects with the most jobs (waiting + in
# progress) get their own label; the others are summed under OTHER_PROJECTS, which no
# projectId can be (parentheses are not allowed in one). So a host with thousands of
# projects still exports at most 2 x (PROJECT_LABELS + 1) series.
PROJECT_LABELS = 10
OTHER_PROJECTS = "(other)"


def project_series(projects: dict[str, dict[str, Any]],
                   top: int = PROJECT_LABELS) -> dict[str, tuple[int, int]]:
    """(waiting, running) per project label: the ``top`` busiest projects, then the rest summed."""
    ranked = sorted(projects.items(), key=lambda item: (-(item[1]["waiting"] + item[1]["running"]), item[0]))
    out = {name: (facts["waiting"], facts["running"]) for name, facts in ranked[:top]}
    rest = ranked[top:]
    if rest:
        out[OTHER_PROJECTS] = (sum(f["waiting"] for _, f in rest), sum(f["running"] for _, f in rest))
    return out


def _project_families(projects: dict[str, dict[str, Any]]) -> Iterator[GaugeMetricFamily]:
    jobs = GaugeMetricFamily(
        "mobius_preview_project_jobs", f"Jobs per project: waiting their turn, or running (handed to the "
        f"workers, not ended); the {PROJECT_LABELS} busiest projects, the rest as {OTHER_PROJECTS}",
        labels=["project", "state"],
    )
    for name, (waiting, running) in project_series(projects).items():
        jobs.add_metric([name, "waiting"], waiting)
        jobs.add_metric([name, "running"], running)
    paused = GaugeMetricFamily("mobius_preview_projects_paused", "Projects paused (their jobs held)")
    paused.add_metric([], sum(1 for f in projects.values() if f["paused"]))
    yield from (jobs, paused)


class QueueCollector:
    """Waiting jobs, oldest wait, dead letters and per-project jobs, read from Redis at each scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "mobius_preview_queue_depth", "Jobs waiting per priority", labels=["priority"]
        )
        oldest = GaugeMetricFamily(
            "mobius_preview_queue_oldest_age_seconds", "Age of the oldest waiting job",
            labels=["priority"],
        )
        dead = GaugeMetricFamily("mobius_preview_dead_letters", "Jobs in the dead-letter queue")
        up = GaugeMetricFamily("mobius_preview_broker_up", "1 when Redis answered this scrape")
        try:
            facts = records.queue_facts()
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for priority, n in facts["depth"].items():
            depth.add_metric([priority], n)
            oldest.add_metric([priority], facts["oldestAgeSeconds"][priority] or 0.0)
        dead.add_metric([], facts["deadLetters"])
        yield from (depth, oldest, dead, up)
        yield from _project_families(facts["projects"])


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def process_exited(pid: int) -> None:
    """Drop a finished pool process's live gauges (jobs in progress)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)


def registry(include_queues: bool = True) -> CollectorRegistry:
    """A registry of the worker metrics (aggregated across processes when multiprocess)."""
    reg = CollectorRegistry()
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(reg)
    else:
        for collector in (JOBS, JOB_SECONDS, STAGE_SECONDS, WAIT_SECONDS, IN_PROGRESS, REFUSED, REJECTED,
                          RECOVERED, SEGMENTS):
            reg.register(collector)
    if include_queues:
        reg.register(QueueCollector())
    return reg


def serve(port: int, addr: str = "0.0.0.0") -> None:
    start_http_server(port, addr=addr, registry=registry())


def render_latest() -> bytes:
    return generate_latest(registry())
