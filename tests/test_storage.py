"""The store's job index: one journal line per finished job, the latest entry wins."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from mobius_preview import storage


def _stored_preview(key: str):
    folder = storage.preview_dir(key)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text("{}")
    return folder


def test_a_job_is_found_by_its_latest_index_entry():
    project, job = f"proj-{uuid.uuid4().hex[:6]}", f"idx-{uuid.uuid4().hex[:8]}"
    first, second = _stored_preview("a" * 64), _stored_preview("b" * 64)
    assert storage.find_job(project, job) is None
    storage.index_job(project, job, "a" * 64, cache_hit=False)  # the project's folder is made
    storage.index_job(project, f"{job}-other", "a" * 64, cache_hit=False)
    assert storage.find_job(project, job) == str(first)
    storage.index_job(project, job, "b" * 64, cache_hit=True)  # a redelivered job ran again
    assert storage.find_job(project, job) == str(second)
    journals = list(storage.index_dir(project).iterdir())
    assert len(journals) == 1 and journals[0].name.endswith(f".{os.getpid()}.jsonl")
    lines = [json.loads(line) for line in journals[0].read_text().splitlines()]
    assert [(e["jobId"], e["key"][0], e["cacheHit"]) for e in lines] == [
        (job, "a", False), (f"{job}-other", "a", False), (job, "b", True)]


def test_a_line_cut_short_by_a_crash_is_skipped():
    project, job = f"proj-{uuid.uuid4().hex[:6]}", f"idx-{uuid.uuid4().hex[:8]}"
    folder = _stored_preview("c" * 64)
    storage.index_job(project, job, "c" * 64, cache_hit=False)
    journal = next(storage.index_dir(project).iterdir())
    with journal.open("a") as fh:
        fh.write('{"jobId": "' + job + '", "key": "dd')  # no end, no newline
    assert storage.find_job(project, job) == str(folder)


@pytest.mark.parametrize(("project", "job"), [("../x", "j"), ("p", "../../etc/passwd"), ("p", "a/b")])
def test_index_names_cannot_leave_their_folder(project, job):
    with pytest.raises(ValueError, match="unsafe"):
        storage.index_job(project, job, "a" * 64, cache_hit=False)
    with pytest.raises(ValueError, match="unsafe"):
        storage.find_job(project, job)
