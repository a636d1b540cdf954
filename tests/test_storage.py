"""The store's small files: the job index is written once in place, replaced whole on a rerun."""

from __future__ import annotations

import json
import uuid

import pytest

from mobius_preview import storage


def test_a_job_index_entry_is_created_then_replaced_whole_on_a_second_run():
    job = f"idx-{uuid.uuid4().hex[:8]}"
    project = f"proj-{uuid.uuid4().hex[:6]}"
    storage.index_job(project, job, "a" * 64, cache_hit=False)  # the project's folder is made
    path = storage.index_path(project, job)
    assert json.loads(path.read_text()) == {"projectId": project, "jobId": job, "key": "a" * 64,
                                            "cacheHit": False}
    storage.index_job(project, job, "b" * 64, cache_hit=True)  # a redelivered job ran again
    assert json.loads(path.read_text())["key"] == "b" * 64
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


@pytest.mark.parametrize(("project", "job"), [("../x", "j"), ("p", "../../etc/passwd"), ("p", "a/b")])
def test_index_names_cannot_leave_their_folder(project, job):
    with pytest.raises(ValueError, match="unsafe"):
        storage.index_job(project, job, "a" * 64, cache_hit=False)
