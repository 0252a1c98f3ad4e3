"""Load a spec: its `extends` chain, `--set` overrides and schema defaults, with provenance.

Precedence, lowest first: schema defaults < the `extends` parent (recursively) < the spec
file < `--set` overrides. Mappings merge key by key (named items such as stages, sources and
reward terms merge by name); lists and scalars replace; `!replace` makes a mapping replace
the parent's instead of merging; `!delete` removes the parent's key. Every value in the
result remembers the file position (or override) that set it, so diagnostics point at the
right file and `honly plan --explain PATH` can show the whole history of a value.

Relative file paths are resolved against the file that writes them (overrides: against the
working directory), so a child spec in another folder can extend a parent safely.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honly_spec.spec.errors import Diagnostic, Pos, SpecError, nearest_pos
from honly_spec.spec.matrix import PAIRED, Cell
from honly_spec.spec.paths import SpecPath, format_path, parse_path
from honly_spec.spec.schema import apply_defaults, marked_paths, matches, spec_schema
from honly_spec.spec.yaml_source import DELETE, Document, Replace, load_yaml_file, parse_yaml

DEFAULT_POS = Pos("(schema default)")
LOCAL_MODEL_PREFIXES = ("/", "./", "../", "~")


def display_path(path: Path | str) -> str:
    """A path as users should read it: relative to the working directory when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass
class LoadedSpec:
    """A resolved spec and where each of its values came from."""

    file: Path
    data: dict[str, Any]
    origins: dict[SpecPath, Pos]
    key_origins: dict[SpecPath, Pos]
    layers: list[Document] = field(default_factory=list)  # every contributor, lowest first
    cell: Cell | None = None
    deleted: dict[SpecPath, Pos] = field(default_factory=dict)  # where `!delete` removed a path

    @property
    def label(self) -> str:
        return display_path(self.file)

    @property
    def run_name(self) -> str:
        """The spec name, or the matrix cell's name (`spec/axis-value/...`)."""
        return self.cell.name if self.cell else self.data["name"]

    def pos(self, path: SpecPath) -> Pos:
        """Position of the value at `path`, or of its closest ancestor that has one."""
        return nearest_pos(self.origins, path, Pos(self.label))

    def key_pos(self, path: SpecPath) -> Pos:
        """Position of the key that introduces `path` (falls back to the value's position)."""
        return self.key_origins.get(path) or self.pos(path)

    def history(self, path: SpecPath) -> list[tuple[Pos, Any]]:
        """Every layer that wrote `path`, lowest precedence first, with the value it wrote."""
        out = []
        for layer in self.layers:
            if path in layer.positions:
                found, value = _lookup(layer.data, path)
                if found:
                    out.append((layer.positions[path], value))
        return out


def _lookup(tree: Any, path: SpecPath) -> tuple[bool, Any]:
    node = tree
    for part in path:
        if isinstance(node, Replace):
            node = node.value
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            node = node[part]
        else:
            return False, None
    return True, _plain(node)


def _plain(value: Any) -> Any:
    """Strip `!replace` wrappers (a value read from one layer, for display)."""
    if isinstance(value, Replace):
        return _plain(value.value)
    if value is DELETE:
        return "!delete"
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _resolve_file_paths(doc: Document, base: Path) -> None:
    """Make the file-path fields of one document absolute, relative to `base`."""
    patterns = marked_paths(spec_schema(), "x-honly-path")

    def visit(node: Any, path: SpecPath) -> Any:
        if isinstance(node, Replace):
            node.value = visit(node.value, path)
            return node
        if isinstance(node, dict):
            return {k: visit(v, (*path, k)) for k, v in node.items()}
        if isinstance(node, str):
            if any(matches(p, path) for p in patterns) and not node.startswith("hf:"):
                return str((base / Path(node).expanduser()).resolve())
            local_model = path == ("model", "base") or (
                len(path) == 4 and path[0] == "stages" and path[2:] == ("generator", "model")
            )
            if local_model and node.startswith(LOCAL_MODEL_PREFIXES):
                return str((base / Path(node).expanduser()).resolve())
        return node

    doc.data = visit(doc.data, ())


NOTHING_TO_DELETE = {
    "root": "`!delete` removes a key set by an `extends` parent, and this spec has none",
    "replace": "inside `!replace` there is nothing to delete: leave the key out",
}


@dataclass
class _Merge:
    """One child document merged onto its parent: collects problems and what was deleted."""

    doc: Document
    errors: list[Diagnostic] = field(default_factory=list)
    deleted: dict[SpecPath, Pos] = field(default_factory=dict)

    def merge(self, parent: Any, child: Any, path: SpecPath, mode: str) -> Any:
        """Deep-merge `child` onto `parent`. `mode`: `parent` (a parent value may exist),
        `root` (no `extends`), `replace` (under `!replace`)."""
        if isinstance(child, Replace):
            return self.merge(None, child.value, path, "replace" if mode == "parent" else mode)
        if child is DELETE:
            self.errors.append(
                Diagnostic(
                    self.doc.pos(path),
                    path,
                    "`!delete` removes a mapping key: write `key: !delete` in an `extends` child",
                )
            )
            return None
        if isinstance(child, dict):
            out = copy.deepcopy(parent) if isinstance(parent, dict) else {}
            for key, value in child.items():
                sub = (*path, key)
                if value is not DELETE:
                    out[key] = self.merge(out.get(key), value, sub, mode)
                elif key in out:
                    del out[key]
                    self.deleted[sub] = self.doc.pos(sub)
                else:
                    message = NOTHING_TO_DELETE.get(
                        mode,
                        f"nothing to delete: the `extends` parent does not set "
                        f"`{format_path(sub)}`",
                    )
                    self.errors.append(Diagnostic(self.doc.pos(sub), sub, message))
            return out
        if isinstance(child, list):
            return [self.merge(None, v, (*path, i), "replace") for i, v in enumerate(child)]
        return child


def _origins_after_merge(
    tree: Any, parent: dict[SpecPath, Pos], child: dict[SpecPath, Pos], path: SpecPath = ()
) -> dict[SpecPath, Pos]:
    """Who set each path of the merged tree: the child where it wrote the path, else the parent."""
    out: dict[SpecPath, Pos] = {}
    found = child.get(path) or parent.get(path)
    if found is not None:
        out[path] = found
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(_origins_after_merge(value, parent, child, (*path, key)))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            out.update(_origins_after_merge(value, parent, child, (*path, index)))
    return out


def _load_chain(
    file: Path, stack: tuple[Path, ...], extends_pos: Pos | None
) -> tuple[Any, dict[SpecPath, Pos], dict[SpecPath, Pos], list[Document], dict[SpecPath, Pos]]:
    """Load `file` and its ancestors; return merged data, origins, key origins, layers and
    the positions of `!delete` markers that removed a parent's value."""
    real = file.resolve()
    if real in stack:
        cycle = " → ".join(display_path(p) for p in (*stack[stack.index(real) :], real))
        raise SpecError([Diagnostic(extends_pos, ("extends",), f"`extends` cycle: {cycle}")])
    if not file.is_file() and extends_pos is not None:
        problem = "is not a regular file" if file.exists() else "not found"
        raise SpecError(
            [
                Diagnostic(
                    extends_pos, ("extends",), f"`extends` target {problem}: {display_path(file)}"
                )
            ]
        )
    doc = load_yaml_file(file, display_path(file))
    if doc.data is None:
        raise SpecError([Diagnostic(Pos(doc.source), (), "the spec file is empty")])
    if not isinstance(doc.data, dict):
        raise SpecError(
            [Diagnostic(doc.pos(()), (), "a spec is a YAML mapping (`key: value` lines)")]
        )
    _resolve_file_paths(doc, file.resolve().parent)
    parent_ref = doc.data.get("extends")
    if parent_ref is not None and not isinstance(parent_ref, str):
        raise SpecError(
            [
                Diagnostic(
                    doc.pos(("extends",)),
                    ("extends",),
                    "`extends` is the path of one parent spec, written as a string",
                )
            ]
        )
    if parent_ref is None:
        merging = _Merge(doc)
        merged = merging.merge(None, doc.data, (), "root")
        if merging.errors:
            raise SpecError(merging.errors)
        return merged, dict(doc.positions), dict(doc.key_positions), [doc], {}
    p_data, p_origins, p_keys, p_layers, p_deleted = _load_chain(
        Path(parent_ref), (*stack, real), doc.pos(("extends",))
    )
    p_data.pop("extends", None)
    merging = _Merge(doc)
    merged = merging.merge(p_data, doc.data, (), "parent")
    if merging.errors:
        raise SpecError(merging.errors)
    origins = _origins_after_merge(merged, p_origins, doc.positions)
    key_origins = {**p_keys, **doc.key_positions}
    return merged, origins, key_origins, [*p_layers, doc], {**p_deleted, **merging.deleted}


def _apply_override(
    data: dict[str, Any],
    text: str,
    origins: dict[SpecPath, Pos],
    cwd: Path,
    where: Pos | None = None,
) -> Document:
    """Apply one `--set dotted.path=value` (value read as YAML) and record its provenance:
    `where` (default: the `--set` itself); relative file paths resolve against `cwd`."""
    label = f"--set {text}"
    where = where or Pos(label)
    if "=" not in text:
        raise SpecError([Diagnostic(where, (), "expected `--set dotted.path=value`")])
    raw_path, raw_value = text.split("=", 1)
    path = parse_path(raw_path)
    if path[:1] in (("extends",), ("matrix",)):
        raise SpecError(
            [Diagnostic(where, path, f"`{path[0]}` can only be set in the spec file itself")]
        )
    if not raw_path.strip() or any(part == "" for part in path):
        raise SpecError([Diagnostic(where, (), f"`{raw_path}` is not a dotted spec path")])
    parsed = parse_yaml(raw_value, label).data
    if _has_marker(parsed):
        raise SpecError([Diagnostic(where, path, "`!replace` and `!delete` belong in spec files")])
    layer_doc = Document(label, _set_plain(path, parsed))
    _resolve_file_paths(layer_doc, cwd)
    value = _lookup(layer_doc.data, path)[1]
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        nxt = path[depth + 1]
        if isinstance(node, dict) and isinstance(part, str) and node.get(part) is None:
            node[part] = [] if isinstance(nxt, int) else {}
            node = node[part]
        elif (isinstance(node, dict) and isinstance(node.get(part), dict | list)) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            node = node[part]
        else:
            raise SpecError(
                [Diagnostic(where, path[: depth + 1], "cannot set a value below this path")]
            )
    last = path[-1]
    if (isinstance(node, dict) and isinstance(last, str)) or (
        isinstance(node, list) and isinstance(last, int) and last < len(node)
    ):
        node[last] = value
    else:
        raise SpecError([Diagnostic(where, path, "no such list element or mapping key")])
    for existing in [p for p in origins if p[: len(path)] == path]:
        del origins[existing]
    for sub in _subpaths(value, path):
        origins[sub] = where
    for end in range(1, len(path)):
        origins.setdefault(path[:end], where)
    layer_doc.positions = {sub: where for sub in _subpaths(value, path)}
    return layer_doc


def _has_marker(value: Any) -> bool:
    if value is DELETE or isinstance(value, Replace):
        return True
    if isinstance(value, dict):
        return any(_has_marker(v) for v in value.values())
    return isinstance(value, list) and any(_has_marker(v) for v in value)


def _set_plain(path: SpecPath, value: Any) -> Any:
    """A tree holding just `value` at `path` (a list index becomes a mapping key here)."""
    tree: Any = value
    for part in reversed(path):
        tree = {part: tree}
    return tree


def _subpaths(value: Any, path: SpecPath) -> list[SpecPath]:
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(_subpaths(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.extend(_subpaths(item, (*path, index)))
    return out


def load_spec(
    file: str | Path, overrides: list[str] | tuple[str, ...] = (), cell: Cell | None = None
) -> LoadedSpec:
    """Load, merge and default a spec file, as one matrix `cell` if given (its values sit
    between the spec and `--set` overrides). Raises `SpecError` with every problem found."""
    file = Path(file)
    if not file.exists():
        raise SpecError([Diagnostic(Pos(str(file)), (), "spec file not found")])
    data, origins, key_origins, layers, deleted = _load_chain(file, (), None)
    data.pop("extends", None)
    if cell is not None:
        matrix = data.pop("matrix", None) or {}
        for axis, index, value in cell.assignments:
            if axis == PAIRED:  # one variant: every path it names, together
                settings = [
                    (path, v, ("matrix", PAIRED, value, path))
                    for path, v in matrix[PAIRED][value].items()
                ]
            else:
                settings = [(axis, value, ("matrix", axis, index))]
            for path, v, origin in settings:
                where = origins.get(origin) or Pos(f"matrix {axis}")
                text = f"{path}={json.dumps(v)}"
                base = Path(where.file).resolve().parent
                layers.append(_apply_override(data, text, origins, base, where))
    for text in overrides:
        layers.append(_apply_override(data, text, origins, Path.cwd()))
    defaulted = apply_defaults(spec_schema(), spec_schema(), data)
    _imply_generated_formats(defaulted)
    _record_defaults(defaulted, data, origins, ())
    return LoadedSpec(file, defaulted, origins, key_origins, layers, cell, deleted)


def _imply_generated_formats(data: dict[str, Any]) -> None:
    """A `from: STAGE.OUTPUT` source has the format of that output."""
    from honly_spec.data.generate import OUTPUT_FORMATS

    sources = data.get("data")
    for source in sources.values() if isinstance(sources, dict) else []:
        origin = source.get("from") if isinstance(source, dict) else None
        output = origin.split(".", 1)[-1] if isinstance(origin, str) else None
        if output in OUTPUT_FORMATS and "format" not in source:
            source["format"] = OUTPUT_FORMATS[output]


def _record_defaults(
    filled: Any, original: Any, origins: dict[SpecPath, Pos], path: SpecPath
) -> None:
    """Mark values that only exist because of a schema default."""
    if isinstance(filled, dict):
        for key, value in filled.items():
            sub = (*path, key)
            if not isinstance(original, dict) or key not in original:
                for default_path in _subpaths(value, sub):
                    origins.setdefault(default_path, DEFAULT_POS)
            else:
                _record_defaults(value, original[key], origins, sub)
    elif isinstance(filled, list) and isinstance(original, list):
        for index, (value, orig) in enumerate(zip(filled, original, strict=False)):
            _record_defaults(value, orig, origins, (*path, index))


def load_profile_document(file: str | Path) -> Document:
    """Read a runtime profile file (validated by the caller against the profile schema)."""
    file = Path(file)
    doc = load_yaml_file(file, display_path(file))
    if not isinstance(doc.data, dict):
        raise SpecError([Diagnostic(doc.pos(()), (), "a profile is a YAML mapping")])
    return doc
