"""The JSON Schemas (`schemas/*.json`) and the few walks honly needs over them.

The schema files are the one source of truth for the spec's shape: validation, defaults,
which fields are runtime-only (`x-honly-runtime`), which are file paths (`x-honly-path`) and
the generated reference all read them. The walks here understand exactly the constructs our
schemas use: `$ref` into `$defs`, `properties`, `additionalProperties`, `items`, `anyOf`/`oneOf`
of alternatives, and `allOf` of `if {kind: const} then {$ref}` dispatch.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from honly_spec.spec.paths import SpecPath

SPEC_SCHEMA_FILE = "honly-spec.v1.json"
PROFILE_SCHEMA_FILE = "honly-profile.v1.json"
WILDCARD = "*"


def schema_dir() -> Path:
    """`schemas/` of the source tree, or where a wheel install put it."""
    for candidate in (
        Path(__file__).resolve().parents[2] / "schemas",
        Path(sys.prefix) / "share" / "honly" / "schemas",
    ):
        if (candidate / SPEC_SCHEMA_FILE).is_file():
            return candidate
    raise FileNotFoundError("honly's JSON schemas are missing from this installation")


@functools.cache
def load_schema(filename: str) -> dict[str, Any]:
    with open(schema_dir() / filename, encoding="utf-8") as handle:
        return json.load(handle)


def spec_schema() -> dict[str, Any]:
    return load_schema(SPEC_SCHEMA_FILE)


def profile_schema() -> dict[str, Any]:
    return load_schema(PROFILE_SCHEMA_FILE)


def deref(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow `$ref: #/$defs/NAME` (our schemas only reference their own `$defs`)."""
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _if_matches(condition: dict[str, Any], value: Any) -> bool:
    """Evaluate the simple `if` conditions our schemas use: required keys with const values."""
    if not isinstance(value, dict):
        return False
    if any(key not in value for key in condition.get("required", [])):
        return False
    for key, sub in condition.get("properties", {}).items():
        if key in value and "const" in sub and value[key] != sub["const"]:
            return False
    return True


def effective(root: dict[str, Any], node: dict[str, Any], value: Any) -> list[dict[str, Any]]:
    """The schema objects that apply to `value`: `node` plus any `then` branch it selects."""
    node = deref(root, node)
    out = [node]
    for part in node.get("allOf", []):
        if "if" in part and _if_matches(part["if"], value):
            out.extend(effective(root, part["then"], value))
    return out


def child_schema(
    root: dict[str, Any], node: dict[str, Any], value: Any, key: str | int
) -> dict[str, Any] | None:
    """Schema for `value[key]` given the schema `node` of `value`, or None if not allowed."""
    for schema in reversed(effective(root, node, value)):
        if isinstance(key, int):
            if "items" in schema:
                return deref(root, schema["items"])
            continue
        if key in schema.get("properties", {}):
            return deref(root, schema["properties"][key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return deref(root, extra)
    return None


def property_names(root: dict[str, Any], node: dict[str, Any], value: Any) -> list[str]:
    """Keys a mapping validated by `node` may hold (for did-you-mean suggestions)."""
    names: list[str] = []
    for schema in effective(root, node, value):
        names.extend(k for k in schema.get("properties", {}) if k not in names)
    return names


def apply_defaults(root: dict[str, Any], node: dict[str, Any], value: Any) -> Any:
    """Fill schema `default`s into every mapping that is present, including whole sections
    whose default is `{}` (`train`, `rollout`, `generation`, `judge`), and write integral
    numbers of `integer` fields as ints (`r: 16.0` is 16).

    Filling defaults before keying means that writing a default explicitly, writing an
    empty section, and leaving it out all produce the same stage key."""
    node = deref(root, node)
    if node.get("type") == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [
            apply_defaults(root, sub, item) if (sub := child_schema(root, node, value, i)) else item
            for i, item in enumerate(value)
        ]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        sub = child_schema(root, node, value, key)
        out[key] = apply_defaults(root, sub, item) if sub else item
    for schema in effective(root, node, value):
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in (found := field_schema(root, sub)):
                out[key] = apply_defaults(root, found, copy.deepcopy(found["default"]))
    return out


def field_schema(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """A property's schema with `$ref` followed; keywords written beside the `$ref`
    (`default`, `description`) win over the target's."""
    target = deref(root, node)
    return (
        {**target, **{k: v for k, v in node.items() if k != "$ref"}} if "$ref" in node else target
    )


def strip_runtime(root: dict[str, Any], node: dict[str, Any], value: Any) -> Any:
    """`value` without the fields marked `x-honly-runtime` (they never enter a key)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            sub = child_schema(root, node, value, key)
            if sub is not None and sub.get("x-honly-runtime"):
                continue
            out[key] = strip_runtime(root, sub, item) if sub else item
        return out
    if isinstance(value, list):
        return [
            strip_runtime(root, sub, item) if (sub := child_schema(root, node, value, i)) else item
            for i, item in enumerate(value)
        ]
    return value


def walk_fields(
    root: dict[str, Any], node: dict[str, Any] | None = None, prefix: SpecPath = ()
) -> Iterator[tuple[SpecPath, dict[str, Any]]]:
    """Every field the schema declares, as (path, schema); `*` stands for a name chosen by
    the user (a stage, a data source). A path shared by several stage kinds appears once per
    kind."""
    node = deref(root, root if node is None else node)
    branches = [node] + [deref(root, p["then"]) for p in node.get("allOf", []) if "then" in p]
    for branch in branches:
        for key, sub in branch.get("properties", {}).items():
            sub = deref(root, sub)
            yield (*prefix, key), sub
            yield from walk_fields(root, sub, (*prefix, key))
        extra = branch.get("additionalProperties")
        if isinstance(extra, dict):
            sub = deref(root, extra)
            yield (*prefix, WILDCARD), sub
            yield from walk_fields(root, sub, (*prefix, WILDCARD))


def marked_paths(root: dict[str, Any], marker: str) -> list[SpecPath]:
    """Schema paths (with `*` wildcards) whose field carries `marker`, e.g. `x-honly-path`."""
    return list(dict.fromkeys(path for path, sub in walk_fields(root) if sub.get(marker)))


def matches(pattern: SpecPath, path: SpecPath) -> bool:
    """Does a concrete `path` match a schema `pattern` with `*` wildcards?"""
    return len(pattern) == len(path) and all(
        p in (WILDCARD, q) for p, q in zip(pattern, path, strict=True)
    )
