"""Flower settings, read by `celery -A mobius_preview flower` from the working directory.

Bound to localhost unless FLOWER_ADDRESS says otherwise; basic auth from
FLOWER_BASIC_AUTH ("user:password", several separated by commas). Flower serves
/metrics and /healthcheck without authentication, and refuses its API to
unauthenticated callers unless FLOWER_UNAUTHENTICATED_API is set: see
docs/operations.md before exposing it.
"""

import os

address = os.environ.get("FLOWER_ADDRESS", "127.0.0.1")
port = int(os.environ.get("FLOWER_PORT", "5555"))
_auth = os.environ.get("FLOWER_BASIC_AUTH", "").strip()
if _auth:
    basic_auth = [pair.strip() for pair in _auth.split(",") if pair.strip()]
persistent = False
max_tasks = 10000
