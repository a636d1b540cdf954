"""The payload contract: shipped examples, exact error paths and rules, the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mobius_preview import InvalidPayload, validate_payload
from mobius_preview.schema import check, parse_json

EXAMPLES = Path(__file__).resolve().parent.parent / "schemas" / "examples"
VALID = sorted(EXAMPLES.glob("*.json"))
INVALID = sorted(p for p in (EXAMPLES / "invalid").glob("*.json") if not p.name.endswith(".expected.json"))


def test_examples_exist():
    names = {p.name for p in VALID}
    assert {"upstream-minimal.json", "upstream-full.json", "catan-intro.json"} <= names
    assert len(INVALID) >= 6


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_examples_pass(path):
    payload = json.loads(path.read_text())
    assert check(payload) == []
    assert validate_payload(payload) is payload


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_examples_give_their_expected_errors(path):
    expected = json.loads(path.with_name(path.stem + ".expected.json").read_text())
    with pytest.raises(InvalidPayload) as caught:
        validate_payload(json.loads(path.read_text()))
    got = [{"path": i.path, "rule": i.rule} for i in caught.value.issues]
    assert got == expected
    for issue in caught.value.issues:
        assert issue.path in str(caught.value)
        assert issue.message and len(issue.message) < 300


# sha256 of upstream's example files (../shared/upstream), recorded when they were
# copied, so the copies are checked on any machine, with or without ../shared.
UPSTREAM = {
    "upstream-minimal.json": ("preview_payload_minimal.json",
                              "456867583f5e9b9169b8038bffe22644dc24cac7a07df053fac5c4812be5137e"),
    "upstream-full.json": ("preview_payload_full.json",
                           "08be3226dfe6eabfe57ba258d7bfc5cf4418889a6a2e690ab5ccaa5e37af9356"),
}


def test_upstream_examples_are_byte_identical_to_upstream():
    for ours, (_, digest) in UPSTREAM.items():
        assert hashlib.sha256((EXAMPLES / ours).read_bytes()).hexdigest() == digest, ours
    # Where upstream's folder is at hand, the recorded digests must still be its files'.
    shared = Path(__file__).resolve().parents[2] / "shared" / "upstream"
    for theirs, digest in UPSTREAM.values() if shared.is_dir() else ():
        assert hashlib.sha256((shared / theirs).read_bytes()).hexdigest() == digest, theirs


@pytest.mark.parametrize(
    ("mutate", "path", "rule"),
    [
        (lambda j: j.update(jobId=""), "$.jobId", "minLength"),
        (lambda j: j.update(jobId="x" * 129), "$.jobId", "maxLength"),
        (lambda j: j.update(jobId="a/b"), "$.jobId", "pattern"),
        (lambda j: j.update(projectId="-x"), "$.projectId", "pattern"),
        (lambda j: j.update(createdAt="2025-13-45T99:00:00Z"), "$.createdAt", "format"),
        (lambda j: j["previewRequest"].pop("audio"), "$.previewRequest.audio", "required"),
        (lambda j: j["previewRequest"]["steps"].append({"id": "s"}), "$.previewRequest.steps[0].text",
         "required"),
        (lambda j: j["previewRequest"].update(options={"resolution": "640x481"}),
         "$.previewRequest.options.resolution", "even"),
        (lambda j: j["previewRequest"].update(options={"resolution": "abc"}),
         "$.previewRequest.options.resolution", "pattern"),
        (lambda j: j["previewRequest"].update(audio={"musicVolume": 2}),
         "$.previewRequest.audio.musicVolume", "maximum"),
        (lambda j: j["previewRequest"]["assets"].append({"id": "a", "type": "image", "path": "a\\..\\b"}),
         "$.previewRequest.assets[0].path", "pattern"),
        (lambda j: j["previewRequest"]["assets"].append({"id": "a", "type": "video", "path": "a.mp4"}),
         "$.previewRequest.assets[0].type", "enum"),
    ],
)
def test_each_rule_names_its_field(mutate, path, rule):
    job = json.loads((EXAMPLES / "upstream-minimal.json").read_text())
    mutate(job)
    issues = check(job)
    assert (path, rule) in [(i.path, i.rule) for i in issues], issues


@pytest.mark.parametrize("payload", [None, [], "job", 3, True])
def test_non_objects_are_rejected_at_the_root(payload):
    assert [(i.path, i.rule) for i in check(payload)] == [("$", "type")]


def test_malformed_json_is_an_invalid_payload():
    with pytest.raises(InvalidPayload) as caught:
        parse_json("{not json")
    assert caught.value.issues[0].path == "$"
    assert caught.value.issues[0].rule == "json"


@pytest.mark.slow(5)
def test_cli_validate_reports_ok_and_every_error():
    cli = [sys.executable, "-m", "mobius_preview.cli", "validate"]
    ok = subprocess.run([*cli, str(EXAMPLES / "catan-intro.json")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith("OK")
    bad = subprocess.run([*cli, str(EXAMPLES / "invalid" / "bad-options.json")],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "$.previewRequest.options.fps" in bad.stdout and "[minimum]" in bad.stdout
    assert "7 errors" in bad.stdout
