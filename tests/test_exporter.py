"""celery-exporter (its own pinned venv) reads our 5.7 workers' events and queues."""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import RUN_DIR, deploy_metric_names, free_port, scrape, tiny_render_job

import mobius_preview
from mobius_preview import client, exporter


@pytest.fixture(scope="module")
def exporter_python():
    try:
        return exporter.ensure_venv()
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"could not build the exporter's venv (needs PyPI): {exc}")


def value(samples, metric, **labels) -> float:
    """Sum of the samples of ``metric`` whose labels include ``labels``."""
    return sum(v for (n, lab), v in samples.items()
               if n == metric and set(labels.items()) <= set(lab))


@pytest.mark.slow(25)
def test_exporter_counts_jobs_run_by_a_real_worker(exporter_python, worker_process, make_job):
    port = free_port()
    log = (RUN_DIR / "exporter.log").open("w")
    proc = subprocess.Popen(exporter.command(port=port), stdout=log, stderr=subprocess.STDOUT)
    try:
        worker_process(concurrency=1)
        scrape(f"http://127.0.0.1:{port}/metrics", timeout=60)  # up and subscribed
        time.sleep(2)
        jobs = [make_job(priority=p) for p in ("high", "normal", "low")]
        for job in jobs:
            mobius_preview.submit(job)
        bulk = [make_job(priority="low"), make_job(priority="high")]
        assert all(r.created for r in mobius_preview.submit_many(bulk))  # events sent in a batch
        jobs += bulk
        for job in jobs:
            assert client.wait(job["jobId"], timeout=60)["state"] == "succeeded"
        broken = tiny_render_job()
        broken["previewRequest"]["assets"][0]["path"] = "images/absent.png"
        mobius_preview.submit(broken)
        assert client.wait(broken["jobId"], timeout=60)["state"] == "dead"
        deadline = time.monotonic() + 30
        while True:
            s = scrape(f"http://127.0.0.1:{port}/metrics")
            done = value(s, "celery_task_succeeded_total", name="mobius_preview.render_preview")
            if done >= 5 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert done == 5
        assert value(s, "celery_task_sent_total", name="mobius_preview.render_preview") == 6
        assert value(s, "celery_task_failed_total", name="mobius_preview.render_preview") == 1
        assert value(s, "celery_worker_up") >= 1
        for queue in ("preview.high", "preview.normal", "preview.low"):
            assert any(n == "celery_queue_length" and ("queue_name", queue) in lab for n, lab in s), queue
        served = {name for name, _ in s}
        used = {n for n in deploy_metric_names() if n.startswith("celery_")}
        assert used and used <= served, used - served  # dashboards and alerts query real names
    finally:
        proc.terminate()
        proc.wait(timeout=20)
