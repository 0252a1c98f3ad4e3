"""`matrix:` cells: naming, validation of every cell, shared stage keys, plan layout."""

from __future__ import annotations

import json

from honly_spec.plan.graph import compile_graph
from honly_spec.spec.check import check_cells
from honly_spec.spec.matrix import expand
from tests.conftest import MINIMAL

GRID = MINIMAL + ("matrix:\n  seed: [0, 1]\n  stages.rl.reward.compliance.weight: [1.0, 2.0]\n")


def test_cell_names_are_readable_and_mlflow_safe() -> None:
    cells = expand("spec", {"seed": [0, 1], "stages.sft.mix.a.fraction": [0.5, "x y"]})
    assert [c.name for c in cells] == [
        "spec/seed-0/fraction-0.5",
        "spec/seed-0/fraction-x_y",
        "spec/seed-1/fraction-0.5",
        "spec/seed-1/fraction-x_y",
    ]
    clash = expand("s", {"stages.a.train.epochs": [1], "stages.b.train.epochs": [2]})
    assert clash[0].name == "s/stages.a.train.epochs-1/stages.b.train.epochs-2"


def test_cells_share_keys_where_their_prefix_is_the_same(write_spec) -> None:
    graphs = [compile_graph(ctx) for ctx in check_cells(write_spec(GRID))]
    assert [g.name for g in graphs] == [
        "tiny/seed-0/weight-1.0",
        "tiny/seed-0/weight-2.0",
        "tiny/seed-1/weight-1.0",
        "tiny/seed-1/weight-2.0",
    ]
    sft_keys = {g.stages[0].key for g in graphs}
    rl_keys = {g.stages[1].key for g in graphs}
    assert len(sft_keys) == 2, "the reward weight does not touch SFT"
    assert len(rl_keys) == 4


def test_a_bad_cell_value_is_reported_once_with_its_origin(write_spec, honly) -> None:
    spec = write_spec(MINIMAL + "matrix:\n  stages.sft.lora.r: [8, 48]\n  seed: [0, 1]\n")
    result = honly("validate", spec)
    assert result.code == 2
    assert result.err.splitlines() == [
        "specs/spec.yaml:23:26: stages.sft.lora.r: vLLM cannot serve a LoRA of "
        "rank 48 (max_lora_rank is one of 1, 8, 16, 32, 64, 128, 256, 320, 512); use 32 or 64",
        "1 problem found",
    ]


def test_plan_writes_one_folder_per_cell(write_spec, honly, tmp_path) -> None:
    result = honly("plan", write_spec(GRID), "--out", tmp_path / "plan")
    assert result.code == 0, result.err
    assert "4 matrix cells" in result.out
    assert "8 stage runs across cells, 6 distinct" in result.out
    index = json.loads((tmp_path / "plan" / "matrix.json").read_text())
    assert index["distinct"] == {
        "stage_runs": 8,
        "distinct_stages": 6,
        "eval_runs": 12,
        "distinct_evals": 8,
    }
    for cell in index["cells"]:
        plan = json.loads((tmp_path / "plan" / cell["folder"] / "plan.json").read_text())
        assert plan["spec"] == cell["cell"]
        assert (
            "matrix" not in (tmp_path / "plan" / cell["folder"] / "spec.resolved.yaml").read_text()
        )


def test_duplicate_axis_values_and_cell_context(write_spec, honly) -> None:
    spec = write_spec(MINIMAL + "matrix:\n  seed: [1, 1]\n")
    result = honly("validate", spec)
    assert "gives the same cell name as value [0]" in result.err
    spec = write_spec(MINIMAL + "matrix:\n  stages.sft.kind: [sft, rl]\n", "kinds.yaml")
    result = honly("validate", spec)
    assert result.code == 2
    assert "(in matrix cell kind-rl)" in result.err
    assert "kind-sft" not in result.err


def test_matrix_file_values_resolve_against_the_spec(write_spec, project, honly, monkeypatch):
    spec = write_spec(MINIMAL + "matrix:\n  data.heldout.path: [../data/harmful_ood.jsonl]\n")
    monkeypatch.chdir(project.parent)
    [ctx] = check_cells(spec)
    assert ctx.data["data"]["heldout"]["path"] == str(project / "data" / "harmful_ood.jsonl")


PAIRED = MINIMAL + (
    "matrix:\n"
    "  paired:\n"
    "    strong:\n"
    "      stages.rl.reward.compliance.weight: 2.0\n"
    "      stages.sft.train.learning_rate: 2.0e-4\n"
    "    weak: {stages.rl.reward.compliance.weight: 0.5}\n"
    "  seed: [0, 1]\n"
)


def test_paired_variants_move_their_paths_together(write_spec) -> None:
    graphs = [compile_graph(ctx) for ctx in check_cells(write_spec(PAIRED))]
    assert [g.name for g in graphs] == [
        "tiny/strong/seed-0",
        "tiny/strong/seed-1",
        "tiny/weak/seed-0",
        "tiny/weak/seed-1",
    ]
    strong, weak = graphs[0].ctx.data, graphs[2].ctx.data
    assert strong["stages"]["rl"]["reward"]["compliance"]["weight"] == 2.0
    assert strong["stages"]["sft"]["train"]["learning_rate"] == 2.0e-4
    assert weak["stages"]["rl"]["reward"]["compliance"]["weight"] == 0.5
    assert weak["stages"]["sft"]["train"]["learning_rate"] == 1.0e-4, "untouched by `weak`"
    assert graphs[0].ctx.spec.history(("stages", "rl", "reward", "compliance", "weight"))


def test_a_bad_paired_path_is_reported_where_it_is_written(write_spec, honly) -> None:
    spec = write_spec(PAIRED.replace("stages.sft.train.learning_rate", "stages.sft.train.lr"))
    result = honly("validate", spec)
    assert result.code == 2
    assert "`stages.sft.train.lr` is not a spec path a matrix can vary" in result.err
    line = PAIRED.splitlines().index("      stages.sft.train.learning_rate: 2.0e-4") + 1
    assert f"spec.yaml:{line}:7: matrix.paired.strong.stages.sft.train.lr" in result.err


def test_cell_selects_one_cell_and_names_the_others(write_spec, honly, tmp_path) -> None:
    spec = write_spec(PAIRED)
    out = tmp_path / "plan"
    result = honly("plan", spec, "--cell", "weak/seed-1", "--display", "json", "--out", out)
    assert result.code == 0, result.err
    assert [c["cell"] for c in json.loads(result.out)["cells"]] == ["tiny/weak/seed-1"]
    result = honly("plan", spec, "--cell", "weak/seed-7", "--out", out)
    assert result.code == 2
    assert "no such matrix cell; did you mean `weak/seed-1`?" in result.err


def test_diff_across_cells_and_against_a_plain_spec(write_spec, honly) -> None:
    spec = write_spec(PAIRED)
    result = honly("diff", f"{spec}#strong/seed-0", f"{spec}#weak/seed-0", "--display", "json")
    assert result.code == 0, result.err
    found = json.loads(result.out)
    paths = {c["path"] for c in found["changes"]}
    assert paths == {"stages.rl.reward.compliance.weight", "stages.sft.train.learning_rate"}
    verdicts = {n["node"]: n["verdict"] for n in found["nodes"]}
    assert verdicts["sft"] == "re-run" and verdicts["rl"] == "re-run"
    whole = honly("diff", spec, f"{spec}#weak/seed-0")
    assert whole.code == 2 and "a matrix spec: name a cell as" in whole.err


ON_OFF = MINIMAL.replace(
    "  sft:\n    kind: sft\n",
    "  sdf:\n    kind: sft\n    mix: {harmful: {rows: 4}}\n    lora: {r: 8}\n"
    "  sft:\n    kind: sft\n    after: sdf\n",
) + ("matrix:\n  stages.sdf.enabled: [true, false]\n  seed: [0, 1]\n")


def test_a_stage_switched_off_by_an_axis_shares_keys_with_a_spec_without_it(
    write_spec, honly, tmp_path
) -> None:
    graphs = [compile_graph(ctx) for ctx in check_cells(write_spec(ON_OFF))]
    assert [g.name for g in graphs] == [
        "tiny/enabled-true/seed-0",
        "tiny/enabled-true/seed-1",
        "tiny/enabled-false/seed-0",
        "tiny/enabled-false/seed-1",
    ]
    off = graphs[2]
    assert [s.name for s in off.stages] == ["sft", "rl"]
    assert off.stage("sft").after is None and off.disabled == ["sdf"]
    assert [s.name for s in graphs[0].stages] == ["sdf", "sft", "rl"]
    plain = compile_graph(check_cells(write_spec(MINIMAL, "plain.yaml"))[0])
    assert [s.key for s in off.stages] == [s.key for s in plain.stages], (
        "SDF off is the spec without SDF: same keys, so the store shares them"
    )
    assert graphs[0].stage("sft").key != off.stage("sft").key
    spec = write_spec(ON_OFF.replace("  suites:", "  checkpoints: [base, sdf, rl]\n  suites:"))
    cells = [compile_graph(ctx) for ctx in check_cells(spec)]
    assert [e.checkpoint for e in cells[0].evals] == ["base", "sdf", "rl"]
    assert [e.checkpoint for e in cells[2].evals] == ["base", "rl"], "a disabled checkpoint"
    result = honly("plan", spec, "--out", tmp_path / "plan")
    assert result.code == 0, result.err
    assert "tiny/enabled-false/seed-0: disabled (enabled: false): sdf" in result.out
