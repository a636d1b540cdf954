"""Every exception mobius-preview raises, in one module.

Two families matter to the worker: ``PermanentError`` (retrying cannot help, the
job goes straight to the dead-letter queue) and everything else, which is treated
as transient and retried with backoff. Callers of the client see the others.
"""

from __future__ import annotations

from dataclasses import dataclass


class MobiusError(Exception):
    """Base of every mobius-preview error."""


class ConfigError(MobiusError):
    """A setting in the environment is missing or malformed (one line: variable and why)."""


@dataclass(frozen=True)
class PayloadIssue:
    """One reason a payload is invalid: where (JSON path), which rule, and what to do."""

    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.rule}]"

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "rule": self.rule, "message": self.message}


class PermanentError(MobiusError):
    """A job that can never succeed as submitted; it is dead-lettered without retries."""


class TransientError(MobiusError):
    """A failure that may heal on its own (encoder crash, disk full); it is retried."""


class InvalidPayload(PermanentError, ValueError):
    """The payload breaks the schema or its cross-references; lists every issue."""

    def __init__(self, issues: list[PayloadIssue], source: str | None = None):
        self.issues = list(issues)
        self.source = source
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        where = f"{source}: " if source else ""
        super().__init__(f"{where}invalid preview job ({len(self.issues)} errors):\n{lines}")


class AssetError(PermanentError):
    """An asset is missing, unreadable, outside its folder, or fails its checksum."""


class AssetUnavailable(TransientError):
    """An asset's server or store could not be reached, answered 5xx or timed out: retried."""


class UrlRefused(PermanentError):
    """The request-forgery guard will not call a URL (not http(s), a non-public address
    not allowed, a redirect into one): never retried."""


class LimitExceeded(PermanentError):
    """The job asks for more than the service allows (length, size)."""


class EncoderError(TransientError):
    """ffmpeg failed for a reason that is not the job's fault; carries ffmpeg's output."""


class WebhookRefused(UrlRefused):
    """A webhook's target may not be called (a private address, a redirect): never retried."""


class WebhookFailed(TransientError):
    """A webhook's receiver did not accept the delivery (not 2xx): retried."""


class StoreError(MobiusError):
    """Base of the object store's errors (PREVIEW_STORAGE_URL)."""


class ObjectMissing(StoreError, PermanentError, LookupError):
    """The key is not in the store (404): waiting will not bring it."""

    def __init__(self, key: str, detail: str = ""):
        self.key = key
        self.detail = detail
        super().__init__(f"object not found: {key}")


class ObjectExists(StoreError):
    """A create-only write found the key taken (HTTP 412): another writer published first."""


class StoreUnavailable(StoreError, TransientError):
    """The store did not answer or answered 5xx (refused, reset, timeout): retried."""


class StoreConfigError(StoreError, ConfigError):
    """The store refuses us for our configuration (credentials, bucket, URL); ``variable``
    names the setting to fix. Not the job's fault: a job meeting it is retried."""

    def __init__(self, message: str, variable: str):
        self.variable = variable
        super().__init__(f"{variable}: {message}")


class Cancelled(MobiusError):
    """A running render was stopped because its job was cancelled: neither retried nor
    dead-lettered; the job ends ``cancelled``."""


class QueueFull(MobiusError):
    """Submissions are refused while PREVIEW_QUEUE_MAX jobs are waiting, or (``project``
    set) while that project has PREVIEW_PROJECT_QUEUE_MAX jobs waiting their turn."""

    def __init__(self, depth: int, limit: int, project: str | None = None):
        self.depth = depth
        self.limit = limit
        self.project = project
        if project is None:
            super().__init__(f"queue full: {depth} jobs waiting, limit is {limit} (PREVIEW_QUEUE_MAX)")
        else:
            super().__init__(f"queue full for project {project!r}: {depth} jobs waiting their turn, "
                             f"limit is {limit} (PREVIEW_PROJECT_QUEUE_MAX)")


class BrokerUnavailable(MobiusError):
    """Redis could not be reached; nothing was accepted."""


class JobNotFound(MobiusError, LookupError):
    """No job with that id is known (never submitted, or its record expired)."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        super().__init__(f"job not found: {job_id!r}")


class JobFailed(MobiusError):
    """Raised by PreviewResult.get() for a job that ended dead or cancelled."""

    def __init__(self, job_id: str, state: str, error: str | None):
        self.job_id, self.state, self.error = job_id, state, error
        super().__init__(f"job {job_id!r} ended {state}: {error}")
