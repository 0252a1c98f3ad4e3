"""The CLI as users meet it: shipped examples, exit codes, output, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MINIMAL, REPO

EXAMPLES = sorted((REPO / "specs").rglob("*.yaml"))
PROFILES = sorted((REPO / "profiles").glob("*.yaml"))


def test_examples_exist() -> None:
    names = {p.relative_to(REPO / "specs").as_posix() for p in EXAMPLES}
    assert {"quickstart.yaml", "naive.yaml", "mitigated.yaml"} <= names
    assert len([n for n in names if n.startswith("ablations/")]) >= 2


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_example_validates_and_plans(spec: Path, honly, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    assert honly("validate", spec).code == 0
    result = honly("plan", spec, "--out", tmp_path / "plan")
    assert result.code == 0, result.err
    assert "MISS" in result.out
    plan = tmp_path / "plan"
    if (plan / "matrix.json").exists():  # a matrix spec: one plan per cell
        cells = json.loads((plan / "matrix.json").read_text())["cells"]
        assert len(cells) > 1
        folders = [plan / cell["folder"] for cell in cells]
    else:
        folders = [plan]
    for folder in folders:
        assert json.loads((folder / "plan.json").read_text())["nodes"]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_every_profile_validates(profile: Path, honly, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    result = honly("plan", "specs/quickstart.yaml", "--profile", profile, "--out", tmp_path)
    assert result.code == 0, result.err


def test_bad_profile_is_a_user_error(honly, write_spec, project) -> None:
    (project / "p.yaml").write_text("honly_profile: 1\nresources: {gpus: 8}\n")
    result = honly("plan", write_spec(), "--profile", project / "p.yaml")
    assert result.code == 2
    assert (
        "p.yaml:2:13: resources.gpus: unknown key `gpus`; did you mean `gpus_per_node`?"
        in result.err
    )


def test_validate_many_specs_reports_all(honly, write_spec) -> None:
    good = write_spec()
    bad1 = write_spec(MINIMAL.replace("lora: {r: 8}", "lora: {rank: 8}"), "bad1.yaml")
    bad2 = write_spec(MINIMAL.replace("after: sft", "after: sfy"), "bad2.yaml")
    result = honly("validate", good, bad1, bad2)
    assert result.code == 2
    assert result.err.count("\n") == 3
    assert "specs/bad1.yaml:13:" in result.err and "specs/bad2.yaml:16:" in result.err
    assert result.err.strip().endswith("2 problems found")


def test_validate_json_display(honly, write_spec) -> None:
    bad = write_spec(MINIMAL.replace("lora: {r: 8}", "lora: {rank: 8}"))
    result = honly("validate", bad, "--display", "json")
    payload = json.loads(result.out)
    assert result.code == 2 and payload["ok"] is False
    assert payload["errors"][0]["path"] == "stages.sft.lora.rank"
    assert payload["errors"][0]["where"] == "specs/spec.yaml:13:12"


def test_diff_naive_mitigated(honly, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    result = honly("diff", "specs/naive.yaml", "specs/mitigated.yaml", "--display", "json")
    assert result.code == 0
    payload = json.loads(result.out)
    changes = {c["path"]: c for c in payload["changes"]}
    assert changes["stages.sdf"]["change"] == "added"
    assert changes["stages.sdf"]["where"].startswith("specs/mitigated.yaml:")
    assert changes["stages.rl.prompts.harmful_prompts.fraction"]["where"].startswith(
        "specs/naive.yaml:"
    )
    assert changes["description"]["runtime"] is True
    verdicts = {n["node"]: n for n in payload["nodes"]}
    assert verdicts["sdf"]["verdict"] == "added"
    assert verdicts["sft"]["verdict"] == "re-run"
    assert "stages.sft.after (base → sdf)" in verdicts["sft"]["reasons"]
    assert "upstream sft re-runs" in verdicts["rl"]["reasons"]


def test_diff_ablation_reuses_shared_prefix(honly, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    result = honly("diff", "specs/mitigated.yaml", "specs/ablations/mitigated_no_rl_character.yaml")
    assert result.code == 0
    lines = {line.split()[0]: line for line in result.out.splitlines()[1:] if line.startswith("  ")}
    assert "reused" in lines["sdf"] and "reused" in lines["sft"]
    assert "re-run" in lines["rl"] and "stages.rl.reward.character removed" in lines["rl"]
    assert "reused" in lines["eval[base]"] and "reused" in lines["eval[sft]"]
    assert "checkpoint rl re-runs" in lines["eval[rl]"]


def test_eval_change_reruns_only_evals(honly, write_spec) -> None:
    a = write_spec()
    b = write_spec(
        MINIMAL.replace("refusal: {sets: [heldout]}", "refusal: {sets: [heldout], limit: 4}"),
        "b.yaml",
    )
    payload = json.loads(honly("diff", a, b, "--display", "json").out)
    verdicts = {n["node"]: (n["verdict"], n["reasons"]) for n in payload["nodes"]}
    assert verdicts["sft"] == ("reused", []) and verdicts["rl"] == ("reused", [])
    for node in ("eval[base]", "eval[sft]", "eval[rl]"):
        assert verdicts[node] == ("re-run", ["eval.suites.refusal.limit added"])


def test_plan_explain(honly, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    result = honly("plan", "specs/mitigated.yaml", "--explain", "stages.sft.after")
    assert result.code == 0
    assert result.out.splitlines()[0] == "stages.sft.after = sdf"
    line = (REPO / "specs/mitigated.yaml").read_text().splitlines().index("    after: sdf") + 1
    assert f"set by specs/mitigated.yaml:{line}:" in result.out
    result = honly(
        "plan",
        "specs/mitigated.yaml",
        "--explain",
        "stages.sft.train.learning_rate",
        "--set",
        "stages.sft.train.learning_rate=5e-6",
    )
    assert "specs/naive.yaml:" in result.out and "--set stages.sft" in result.out
    result = honly("plan", "specs/mitigated.yaml", "--explain", "stages.sft.train.lr_scheduler")
    assert "(schema default)" in result.out
    assert honly("plan", "specs/mitigated.yaml", "--explain", "stages.nope").code == 2


def test_run_dry_run_and_node_selection(honly, write_spec) -> None:
    spec = write_spec()
    result = honly(spec, "--dry-run", "--only", "sft", "--force", "sft", run=True)
    assert result.code == 0
    assert " FORCE " in result.out and " SKIP " in result.out
    result = honly(spec, "--dry-run", "--only", "stf", run=True)
    assert result.code == 2 and "did you mean `sft`?" in result.err


def test_run_refuses_what_it_cannot_run_before_starting(honly, monkeypatch, honly_home) -> None:
    monkeypatch.chdir(REPO)
    result = honly("specs/naive.yaml", "--display", "plain", run=True)
    assert result.code == 3
    assert "stage `sft` uses backend `axolotl`" in result.err
    assert not (honly_home / "store" / "mlflow.db").exists(), "refused before any work"
    result = honly(
        "specs/quickstart.yaml", "--set", "eval.judge={provider: vllm, model: j}", run=True
    )
    assert result.code == 3 and "the `vllm` judge runs with the GPU backends" in result.err
    assert not (honly_home / "store" / "mlflow.db").exists(), "refused before any work"


BAD_INPUTS = {
    "typo_key": ("stages:\n  sft:\n    kind: sft", "stages:\n  sft:\n    kind: sft\n    trian: {}"),
    "wrong_type": ("{rows: 8}", "{rows: many}"),
    "syntax_error": ("mix: {harmful: {rows: 8}}", "mix: {harmful: {rows: 8}"),
    "duplicate_key": ("name: tiny", "name: tiny\nname: other"),
    "unsafe_tag": ("name: tiny", "name: !!python/object/apply:os.system ['true']"),
    "missing_extends": ("honly: 1", "honly: 1\nextends: nowhere.yaml"),
    "dangling_after": ("after: sft", "after: sfx"),
    "tabs": ("stages:\n  sft:", "stages:\n\tsft:"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_exit_2_without_traceback(case: str, write_spec) -> None:
    """Through a real process: exit code 2, `file:line:col` lines, no traceback."""
    old, new = BAD_INPUTS[case]
    spec = write_spec(MINIMAL.replace(old, new, 1))
    result = subprocess.run(
        [sys.executable, "-m", "honly_spec.cli", "validate", str(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first.split(": ")[0].count(":") == 2, first  # path:line:col


def test_extends_cycle_through_cli(honly, write_spec) -> None:
    write_spec("extends: b.yaml\n", "a.yaml")
    b = write_spec("extends: a.yaml\n", "b.yaml")
    result = honly("validate", b)
    assert result.code == 2 and "`extends` cycle" in result.err
