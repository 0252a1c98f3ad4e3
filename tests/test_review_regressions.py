"""Regressions from a review of the spec core: each case once produced a traceback, a
wrong key, silent acceptance or a misleading message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from honly_spec.plan.graph import compile_graph
from honly_spec.spec.check import check_spec
from honly_spec.spec.errors import SpecError
from tests.conftest import MINIMAL, REPO


def keys(path, overrides=()):
    graph = compile_graph(check_spec(path, overrides))
    return {s.name: s.key for s in graph.stages} | {e.checkpoint: e.key for e in graph.evals}


def messages(path, overrides=()) -> str:
    with pytest.raises(SpecError) as caught:
        check_spec(path, overrides)
    return "\n".join(d.render() for d in caught.value.diagnostics)


def test_out_never_deletes_foreign_directories(honly, write_spec, project) -> None:
    mine = project / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    result = honly("plan", write_spec(), "--out", mine)
    assert result.code == 2 and "not a plan" in result.err
    assert (mine / "thesis.tex").read_text() == "precious"
    (project / "notes.txt").write_text("x")
    assert honly("plan", write_spec(), "--out", project / "notes.txt").code == 2
    assert honly("plan", write_spec(), "--out", project / "fresh").code == 0
    assert honly("plan", write_spec(), "--out", project / "fresh").code == 0, "own plan: replaced"


@pytest.mark.parametrize(
    "override",
    [
        "stages.sft.mix.harmful={fraction: 1e308, replace: true}",
        "stages.sft.mix.harmful={fraction: 1e400, replace: true}",
        "stages.rl.total_rows=" + "1" * 400,
    ],
)
def test_absurd_numbers_are_user_errors(write_spec, override) -> None:
    found = messages(write_spec(), [override])
    assert "must be <=" in found or "not a finite number" in found


def test_explain_shows_delete_markers(honly, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    result = honly("plan", "specs/ablations/mitigated_no_sdf.yaml", "--explain", "stages.sft")
    assert result.code == 0
    assert "!delete" in result.out


def test_empty_or_runtime_only_sections_key_like_absent_ones(write_spec) -> None:
    path = write_spec()
    base = keys(path)
    assert keys(path, ["stages.rl.train={}"]) == base
    assert keys(path, ["stages.rl.train={micro_batch_size: 2}"]) == base
    assert keys(path, ["eval.judge={}", "eval.generation={}"]) == base


def test_renaming_a_stage_reruns_nothing(write_spec) -> None:
    before = keys(write_spec())
    renamed = MINIMAL.replace("  sft:\n", "  first:\n").replace("after: sft", "after: first")
    after = keys(write_spec(renamed, "renamed.yaml"))
    assert before["sft"] == after["first"] and before["rl"] == after["rl"]
    assert before["base"] == after["base"]


def test_integral_floats_are_integers(write_spec) -> None:
    assert "use 8 or 16" in messages(write_spec(), ["stages.sft.lora.r=10.0"])
    assert "2 or more" in messages(write_spec(), ["stages.rl.rollout.samples_per_prompt=1.0"])
    ctx = check_spec(write_spec(), ["stages.sft.mix.harmful.rows=3.0"])
    assert ctx.data["stages"]["sft"]["mix"]["harmful"]["rows"] == 3
    assert isinstance(ctx.data["stages"]["sft"]["mix"]["harmful"]["rows"], int)


@pytest.mark.parametrize("value", ["3", "[a.yaml]", "!replace {a: 1}"])
def test_extends_must_be_a_path(write_spec, value) -> None:
    assert "`extends` is the path of one parent spec" in messages(
        write_spec(f"extends: {value}\n" + MINIMAL)
    )


def test_extends_cannot_be_overridden_or_varied(write_spec) -> None:
    assert "can only be set in the spec file" in messages(write_spec(), ["extends=x.yaml"])
    varied = write_spec(MINIMAL + "matrix: {extends: [x.yaml]}\n", "m.yaml")
    assert "not a spec path a matrix can vary" in messages(varied)


def test_extends_to_a_directory(write_spec) -> None:
    assert "is not a regular file" in messages(write_spec("extends: ../data\n"))


def test_fraction_rounding_is_exact_for_decimal_shares() -> None:
    from honly_spec.data.mix import realize

    counts, _ = realize({"a": {"fraction": 0.29, "replace": False}}, {"a": 100}, None)
    assert counts == {"a": 29}
    counts, _ = realize({"a": {"fraction": 0.57, "replace": False}}, {"a": 100}, None)
    assert counts == {"a": 57}


def test_misplaced_markers_and_string_lists(write_spec) -> None:
    assert "belong in spec files" in messages(write_spec(), ["seed=!delete"])
    assert "removes a mapping key" in messages(
        write_spec(MINIMAL.replace("suites:", "checkpoints: [base, !delete ~]\n  suites:"))
    )
    found = messages(write_spec(MINIMAL.replace("suites:", "checkpoints: sft\n  suites:")))
    assert "expected a list" in found and "no stage named `s`" not in found


def test_delete_inside_replace_says_so(write_spec) -> None:
    write_spec(MINIMAL, "parent.yaml")
    child = write_spec(
        "extends: parent.yaml\nstages:\n  sft: !replace\n    kind: sft\n"
        "    mix: {harmful: {rows: 2}}\n    lora: !delete\n",
        "child.yaml",
    )
    assert "inside `!replace` there is nothing to delete" in messages(child)


def test_unknown_stage_key_without_kind_gets_a_suggestion(write_spec) -> None:
    found = messages(write_spec(MINIMAL.replace("    kind: sft\n", "    kidn: sft\n")))
    assert "unknown key `kidn`; did you mean `kind`?" in found


def test_mix_clash_across_files_suggests_replace(write_spec) -> None:
    write_spec(MINIMAL.replace("{harmful: {rows: 8}}", "{harmful: {fraction: 0.5}}"), "p.yaml")
    child = write_spec(
        "extends: p.yaml\nstages:\n  sft:\n    mix:\n      harmful: {rows: 4}\n", "c.yaml"
    )
    assert "write the entry with `!replace`" in messages(child)


def test_diff_points_removals_at_the_delete_marker(honly, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    result = honly("diff", "specs/mitigated.yaml", "specs/ablations/mitigated_no_sdf.yaml")
    line = next(x for x in result.out.splitlines() if " stages.sdf " in x)
    assert "specs/ablations/mitigated_no_sdf.yaml:9:" in line


def test_force_of_an_excluded_node_is_refused(honly, write_spec) -> None:
    result = honly(write_spec(), "--dry-run", "--only", "eval[sft]", "--force", "sft", run=True)
    assert result.code == 2 and "--only leaves out" in result.err


def test_broken_pipe_is_quiet(write_spec) -> None:
    spec = write_spec()
    proc = subprocess.run(
        f"{sys.executable} -m honly_spec.cli plan {spec} --out {spec.parent / 'p'} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=spec.parent,
        env={
            "PYTHONPATH": str(REPO),
            "HONLY_HOME": str(spec.parent / "home"),
            "PATH": "/usr/bin:/bin",
        },
    )
    assert "Traceback" not in proc.stderr
