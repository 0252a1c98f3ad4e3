"""The strict YAML reader: core schema, positions, and every way a file can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from honly_spec.spec.errors import Pos, SpecError
from honly_spec.spec.yaml_source import DELETE, Replace, load_yaml_file, parse_yaml


def one_error(text: str) -> str:
    with pytest.raises(SpecError) as caught:
        parse_yaml(text, "f.yaml")
    assert len(caught.value.diagnostics) == 1
    return caught.value.diagnostics[0].render()


def test_core_schema_scalars() -> None:
    doc = parse_yaml(
        "a: yes\nb: on\nc: 1e-5\nd: 2.0e-4\ne: 0x10\nf: true\ng: ~\nh: 2026-01-01\ni: '3'\n", "f"
    )
    assert doc.data == {
        "a": "yes",
        "b": "on",
        "c": 1e-5,
        "d": 2e-4,
        "e": 16,
        "f": True,
        "g": None,
        "h": "2026-01-01",
        "i": "3",
    }


def test_positions_of_values_and_keys() -> None:
    doc = parse_yaml("top:\n  inner: 5\n  list: [a, b]\n", "f.yaml")
    assert doc.positions[("top", "inner")] == Pos("f.yaml", 2, 10)
    assert doc.key_positions[("top", "inner")] == Pos("f.yaml", 2, 3)
    assert doc.positions[("top", "list", 1)] == Pos("f.yaml", 3, 13)


def test_duplicate_key_is_an_error_with_both_lines() -> None:
    message = one_error("a: 1\nb: 2\na: 3\n")
    assert message.startswith("f.yaml:3:1: a: duplicate key `a` (first set at line 1)")


def test_every_duplicate_is_reported() -> None:
    with pytest.raises(SpecError) as caught:
        parse_yaml("a: 1\na: 2\nm: {x: 1, x: 2}\n", "f")
    assert len(caught.value.diagnostics) == 2


def test_tab_indentation_explained() -> None:
    assert "YAML indents with spaces only" in one_error("a:\n\tb: 1\n")


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system ['true']\n",
        "a: !!python/name:os.system\n",
        "a: !!binary aGVsbG8=\n",
        "a: !!set {x, y}\n",
        "a: !custom 3\n",
    ],
)
def test_unsafe_and_unknown_tags_rejected(text: str) -> None:
    assert "unsupported YAML tag" in one_error(text)


def test_alias_bomb_is_bounded() -> None:
    lines = ["a: &a [1,1,1,1,1,1,1,1,1,1]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
    assert "expands to more than" in one_error("\n".join(lines) + "\n")


def test_small_aliases_still_work() -> None:
    doc = parse_yaml("base: &b {lr: 1}\nother: *b\n", "f")
    assert doc.data["other"] == {"lr": 1}


def test_markers() -> None:
    doc = parse_yaml("a: !replace {x: 1}\nb: !delete\nc: !replace [1]\n", "f")
    assert doc.data == {"a": Replace({"x": 1}), "b": DELETE, "c": Replace([1])}
    assert "takes no value" in one_error("a: !delete 3\n")
    assert "goes on a mapping or a list" in one_error("a: !replace 3\n")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: [1, 2\n", "YAML syntax error"),
        ("a: b: c\n", "YAML syntax error"),
        ("a: 1\n---\nb: 2\n", "YAML syntax error"),
        ("? [1, 2]\n: x\n", "mapping keys must be plain strings"),
        ("a: !!int x\n", "not a valid !!int"),
        ("a: \x00\n", "NUL"),
    ],
)
def test_malformed_documents(text: str, fragment: str) -> None:
    assert fragment in one_error(text)


def test_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    for path, fragment in [
        (bad, "not valid UTF-8"),
        (tmp_path / "missing.yaml", "file not found"),
        (tmp_path, "is a directory"),
    ]:
        with pytest.raises(SpecError, match=fragment):
            load_yaml_file(path)


def test_empty_document_is_none() -> None:
    assert parse_yaml("# only a comment\n", "f").data is None
