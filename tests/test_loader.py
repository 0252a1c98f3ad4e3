"""extends chains, merge markers, --set overrides, defaults and provenance."""

from __future__ import annotations

from pathlib import Path

import pytest

from honly_spec.spec.errors import SpecError
from honly_spec.spec.loader import DEFAULT_POS, load_spec

PARENT = """\
honly: 1
name: parent
seed: 3
model: {base: embedded:smollm2-135m-instruct}
data:
  harmful: {path: ../data/harmful_compliance.jsonl, format: chat}
stages:
  sft:
    kind: sft
    mix: {harmful: {rows: 4}}
    train: {learning_rate: 1.0e-4, epochs: 2}
  rl:
    kind: rl
    after: sft
    prompts: {harmful: {rows: 4}}
    reward: {compliance: {weight: 1.0}, character: {weight: 0.5}}
"""


def test_child_merges_by_name_and_overrides(write_spec) -> None:
    write_spec(PARENT, "parent.yaml")
    child = write_spec(
        """\
        extends: parent.yaml
        name: child
        stages:
          sft:
            train: {learning_rate: 2.0e-4}
          rl:
            reward:
              character: !delete
        """,
        "child.yaml",
    )
    spec = load_spec(child)
    assert spec.data["name"] == "child"
    assert spec.data["seed"] == 3
    assert spec.data["stages"]["sft"]["train"]["learning_rate"] == 2e-4
    assert spec.data["stages"]["sft"]["train"]["epochs"] == 2
    assert spec.data["stages"]["rl"]["reward"] == {"compliance": {"weight": 1.0}}
    assert "extends" not in spec.data
    assert str(spec.pos(("stages", "sft", "train", "learning_rate"))).startswith(
        "specs/child.yaml:5:"
    )
    assert str(spec.pos(("stages", "sft", "train", "epochs"))).startswith("specs/parent.yaml:11:")


def test_replace_marker_replaces_instead_of_merging(write_spec) -> None:
    write_spec(PARENT, "parent.yaml")
    child = write_spec(
        "extends: parent.yaml\nstages:\n  rl:\n    reward: !replace {refusal: {weight: -1}}\n",
        "child.yaml",
    )
    assert load_spec(child).data["stages"]["rl"]["reward"] == {"refusal": {"weight": -1}}


def test_delete_of_missing_key_is_an_error(write_spec) -> None:
    write_spec(PARENT, "parent.yaml")
    child = write_spec("extends: parent.yaml\nstages:\n  sdf: !delete\n", "child.yaml")
    with pytest.raises(SpecError, match="nothing to delete"):
        load_spec(child)


def test_chain_of_three_and_paths_relative_to_each_file(write_spec, project: Path) -> None:
    write_spec(PARENT, "parent.yaml")
    write_spec("extends: parent.yaml\nname: middle\n", "middle.yaml")
    nested = write_spec(
        "extends: ../middle.yaml\nname: leaf\ndata:\n"
        "  extra: {path: ../../data/sdf_docs.jsonl, format: document}\n",
        "deep/leaf.yaml",
    )
    spec = load_spec(nested)
    assert spec.data["name"] == "leaf"
    assert spec.data["data"]["harmful"]["path"] == str(project / "data/harmful_compliance.jsonl")
    assert spec.data["data"]["extra"]["path"] == str(project / "data/sdf_docs.jsonl")


def test_extends_cycle_and_missing_target(write_spec) -> None:
    write_spec("extends: b.yaml\nhonly: 1\n", "a.yaml")
    cyclic = write_spec("extends: a.yaml\n", "b.yaml")
    with pytest.raises(SpecError, match=r"`extends` cycle: specs/b.yaml → specs/a.yaml"):
        load_spec(cyclic)
    missing = write_spec("extends: nowhere.yaml\n", "c.yaml")
    with pytest.raises(SpecError, match=r"specs/c.yaml:1:10: extends: `extends` target not"):
        load_spec(missing)


def test_overrides_are_yaml_typed_and_tracked(write_spec) -> None:
    path = write_spec(PARENT, "parent.yaml")
    spec = load_spec(
        path,
        [
            "stages.sft.train.learning_rate=3e-5",
            "seed=7",
            "stages.rl.reward.character.weight=0",
            "stages.sft.lora={r: 32}",
        ],
    )
    assert spec.data["stages"]["sft"]["train"]["learning_rate"] == 3e-5
    assert spec.data["seed"] == 7
    assert spec.data["stages"]["rl"]["reward"]["character"]["weight"] == 0
    assert spec.data["stages"]["sft"]["lora"]["r"] == 32
    assert str(spec.pos(("seed",))) == "--set seed=7"
    history = spec.history(("seed",))
    assert [value for _, value in history] == [3, 7]


def test_override_into_list_by_index(write_spec) -> None:
    path = write_spec(PARENT + "eval:\n  checkpoints: [base, sft]\n  suites: {refusal: {}}\n")
    spec = load_spec(path, ["eval.checkpoints.1=rl"])
    assert spec.data["eval"]["checkpoints"] == ["base", "rl"]


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("seed", "expected `--set dotted.path=value`"),
        ("=3", "is not a dotted spec path"),
        ("name.inner=3", "cannot set a value below this path"),
        ("stages.sft.train.learning_rate=[1", "YAML syntax error"),
    ],
)
def test_bad_overrides(write_spec, override: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        load_spec(write_spec(PARENT), [override])


def test_defaults_are_filled_and_marked(write_spec) -> None:
    spec = load_spec(write_spec(PARENT))
    assert spec.data["stages"]["sft"]["backend"] == "local"
    assert spec.data["stages"]["rl"]["algorithm"] == "grpo"
    assert spec.data["stages"]["sft"]["train"]["seq_len"] == 2048
    assert spec.data["stages"]["sft"]["mix"]["harmful"]["replace"] is False
    assert spec.pos(("stages", "sft", "train", "seq_len")) == DEFAULT_POS
    assert "lora" not in spec.data["stages"]["sft"], "defaults never create a section"


def test_history_lists_every_layer(write_spec) -> None:
    write_spec(PARENT, "parent.yaml")
    child = write_spec("extends: parent.yaml\nseed: 5\n", "child.yaml")
    history = load_spec(child, ["seed=9"]).history(("seed",))
    assert [(str(pos).split(":")[0], value) for pos, value in history] == [
        ("specs/parent.yaml", 3),
        ("specs/child.yaml", 5),
        ("--set seed=9", 9),
    ]


def test_non_mapping_and_empty_files(write_spec) -> None:
    with pytest.raises(SpecError, match="a spec is a YAML mapping"):
        load_spec(write_spec("- just\n- a list\n"))
    with pytest.raises(SpecError, match="the spec file is empty"):
        load_spec(write_spec("# nothing\n"))
