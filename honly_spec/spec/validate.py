"""Schema validation with messages people can act on.

`jsonschema` finds the problems; this module turns each into one `Diagnostic` at the right
`file:line:col` with a plain message ("unknown key `learning_rte`; did you mean
`learning_rate`?"). Semantic rules that a schema cannot express live in `rules.py`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from honly_spec.spec.errors import Diagnostic, Pos
from honly_spec.spec.paths import SpecPath, get_path
from honly_spec.spec.schema import child_schema, property_names
from honly_spec.spec.suggest import did_you_mean

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

PosLookup = Callable[[SpecPath], Pos]
SECRET_KEY = re.compile(r"(api[_-]?key|secret|token|password|passwd|credential)", re.I)
NAME_PATTERN = "^[a-z][a-z0-9_]*$"
_VALIDATORS: dict[int, Draft202012Validator] = {}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "mapping"


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return f"`{text[:60]}{'…' if len(text) > 60 else ''}`"


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    """Built on first use: importing jsonschema is the largest part of a CLI call's cost."""
    from jsonschema import Draft202012Validator

    found = _VALIDATORS.get(id(schema))
    if found is None:
        found = _VALIDATORS[id(schema)] = Draft202012Validator(schema)
    return found


def schema_diagnostics(
    data: Any, schema: dict[str, Any], pos: PosLookup, key_pos: PosLookup
) -> list[Diagnostic]:
    """Every schema violation in `data`, one diagnostic each, duplicates removed."""
    out: dict[tuple[SpecPath, str], Diagnostic] = {}
    for error in _validator(schema).iter_errors(data):
        for diag in _explain(error, data, schema, pos, key_pos):
            out.setdefault((diag.path, diag.message), diag)
    flagged = {path for path, _ in out}
    out.update(
        ((path, msg), Diagnostic(pos(path), path, msg))
        for path, msg in _non_finite(data, ())
        if path not in flagged
    )
    return list(out.values())


def _non_finite(value: Any, path: SpecPath) -> Iterable[tuple[SpecPath, str]]:
    """NaN and infinity pass JSON Schema number checks but have no place in a spec."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, f"{_show(value)} is not a finite number"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(item, (*path, index))


def _schema_at(schema: dict[str, Any], data: Any, path: SpecPath) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    value = data
    for part in path:
        if node is None:
            return None
        node = child_schema(schema, node, value, part)
        value = get_path(value, (part,))
    return node


def _explain(
    error: ValidationError, data: Any, schema: dict[str, Any], pos: PosLookup, key_pos: PosLookup
) -> list[Diagnostic]:
    path: SpecPath = tuple(error.absolute_path)
    kind = error.validator
    value = error.instance
    rule = error.validator_value
    here = pos(path)

    if kind == "additionalProperties":
        node = _schema_at(schema, data, path) or {}
        allowed = property_names(schema, node, value)
        extras = [k for k in value if k not in allowed] if isinstance(value, dict) else []
        out = []
        for key in extras:
            if SECRET_KEY.search(key):
                message = (
                    f"`{key}` looks like a secret; secrets never go in a spec: put it in an "
                    "environment variable and name it with `api_key_env`"
                )
            else:
                message = f"unknown key `{key}`{did_you_mean(key, allowed)}"
                if not did_you_mean(key, allowed) and allowed:
                    message += f" (allowed here: {', '.join(allowed)})"
            out.append(Diagnostic(key_pos((*path, key)), (*path, key), message))
        return out
    if kind == "required":
        missing = [k for k in rule if isinstance(value, dict) and k not in value]
        return [
            Diagnostic(key_pos(path) if path else here, path, f"missing required key `{k}`")
            for k in missing
        ]
    if kind == "type":
        wanted = rule if isinstance(rule, str) else " or ".join(rule)
        wanted = {"object": "mapping", "array": "list"}.get(wanted, wanted)
        article = "an" if wanted[0] in "aeiou" else "a"
        message = f"expected {article} {wanted}, got {_type_name(value)} {_show(value)}"
        return [Diagnostic(here, path, message)]
    if kind == "enum":
        options = ", ".join(f"`{o}`" for o in rule)
        hint = did_you_mean(str(value), [str(o) for o in rule])
        return [Diagnostic(here, path, f"{_show(value)} is not one of {options}{hint}")]
    if kind == "const":
        if path == ("honly",) and isinstance(value, int) and not isinstance(value, bool):
            message = (
                f"spec format {value} needs a newer honly (this one reads format {rule})"
                if value > rule
                else f"spec format {value} is not supported; this honly reads format {rule}"
            )
            return [Diagnostic(here, path, message)]
        return [Diagnostic(here, path, f"must be `{rule}`, got {_show(value)}")]
    if kind in ("oneOf", "anyOf"):
        node = error.schema
        message = node.get("x-honly-message") or (
            "does not match any allowed form: " + node.get("description", "see the reference")
        )
        return [Diagnostic(here, path, message)]
    if kind == "pattern" and error.schema.get("x-honly-message"):
        return [Diagnostic(here, path, f"{_show(value)} {error.schema['x-honly-message']}")]
    if kind == "pattern" and rule == NAME_PATTERN:
        message = (
            f"{_show(value)} is not a valid name: use lowercase letters, digits and `_`, "
            "starting with a letter"
        )
        return [
            Diagnostic(key_pos((*path, value)) if isinstance(value, str) else here, path, message)
        ]
    limits = {
        "minimum": ">=",
        "maximum": "<=",
        "exclusiveMinimum": ">",
        "exclusiveMaximum": "<",
    }
    if kind in limits:
        return [Diagnostic(here, path, f"{_show(value)} must be {limits[kind]} {rule}")]
    if kind == "minItems":
        return [Diagnostic(here, path, f"needs at least {rule} item(s)")]
    if kind == "minProperties":
        return [Diagnostic(here, path, f"needs at least {rule} entry(ies)")]
    if kind == "uniqueItems":
        return [Diagnostic(here, path, "items must be unique")]
    if kind in ("minLength", "maxLength"):
        word = "at least" if kind == "minLength" else "at most"
        return [Diagnostic(here, path, f"must be {word} {rule} character(s) long")]
    if kind == "pattern":
        return [Diagnostic(here, path, f"{_show(value)} does not match the pattern `{rule}`")]
    return [Diagnostic(here, path, error.message)]
