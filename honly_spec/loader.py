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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honly_spec.errors import Diagnostic, Pos, SpecError, nearest_pos
from honly_spec.matrix import Cell
from honly_spec.paths import SpecPath, format_path, parse_path
from honly_spec.schema import apply_defaults, marked_paths, matches, spec_schema
from honly_spec.yaml_source import DELETE, Document, Replace, load_yaml_file, parse_yaml

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
class Layer:
    """One contributor to the resolved spec, lowest precedence first."""

    label: str
    doc: Document


@dataclass
class LoadedSpec:
    """A resolved spec and where each of its values came from."""

    file: Path
    data: dict[str, Any]
    origins: dict[SpecPath, Pos]
    key_origins: dict[SpecPath, Pos]
    layers: list[Layer] = field(default_factory=list)
    cell: Cell | None = None

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
            if path in layer.doc.positions:
                found, value = _lookup(layer.doc.data, path)
                if found:
                    out.append((layer.doc.positions[path], value))
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
            if path == ("model", "base") and node.startswith(LOCAL_MODEL_PREFIXES):
                return str((base / Path(node).expanduser()).resolve())
        return node

    doc.data = visit(doc.data, ())


def _merge(
    parent: Any, child: Any, path: SpecPath, child_doc: Document, errors: list[Diagnostic]
) -> Any:
    """Deep-merge `child` onto `parent`, honouring `!replace` and `!delete` markers."""
    if isinstance(child, Replace):
        return _merge(None, child.value, path, child_doc, errors)
    if isinstance(child, dict):
        out = copy.deepcopy(parent) if isinstance(parent, dict) else {}
        for key, value in child.items():
            sub = (*path, key)
            if value is DELETE:
                if key in out:
                    del out[key]
                else:
                    errors.append(
                        Diagnostic(
                            child_doc.pos(sub),
                            sub,
                            "nothing to delete: the `extends` parent does not set "
                            f"`{format_path(sub)}`",
                        )
                    )
                continue
            out[key] = _merge(out.get(key), value, sub, child_doc, errors)
        return out
    if isinstance(child, list):
        return [_merge(None, v, (*path, i), child_doc, errors) for i, v in enumerate(child)]
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
) -> tuple[Any, dict[SpecPath, Pos], dict[SpecPath, Pos], list[Layer]]:
    """Load `file` and its ancestors; return merged data, origins, key origins and layers."""
    real = file.resolve()
    if real in stack:
        cycle = " → ".join(display_path(p) for p in (*stack[stack.index(real) :], real))
        raise SpecError([Diagnostic(extends_pos, ("extends",), f"`extends` cycle: {cycle}")])
    if not file.is_file() and extends_pos is not None:
        raise SpecError(
            [
                Diagnostic(
                    extends_pos,
                    ("extends",),
                    f"`extends` target not found: {display_path(file)}",
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
    layer = Layer(doc.source, doc)
    parent_ref = doc.data.get("extends")
    errors: list[Diagnostic] = []
    if parent_ref is None or not isinstance(parent_ref, str):
        merged = _merge(None, doc.data, (), doc, errors)
        if errors:
            raise SpecError(errors)
        return merged, dict(doc.positions), dict(doc.key_positions), [layer]
    p_data, p_origins, p_keys, p_layers = _load_chain(
        Path(parent_ref), (*stack, real), doc.pos(("extends",))
    )
    p_data.pop("extends", None)
    merged = _merge(p_data, doc.data, (), doc, errors)
    if errors:
        raise SpecError(errors)
    origins = _origins_after_merge(merged, p_origins, doc.positions)
    key_origins = {**p_keys, **doc.key_positions}
    return merged, origins, key_origins, [*p_layers, layer]


def _apply_override(
    data: dict[str, Any], text: str, origins: dict[SpecPath, Pos], cwd: Path, source: str = "--set"
) -> Layer:
    """Apply one `dotted.path=value` (value read as YAML) and record its provenance."""
    label = f"{source} {text}"
    where = Pos(label)
    if "=" not in text:
        raise SpecError([Diagnostic(where, (), "expected `--set dotted.path=value`")])
    raw_path, raw_value = text.split("=", 1)
    path = parse_path(raw_path)
    if not raw_path.strip() or any(part == "" for part in path):
        raise SpecError([Diagnostic(where, (), f"`{raw_path}` is not a dotted spec path")])
    layer_doc = Document(label, _set_plain(path, parse_yaml(raw_value, label).data))
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
    return Layer(label, layer_doc)


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
    data, origins, key_origins, layers = _load_chain(file, (), None)
    data.pop("extends", None)
    if cell is not None:
        data.pop("matrix", None)
        for text in cell.overrides():
            layers.append(_apply_override(data, text, origins, Path.cwd(), "matrix cell:"))
    for text in overrides:
        layers.append(_apply_override(data, text, origins, Path.cwd()))
    defaulted = apply_defaults(spec_schema(), spec_schema(), data)
    _record_defaults(defaulted, data, origins, ())
    return LoadedSpec(file, defaulted, origins, key_origins, layers, cell)


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
