"""The Lua scripts keep to their rules: each states its contract, none builds a key or spells a state."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import pytest

from mobius_preview import layout, scripts, states
from mobius_preview.config import load

LUA = files("mobius_preview").joinpath("lua")


def test_every_script_the_code_runs_exists_and_every_script_is_run():
    package = Path(scripts.__file__).parent
    code = "\n".join(p.read_text("utf-8") for p in package.rglob("*.py"))
    called = set(re.findall(r"""(?:_run|scripts\.script)\(\s*["']([\w-]+)["']""", code))
    assert called == set(scripts.NAMES), f"run but missing: {called - set(scripts.NAMES)}; " \
                                         f"never run: {set(scripts.NAMES) - called}"
    assert all(scripts.source(name) for name in scripts.NAMES)
    with pytest.raises(KeyError):
        scripts.source("no-such-script")


@pytest.mark.parametrize("name", scripts.NAMES)
def test_each_script_opens_with_its_keys_and_argv_contract(name):
    text = LUA.joinpath(f"{name}.lua").read_text("utf-8")
    header = re.match(r"(?:--.*\n)+", text)
    assert header, f"{name}.lua does not open with a comment"
    header = header[0]
    assert "KEYS" in header and "ARGV" in header, f"{name}.lua does not open with its KEYS/ARGV contract"
    # every ARGV the script reads is described in the header
    used = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", text.split(header, 1)[1])}
    described = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", header)}
    assert used <= described, f"{name}.lua reads ARGV {sorted(used - described)} its header leaves out"


@pytest.mark.parametrize("name", ["_lib", *scripts.NAMES])
def test_no_script_spells_a_key_fragment_or_a_state(name):
    lines = LUA.joinpath(f"{name}.lua").read_text("utf-8").splitlines()
    code = "\n".join(line.split("--", 1)[0] for line in lines)  # comments may name keys
    cfg = load({})  # no prefix: each key is the queue name and its own fragment
    keys = [layout.job_key("", cfg), layout.dead_key(cfg), layout.webhook_queue(cfg),
            layout.worker_key("", cfg), layout.held_key("", cfg), layout.workers_key(cfg),
            layout.unacked_key(cfg), layout.unacked_index_key(cfg), *layout.queues(cfg)]
    fragments = [layout.EVENTS_SUFFIX, *(k.removeprefix(cfg.queue_name) for k in keys)]
    assert ".job:" in fragments and "unacked" in fragments
    for fragment in fragments:
        assert fragment not in code, f"{name}.lua spells {fragment!r}: keys come from mobius_preview.layout"
    for state in states.STATES:
        assert f"'{state}'" not in code and f'"{state}"' not in code, \
            f"{name}.lua spells the state {state!r}: states come from mobius_preview.states"
    assert not re.search(r"MAXLEN['\"]?\s*,\s*['\"]?~['\"]?\s*,\s*\d", code), f"{name}.lua fixes a MAXLEN"
