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
import time
from functools import lru_cache

from .config import settings
from .errors import ConfigError

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
def _link_key(configured: str, api_keys: tuple[str, ...]) -> bytes | None:
    """The signing key; None when there is nothing secret to derive one from."""
    if configured:
        return configured.encode()
    if not api_keys:
        return None
    log.warning("PREVIEW_SIGNING_KEY is not set: signed links use a key derived from PREVIEW_API_KEYS "
                "(they stop working when the keys change)")
    return hmac.new(b"mobius-preview signed links", "\n".join(sorted(api_keys)).encode(),
                    hashlib.sha256).digest()


def _signature(job_id: str, expires: int) -> str | None:
    cfg = settings()
    key = _link_key(cfg.signing_key, cfg.api_keys)
    if key is None:
        return None
    return hmac.new(key, f"{job_id}\n{expires}".encode(), hashlib.sha256).hexdigest()


def sign(job_id: str, seconds: int = DEFAULT_LINK_SECONDS, now: float | None = None) -> dict[str, str]:
    """Query parameters that open ``job_id``'s artifacts for ``seconds``."""
    expires = int((time.time() if now is None else now) + seconds)
    sig = _signature(job_id, expires)
    if sig is None:
        raise ConfigError("PREVIEW_SIGNING_KEY (or PREVIEW_API_KEYS): needed to sign artifact links")
    return {"expires": str(expires), "sig": sig}


def signature_ok(job_id: str, expires: str | None, sig: str | None, now: float | None = None) -> bool:
    if not expires or not sig or not expires.isdigit() or len(expires) > 12:
        return False
    if int(expires) < (time.time() if now is None else now):
        return False
    expected = _signature(job_id, int(expires))
    return expected is not None and hmac.compare_digest(expected, sig)
