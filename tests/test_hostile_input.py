"""Thousands of malformed payloads: each is refused with a named field, nothing is queued."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import PREFIX
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mobius_preview
from mobius_preview import InvalidPayload, layout, records, schema
from mobius_preview.schema import check, parse_json

# Hypothesis searches against a real Redis: not in `make check`; `make test` starts them first.
pytestmark = pytest.mark.slow(10)

EXAMPLES = Path(__file__).resolve().parent.parent / "schemas" / "examples"
BASE = {
    "jobId": "h-1", "projectId": "proj-catan-demo", "requestId": "r-1", "dryRun": True,
    "previewRequest": {
        "steps": [{"id": "s1", "text": "t", "image": "img"}],
        "assets": [{"id": "img", "type": "image", "path": "images/board.png"}],
        "audio": {},
    },
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
nasty_strings = st.sampled_from([
    "", "../etc/passwd", "/etc/passwd", "..", ".hidden", "-rf", "a/b", "a\\b", "C:\\x", "x" * 5000,
    "\u0000", "évènement", "名前", "images/../../x", "images/./board.png", "\n", "a" * 129,
    "%2e%2e/x", "preview.high", "*", "$(rm -rf /)",
    # date-times the two validators could read differently
    "2024-02-30T10:00:00Z", "2024-02-29T10:00:00Z", "2023-02-29T10:00:00Z", "2024-01-01T10:00:00+0100",
    "2024-01-01t10:00:00z", "2024-01-01 10:00:00Z", "2024-01-01T24:00:00Z", "2024-01-01T23:59:60Z",
    "2024-01-01T10:00:00.123456789+01:00", "2024-1-1T10:00:00Z",
]) | st.sampled_from([1.0, -0.0, 2.5, 10**20, 1e308, True, 0, 1000, 1001, -1])
paths = [("jobId",), ("projectId",), ("requestId",), ("dryRun",), ("priority",), ("createdAt",),
         ("previewRequest", "steps", 0, "id"), ("previewRequest", "steps", 0, "text"),
         ("previewRequest", "steps", 0, "image"), ("previewRequest", "steps", 0, "durationSec"),
         ("previewRequest", "assets", 0, "path"), ("previewRequest", "assets", 0, "id"),
         ("previewRequest", "assets", 0, "type"), ("previewRequest", "audio"),
         ("previewRequest", "options"), ("previewRequest", "steps"), ("previewRequest",)]


def _set(doc, path, value):
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(paths), value=json_values | nasty_strings)
def test_mutated_payloads_are_valid_or_refused_with_a_named_field(path, value):
    doc = copy.deepcopy(BASE)
    _set(doc, path, value)
    issues = check(doc)
    for issue in issues:
        assert issue.path.startswith("$") and issue.rule and issue.message
    if issues:
        # the complaint is about the field we broke (or one it names)
        broken = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        assert any(i.path.startswith(broken) or broken.startswith(i.path) or i.rule in
                   ("reference", "unique") for i in issues), (broken, issues)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=json_values)
def test_arbitrary_documents_never_raise_anything_but_invalid_payload(doc):
    issues = check(doc)
    assert issues  # nothing random is a valid job
    assert all(i.path.startswith("$") for i in issues)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text_parses_or_is_refused(text):
    try:
        check(parse_json(text))
    except InvalidPayload as exc:
        assert exc.issues[0].path == "$"


def test_deep_nesting_and_huge_strings_are_refused_cleanly():
    deep = "[" * 100_000 + "]" * 100_000
    try:
        parse_json(deep)
    except InvalidPayload as exc:
        assert exc.issues[0].rule == "json"
    doc = copy.deepcopy(BASE)
    doc["previewRequest"]["metadata"] = json.loads('{"a": ' * 200 + "1" + "}" * 200)  # free-form
    doc["jobId"] = "x" * 1_000_000
    assert ("$.jobId", "maxLength") in [(i.path, i.rule) for i in check(doc)]


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(paths[:3] + paths[10:11]), value=nasty_strings)
def test_refused_submissions_leave_nothing_in_redis(path, value):
    doc = copy.deepcopy(BASE)
    _set(doc, path, value)
    if not check(doc):
        return
    before = _keys()
    try:
        mobius_preview.submit(doc)
        raise AssertionError("accepted an invalid job")
    except InvalidPayload:
        pass
    assert sum(records.queue_depths().values()) == 0
    after = _keys()
    assert after == before, {"new": sorted(after - before), "gone": sorted(before - after)}


def _keys() -> set[str]:
    """Every key but those other activity writes on its own clock: the workers' heartbeats,
    and what a job of an earlier test that is still finishing in this process's namespace
    writes (its record and stream, named "t-..." by the fixtures; kombu's delivery
    bookkeeping; the running counts). Whatever jobId these tests submit, its keys count."""
    theirs = (layout.worker_key(""), layout.held_key(""), layout.workers_key(), layout.unacked_key(),
              layout.unacked_index_key(), layout.key("unacked_mutex"), layout.project_running_key(),
              layout.released_key(), layout.job_key("t-"))
    # This process's keys only: the other xdist processes share the server.
    return {k for k in records.client().scan_iter(match=f"{PREFIX}*", count=1000) if not k.startswith(theirs)}


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(paths), value=json_values | nasty_strings)
def test_the_fast_check_and_jsonschema_agree(path, value):
    """A payload the compiled check passes must have no jsonschema error: the fast path
    may never let through what the reference validator refuses."""
    doc = copy.deepcopy(BASE)
    _set(doc, path, value)
    reference_ok = not list(schema._validator().iter_errors(doc))
    assert schema._passes_fast(doc) == reference_ok, (path, value)


def test_the_fast_check_agrees_on_every_shipped_example_and_leaves_the_payload_alone():
    for example in sorted(EXAMPLES.rglob("*.json")):
        if example.name.endswith(".expected.json"):
            continue
        doc = json.loads(example.read_text())
        before = copy.deepcopy(doc)
        assert schema._passes_fast(doc) == (not list(schema._validator().iter_errors(doc))), example
        assert doc == before, f"validating {example.name} changed it (defaults written in?)"
