"""Stage keys (the published contract), cache decisions and the plan directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from honly_spec.plan.decide import decide
from honly_spec.plan.graph import compile_graph
from honly_spec.plan.write import write_plan
from honly_spec.spec.check import check_spec
from honly_spec.spec.schema import WILDCARD, marked_paths, spec_schema
from honly_spec.store.store import Store
from tests.conftest import MINIMAL, REPO


def keys_of(path: Path, overrides: tuple[str, ...] = ()) -> dict[str, str]:
    graph = compile_graph(check_spec(path, overrides))
    return {n: k for n, k in zip(graph.node_names(), _keys(graph), strict=True)}


def _keys(graph) -> list[str]:
    return [s.key for s in graph.stages] + [e.key for e in graph.evals]


RUNTIME_VALUES: dict[str, Any] = {
    "description": "another description",
    "tracking": {"mlflow": {"experiment": "elsewhere", "uri": "sqlite:////tmp/x.db"}},
    "micro_batch_size": 3,
    "gradient_checkpointing": True,
    "logging_steps": 99,
    "save_steps": 50,
    "base_url": "http://127.0.0.1:9999/v1",
    "api_key_env": "SOME_KEY",
    "concurrency": 2,
    "max_retries": 9,
    "timeout_s": 5,
}


def _concrete(pattern: tuple) -> tuple:
    stage = "gen" if "generator" in pattern else "sft"
    names = {1: stage} if pattern[0] == "stages" else {}
    return tuple(names.get(i, p) if p == WILDCARD else p for i, p in enumerate(pattern))


def test_runtime_fields_are_enumerated_and_never_change_a_key(write_spec) -> None:
    """The schema's runtime fields are exactly the published list, and none moves a key."""
    runtime = marked_paths(spec_schema(), "x-honly-runtime")
    assert {p[-1] for p in runtime} == set(RUNTIME_VALUES), "update the published list"
    base_text = MINIMAL.replace(
        "suites:", "judge: {provider: openai, model: j}\n  suites:"
    ).replace(
        "stages:\n",
        "stages:\n  gen:\n    kind: generate\n    generator: {provider: openai, model: t}\n"
        "    universe: ../data/harmful_prompts.jsonl\n    outputs: {sdf_documents: {}}\n",
    )
    path = write_spec(base_text)
    before = keys_of(path)
    for pattern in runtime:
        concrete = _concrete(pattern)
        override = ".".join(map(str, concrete)) + "=" + json.dumps(RUNTIME_VALUES[pattern[-1]])
        assert keys_of(path, (override,)) == before, f"{override} changed a key"


@pytest.mark.parametrize(
    ("override", "changed"),
    [
        ("stages.sft.train.learning_rate=2e-4", {"sft", "rl", "eval[sft]", "eval[rl]"}),
        ("stages.sft.lora.r=16", {"sft", "rl", "eval[sft]", "eval[rl]"}),
        ("stages.rl.rollout.temperature=0.7", {"rl", "eval[rl]"}),
        ("stages.rl.reward.compliance.weight=2", {"rl", "eval[rl]"}),
        ("stages.sft.seed=4", {"sft", "rl", "eval[sft]", "eval[rl]"}),
        ("seed=4", {"sft", "rl", "eval[base]", "eval[sft]", "eval[rl]"}),
        ("eval.generation.max_new_tokens=32", {"eval[base]", "eval[sft]", "eval[rl]"}),
        ("eval.judge={provider: hf, model: m}", {"eval[base]", "eval[sft]", "eval[rl]"}),
        ("model.chat_template=chatml", {"sft", "rl", "eval[base]", "eval[sft]", "eval[rl]"}),
        ("stages.sft.backend=axolotl", {"sft", "rl", "eval[sft]", "eval[rl]"}),
        ("data.prompts.fields={prompt: text}", {"rl", "eval[rl]"}),
        ("name=renamed", set()),
    ],
)
def test_semantic_changes_move_exactly_the_downstream_keys(write_spec, override, changed):
    path = write_spec()
    before, after = keys_of(path), keys_of(path, (override,))
    assert {n for n in before if before[n] != after[n]} == changed


def test_writing_a_default_explicitly_keeps_the_key(write_spec) -> None:
    path = write_spec()
    assert keys_of(path) == keys_of(
        path, ("stages.sft.train.seq_len=2048", "stages.rl.algorithm=grpo")
    )
    assert keys_of(path) == keys_of(path, ("stages.sft.train.epochs=1.0",))


def test_data_contents_move_the_keys_of_stages_that_read_it(write_spec, project) -> None:
    path = write_spec()
    before = keys_of(path)
    with (project / "data" / "harmful_prompts.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"prompt": "Write a roast of my cat."}\n')
    after = keys_of(path)
    assert {n for n in before if before[n] != after[n]} == {"rl", "eval[rl]"}


def test_keys_are_stable_across_processes_and_machines(tmp_path: Path) -> None:
    """Same spec in two checkouts at different paths, with different hash seeds, cwd and
    HONLY_HOME: identical keys. The golden spec hash guards the key format itself."""
    keys = []
    for index, seed in enumerate(["0", "12345"]):
        checkout = tmp_path / f"machine{index}" / "deep" / "repo"
        shutil.copytree(REPO / "specs", checkout / "specs")
        shutil.copytree(REPO / "data", checkout / "data")
        env = {**os.environ, "PYTHONHASHSEED": seed, "HONLY_HOME": str(tmp_path / f"h{index}")}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "honly_spec.cli",
                "plan",
                "specs/mitigated.yaml",
                "--display",
                "json",
                "--out",
                str(tmp_path / f"plan{index}"),
            ],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        [cell] = json.loads(out.stdout)["cells"]
        keys.append((cell["spec_hash"], [(n["node"], n["key"]) for n in cell["nodes"]]))
    assert keys[0] == keys[1]


def test_decisions_hit_miss_stale_force_skip(write_spec, honly_home) -> None:
    path = write_spec()
    store = Store(honly_home / "store")
    graph = compile_graph(check_spec(path))
    assert {str(d) for d in decide(graph, store).values()} == {"MISS"}
    sft = graph.stages[0]
    store.commit("sft", sft.key, lambda tmp: {"inputs": sft.inputs})
    store.write_ref(graph.name, "sft", sft.key, sft.inputs)
    decisions = decide(graph, store)
    assert decisions["sft"].status == "HIT" and decisions["rl"].status == "MISS"

    changed = compile_graph(check_spec(path, ["stages.sft.train.learning_rate=3e-4"]))
    decisions = decide(changed, store)
    assert str(decisions["sft"]) == "STALE (stages.sft.train.learning_rate)"

    forced = decide(graph, store, force={"sft"}, only={"sft", "rl"})
    assert forced["sft"].status == "FORCE"
    assert forced["rl"].status == "MISS"
    assert forced["eval[base]"].status == "SKIP"


def test_plan_directory_contents(write_spec, tmp_path) -> None:
    graph = compile_graph(check_spec(write_spec()))
    out = write_plan([(graph, decide(graph, Store(tmp_path / "store")))], tmp_path / "plan")
    plan = json.loads((out / "plan.json").read_text())
    assert [n["node"] for n in plan["nodes"]] == [
        "sft",
        "rl",
        "eval[base]",
        "eval[sft]",
        "eval[rl]",
    ]
    assert plan["nodes"][0]["rows"] == {"harmful": 8}
    stage = json.loads((out / "stages" / "rl.json").read_text())
    assert stage["key_inputs"]["start"] == {"key": graph.stages[0].key}
    assert (out / "spec.resolved.yaml").read_text().startswith("honly: 1")
    assert sorted(p.name for p in (out / "evals").iterdir()) == ["base.json", "rl.json", "sft.json"]
    # a second plan replaces the directory instead of mixing old and new files
    (out / "stale.txt").write_text("old")
    write_plan([(graph, decide(graph, Store(tmp_path / "store")))], out)
    assert not (out / "stale.txt").exists()


def test_realized_rows_follow_mix_semantics(write_spec) -> None:
    text = MINIMAL.replace(
        "prompts: {prompts: {rows: 8}}",
        "prompts: {prompts: {weight: 0.7}, heldout: {weight: 0.3}}\n    total_rows: 11",
    ).replace("{harmful: {rows: 8}}", "{harmful: {fraction: 0.5}}")
    graph = compile_graph(check_spec(write_spec(text)))
    assert graph.stages[0].rows == {"harmful": 12}
    assert graph.stages[1].rows == {"prompts": 8, "heldout": 3}
    assert sum(graph.stages[1].rows.values()) == 11
