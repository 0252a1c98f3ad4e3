"""Spec paths: tuples of mapping keys (str) and list indices (int), written dotted."""

from __future__ import annotations

from typing import Any

SpecPath = tuple[str | int, ...]


def format_path(path: SpecPath) -> str:
    """`("stages", "sft", "mix")` → `stages.sft.mix`; list indices as `[0]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def parse_path(text: str) -> SpecPath:
    """`stages.sft.mix.character.fraction` → tuple; an all-digit part is a list index."""
    parts: list[str | int] = []
    for raw in text.split("."):
        part = raw.strip()
        parts.append(int(part) if part.isdigit() else part)
    return tuple(parts)


def get_path(tree: Any, path: SpecPath, default: Any = None) -> Any:
    """The value at `path`, or `default` when any step is missing."""
    node = tree
    for part in path:
        if (isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node)) or (
            isinstance(part, str) and isinstance(node, dict) and part in node
        ):
            node = node[part]
        else:
            return default
    return node


def flatten(tree: Any, prefix: SpecPath = ()) -> dict[SpecPath, Any]:
    """Leaves of a nested dict/list tree by path. Empty containers count as leaves."""
    if isinstance(tree, dict) and tree:
        out: dict[SpecPath, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, (*prefix, key)))
        return out
    if isinstance(tree, list) and tree and any(isinstance(v, dict | list) for v in tree):
        out = {}
        for index, value in enumerate(tree):
            out.update(flatten(value, (*prefix, index)))
        return out
    return {prefix: tree}


MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()


def diff_trees(old: Any, new: Any) -> list[tuple[SpecPath, Any, Any]]:
    """Changed leaves between two trees as (path, old, new), sorted by path; `MISSING` marks
    an absent side. A subtree present on one side only is reported once, at its root."""
    flat_old, flat_new = flatten(old), flatten(new)
    out: dict[SpecPath, tuple[Any, Any]] = {}
    for path in flat_old.keys() | flat_new.keys():
        before = flat_old.get(path, MISSING)
        after = flat_new.get(path, MISSING)
        if before == after and before is not MISSING:
            continue
        if before is MISSING or after is MISSING:
            path = _highest_absent(old if before is MISSING else new, path)
            before, after = get_path(old, path, MISSING), get_path(new, path, MISSING)
        out[path] = (before, after)
    return [(p, *out[p]) for p in sorted(out, key=format_path)]


def _highest_absent(tree: Any, path: SpecPath) -> SpecPath:
    for end in range(1, len(path) + 1):
        if get_path(tree, path[:end], MISSING) is MISSING:
            return path[:end]
    return path
