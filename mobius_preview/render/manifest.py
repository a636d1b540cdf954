"""manifest.json: what was rendered, from what, how long it took, and every file's checksum."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .artifacts import MANIFEST


def file_entry(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"name": path.name, "size": path.stat().st_size, "sha256": digest.hexdigest()}


def write(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Checksum every file in ``folder`` into the manifest and write it last."""
    manifest["files"] = [
        file_entry(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST
    ]
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return manifest


def verify(folder: Path) -> list[str]:
    """Every way the files in ``folder`` differ from its manifest; empty when intact."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{MANIFEST}: cannot read: {exc}"]
    problems = []
    listed = set()
    for entry in manifest.get("files", []):
        name = entry.get("name", "")
        listed.add(name)
        path = folder / name
        if Path(name).name != name or not path.is_file():
            problems.append(f"{name}: missing")
            continue
        actual = file_entry(path)
        if actual["size"] != entry.get("size"):
            problems.append(f"{name}: size {actual['size']} != {entry.get('size')}")
        if actual["sha256"] != entry.get("sha256"):
            problems.append(f"{name}: sha256 {actual['sha256']} != {entry.get('sha256')}")
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name != MANIFEST and path.name not in listed:
            problems.append(f"{path.name}: not in the manifest")
    return problems
