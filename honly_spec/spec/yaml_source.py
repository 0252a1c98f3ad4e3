"""Strict YAML reading with a position for every node.

Why not `yaml.safe_load`: it silently keeps the last of two duplicate keys, reads `yes`/`no`/
`on`/`off` as booleans and `1e-5` as a string (YAML 1.1), and forgets where each value came
from. Here we let PyYAML's (C) parser compose a node graph, then build plain Python values
ourselves with the YAML 1.2 core schema, recording the position of every value and key.

Accepted tags: the core ones (str, int, float, bool, null, map, seq) and two honly markers
used with `extends`: `!replace` (on a mapping or list: replace the parent's value instead of
merging into it) and `!delete` (remove the parent's value). Anything else, including
`!!python/...`, is an error. Alias expansion is bounded so an "alias bomb" cannot exhaust
memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from honly_spec.spec.errors import Diagnostic, Pos, SpecError, nearest_pos
from honly_spec.spec.paths import SpecPath

MAX_NODES = 200_000
REPLACE_TAG = "!replace"
DELETE_TAG = "!delete"
_CORE = "tag:yaml.org,2002:"


class Replace:
    """Marker from `!replace`: this value replaces the parent's instead of merging."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Replace) and other.value == self.value

    def __repr__(self) -> str:
        return f"Replace({self.value!r})"


class _Delete:
    """Marker from `!delete`: remove this key from the parent's value."""

    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()


class _CoreResolver(yaml.resolver.BaseResolver):
    """YAML 1.2 core schema: only true/false are booleans, `1e-5` is a float, no timestamps."""


_CoreResolver.add_implicit_resolver(
    _CORE + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CoreResolver.add_implicit_resolver(
    _CORE + "int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_CoreResolver.add_implicit_resolver(
    _CORE + "float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
_CoreResolver.add_implicit_resolver(
    _CORE + "null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)

try:
    from yaml.cyaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    CParser = None

if CParser is not None:

    class _Composer(CParser, _CoreResolver):  # type: ignore[misc,valid-type]
        def __init__(self, stream: str):
            CParser.__init__(self, stream)
            _CoreResolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml

    class _Composer(  # type: ignore[no-redef]
        yaml.reader.Reader,
        yaml.scanner.Scanner,
        yaml.parser.Parser,
        yaml.composer.Composer,
        _CoreResolver,
    ):
        def __init__(self, stream: str):
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
            _CoreResolver.__init__(self)


@dataclass
class Document:
    """One parsed YAML file: the value tree and where each path sits in the file.

    `positions[path]` is where the value at `path` starts; `key_positions[path]` is where its
    key is written (used to point at an unknown key rather than at its value)."""

    source: str
    data: Any
    positions: dict[SpecPath, Pos] = field(default_factory=dict)
    key_positions: dict[SpecPath, Pos] = field(default_factory=dict)

    def pos(self, path: SpecPath) -> Pos:
        """The closest recorded position at or above `path`."""
        return nearest_pos(self.positions, path, Pos(self.source))


def read_text(path: Path, label: str | None = None) -> str:
    """Read a UTF-8 text file, turning OS and encoding errors into a diagnostic."""
    shown = label or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([Diagnostic(Pos(shown), (), "file not found")]) from None
    except IsADirectoryError:
        raise SpecError([Diagnostic(Pos(shown), (), "is a directory, expected a file")]) from None
    except OSError as exc:
        raise SpecError([Diagnostic(Pos(shown), (), f"cannot read: {exc.strerror}")]) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(
            [Diagnostic(Pos(shown, line, 1), (), "not valid UTF-8 text; save the file as UTF-8")]
        ) from None


def parse_yaml(text: str, source: str) -> Document:
    """Parse one YAML document from `text`; `source` names it in diagnostics."""
    if "\x00" in text:
        raise SpecError([Diagnostic(Pos(source), (), "contains NUL bytes; not a text file")])
    composer = _Composer(text)
    try:
        node = composer.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = Pos(source, mark.line + 1, mark.column + 1) if mark else Pos(source)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        context = exc.context_mark
        if context and mark and context.line != mark.line:
            problem += f" (it starts at line {context.line + 1}, column {context.column + 1})"
        if mark and _char_at(text, mark.line, mark.column) == "\t":
            problem += " (a tab: YAML indents with spaces only)"
        raise SpecError([Diagnostic(pos, (), f"YAML syntax error: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Diagnostic(Pos(source), (), f"YAML error: {exc}")]) from None
    finally:
        composer.dispose()
    doc = Document(source, None)
    if node is None:
        return doc
    builder = _Builder(doc)
    doc.data = builder.build(node, ())
    if builder.errors:
        raise SpecError(builder.errors)
    return doc


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    return lines[line][column : column + 1] if line < len(lines) else ""


def load_yaml_file(path: Path, label: str | None = None) -> Document:
    """Read and parse a YAML file; every problem is a `SpecError`."""
    return parse_yaml(read_text(path, label), label or str(path))


class _Builder:
    """Turns a composed node graph into plain values, recording positions and problems."""

    def __init__(self, doc: Document):
        self.doc = doc
        self.errors: list[Diagnostic] = []
        self.count = 0

    def _pos(self, node: yaml.Node) -> Pos:
        mark = node.start_mark
        return Pos(self.doc.source, mark.line + 1, mark.column + 1)

    def _error(self, node: yaml.Node, path: SpecPath, message: str) -> None:
        self.errors.append(Diagnostic(self._pos(node), path, message))

    def build(self, node: yaml.Node, path: SpecPath) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            if self.count == MAX_NODES + 1:
                self._error(
                    node,
                    path,
                    f"document expands to more than {MAX_NODES} values (aliases nested too "
                    "deeply?); write the values out or use `extends`",
                )
            return None
        self.doc.positions.setdefault(path, self._pos(node))
        tag = node.tag
        if tag == REPLACE_TAG:
            if isinstance(node, yaml.ScalarNode):
                self._error(node, path, "`!replace` goes on a mapping or a list")
                return None
            return Replace(self._build_collection(node, path))
        if tag == DELETE_TAG:
            if not isinstance(node, yaml.ScalarNode) or node.value not in ("", "~", "null"):
                self._error(node, path, "`!delete` takes no value: write `key: !delete`")
            return DELETE
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            expected = _CORE + ("map" if isinstance(node, yaml.MappingNode) else "seq")
            if tag != expected:
                self._unsupported_tag(node, path)
                return None
            return self._build_collection(node, path)
        return self._scalar(node, path)

    def _build_collection(self, node: yaml.Node, path: SpecPath) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        out: dict[str, Any] = {}
        first_seen: dict[str, Pos] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self._error(key_node, path, "mapping keys must be plain strings")
                continue
            key = str(key_node.value)
            key_pos = self._pos(key_node)
            if key in first_seen:
                earlier = first_seen[key]
                self._error(
                    key_node,
                    (*path, key),
                    f"duplicate key `{key}` (first set at line {earlier.line}); "
                    "YAML readers would silently keep only one: remove one of them",
                )
                continue
            first_seen[key] = key_pos
            self.doc.key_positions[(*path, key)] = key_pos
            out[key] = self.build(value_node, (*path, key))
        return out

    def _unsupported_tag(self, node: yaml.Node, path: SpecPath) -> None:
        tag = node.tag.replace(_CORE, "!!")
        self._error(
            node,
            path,
            f"unsupported YAML tag `{tag}`: honly reads plain data only "
            f"(allowed: `{REPLACE_TAG}`, `{DELETE_TAG}` and the core types)",
        )

    def _scalar(self, node: yaml.ScalarNode, path: SpecPath) -> Any:
        text = node.value
        kind = node.tag[len(_CORE) :] if node.tag.startswith(_CORE) else None
        try:
            if kind == "str":
                return text
            if kind == "null":
                if text not in ("", "~", "null", "Null", "NULL"):
                    raise ValueError
                return None
            if kind == "bool":
                if text.lower() not in ("true", "false"):
                    raise ValueError
                return text.lower() == "true"
            if kind == "int":
                return int(text, 0) if text[:2] in ("0o", "0x") else int(text)
            if kind == "float":
                lowered = text.lower()
                if lowered.lstrip("+-") == ".inf":
                    return float("-inf") if lowered.startswith("-") else float("inf")
                if lowered == ".nan":
                    return float("nan")
                return float(text)
        except ValueError:
            self._error(node, path, f"`{text}` is not a valid !!{kind}")
            return None
        self._unsupported_tag(node, path)
        return None
