"""The package as a host installs it: a built wheel in a clean virtual environment.

Nothing here runs from the checkout: the wheel is built from a copy of the tree,
installed into a new venv (no system site-packages), and every command runs from
another directory, so a data file looked up beside the source tree, or a module
that only the checkout has, fails here.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest
from conftest import EXAMPLES, PREFIX, REDIS_URL, REPO, RUN_DIR, WorkerProcess

from mobius_preview.render import ffmpeg as ff

# One xdist worker builds the wheel and its venv (a module fixture) and runs both tests.
pytestmark = pytest.mark.xdist_group("wheel")

JOBS = ["catan-intro.json", "catan-intro-webm.json", "upstream-full.json", "upstream-minimal.json"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel of this tree installed; returns its bin folder.

    Built once per run: under pytest-xdist the first worker to get here builds it in the
    run's shared folder while holding a lock; any other worker needing it waits, then
    uses the same venv (the xdist_group above should keep both tests on one worker, but
    pytest 9.2's node ids defeat it: pytest-xdist issue #1386)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with (shared / "wheel.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        root = shared / "wheel"
        if not (root / "ready").exists():
            shutil.rmtree(root, ignore_errors=True)
            _build_and_install(root)
            (root / "ready").touch()
    return root / "venv" / "bin"


def _build_and_install(root: Path) -> None:
    source = root / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "data", "build", "*.egg-info", "__pycache__", ".*cache", "test-artifacts",
        ".exporter-venv"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"),
                    str(source)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = (root / "dist").glob("mobius_preview-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/")[0] for name in zf.namelist()}
    name, version = wheel.name.split("-")[:2]
    assert tops == {"mobius_preview", f"{name}-{version}.dist-info"}
    # No pip of its own and no byte-compiling of every dependency up front: this process's
    # pip installs into the venv's interpreter; Python compiles what is imported, as it runs.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True,
                   timeout=120)
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(root / "venv" / "bin" / "python"),
                          "install", "-q", "--no-compile", str(wheel)],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]


def _clean_env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "FFMPEG_BINARY", "FFPROBE_BINARY")}
    return {**keep, "LOG_FORMAT": "text", **extra}


@pytest.mark.slow(45)
@pytest.mark.timeout(900)  # the venv is built in its setup
def test_the_installed_wheel_validates_from_another_directory(installed, tmp_path):
    elsewhere = tmp_path / "host"
    elsewhere.mkdir()
    shutil.copy(EXAMPLES / "catan-intro.json", elsewhere / "job.json")
    shutil.copy(EXAMPLES / "invalid" / "path-traversal.json", elsewhere / "bad.json")
    env = _clean_env()

    ok = subprocess.run([str(installed / "mobius-preview"), "validate", "job.json"], cwd=elsewhere,
                        env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == "job.json: OK", ok.stdout + ok.stderr

    bad = subprocess.run([str(installed / "mobius-preview"), "validate", "bad.json", "missing.json"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "bad.json: 4 errors" in bad.stdout, bad.stdout
    assert "$.previewRequest.assets[0].path:" in bad.stdout and "[pattern]" in bad.stdout, bad.stdout
    assert "missing.json: cannot read: No such file or directory" in bad.stdout, bad.stdout

    # Only mobius_preview is installed: no top-level celeryconfig to collide with a host's.
    probe = subprocess.run([str(installed / "python"), "-c", "import celeryconfig"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "No module named 'celeryconfig'" in probe.stderr


@pytest.mark.slow(45)
@pytest.mark.timeout(900)
def test_the_installed_wheel_renders_the_example_jobs(installed, tmp_path):
    elsewhere = tmp_path / "host"
    elsewhere.mkdir()
    for name in JOBS:
        shutil.copy(EXAMPLES / name, elsewhere / name)
    env = _clean_env(REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=f"{PREFIX}wheel-{uuid.uuid4().hex[:6]}:",
                     DATA_DIR=str(tmp_path / "data"), ASSETS_DIR=str(RUN_DIR / "assets"))
    worker = WorkerProcess(env=env, concurrency=2, python=str(installed / "python"), cwd=elsewhere)
    worker.env = {**env, "LOG_LEVEL": "INFO"}  # nothing of this process's environment
    worker.start()
    try:
        proc = subprocess.run([str(installed / "mobius-preview"), "submit", "--wait", "--timeout", "240",
                               *JOBS], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    finally:
        worker.stop()
    assert proc.returncode == 0, proc.stderr[-3000:] + worker.output()[-3000:]
    lines = json.loads("[" + proc.stdout.replace("}\n{", "},\n{") + "]")
    assert [line["status"]["state"] for line in lines] == ["succeeded"] * len(JOBS)
    for line in lines:
        artifacts = line["status"]["artifacts"]
        assert Path(artifacts["manifest.json"]).is_relative_to(tmp_path / "data")
        if line["status"]["dryRun"]:
            continue
        video = Path(artifacts.get("preview.mp4") or artifacts["preview.webm"])
        facts = ff.probe(video)
        assert facts["duration"] == pytest.approx(line["status"]["duration"], abs=0.1), facts
        assert {s["type"] for s in facts["streams"]} == {"video", "audio"}, facts
