"""The Lua scripts: one ``.lua`` file each in ``mobius_preview/lua``, loaded here by name.

Each file opens with its KEYS/ARGV contract; ``_lib.lua`` (shared helpers: hset_json,
emit, set_of) is put in front of every script. A script is registered once per
client and runs with EVALSHA (its source is sent only when the server lacks it), so
calling one costs one round trip.
"""

from __future__ import annotations

import weakref
from functools import cache
from importlib.resources import files
from typing import Any

from redis.commands.core import Script

_FOLDER = files(__package__).joinpath("lua")
_SHARED = "_lib.lua"
# Every script: each .lua file but the shared helpers, by name.
NAMES = tuple(sorted(p.name.removesuffix(".lua") for p in _FOLDER.iterdir()
                     if p.name.endswith(".lua") and p.name != _SHARED))

_registered: weakref.WeakKeyDictionary[Any, dict[str, Script]] = weakref.WeakKeyDictionary()


@cache
def source(name: str) -> str:
    """The Lua source of script ``name``: the shared helpers, then ``lua/<name>.lua``."""
    if name not in NAMES:
        raise KeyError(f"no Lua script {name!r}; known: {', '.join(NAMES)}")
    shared = _FOLDER.joinpath(_SHARED).read_text("utf-8")
    return shared + "\n" + _FOLDER.joinpath(f"{name}.lua").read_text("utf-8")


def script(name: str, conn: Any) -> Script:
    """Script ``name`` registered on ``conn`` (a Redis client), once per client."""
    per_client = _registered.get(conn)
    if per_client is None:
        per_client = _registered.setdefault(conn, {})
    found = per_client.get(name)
    if found is None:
        found = per_client[name] = conn.register_script(source(name))
    return found
