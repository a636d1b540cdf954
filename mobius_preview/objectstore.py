"""An S3-compatible object store (``PREVIEW_STORAGE_URL=s3://bucket/prefix``), over obstore.

    store = ObjectStore.from_url(settings().storage_url)   # endpoint and keys: AWS_* / profiles
    store.check()                       # at start: StoreConfigError naming the variable
    store.put_bytes("previews/<key>/manifest.json", data, create_only=True)
    store.get_file("segments/<name>.mp4", cache_path)      # dest complete or absent

Why obstore (figures in the README): a third of boto3's latency on small requests and a
tenth of its CPU, a native create-only PUT (``If-None-Match: *``), local presigning.
Everything is written with one PUT (atomic for readers, create-only honoured, no multipart
leftovers). Errors (errors.py): ``ObjectMissing`` (404), ``ObjectExists`` (create-only lost),
``StoreUnavailable`` (5xx, refused, timeout: transient), ``StoreConfigError`` (credentials,
bucket, URL: names the variable). obstore has no class for transport errors or 5xx, so the
status is read from its message text; the tests pin this against a real SeaweedFS.

Endpoint and credentials come from the variables every S3 tool reads (``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``, ``AWS_PROFILE`` and the ~/.aws files): the one place settings are read
outside config.py, so that an operator's usual S3 set-up works unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

if TYPE_CHECKING:  # these TypedDicts exist in obstore's stubs only
    from obstore.store import ClientConfig, RetryConfig, S3Config

from .errors import ObjectExists, ObjectMissing, StoreConfigError, StoreError, StoreUnavailable

T = TypeVar("T")

# One PUT up to this size (atomic, create-only works); previews and segments are far smaller.
SINGLE_PUT_LIMIT = 256 * 1024 * 1024
# obstore retries for up to 3 minutes by default: a worker would hang on a dead store.
# Retry briefly here and let the task's own retries (with backoff) do the rest.
MAX_RETRIES = 3
RETRY_TIMEOUT = 20.0
REQUEST_TIMEOUT = 60.0
CONNECT_TIMEOUT = 5.0

# Called after every request: (operation, seconds, error kind or None); metrics hooks in.
Observer = Callable[[str, float, str | None], None]
observers: list[Observer] = []

_STATUS = re.compile(r"status code: (\d{3})")
_TRANSIENT = ("error sending request", "connection refused", "connection reset", "timed out",
              "timeout", "broken pipe", "connection closed", "dns error", "incomplete message",
              "unexpected eof", "body error", "http error")


@dataclass(frozen=True)
class Head:
    key: str
    size: int
    etag: str | None
    last_modified: datetime | None


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix); StoreConfigError naming PREVIEW_STORAGE_URL."""
    parts = urlsplit(url)
    bucket = parts.netloc
    if parts.scheme != "s3" or not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket) \
            or parts.query or parts.fragment:
        raise StoreConfigError(f"must be s3://bucket[/prefix], got {url!r}", "PREVIEW_STORAGE_URL")
    return bucket, parts.path.strip("/")


def error_kind(exc: BaseException) -> str:
    """A short label for metrics: missing, exists, unavailable, config, other."""
    for cls, kind in ((ObjectMissing, "missing"), (ObjectExists, "exists"),
                      (StoreUnavailable, "unavailable"), (StoreConfigError, "config")):
        if isinstance(exc, cls):
            return kind
    return "other"


class ObjectStore:
    """One bucket and prefix; keys given to the methods are relative to the prefix."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None,
                 region: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None, session_token: str | None = None,
                 credential_provider: Any = None, max_retries: int = MAX_RETRIES,
                 retry_timeout: float = RETRY_TIMEOUT) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        config: dict[str, Any] = {"region": region or "us-east-1"}
        if endpoint:
            config["endpoint"] = endpoint
            config["virtual_hosted_style_request"] = False  # path style, as S3-compatibles expect
        if credential_provider is None:
            for name, value in (("access_key_id", access_key_id),
                                ("secret_access_key", secret_access_key),
                                ("session_token", session_token)):
                if value:
                    config[name] = value
        client: dict[str, Any] = {"timeout": timedelta(seconds=REQUEST_TIMEOUT),
                                  "connect_timeout": timedelta(seconds=CONNECT_TIMEOUT)}
        if endpoint and endpoint.startswith("http://"):
            client["allow_http"] = True
        retry: dict[str, Any] = {
            "max_retries": max_retries, "retry_timeout": timedelta(seconds=retry_timeout),
            "backoff": {"init_backoff": timedelta(milliseconds=100),
                        "max_backoff": timedelta(seconds=2), "base": 2}}
        self._store = S3Store(bucket, config=cast("S3Config", config),
                              client_options=cast("ClientConfig", client),
                              retry_config=cast("RetryConfig", retry),
                              credential_provider=credential_provider)

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str] | None = None, **kw: Any) -> ObjectStore:
        """The store of ``url`` with the endpoint and credentials every S3 tool reads."""
        env = os.environ if env is None else env
        bucket, prefix = parse_url(url)
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        if bool(key) != bool(secret):
            missing = "AWS_SECRET_ACCESS_KEY" if key else "AWS_ACCESS_KEY_ID"
            raise StoreConfigError("not set, but its pair is", missing)
        provider = None
        if not key:
            provider, prof_endpoint, prof_region = _from_profile(env)
            endpoint, region = endpoint or prof_endpoint, region or prof_region
        return cls(bucket, prefix, endpoint=endpoint, region=region, access_key_id=key,
                   secret_access_key=secret, session_token=env.get("AWS_SESSION_TOKEN"),
                   credential_provider=provider, **kw)

    def __repr__(self) -> str:
        return f"ObjectStore(s3://{self.bucket}/{self.prefix}, endpoint={self.endpoint})"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    # ------------------------------------------------------------------ helpers
    def _k(self, key: str) -> str:
        key = key.lstrip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    def _map(self, exc: BaseException, key: str) -> StoreError:
        msg = str(exc)
        low = msg.lower()
        first = msg.splitlines()[0][:300] if msg else type(exc).__name__
        found = _STATUS.search(msg)  # obstore puts the HTTP status in the message text
        status = int(found.group(1)) if found else None
        where = self.endpoint or "S3"
        if isinstance(exc, AlreadyExistsError | PreconditionError) or status in (409, 412):
            return ObjectExists(f"already exists: {key}")
        if "nosuchbucket" in low:
            return StoreConfigError(f"bucket {self.bucket!r} does not exist", "PREVIEW_STORAGE_URL")
        if isinstance(exc, FileNotFoundError) or status == 404:
            return ObjectMissing(key, first)
        if isinstance(exc, PermissionDeniedError | UnauthenticatedError) or status in (401, 403):
            if "invalidaccesskeyid" in low:
                return StoreConfigError("access key not known to the store", "AWS_ACCESS_KEY_ID")
            if "signaturedoesnotmatch" in low:
                return StoreConfigError("secret key does not match the access key", "AWS_SECRET_ACCESS_KEY")
            return StoreConfigError(f"access denied to bucket {self.bucket!r}",
                                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
        if status is not None and status >= 500:
            return StoreUnavailable(f"{where}: HTTP {status}")
        if status is None and (isinstance(exc, TimeoutError | ConnectionError)
                               or any(word in low for word in _TRANSIENT)):
            return StoreUnavailable(f"{where}: {first}")
        return StoreError(f"{where}: {first}")

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        started = time.perf_counter()
        failure: str | None = None
        try:
            return fn()
        except StoreError as exc:
            failure = error_kind(exc)
            raise
        except (BaseError, OSError, TimeoutError) as exc:
            mapped = self._map(exc, key)
            failure = error_kind(mapped)
            raise mapped from exc
        finally:
            seconds = time.perf_counter() - started
            for observe in observers:
                observe(op, seconds, failure)

    # ------------------------------------------------------------------ operations
    def put_bytes(self, key: str, data: bytes, *, create_only: bool = False,
                  content_type: str | None = None) -> str | None:
        """One PUT, atomic for readers; ``create_only`` sends If-None-Match: * and raises
        ObjectExists when the key is taken. Returns the ETag."""
        attrs: Any = {"Content-Type": content_type} if content_type else None
        result = self._call("put", key, lambda: obstore.put(
            self._store, self._k(key), data, mode="create" if create_only else "overwrite",
            use_multipart=False, attributes=attrs))
        return result.get("e_tag")

    def put_file(self, key: str, path: str | os.PathLike[str], *, create_only: bool = False,
                 content_type: str | None = None) -> str | None:
        size = os.path.getsize(path)
        if size > SINGLE_PUT_LIMIT:
            raise StoreError(f"{path}: {size} bytes is over the single-PUT limit of {SINGLE_PUT_LIMIT}")
        return self.put_bytes(key, Path(path).read_bytes(), create_only=create_only,
                              content_type=content_type)

    def get_bytes(self, key: str) -> bytes:
        return self._call("get", key, lambda: obstore.get(self._store, self._k(key)).bytes().to_bytes())

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object."""
        return self._call("get", key, lambda: obstore.get_range(
            self._store, self._k(key), start=start, end=end).to_bytes())

    def get_file(self, key: str, dest: str | os.PathLike[str]) -> str:
        """Stream into a private file beside ``dest``, fsync, rename: ``dest`` is complete or
        absent. Returns the sha256 of what was written."""
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        digest = hashlib.sha256()

        def fetch() -> None:
            with os.fdopen(fd, "wb") as fh:
                for chunk in obstore.get(self._store, self._k(key)).stream(min_chunk_size=1 << 20):
                    view = memoryview(chunk)
                    digest.update(view)
                    fh.write(view)
                fh.flush()
                os.fsync(fh.fileno())

        try:
            self._call("get", key, fetch)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest.hexdigest()

    def head(self, key: str) -> Head:
        meta = self._call("head", key, lambda: obstore.head(self._store, self._k(key)))
        return Head(key=key, size=meta["size"], etag=meta.get("e_tag"),
                    last_modified=meta.get("last_modified"))

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except ObjectMissing:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[Head]:
        """Every object under ``prefix`` (relative keys), recursively."""
        full = self._k(prefix) if prefix else (self.prefix + "/" if self.prefix else None)
        batches = iter(self._call("list", prefix, lambda: obstore.list(self._store, full)))
        while True:
            batch = self._call("list", prefix, lambda: next(batches, None))
            if batch is None:
                return
            for meta in batch:
                yield Head(key=self._rel(meta["path"]), size=meta["size"], etag=meta.get("e_tag"),
                           last_modified=meta.get("last_modified"))

    def delete(self, key: str) -> None:
        """Idempotent (S3): deleting a missing key is no error."""
        self._call("delete", key, lambda: obstore.delete(self._store, self._k(key)))

    def presign_get(self, key: str, seconds: int = 300) -> str:
        """A GET URL valid for ``seconds``, computed locally; it embeds the store's endpoint."""
        return self._call("sign", key, lambda: obstore.sign(
            self._store, "GET", self._k(key), timedelta(seconds=seconds)))

    def check(self) -> None:
        """One LIST of a single key: StoreConfigError naming the variable to fix (bucket,
        keys), StoreUnavailable when the store does not answer."""
        full = self.prefix + "/" if self.prefix else None

        def probe() -> None:
            next(iter(obstore.list(self._store, full, chunk_size=1)), None)

        try:
            self._call("check", self.prefix or "/", probe)
        except ObjectMissing as exc:  # a 404 on a LIST: no such bucket
            raise StoreConfigError(f"bucket {self.bucket!r} does not exist", "PREVIEW_STORAGE_URL") from exc


def _from_profile(env: Mapping[str, str]) -> tuple[Any, str | None, str | None]:
    """Credentials, endpoint and region from AWS_PROFILE and ~/.aws, through botocore
    (which also knows SSO, assumed roles and instance metadata)."""
    # botocore costs ~0.3 s to import: only a set-up without AWS_ACCESS_KEY_ID pays it
    import boto3
    from obstore.auth.boto3 import Boto3CredentialProvider  # needs boto3, same reason

    session = boto3.Session(profile_name=env.get("AWS_PROFILE") or None)
    if session.get_credentials() is None:
        raise StoreConfigError("no credentials in the environment or the AWS profiles",
                               "AWS_ACCESS_KEY_ID/AWS_PROFILE")
    scoped = session._session.get_scoped_config()  # no public accessor for endpoint_url
    s3_section = scoped.get("s3")
    endpoint = s3_section.get("endpoint_url") if isinstance(s3_section, dict) else None
    return Boto3CredentialProvider(session), endpoint or scoped.get("endpoint_url"), session.region_name
