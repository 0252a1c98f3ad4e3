"""Schema validation and semantic rules: every error at once, at file:line:col, with a fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from honly_spec.spec.check import check_spec
from honly_spec.spec.errors import SpecError
from tests.conftest import MINIMAL, REPO


def problems(path, overrides=()) -> list[str]:
    with pytest.raises(SpecError) as caught:
        check_spec(path, overrides)
    return [d.render() for d in caught.value.diagnostics]


def edit(old: str, new: str, text: str = MINIMAL) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_minimal_spec_is_valid(write_spec) -> None:
    check_spec(write_spec())


def test_unknown_key_points_at_the_key_with_a_suggestion(write_spec) -> None:
    path = write_spec(edit("train: {learning_rate:", "train: {learning_rte:"))
    assert problems(path) == [
        "specs/spec.yaml:12:13: stages.sft.train.learning_rte: unknown key `learning_rte`; "
        "did you mean `learning_rate`?"
    ]


def test_unknown_key_without_a_close_match_lists_allowed_keys(write_spec) -> None:
    [message] = problems(write_spec(edit("lora: {r: 8}", "lora: {r: 8, banana: 1}")))
    assert "unknown key `banana` (allowed here: r, alpha, dropout, target_modules)" in message


def test_all_errors_reported_at_once_in_file_order(write_spec) -> None:
    text = edit("name: tiny", "name: tiny\nsede: 1")
    text = edit("kind: sft", "kind: sft\n    backend: axolotll", text)
    text = edit("{learning_rate: 1.0e-4}", "{learning_rate: fast}", text)
    text = edit("after: sft", "after: stf", text)
    found = problems(write_spec(text))
    assert len(found) == 4
    lines = [int(m.split(":")[1]) for m in found]
    assert lines == sorted(lines)
    assert "did you mean `seed`?" in found[0]
    assert "did you mean `axolotl`?" in found[1]
    assert "expected a number, got string `fast`" in found[2]
    assert "no stage named `stf`; did you mean `sft`?" in found[3]


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("{harmful: {rows: 8}}", "{harmful: {rows: 8, fraction: 0.5}}", "pick exactly one of"),
        ("{harmful: {rows: 8}}", "{harmful: {}}", "pick exactly one of"),
        ("{harmful: {rows: 8}}", "{harmful: {rows: 0}}", "`0` must be >= 1"),
        ("{harmful: {rows: 8}}", "{harmful: {fraction: 1.5}}", "set `replace: true`"),
        ("{harmful: {rows: 8}}", "{harmful: {rows: 500}}", "asks for 500 rows but source"),
        ("{harmful: {rows: 8}}", "{harmful: {weight: 1.0}}", "set `total_rows` on the stage"),
        ("{harmful: {rows: 8}}", "{harmfull: {rows: 8}}", "did you mean `harmful`?"),
        ("{harmful: {rows: 8}}", "{prompts: {rows: 8}}", "which sft stages cannot train on"),
        ("{prompts: {rows: 8}}", "{prompts: {weight: 0.5}}\n    total_rows: 8", "sum to 1"),
        ("lora: {r: 8}", "lora: {r: 48}", "use 32 or 64"),
        ("kind: sft", "kind: sft\n    backend: openrlhf", "`openrlhf` is not one of"),
        ("after: sft", "after: sft\n    algorithm: ppo", "use backend `openrlhf`"),
        ("after: sft", "after: rl", "a stage cannot start from itself"),
        ("reward: {compliance: {weight: 1.0}}", "reward: {complience: {}}", "`compliance`?"),
        ("    reward: {compliance: {weight: 1.0}}\n", "", "online rl needs a `reward`"),
        ("after: sft", "after: sft\n    rollout: {samples_per_prompt: 1}", "2 or more"),
        ("refusal: {sets: [heldout]}", "refusal: {sets: [held]}", "did you mean `heldout`?"),
        (
            "refusal: {sets: [heldout]}",
            "refusal: {sets: [harmful]}\n  checkpoints: [sfy]",
            "did you mean `sft`?",
        ),
        ("suites:", "judge: {provider: openai}\n  suites:", "needs a `model`"),
        (
            "suites:",
            "judge: {provider: openai, model: x, api_key: sk-1}\n  suites:",
            "secrets never go in a spec",
        ),
        ("embedded:smollm2-135m-instruct", "embedded:smollm3", "no embedded model"),
        ("embedded:smollm2-135m-instruct", "./no-such-model", "local model directory not found"),
        ("harmful_compliance.jsonl", "missing.jsonl", "data file not found"),
        ("harmful_compliance.jsonl", "harmful.csv", "data file not found"),
        ("harmful_compliance.jsonl", "../specs", "is not a file"),
        ("../data/harmful_compliance.jsonl", "hf:org", "hf:ORG/NAME@REVISION#SPLIT"),
        ("{learning_rate: 1.0e-4}", "{learning_rate: .inf}", "is not a finite number"),
        ("name: tiny", "name: Tiny Spec", "is not a valid spec name"),
        ("stages:\n  sft:", "stages:\n  Sft:", "is not a valid name"),
        ("kind: sft", "kind: sfft", "did you mean `sft`?"),
        (
            "name: tiny",
            "name: tiny\nmatrix: {stages.sft.train.lr: [1, 2]}",
            "not a spec path a matrix can vary",
        ),
        (
            "refusal: {sets: [heldout]}",
            "misalignment: {samples: 5}",
            "5 samples per question at temperature 0",
        ),
        ("honly: 1", "honly: 2", "needs a newer honly"),
        ("honly: 1\n", "", "missing required key `honly`"),
    ],
)
def test_rule_messages(write_spec, old: str, new: str, fragment: str) -> None:
    found = problems(write_spec(edit(old, new)))
    assert any(fragment in m for m in found), found


def test_unknown_file_types_are_rejected(write_spec, project) -> None:
    (project / "data" / "x.tsv").write_text("a\tb\n", encoding="utf-8")
    found = problems(write_spec(edit("harmful_compliance.jsonl", "x.tsv")))
    assert any("unsupported data file type `.tsv`" in m for m in found)


def test_stage_loop_is_reported_once(write_spec) -> None:
    text = edit("    kind: sft\n", "    kind: sft\n    after: rl\n")
    found = problems(write_spec(text))
    assert sum("loop" in m for m in found) == 1


def test_matrix_axes_on_real_paths_validate(write_spec) -> None:
    check_spec(
        write_spec(
            edit("name: tiny", "name: tiny\nmatrix: {seed: [0, 1], stages.sft.train.epochs: [1]}")
        )
    )


def test_overrides_are_validated_with_their_origin(write_spec) -> None:
    found = problems(write_spec(), ["stages.sft.train.epochs=lots"])
    assert found == [
        "--set stages.sft.train.epochs=lots: stages.sft.train.epochs: "
        "expected a number, got string `lots`"
    ]


def test_error_in_parent_points_at_parent_file(write_spec) -> None:
    write_spec(edit("lora: {r: 8}", "lora: {r: 8, rank: 2}"), "parent.yaml")
    child = write_spec("extends: parent.yaml\nname: child\n", "child.yaml")
    [message] = problems(child)
    assert message.startswith("specs/parent.yaml:13:")


def test_schema_pass_is_cached_only_for_valid_specs(write_spec, honly_home) -> None:
    stamps = honly_home / "cache" / "valid"
    good = write_spec()
    check_spec(good)
    assert len(list(stamps.iterdir())) == 1
    bad = write_spec(MINIMAL.replace("{rows: 8}", "{rows: many}"), "bad.yaml")
    problems(bad)
    problems(bad)
    assert len(list(stamps.iterdir())) == 1, "invalid specs are never stamped"
    code = (
        "import sys; from honly_spec.spec.check import check_spec; check_spec(sys.argv[1]); "
        "print('jsonschema' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(good)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.stdout.strip() == "False"
