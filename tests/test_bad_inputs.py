"""Bad input gets a clear one-line error, exit 2 and no traceback: the corpus in
tests/bad_inputs/, and property tests that no input makes the loader, the merge or the
validator raise anything but honly's own `SpecError`."""

from __future__ import annotations

import contextlib
import json
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from honly_spec.spec.check import check_spec
from honly_spec.spec.errors import SpecError
from honly_spec.spec.loader import load_spec
from honly_spec.spec.yaml_source import parse_yaml
from tests.conftest import REPO

CORPUS = REPO / "tests" / "bad_inputs"
EXPECTED = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))


def test_the_corpus_is_large_and_every_case_has_an_expectation() -> None:
    cases = sorted(p.name for p in CORPUS.glob("*.yaml"))
    assert cases == sorted(EXPECTED)
    assert len(cases) >= 40


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_input_is_refused_with_its_message(case, honly, monkeypatch) -> None:
    monkeypatch.chdir(CORPUS)
    if case.startswith("profile_"):
        spec = REPO / "specs" / "ci_smoke.yaml"
        result = honly("plan", spec, "--profile", case, "--out", CORPUS / ".." / ".badplan")
    else:
        result = honly("validate", case)
    assert result.code == 2, result.out
    lines = [line.replace(str(REPO), "<repo>") for line in result.err.strip().splitlines()]
    count = len(EXPECTED[case])
    assert lines == [*EXPECTED[case], f"{count} problem{'s' if count > 1 else ''} found"]
    assert not (REPO / "tests" / ".badplan").exists(), "a refused plan writes nothing"


# --- property tests ---------------------------------------------------------------------

KEYS = ["honly", "name", "model", "base", "data", "path", "format", "stages", "sft", "rl",
        "kind", "after", "mix", "rows", "fraction", "weight", "train", "lora", "r", "eval",
        "suites", "refusal", "sets", "matrix", "seed", "extends", "prompts", "reward",
        "generate", "outputs", "from", "enabled", "judge", "provider"]  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["sft", "rl", "generate", "embedded:smollm2-135m-instruct", "../x.jsonl",
                     "chat", "prompt", "base", "1", "sft.character_answers"]),
)  # fmt: skip
TREES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=5),
    ),
    max_leaves=30,
)
YAML_NOISE = st.text(alphabet=string.printable + "\t\u00e9\u2028&*!|>%@`", max_size=200)
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


@FAST
@given(YAML_NOISE)
def test_the_yaml_reader_raises_only_spec_errors(text) -> None:
    with contextlib.suppress(SpecError):
        parse_yaml(text, "noise.yaml")


def _dump(tree) -> str:
    return yaml.safe_dump(tree, allow_unicode=True) if tree is not None else ""


@FAST
@given(tree=TREES, mutation=st.sampled_from(["", "!delete", "!replace", "&a", "*a", "\t", ":"]))
def test_loading_and_validating_any_tree_raises_only_spec_errors(tmp_path, tree, mutation):
    """Random trees of spec-like keys, some with a marker, tab or anchor spliced in."""
    text = _dump({"honly": 1, "name": "p", "stages": tree} if tree else tree)
    if mutation and ": " in text:
        head, tail = text.split(": ", 1)
        text = f"{head}: {mutation} {tail}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(text, encoding="utf-8")
    with contextlib.suppress(SpecError):
        check_spec(spec)


@FAST
@given(parent=TREES, child=TREES)
def test_merging_any_child_onto_any_parent_raises_only_spec_errors(tmp_path, parent, child):
    (tmp_path / "parent.yaml").write_text(_dump(parent), encoding="utf-8")
    body = _dump(child if isinstance(child, dict) else {"stages": child})
    (tmp_path / "child.yaml").write_text("extends: parent.yaml\n" + body, encoding="utf-8")
    with contextlib.suppress(SpecError):
        load_spec(Path(tmp_path / "child.yaml"))
