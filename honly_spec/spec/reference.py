"""Generate the Markdown reference of the spec and profile formats from their JSON Schemas.

    python -m honly_spec.spec.reference > docs/spec-reference.md

A test regenerates it and fails when the committed file is stale.
"""

from __future__ import annotations

import json
import re
from typing import Any

from honly_spec.spec.schema import deref, field_schema, profile_schema, spec_schema


def _type(node: dict[str, Any]) -> str:
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if "anyOf" in node or "oneOf" in node:
        return " or ".join(_type(n) for n in node.get("anyOf", node.get("oneOf", [])))
    kind = node.get("type", "mapping" if "properties" in node else "any")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object":
        return "mapping"
    return kind


def _limits(node: dict[str, Any]) -> str:
    parts = []
    for key, sign in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ):
        if key in node:
            parts.append(f"{sign} {node[key]}")
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _sections(
    root: dict[str, Any],
    node: dict[str, Any],
    title: str,
    out: list[str],
    seen: set[int],
    qualifier: str = "",
) -> None:
    """One table per mapping schema, depth first; each schema object is rendered once.
    Fields of a stage kind carry the kind in their heading (`train` differs for sft and rl)."""
    node = deref(root, node)
    branches = [(qualifier, node)]
    for part in node.get("allOf", []):
        if "then" in part:
            kind = part["if"]["properties"]["kind"]["const"]
            branches.append((f" (kind: {kind})", deref(root, part["then"])))
    for qual, branch in branches:
        props = branch.get("properties", {})
        if id(branch) in seen or not props or (branch is node and len(branches) > 1):
            continue
        seen.add(id(branch))
        heading = title + qual
        out.append(f"### `{heading}`\n")
        if branch.get("description"):
            out.append(branch["description"] + "\n")
        out.append("| field | type | default | description |")
        out.append("|---|---|---|---|")
        required = set(branch.get("required", []))
        for key, sub in props.items():
            sub = field_schema(root, sub)
            name = f"`{key}`" + (" **required**" if key in required else "")
            default = f"`{json.dumps(sub['default'])}`" if "default" in sub else ""
            desc = sub.get("description", "")
            if sub.get("x-honly-runtime"):
                desc += " *(runtime: not part of any stage key)*"
            limits = _limits(sub)
            kind = _type(sub) + (f" ({limits})" if limits else "")
            out.append(f"| {name} | {_cell(kind)} | {_cell(default)} | {_cell(desc)} |")
        out.append("")
        for key, sub in props.items():
            _sections(root, sub, f"{title}.{key}".lstrip("."), out, seen, qual)
        extra = branch.get("additionalProperties")
        if isinstance(extra, dict):
            _sections(root, extra, f"{title}.<name>", out, seen, qual)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and not node.get("properties"):
        _sections(root, extra, f"{title}.<name>".lstrip("."), out, seen, qualifier)


def render() -> str:
    out = [
        "<!-- Generated from schemas/*.json by `python -m honly_spec.spec.reference`; "
        "do not edit by hand. -->",
        "# honly spec reference",
        "",
        "Every mapping rejects unknown keys. `<name>` stands for a name you choose (a data "
        "source, a stage, a reward scorer). Fields marked *runtime* change how a stage runs, "
        "never what it produces, so they are not part of any stage key.",
        "",
        "## Spec (`honly: 1`)",
        "",
    ]
    spec = spec_schema()
    _sections(spec, spec, "", out, set())
    out += ["## Runtime profile (`honly_profile: 1`)", ""]
    profile = profile_schema()
    _sections(profile, profile, "", out, set())
    return _drop_needless_qualifiers("\n".join(out)).rstrip() + "\n"


def _drop_needless_qualifiers(text: str) -> str:
    """Keep `(kind: …)` only on headings whose path has several variants."""
    headings = re.findall(r"^### `(.*?)(?: \(kind: \w+\))?`$", text, flags=re.M)
    counts = {h: headings.count(h) for h in headings}

    def fix(match: re.Match[str]) -> str:
        base = match.group(1)
        return match.group(0) if counts.get(base, 0) > 1 else f"### `{base}`"

    text = re.sub(r"^### `(.*?) \(kind: \w+\)`$", fix, text, flags=re.M)
    return text.replace("### ``", "### (top level)")


if __name__ == "__main__":
    print(render(), end="")
