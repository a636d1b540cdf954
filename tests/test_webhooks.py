"""Webhooks: signed deliveries to a real local receiver, retries, and the SSRF guard."""

from __future__ import annotations

import base64
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from celery.contrib.testing.worker import start_worker
from conftest import wait_for
from standardwebhooks import Webhook

import mobius_preview
from mobius_preview import InvalidPayload, client

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


class Receiver:
    """An HTTP receiver on loopback that fails its first ``failures`` deliveries."""

    def __init__(self, failures: int = 0, status: int = 200, location: str | None = None):
        self.deliveries: list[dict] = []
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(SECRET).verify(body, headers)
                    verified = True
                except Exception:
                    verified = False
                fail = len(receiver.deliveries) < receiver.failures
                receiver.deliveries.append({"headers": headers, "body": json.loads(body),
                                            "verified": verified, "accepted": not fail and status == 200})
                self.send_response(500 if fail else status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/preview"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def hooks(settings_env):
    settings_env(PREVIEW_WEBHOOK_SECRET=SECRET, PREVIEW_WEBHOOK_ALLOW="127.0.0.1")
    receivers: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        receivers.append(Receiver(**kwargs))
        return receivers[-1]

    yield make
    for r in receivers:
        r.close()


def _webhook_done(job_id: str) -> dict:
    # A bound on the wait, not what is judged: on a loaded CI machine the delivery has been
    # seen to wait its turn past 60 s behind the in-process worker's two threads.
    return wait_for(lambda: (w := client.status(job_id)["webhook"]) and w["state"] in
                    ("delivered", "refused", "dead") and w, timeout=150)


def test_a_receiver_that_fails_three_times_gets_exactly_one_accepted_delivery(hooks, worker, make_job):
    receiver = hooks(failures=3)
    job = make_job(webhook={"url": receiver.url})
    mobius_preview.submit(job)
    assert client.wait(job["jobId"], timeout=60)["state"] == "succeeded"
    webhook = _webhook_done(job["jobId"])
    assert webhook == {"url": receiver.url, "state": "delivered", "attempts": 4, "error": None}
    assert [d["accepted"] for d in receiver.deliveries] == [False, False, False, True]
    assert all(d["verified"] for d in receiver.deliveries)
    assert len({d["headers"]["webhook-id"] for d in receiver.deliveries}) == 1  # one message, retried
    body = receiver.deliveries[-1]["body"]
    assert body["type"] == "preview.succeeded" and body["data"]["jobId"] == job["jobId"]
    assert body["data"]["state"] == "succeeded"


@pytest.mark.worker
def test_cancelled_and_dead_jobs_are_told_too(hooks, make_job):
    receiver = hooks()
    queued = make_job(webhook={"url": receiver.url})
    mobius_preview.submit(queued)
    client.cancel(queued["jobId"])  # no worker yet: cancelled while queued
    bad = make_job(webhook={"url": receiver.url})
    bad["previewRequest"]["assets"] = [{"id": "x", "type": "image", "path": "images/missing.png"}]
    bad["dryRun"] = False
    mobius_preview.submit(bad)
    with start_worker(mobius_preview.app, pool="threads", concurrency=2, perform_ping_check=False,
                      loglevel="WARNING", shutdown_timeout=30):
        _webhook_done(queued["jobId"])
        _webhook_done(bad["jobId"])
    types = sorted(d["body"]["type"] for d in receiver.deliveries)
    assert types == ["preview.cancelled", "preview.dead"] and all(d["verified"] for d in receiver.deliveries)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/hook", "http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:8080/hook", "http://localhost:9/hook",
])
def test_private_targets_are_refused_with_a_clear_error(settings_env, worker, make_job, url):
    settings_env(PREVIEW_WEBHOOK_SECRET=SECRET)  # nothing allowed: loopback is refused too
    job = make_job(webhook={"url": url})
    mobius_preview.submit(job)
    webhook = _webhook_done(job["jobId"])
    assert webhook["state"] == "refused" and webhook["attempts"] == 1, webhook
    assert "refused (server-side request forgery guard" in webhook["error"]
    assert any(kind in webhook["error"] for kind in ("loopback", "private", "link-local")), webhook["error"]


def test_a_redirect_is_not_followed(hooks, worker, make_job):
    receiver = hooks(status=302, location="http://169.254.169.254/")
    job = make_job(webhook={"url": receiver.url})
    mobius_preview.submit(job)
    webhook = _webhook_done(job["jobId"])
    assert webhook["state"] == "refused" and "redirect" in webhook["error"] and len(receiver.deliveries) == 1


def test_a_job_asking_for_a_webhook_is_refused_when_nothing_can_sign_it(make_job):
    job = make_job(webhook={"url": "https://hooks.example.com/preview"})
    with pytest.raises(InvalidPayload) as caught:
        mobius_preview.submit(job)
    assert [(i.path, i.rule) for i in caught.value.issues] == [("$.webhook", "config")]
