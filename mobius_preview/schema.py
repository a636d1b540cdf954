"""The preview-job contract: JSON Schema plus the cross-references a schema cannot say.

Every problem becomes a ``PayloadIssue`` with a JSON path (``$.previewRequest.steps[2].image``),
the rule it broke and a sentence a person can act on; all of them are reported at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from rfc3339_validator import validate_rfc3339

from .data import schema_file
from .errors import ConfigError, InvalidPayload, PayloadIssue

MAX_WIDTH, MAX_HEIGHT = 1920, 1080


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The job schema shipped in the package; a broken install says which file is at fault."""
    where = schema_file()
    try:
        loaded: dict[str, Any] = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot load the job schema: {exc}") from exc
    return loaded


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with every local ``$ref`` replaced by its target: validates ~2x faster."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


@lru_cache(maxsize=1)
def _flat() -> dict[str, Any]:
    Draft202012Validator.check_schema(schema())
    flat: dict[str, Any] = _inline(schema(), schema().get("$defs", {}))
    return flat


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    """The reference: its errors say where and which rule; it decides every "no"."""
    return Draft202012Validator(_flat(), format_checker=FormatChecker())


@lru_cache(maxsize=1)
def _fast() -> Callable[[Any], Any]:
    """The same schema compiled to Python code by fastjsonschema: ~30x faster.

    Nearly every payload is valid, and jsonschema takes 0.2 ms (a tiny job) to 1.4 ms
    (a 10-step job) to say so, which would dominate submission. The compiled check only
    answers yes or no; any "no" (or error) goes to jsonschema, which names the field and
    the rule and has the last word. The schema uses no keyword that means something
    else in draft 7, and tests check that both agree on thousands of documents.
    ``use_default=False``: fastjsonschema would otherwise write defaults into the payload.
    """
    flat = {**_flat(), "$schema": "http://json-schema.org/draft-07/schema#"}
    # jsonschema's date-time check upper-cases first ("t" and "z" are allowed): same here.
    formats = {"date-time": lambda value: validate_rfc3339(value.upper())}
    return fastjsonschema.compile(flat, formats=formats, use_default=False)


def warm() -> None:
    """Compile both validators now (~70 ms), so no job pays for it.

    A worker calls this before forking its pool: every child inherits them compiled.
    """
    _validator()
    _fast()


def _passes_fast(payload: Any) -> bool:
    try:
        _fast()(payload)
    except Exception:  # JsonSchemaException, or anything odd: let jsonschema decide
        return False
    return True


def json_path(parts: Iterable[Any]) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _describe(error: ValidationError) -> list[PayloadIssue]:
    """Turn one jsonschema error into issues that name the exact field at fault."""
    path = list(error.absolute_path)
    rule = str(error.validator)
    # jsonschema types these as "Any | Unset"; for an error it raised they are set.
    instance: Any = error.instance
    value: Any = error.validator_value
    if rule == "required" and isinstance(instance, dict):
        missing = [k for k in value if k not in instance]
        return [PayloadIssue(json_path([*path, k]), "required", "is required") for k in missing]
    if rule == "additionalProperties" and isinstance(instance, dict):
        schema_node: Any = error.schema
        allowed = set(schema_node.get("properties", {}))
        extra = sorted(str(k) for k in instance if k not in allowed)
        return [
            PayloadIssue(json_path([*path, k]), "additionalProperties", "is not an allowed field")
            for k in extra
        ]
    return [PayloadIssue(json_path(path), rule, _message(rule, path, instance, value, error.message))]


def _message(rule: str, path: list[Any], instance: Any, value: Any, fallback: str) -> str:
    """The sentence for one broken rule on one field (``fallback``: jsonschema's, capped)."""
    if rule == "pattern":
        return _pattern_message(path, instance)
    if rule == "oneOf":  # only assets use it: a path or a url
        return "must give exactly one of path and url"
    if rule == "enum":
        return f"must be one of {', '.join(map(str, value))}"
    if rule == "type":
        return f"must be of type {value}, got {type(instance).__name__}"
    if rule == "format":
        return f"must be an RFC 3339 {value}"
    if rule in ("maxItems", "minItems", "maxProperties"):
        bound = "at most" if rule.startswith("max") else "at least"
        return f"must have {bound} {value} entries, has {len(instance)}"
    if rule in ("maxLength", "minLength"):
        bound = "at most" if rule == "maxLength" else "at least"
        return f"must be {bound} {value} characters, is {len(instance)}"
    return fallback if len(fallback) <= 200 else fallback[:200] + "..."


def _pattern_message(path: list[Any], value: Any) -> str:
    field = path[-1] if path else ""
    if field == "path":
        return "must be a relative path inside the project folder (no leading '/', no '..')"
    if field == "resolution":
        return "must look like WIDTHxHEIGHT, e.g. 1280x720"
    if field == "sha256":
        return "must be 64 hexadecimal characters"
    if field == "url" and "assets" in path:
        return ("must be s3://bucket/key (no '..' or empty segments in the key) "
                "or an http(s):// URL without user or password")
    if field == "url":
        return "must be an http:// or https:// URL"
    if field == "language":
        return "must be a BCP 47 language tag, e.g. en, fr, zh-Hant, ar"
    return "must be 1-128 characters of [A-Za-z0-9._-], not starting with '.' or '-'"


def _unique(items: list[Any], where: str, seen: dict[str, int]) -> Iterable[PayloadIssue]:
    for i, item in enumerate(items):
        ident = item.get("id") if isinstance(item, dict) else None
        if not isinstance(ident, str):
            continue
        if ident in seen:
            yield PayloadIssue(
                f"$.previewRequest.{where}[{i}].id",
                "unique",
                f"duplicates the id of {where}[{seen[ident]}] ({ident!r})",
            )
        else:
            seen[ident] = i


def _semantic(payload: dict[str, Any]) -> list[PayloadIssue]:
    """Checks JSON Schema cannot express: unique ids, resolvable references, resolution caps."""
    request = payload.get("previewRequest")
    if not isinstance(request, dict):
        return []
    steps = _list(request.get("steps"))
    assets = _list(request.get("assets"))
    issues: list[PayloadIssue] = [*_unique(steps, "steps", {}), *_unique(assets, "assets", {})]
    issues += _references(request, steps, assets)
    options = request.get("options")
    if isinstance(options, dict) and isinstance(options.get("resolution"), str):
        issues += _resolution(options["resolution"])
    return issues


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _references(request: dict[str, Any], steps: list[Any], assets: list[Any]) -> list[PayloadIssue]:
    """Each asset a step or the music names must exist and be of the right type."""
    issues: list[PayloadIssue] = []
    kinds = {
        a["id"]: a.get("type") for a in assets if isinstance(a, dict) and isinstance(a.get("id"), str)
    }

    def ref(value: Any, kind: str, where: str) -> None:
        if not isinstance(value, str):
            return
        if value not in kinds:
            issues.append(PayloadIssue(where, "reference", f"names no asset ({value!r})"))
        elif kinds[value] != kind:
            issues.append(
                PayloadIssue(where, "reference", f"names an {kinds[value]} asset, needs {kind}")
            )

    for i, step in enumerate(steps):
        if isinstance(step, dict):
            ref(step.get("image"), "image", f"$.previewRequest.steps[{i}].image")
            ref(step.get("narration"), "audio", f"$.previewRequest.steps[{i}].narration")
    audio = request.get("audio")
    if isinstance(audio, dict):
        ref(audio.get("music"), "audio", "$.previewRequest.audio.music")
    return issues


def _resolution(resolution: str) -> list[PayloadIssue]:
    """The caps on ``WIDTHxHEIGHT`` a pattern cannot say: even, within bounds."""
    try:
        width, height = (int(v) for v in resolution.split("x"))
    except ValueError:
        return []  # the pattern rule already reported it
    where = "$.previewRequest.options.resolution"
    issues: list[PayloadIssue] = []
    if width % 2 or height % 2:
        issues.append(PayloadIssue(where, "even", "width and height must be even"))
    if width > MAX_WIDTH or height > MAX_HEIGHT:
        issues.append(PayloadIssue(where, "maximum", f"must be at most {MAX_WIDTH}x{MAX_HEIGHT}"))
    if width < 64 or height < 64:
        issues.append(PayloadIssue(where, "minimum", "must be at least 64x64"))
    return issues


def check(payload: Any) -> list[PayloadIssue]:
    """Every issue with ``payload``; an empty list means valid."""
    if not isinstance(payload, dict):
        return [PayloadIssue("$", "type", f"must be a JSON object, got {type(payload).__name__}")]
    issues: list[PayloadIssue] = []
    if not _passes_fast(payload):
        for error in _validator().iter_errors(payload):
            issues.extend(_describe(error))
    issues.extend(_semantic(payload))
    # One issue per (path, rule), ordered by where it is in the document.
    unique = {(i.path, i.rule): i for i in issues}
    return sorted(unique.values(), key=lambda i: (i.path, i.rule))


def validate_payload(payload: Any) -> dict[str, Any]:
    """Return the payload if it is a valid preview job, else raise InvalidPayload listing all issues."""
    issues = check(payload)
    if issues:
        raise InvalidPayload(issues)
    valid: dict[str, Any] = payload  # check() reports anything but an object
    return valid


def parse_json(text: str | bytes) -> Any:
    """Parse a payload document, turning syntax errors into a PayloadIssue at ``$``."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidPayload([PayloadIssue("$", "json", f"is not valid JSON: {exc}")]) from None
