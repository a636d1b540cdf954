"""Who may do what over HTTP: API keys, and expiring HMAC-signed artifact links.

API keys come from PREVIEW_API_KEYS and are compared in constant time. A signed
link carries ``expires`` (Unix time) and ``sig`` = HMAC-SHA256(PREVIEW_SIGNING_KEY,
"<jobId>\\n<expires>"): it opens that job's artifacts and preview page until it
expires, and nothing of any other job.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from functools import lru_cache

from .config import settings

DEFAULT_LINK_SECONDS = 3600
log = logging.getLogger("mobius_preview.access")


def api_key_ok(presented: str | None) -> bool:
    if not presented:
        return False
    ok = False
    for key in settings().api_keys:
        # Compare against every key so timing does not tell which (or whether one) matched.
        ok |= hmac.compare_digest(presented.encode(), key.encode())
    return ok


def bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


@lru_cache(maxsize=4)
def _process_key(configured: str) -> bytes:
    if configured:
        return configured.encode()
    log.warning("PREVIEW_SIGNING_KEY is not set: signed links are valid on this process only")
    return secrets.token_bytes(32)


def _signature(job_id: str, expires: int) -> str:
    key = _process_key(settings().signing_key)
    return hmac.new(key, f"{job_id}\n{expires}".encode(), hashlib.sha256).hexdigest()


def sign(job_id: str, seconds: int = DEFAULT_LINK_SECONDS, now: float | None = None) -> dict[str, str]:
    """Query parameters that open ``job_id``'s artifacts for ``seconds``."""
    expires = int((time.time() if now is None else now) + seconds)
    return {"expires": str(expires), "sig": _signature(job_id, expires)}


def signature_ok(job_id: str, expires: str | None, sig: str | None, now: float | None = None) -> bool:
    if not expires or not sig or not expires.isdigit() or len(expires) > 12:
        return False
    if int(expires) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(_signature(job_id, int(expires)), sig)
