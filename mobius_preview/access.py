"""Who may do what over HTTP: API keys, and expiring HMAC-signed artifact links.

API keys come from PREVIEW_API_KEYS and are compared in constant time. A key written
alone may do everything, the operator routes included; one written
``KEY:PROJECT[+PROJECT...]`` may submit for, read, follow and cancel only those
projects' jobs (another project's job is answered as unknown). A signed
link carries ``expires`` (Unix time) and ``sig`` = HMAC-SHA256(PREVIEW_SIGNING_KEY,
"<jobId>\\n<expires>"): it opens that job's artifacts and preview page until it
expires, and nothing of any other job. Either one, once checked, is a ``Principal``:
what the request may do. The HTTP layer (``api.auth``) asks here and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from .config import fingerprint, settings
from .errors import ConfigError

DEFAULT_LINK_SECONDS = 3600
log = logging.getLogger("mobius_preview.access")


@dataclass(frozen=True)
class Principal:
    """Who a request acts for, once its key or link is checked, and what it may reach.

    ``name`` says which key matched (a fingerprint, never the key) or ``"link"``.
    ``job`` is the one job a signed link opens (None for a key: every job).
    ``projects`` is None for a key that may act on every project (and reach the
    operator routes), else the projects a limited key may act on.
    """

    via: Literal["key", "link"]
    name: str
    job: str | None = None
    projects: frozenset[str] | None = None

    @property
    def operator(self) -> bool:
        """May reach the operator routes: a key limited to no projects."""
        return self.via == "key" and self.projects is None

    def may_reach(self, job_id: str, project: str | None) -> bool:
        """May act on job ``job_id`` of ``project``: a link only its own job, a limited
        key only its projects' jobs."""
        if self.job is not None and self.job != job_id:
            return False
        return self.projects is None or project in self.projects


def authenticate(presented: str | None) -> Principal | None:
    """The principal of an API key of PREVIEW_API_KEYS, or None for no or a wrong key."""
    if not presented:
        return None
    cfg = settings()
    matched: str | None = None
    projects: frozenset[str] | None = None
    for key, scope in zip(cfg.api_keys, cfg.api_key_projects, strict=True):
        # Compare against every key so timing does not tell which (or whether one) matched.
        if hmac.compare_digest(presented.encode(), key.encode()):
            matched, projects = key, scope
    return None if matched is None else Principal(via="key", name=fingerprint(matched), projects=projects)


def open_link(job_id: str, expires: str | None, sig: str | None,
              now: float | None = None) -> Principal | None:
    """The principal of a signed link to ``job_id``'s files, or None when it is not valid."""
    if not signature_ok(job_id, expires, sig, now):
        return None
    return Principal(via="link", name="link", job=job_id)


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
