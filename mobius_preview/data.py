"""Files shipped inside the package: the job schema, the example jobs, the fonts.

Everything is looked up with ``importlib.resources`` relative to the installed
package, never beside a source tree, so a wheel installed anywhere finds them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import ConfigError


def path(*parts: str) -> Path:
    """A shipped file or folder as a real path (``ffmpeg`` and Pillow need one)."""
    found = resources.files(__package__).joinpath(*parts)
    if not isinstance(found, Path):  # a zipped install: nothing here can read from a zip
        raise ConfigError(f"{'/'.join(parts)}: mobius_preview must be installed as files, not zipped")
    return found


def schema_file() -> Path:
    return path("schemas", "preview-job.schema.json")


def examples_dir() -> Path:
    return path("schemas", "examples")


def fonts_dir() -> Path:
    return path("render", "fonts")
