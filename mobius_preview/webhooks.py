"""Telling the host a job ended: a signed POST (Standard Webhooks) to the job's ``webhook.url``.

Per job: the payload names the URL; ``PREVIEW_WEBHOOK_SECRET`` signs every delivery
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``, by the
``standardwebhooks`` package). When a job succeeds, is dead-lettered or cancelled,
``notify`` queues a delivery on its own queue (``<name>.webhooks``), so a slow or
dead receiver never holds up a render's own steps. The delivery task retries with
exponential backoff (Celery's autoretry) and, once out of tries, keeps the delivery
in ``<name>.webhooks.dead``.

Server-side request forgery: at delivery time the host is resolved and every
address must be public, unless ``PREVIEW_WEBHOOK_ALLOW`` names the host, the address
or a network holding it; the request then goes to that checked address (the name
kept for Host and TLS), and redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from celery import Task
from standardwebhooks import Webhook

from . import layout, records
from .app import app
from .config import settings
from .errors import WebhookFailed, WebhookRefused
from .states import State

TASK_NAME = "mobius_preview.deliver_webhook"
# The job states a host is told of, and the webhook event type of each.
EVENTS = {State.SUCCEEDED: "preview.succeeded", State.DEAD: "preview.dead",
          State.CANCELLED: "preview.cancelled"}
log = logging.getLogger("mobius_preview.webhooks")


def _allowed(host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    for entry in settings().webhook_allow:
        if entry.lower() == host.lower():
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a host name that is not this one
    return False


def resolve(url: str) -> tuple[str, int, list[str]]:
    """The URL's host, port and addresses, each one checked; raises WebhookRefused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused(f"webhook {url!r}: not an http(s) URL")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WebhookFailed(f"webhook host {host!r} does not resolve: {exc}") from None
    addresses = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if not address.is_global and not _allowed(host, address):
            raise WebhookRefused(
                f"webhook host {host!r} resolves to {address}, a {_kind(address)} address: refused "
                f"(server-side request forgery guard; PREVIEW_WEBHOOK_ALLOW can allow it)")
        addresses.append(str(address))
    return host, port, addresses


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata lives here)"
    if address.is_private:
        return "private"
    return "non-public"


def notify(job_id: str, url: str | None, state: State, status: dict[str, Any]) -> None:
    """Queue the delivery telling ``url`` that the job ended ``state`` (no URL: nothing)."""
    if not url or state not in EVENTS:
        return
    body = json.dumps({"type": EVENTS[state], "timestamp": records.now_iso(), "data": status},
                      default=str)
    message_id = f"msg_{uuid.uuid4().hex}"
    try:
        deliver_webhook.apply_async((job_id, url, message_id, body), queue=layout.webhook_queue())
        records.update(job_id, webhookState="pending", webhookId=message_id)
    except Exception as exc:  # the job's outcome stands; say why its host was not told
        log.error("could not queue the webhook for job %s: %s", job_id, exc)


class WebhookTask(Task):
    """Retries with backoff; out of tries or refused, the delivery becomes a dead letter."""

    acks_late = True
    typing = False
    autoretry_for = (WebhookFailed, httpx.TransportError)
    dont_autoretry_for = (WebhookRefused,)
    # The jobs' own backoff (PREVIEW_RETRY_BACKOFF, _MAX), which the visibility timeout
    # is checked against: a delivery's retry delay, too, must end before it.
    retry_backoff = settings().retry_backoff
    retry_backoff_max = settings().retry_backoff_max
    retry_jitter = True

    @property
    def max_retries(self) -> int:
        return settings().webhook_max_tries - 1

    def on_retry(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 einfo: Any) -> None:
        records.update(args[0], webhookState="retrying", webhookError=str(exc),
                       webhookAttempts=self.request.retries + 1)

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                   einfo: Any) -> None:
        job_id, url, message_id, body = args
        error = str(exc)
        letter = {"jobId": job_id, "url": url, "messageId": message_id, "body": body, "error": error,
                  "attempts": self.request.retries + 1, "deadAt": records.now_iso()}
        records.client().hset(layout.webhook_dead_key(), message_id, json.dumps(letter))
        records.update(job_id, webhookState="refused" if isinstance(exc, WebhookRefused) else "dead",
                       webhookError=error, webhookAttempts=self.request.retries + 1)
        log.error("webhook for job %s not delivered: %s", job_id, error)


@app.task(bind=True, base=WebhookTask, name=TASK_NAME)
def deliver_webhook(self: WebhookTask, job_id: str, url: str, message_id: str, body: str) -> dict[str, Any]:
    """POST ``body`` to ``url``, signed; 2xx is delivered, anything else is retried."""
    cfg = settings()
    host, port, addresses = resolve(url)
    parts = urlsplit(url)
    address = addresses[0]
    netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    sent = datetime.now(UTC)
    signature = Webhook(cfg.webhook_secret).sign(message_id, sent, body)
    headers = {"content-type": "application/json", "host": parts.netloc.rsplit("@", 1)[-1],
               "webhook-id": message_id, "webhook-timestamp": str(int(sent.timestamp())),
               "webhook-signature": signature,
               "user-agent": "mobius-preview-webhooks"}
    with httpx.Client(follow_redirects=False, timeout=cfg.webhook_timeout, trust_env=False) as http:
        response = http.post(pinned, content=body.encode("utf-8"), headers=headers,
                             extensions={"sni_hostname": host} if parts.scheme == "https" else {})
    if 300 <= response.status_code < 400:
        raise WebhookRefused(f"webhook {url!r} answered {response.status_code} (a redirect): not followed")
    if not 200 <= response.status_code < 300:
        raise WebhookFailed(f"webhook {url!r} answered {response.status_code}")
    records.update(job_id, webhookState="delivered", webhookError="",
                   webhookAttempts=self.request.retries + 1, webhookDeliveredAt=records.now_iso())
    return {"jobId": job_id, "status": response.status_code}
