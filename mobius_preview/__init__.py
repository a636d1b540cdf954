"""mobius-preview: renders preview videos of board-game tutorials on Celery workers.

The host application uses ``submit`` (or ``render_preview.delay``), ``status`` and
``wait``; operators use ``queue_stats`` and ``health``; ``celery -A mobius_preview
worker`` finds ``app`` here.
"""

from .app import app
from .client import PreviewResult, cancel, queue_stats, status, submit, submit_many, wait
from .errors import (
    BrokerUnavailable,
    ConfigError,
    InvalidPayload,
    JobFailed,
    JobNotFound,
    PermanentError,
    QueueFull,
    TransientError,
)
from .results import follow
from .schema import validate_payload
from .tasks import render_preview

__all__ = [
    "BrokerUnavailable",
    "ConfigError",
    "InvalidPayload",
    "JobFailed",
    "JobNotFound",
    "PermanentError",
    "PreviewResult",
    "QueueFull",
    "TransientError",
    "app",
    "cancel",
    "follow",
    "queue_stats",
    "render_preview",
    "status",
    "submit",
    "submit_many",
    "validate_payload",
    "wait",
]
