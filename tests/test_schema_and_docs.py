"""The schemas are the single source of truth: complete, strict, documented, in sync."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from honly_spec.spec import reference
from honly_spec.spec.schema import load_schema, walk_fields
from tests.conftest import REPO

SCHEMAS = ["honly-spec.v1.json", "honly-profile.v1.json"]


def _objects(node: Any, path: str = "") -> list[tuple[str, dict]]:
    out = []
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            out.append((path, node))
        for key, value in node.items():
            out.extend(_objects(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_objects(value, f"{path}/{index}"))
    return out


@pytest.mark.parametrize("name", SCHEMAS)
def test_schema_is_valid_2020_12(name: str) -> None:
    Draft202012Validator.check_schema(load_schema(name))


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_mapping_is_closed(name: str) -> None:
    """Fail closed: each mapping either forbids extra keys or types them explicitly.
    Stage mappings dispatch on `kind` to closed per-kind schemas."""
    for path, node in _objects(load_schema(name)):
        if path.endswith("/if") or path.endswith("/if/properties"):
            continue
        if node.get("properties") and "allOf" not in node:
            extra = node.get("additionalProperties")
            assert extra is False or (isinstance(extra, dict) and "type" in extra), path


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_field_has_a_description(name: str) -> None:
    schema = load_schema(name)
    missing = [path for path, sub in walk_fields(schema) if not sub.get("description")]
    assert missing == []


def test_reference_doc_is_current() -> None:
    committed = (REPO / "docs" / "spec-reference.md").read_text(encoding="utf-8")
    assert committed == reference.render(), "run `make reference` and commit docs/spec-reference.md"


def test_examples_declare_the_schema_for_editors() -> None:
    for spec in (REPO / "specs").rglob("*.yaml"):
        first = spec.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), spec
        target = (spec.parent / first.split("$schema=")[1]).resolve()
        assert json.loads(target.read_text())["$id"].endswith("honly-spec.v1.json")


def test_cli_paths_import_no_heavy_modules() -> None:
    """validate/plan/diff must stay fast: no torch, mlflow, pandas, numpy, transformers."""
    code = (
        "import sys, runpy\n"
        "sys.argv = ['honly', 'plan', 'specs/mitigated.yaml', '--out', sys.argv[1]]\n"
        "from honly_spec import cli\n"
        "assert cli.main(sys.argv[1:]) == 0\n"
        "heavy = {'torch', 'mlflow', 'pandas', 'numpy', 'transformers', 'vllm', 'rich'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", code, tmp],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    assert out.stdout.strip().splitlines()[-1] == "[]"
