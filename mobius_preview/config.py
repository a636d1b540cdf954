"""Every setting of mobius-preview, read from the environment in one place.

Settings are parsed once per process (``settings()``) and validated up front, so a
bad value stops start-up with one line naming the variable, instead of failing
deep inside a render an hour later. Tests change the environment and call
``reload()``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from standardwebhooks import Webhook

from .errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PASSWORD = re.compile(r"((?:^|;)[a-z+]+://[^:/@;]*:)[^@;]*@")
_REDIS_SCHEMES = {"redis", "rediss", "redis+socket", "unix", "sentinel"}


@dataclass(frozen=True)
class Settings:
    """Every setting, parsed. Each default is written once, in ``load`` (none here):
    the environment variable's name, its default and its check sit on one line."""

    redis_url: str
    key_prefix: str
    queue_name: str
    concurrency: int
    queue_max: int
    data_dir: Path
    assets_dir: Path
    max_tries: int
    retry_backoff: int
    retry_backoff_max: int
    soft_time_limit: int
    time_limit: int
    visibility_timeout: int
    restore_interval: int
    stalled_seconds: int
    record_ttl: int
    events_ttl: int
    max_video_seconds: float
    ffmpeg_binary: str | None
    ffprobe_binary: str | None
    log_level: str
    log_format: str
    metrics_port: int | None
    api_keys: tuple[str, ...] = field(repr=False)
    # Per key of api_keys, in order: the projects it is limited to (None: every project,
    # the operator routes too). Written ``KEY:PROJECT[+PROJECT...]`` in PREVIEW_API_KEYS.
    api_key_projects: tuple[frozenset[str] | None, ...] = field(repr=False)
    signing_key: str = field(repr=False)
    sentinel_master: str
    accept_replicas: int
    webhook_secret: str = field(repr=False)
    webhook_allow: tuple[str, ...]
    webhook_max_tries: int
    webhook_timeout: int
    render_threads: int
    project_concurrency: int  # most jobs of one project in progress at once; 0: no cap
    project_queue_max: int  # most jobs of one project waiting their turn; 0: only PREVIEW_QUEUE_MAX
    queue_ahead: int  # jobs handed to each priority's Celery queue ahead of the workers
    segment_days: int
    storage_url: str  # "" = previews, segments and facts under data_dir; s3://bucket/prefix = there
    segment_cache_bytes: int
    asset_allow: tuple[str, ...]
    asset_max_bytes: int
    asset_timeout: int
    asset_ca_file: Path | None
    api_max_body: int = 1_000_000  # bytes of a request body the API reads (no variable)

    @property
    def redis_url_masked(self) -> str:
        return mask_url(self.redis_url)

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """(host, port) of each sentinel of a ``sentinel://h1:p1;sentinel://h2:p2/db`` URL."""
        if not self.redis_url.startswith("sentinel://"):
            return []
        return [(p.hostname or "", p.port or 26379) for p in map(urlsplit, self.redis_url.split(";"))]


def mask_url(url: str) -> str:
    """Hide the password of a URL so it can go into logs and errors (even a malformed one)."""
    return _PASSWORD.sub(r"\1***@", url)


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {value}")
    return value


def _redis_url(env: dict[str, str]) -> str:
    url = env.get("REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0"
    parts = urlsplit(url)
    if parts.scheme not in _REDIS_SCHEMES:
        raise ConfigError(
            f"REDIS_URL: scheme must be one of {sorted(_REDIS_SCHEMES)}, got {mask_url(url)!r}"
        )
    if parts.scheme == "sentinel":
        for part in url.split(";"):
            sentinel = urlsplit(part)
            try:
                sentinel.port  # noqa: B018 - raises ValueError on a bad port
            except ValueError:
                raise ConfigError(f"REDIS_URL: bad port in {mask_url(part)!r}") from None
            if sentinel.scheme != "sentinel" or not sentinel.hostname:
                raise ConfigError(f"REDIS_URL: each of ';'-separated sentinels must be "
                                  f"sentinel://host:port, got {mask_url(part)!r}")
        if not env.get("REDIS_SENTINEL_MASTER", "").strip():
            raise ConfigError("REDIS_SENTINEL_MASTER: the master's name is needed with sentinel:// URLs")
    elif parts.scheme in ("redis", "rediss"):
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ConfigError(f"REDIS_URL: bad port in {mask_url(url)!r}") from None
        if not parts.hostname:
            raise ConfigError(f"REDIS_URL: no host in {mask_url(url)!r}")
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ConfigError(f"REDIS_URL: database must be a number, got {db!r}")
    elif not parts.path:
        raise ConfigError(f"REDIS_URL: no socket path in {mask_url(url)!r}")
    return url


def _storage_url(env: dict[str, str]) -> str:
    """PREVIEW_STORAGE_URL: empty (files under DATA_DIR) or s3://bucket[/prefix]."""
    url = env.get("PREVIEW_STORAGE_URL", "").strip().rstrip("/")
    if url and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._/-]*)?", url):
        raise ConfigError(f"PREVIEW_STORAGE_URL: must be s3://bucket[/prefix] (bucket: 3-63 of "
                          f"[a-z0-9.-]; prefix: [A-Za-z0-9._/-]), got {url!r}")
    return url


PROJECT_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")  # a projectId, as the schema says


def _api_keys(env: dict[str, str]) -> tuple[tuple[str, ...], tuple[frozenset[str] | None, ...]]:
    """PREVIEW_API_KEYS: comma-separated keys, each alone (every project, operator routes
    too) or ``KEY:PROJECT[+PROJECT...]`` (those projects only). Errors never show a key."""
    keys: list[str] = []
    scopes: list[frozenset[str] | None] = []
    entries = [e.strip() for e in env.get("PREVIEW_API_KEYS", "").split(",") if e.strip()]
    for n, entry in enumerate(entries, 1):
        key, colon, projects = entry.partition(":")
        key = key.strip()
        if not key:
            raise ConfigError(f"PREVIEW_API_KEYS: entry {n} has no key before ':'")
        names = [p.strip() for p in projects.split("+")] if colon else []
        for name in names:
            if not PROJECT_ID.match(name):
                raise ConfigError(f"PREVIEW_API_KEYS: entry {n} ({fingerprint(key)}) limits the key to "
                                  f"{name!r}, not a projectId (KEY:PROJECT[+PROJECT...])")
        keys.append(key)
        scopes.append(frozenset(names) if colon else None)
    return tuple(keys), tuple(scopes)


def fingerprint(key: str) -> str:
    """A short name for a key that logs and errors may show: it does not reveal the key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _binary(env: dict[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    found = shutil.which(raw)
    if not found:
        raise ConfigError(f"{name}: {raw!r} is not an executable file")
    return found


def _allow_list(env: dict[str, str], name: str) -> tuple[str, ...]:
    """Hosts, addresses and networks (CIDR) the request-forgery guard lets through."""
    allow = tuple(a.strip() for a in env.get(name, "").split(",") if a.strip())
    for entry in allow:
        if "/" in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ConfigError(f"{name}: {entry!r} is not a network (CIDR)") from None
    return allow


def load(env: dict[str, str] | None = None) -> Settings:
    """Parse and validate settings; raise ConfigError with one line on the first bad one."""
    env = dict(os.environ if env is None else env)
    queue_name = env.get("PREVIEW_QUEUE_NAME", "").strip() or "preview"
    if not _NAME.match(queue_name):
        raise ConfigError(
            f"PREVIEW_QUEUE_NAME: 1-64 characters of [A-Za-z0-9._-], got {queue_name!r}"
        )
    key_prefix = env.get("REDIS_KEY_PREFIX", "")
    if key_prefix and not re.match(r"^[A-Za-z0-9._:-]{1,64}$", key_prefix):
        raise ConfigError(
            f"REDIS_KEY_PREFIX: 1-64 characters of [A-Za-z0-9._:-], got {key_prefix!r}"
        )

    retry_backoff = _int(env, "PREVIEW_RETRY_BACKOFF", 1, minimum=1)
    retry_backoff_max = _int(env, "PREVIEW_RETRY_BACKOFF_MAX", 300, minimum=1)
    soft_limit = _int(env, "PREVIEW_SOFT_TIME_LIMIT", 600, minimum=1)
    hard_limit = _int(env, "PREVIEW_TIME_LIMIT", soft_limit + 60, minimum=1)
    if hard_limit <= soft_limit:
        raise ConfigError(
            f"PREVIEW_TIME_LIMIT: must exceed PREVIEW_SOFT_TIME_LIMIT ({soft_limit}), got {hard_limit}"
        )
    # A message is redelivered when it stays unacknowledged longer than the visibility
    # timeout, so it must outlast the longest render (hard limit) and the longest retry
    # countdown (kombu#337: the timeout counts from delivery, not from a retry's ETA).
    min_visibility = max(hard_limit, retry_backoff_max) + 5
    visibility = _int(env, "PREVIEW_VISIBILITY_TIMEOUT", 2 * min_visibility, minimum=1)
    if visibility < min_visibility:
        raise ConfigError(
            f"PREVIEW_VISIBILITY_TIMEOUT: must be >= {min_visibility} s (longest render or retry "
            f"delay + 5 s), got {visibility}"
        )
    stalled = _int(env, "PREVIEW_STALLED_SECONDS", 30, minimum=3)
    log_format = env.get("LOG_FORMAT", "auto").strip().lower() or "auto"
    if log_format not in ("auto", "json", "text"):
        raise ConfigError(f"LOG_FORMAT: one of auto, json, text; got {log_format!r}")
    metrics_raw = env.get("METRICS_PORT", "").strip()
    metrics_port = _int(env, "METRICS_PORT", 0, minimum=1) if metrics_raw else None
    if metrics_port is not None and metrics_port > 65535:
        raise ConfigError(f"METRICS_PORT: must be a TCP port (1-65535), got {metrics_port}")
    api_keys, api_key_projects = _api_keys(env)
    max_seconds = _int(env, "PREVIEW_MAX_VIDEO_SECONDS", 900, minimum=1)
    webhook_secret = env.get("PREVIEW_WEBHOOK_SECRET", "").strip()
    if webhook_secret:
        try:
            Webhook(webhook_secret)
        except Exception:
            raise ConfigError("PREVIEW_WEBHOOK_SECRET: must be a Standard Webhooks secret "
                              "('whsec_' and base64), as the receiver is given it") from None
    allow = _allow_list(env, "PREVIEW_WEBHOOK_ALLOW")
    asset_ca = env.get("PREVIEW_ASSET_CA_FILE", "").strip()
    if asset_ca and not Path(asset_ca).is_file():
        raise ConfigError(f"PREVIEW_ASSET_CA_FILE: {asset_ca!r} is not a file (a PEM bundle of CAs)")

    record_ttl = _int(env, "PREVIEW_RECORD_TTL", 7 * 24 * 3600, minimum=60)
    # A finished job's event stream is kept only this long (the resume window of a
    # reconnecting reader); its record, which holds the final state, stays record_ttl.
    events_ttl = _int(env, "PREVIEW_EVENTS_TTL", 3600, minimum=1)
    if events_ttl > record_ttl:
        raise ConfigError(f"PREVIEW_EVENTS_TTL: must be <= PREVIEW_RECORD_TTL ({record_ttl}), "
                          f"got {events_ttl}")

    return Settings(
        redis_url=_redis_url(env),
        key_prefix=key_prefix,
        queue_name=queue_name,
        concurrency=_int(env, "PREVIEW_WORKER_CONCURRENCY", 2, minimum=1),
        queue_max=_int(env, "PREVIEW_QUEUE_MAX", 1000, minimum=1),
        data_dir=Path(env.get("DATA_DIR", "").strip() or "./data").resolve(),
        assets_dir=Path(env.get("ASSETS_DIR", "").strip() or "./assets").resolve(),
        max_tries=_int(env, "PREVIEW_MAX_TRIES", 5, minimum=1),
        retry_backoff=retry_backoff,
        retry_backoff_max=retry_backoff_max,
        soft_time_limit=soft_limit,
        time_limit=hard_limit,
        visibility_timeout=visibility,
        restore_interval=_int(env, "PREVIEW_RESTORE_INTERVAL", 30, minimum=1),
        stalled_seconds=stalled,
        record_ttl=record_ttl,
        events_ttl=events_ttl,
        max_video_seconds=float(max_seconds),
        ffmpeg_binary=_binary(env, "FFMPEG_BINARY"),
        ffprobe_binary=_binary(env, "FFPROBE_BINARY"),
        log_level=(env.get("LOG_LEVEL", "").strip() or "INFO").upper(),
        log_format=log_format,
        metrics_port=metrics_port,
        api_keys=api_keys,
        api_key_projects=api_key_projects,
        signing_key=env.get("PREVIEW_SIGNING_KEY", "").strip(),
        sentinel_master=env.get("REDIS_SENTINEL_MASTER", "").strip(),
        accept_replicas=_int(env, "PREVIEW_ACCEPT_REPLICAS", 0, minimum=0),
        webhook_secret=webhook_secret,
        webhook_allow=allow,
        webhook_max_tries=_int(env, "PREVIEW_WEBHOOK_MAX_TRIES", 8, minimum=1),
        webhook_timeout=_int(env, "PREVIEW_WEBHOOK_TIMEOUT", 5, minimum=1),
        render_threads=_int(env, "PREVIEW_RENDER_THREADS", os.cpu_count() or 1, minimum=1),
        segment_days=_int(env, "PREVIEW_SEGMENT_DAYS", 7, minimum=1),
        storage_url=_storage_url(env),
        segment_cache_bytes=_int(env, "PREVIEW_SEGMENT_CACHE_MB", 2048, minimum=16) * 1024 * 1024,
        asset_allow=_allow_list(env, "PREVIEW_ASSET_ALLOW"),
        asset_max_bytes=_int(env, "PREVIEW_ASSET_MAX_BYTES", 200 * 1024 * 1024, minimum=1),
        asset_timeout=_int(env, "PREVIEW_ASSET_TIMEOUT", 30, minimum=1),
        asset_ca_file=Path(asset_ca).resolve() if asset_ca else None,
        project_concurrency=_int(env, "PREVIEW_PROJECT_CONCURRENCY", 0, minimum=1),
        project_queue_max=_int(env, "PREVIEW_PROJECT_QUEUE_MAX", 0, minimum=1),
        queue_ahead=_int(env, "PREVIEW_QUEUE_AHEAD", 2, minimum=1),
    )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, parsed on first use."""
    return load()


def reload() -> Settings:
    """Forget the cached settings and parse the environment again."""
    settings.cache_clear()
    return settings()
