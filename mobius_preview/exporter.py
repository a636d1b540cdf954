"""Running the maintained celery-exporter (danihodovic) beside our workers.

It is published on PyPI as ``prometheus-exporter-celery``. Its release pins
``redis<6`` and ``prometheus-client<0.22``, which cannot share an environment with
kombu 5.7 (whose Redis transport needs redis-py >= 6.1). So it gets a virtual
environment of its own, created on first use with an older Celery that still reads
our 5.7 workers' events, and is pointed at our broker, key prefix and queues.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from . import layout
from .config import settings

PACKAGES = [
    "prometheus-exporter-celery==0.11.2",
    "celery>=5.5,<5.7",
    "kombu>=5.5,<5.7",
]
# The wheel ships its code as a top-level package named ``src`` and no script.
ENTRY = "import sys; from src.cli import cli; sys.exit(cli())"


def venv_dir() -> Path:
    return Path(os.environ.get("EXPORTER_VENV", "").strip() or ".exporter-venv").resolve()


def python() -> Path:
    return venv_dir() / "bin" / "python"


def ensure_venv(quiet: bool = True) -> Path:
    """Create the exporter's pinned environment unless it is already there."""
    stamp = venv_dir() / ".installed"
    if stamp.exists() and stamp.read_text() == "\n".join(PACKAGES):
        return python()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv_dir())], check=True)
    flags = ["--quiet"] if quiet else []
    subprocess.run([str(python()), "-m", "pip", "install", *flags, *PACKAGES], check=True)
    stamp.write_text("\n".join(PACKAGES))
    return python()


def command(port: int = 9808, host: str = "127.0.0.1") -> list[str]:
    """The exporter's command line for the configured broker, prefix and queues."""
    cfg = settings()
    args = [
        str(python()), "-c", ENTRY,
        "--broker-url", cfg.redis_url,
        "--queues", ",".join(layout.queues(cfg)),
        "--accept-content", "json",
        "--host", host, "--port", str(port),
        "--broker-transport-option", f"visibility_timeout={cfg.visibility_timeout}",
    ]
    if cfg.key_prefix:
        args += ["--broker-transport-option", f"global_keyprefix={cfg.key_prefix}"]
    return args


def run(port: int = 9808, host: str = "127.0.0.1") -> int:
    ensure_venv(quiet=False)
    return subprocess.call(command(port, host))
