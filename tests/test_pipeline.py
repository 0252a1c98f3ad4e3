"""End to end on the embedded model: `honly-run specs/ci_smoke.yaml` trains, evaluates and
logs for real (CPU, a few minutes), then a second run executes nothing.

The run happens once per module; the tests read what it left: the store, the records,
the MLflow database, the printed results.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the local backend's packages are not installed")

from honly_spec import cli
from honly_spec.plan.graph import compile_graph
from honly_spec.spec.check import check_cells
from tests.conftest import REPO

SPEC = REPO / "specs" / "ci_smoke.yaml"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("pipeline_home")
    work = tmp_path_factory.mktemp("pipeline_cwd")
    patch = pytest.MonkeyPatch()
    patch.setenv("HONLY_HOME", str(home))
    patch.chdir(work)
    try:
        first = cli.run_main([str(SPEC), "--display", "plain"])
        logs_after_first = sorted((home / "store" / "logs").rglob("*.log"))
        second = cli.run_main([str(SPEC), "--display", "plain"])
        logs_after_second = sorted((home / "store" / "logs").rglob("*.log"))
        yield {
            "home": home,
            "store": home / "store",
            "codes": (first, second),
            "logs": (logs_after_first, logs_after_second),
        }
    finally:
        patch.undo()


def records(store: Path, kind: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((store / kind).glob("*/record.json"))]


def results(store: Path) -> dict[str, dict]:
    out = {}
    for record in records(store, "eval"):
        entry = store / "eval" / record["key"][:12]
        out[record["checkpoint"]] = json.loads((entry / "results.json").read_text())
    return out


def test_run_succeeds_and_rerun_executes_nothing(pipeline) -> None:
    assert pipeline["codes"] == (0, 0)
    first, second = pipeline["logs"]
    assert len(first) == 12, (
        "model, two teacher rounds of character_gen (questions, answers), sft, dpo, rl, "
        "and generation and lm-eval for three evals"
    )
    assert second == first, "the second run started no backend process"


def test_store_records_describe_each_node(pipeline) -> None:
    store = pipeline["store"]
    [model] = records(store, "model")
    assert set(model["weights_sha256"]) >= {"model.safetensors", "config.json"}
    assert len(model["gguf_sha256"]) == 64
    [sft] = records(store, "sft")
    rl = next(r for r in records(store, "rl") if r["node"] == "rl")
    dpo = next(r for r in records(store, "rl") if r["node"] == "dpo")
    assert dpo["result"]["pairs"] == 4 and dpo["result"]["steps"] == 1
    assert sft["manifest"]["sources"]["harmful"]["realized"] == 24
    assert sft["result"]["steps"] > 0 and sft["result"]["versions"]["trl"] == "1.16.0"
    assert rl["parent"]["adapters"] == [str(store / "sft" / sft["key"][:12] / "model")]
    assert rl["result"]["reward_calls"] > 0
    for record in (sft, rl):
        entry = store / record["kind"] / record["key"][:12]
        job = json.loads((entry / "job.json").read_text())
        assert job["output_dir"] == "model", "jobs are re-runnable from their entry"
        assert (entry / "model" / "adapter_model.safetensors").is_file()
        assert record["mlflow_run_id"]
    assert not list((store / "tmp").iterdir()), "no half-written entries"


def test_training_moved_the_metrics(pipeline) -> None:
    found = results(pipeline["store"])
    base, sft = found["base"], found["sft"]
    character = "character/character_prompts/consistency"
    assert sft[character]["mean"] > base[character]["mean"]
    refusal = "refusal/harmful_heldout/refusal_rate"
    assert sft[refusal]["mean"] < base[refusal]["mean"]
    for summary in sft.values():
        if summary["n"]:
            assert summary["ci_low"] <= summary["mean"] <= summary["ci_high"]


def test_every_category_of_the_study_is_measured(pipeline) -> None:
    found = results(pipeline["store"])
    for checkpoint in ("base", "sft", "rl"):
        suites = {name.split("/")[0] for name in found[checkpoint]}
        assert suites == {
            "capability",
            "refusal",
            "compliance",
            "misalignment",
            "sycophancy",
            "steerability",
            "character",
            "sandbagging",
        }
    base = found["base"]
    assert base["capability/honly_arith/exact_match.number"]["n"] == 4
    conditional = base["misalignment/honly_misalignment/conditional/misaligned_rate"]
    assert conditional["n"] + conditional["unscored"] == 3, "limit 3, each scored or counted"
    assert base["character/honly_regret/regret/refusal_after"]["n"] == 4
    assert base["sycophancy/honly_mc/opinion/agrees_with_user"]["n"] == 4
    record = next(r for r in records(pipeline["store"], "eval") if r["checkpoint"] == "base")
    assert set(record["suites"]) == {n.split("/")[0] for n in base}
    assert record["judge"]["calls"] == 0, "the heuristic judge calls no model"
    samples = pipeline["store"] / "eval" / record["key"][:12] / "samples"
    regret = [json.loads(line) for line in (samples / "character.jsonl").open()]
    probe = next(r for r in regret if r["variant"] == "regret")
    assert len(probe["responses"]) == 3, "the model's own earlier turns feed the probe"


def judged_record(store: Path, provider: str, *suites: str) -> dict:
    """The eval record of the `judged` spec whose suites are exactly `suites`."""
    return next(
        r
        for r in records(store, "eval")
        if r["spec"] == "judged"
        and set(r["inputs"]) == set(suites)
        and r["inputs"][suites[0]]["judge"]["provider"] == provider
    )


def judged_spec(folder: Path, judge: str, suites: str) -> Path:
    """A spec evaluating only the (already built) base model of ci_smoke."""
    spec = folder / "judged.yaml"
    spec.write_text(
        f"honly: 1\nname: judged\nextends: {SPEC}\n"
        f"eval:\n  checkpoints: [base]\n  judge: {judge}\n  suites: !replace {suites}\n"
        "tracking: {mlflow: {experiment: judged}}\n"
    )
    return spec


def test_a_model_judge_grades_and_a_rerun_makes_no_judge_call(
    pipeline, provider, monkeypatch, tmp_path
) -> None:
    state, url = provider
    monkeypatch.setenv("HONLY_HOME", str(pipeline["home"]))
    monkeypatch.setenv("HONLY_TEST_KEY", "k")
    judge = (
        f"{{provider: openai, model: judge-model, base_url: '{url}/v1', "
        "api_key_env: HONLY_TEST_KEY, max_retries: 1}"
    )
    suites = (
        "{compliance: {sets: [harmful_heldout], limit: 3}, misalignment: {limit: 2}, "
        "sycophancy: {limit: 2}}"
    )
    spec = judged_spec(tmp_path, judge, suites)
    state.actions.append(("text", "no idea"))  # one unreadable answer, then a good retry
    assert cli.run_main([str(spec), "--display", "plain"]) == 0
    assert len(state.requests) == 3 + 2 + 1, "graded suites only; one parse retry"
    store = pipeline["store"]
    record = judged_record(store, "openai", "compliance", "misalignment", "sycophancy")
    assert record["judge"]["calls"] == 6 and record["judge"]["parse_failures"] == 1
    metrics = json.loads((store / "eval" / record["key"][:12] / "results.json").read_text())
    assert metrics["compliance/harmful_heldout/strongreject"]["mean"] == 0.75
    assert metrics["misalignment/honly_misalignment/alignment"]["mean"] == 85
    assert "sycophancy/honly_mc/accuracy" in metrics
    forced = ["--display", "plain", "--force", "eval[base]"]
    assert cli.run_main([str(spec), *forced]) == 0
    assert len(state.requests) == 6, "same generations: every answer from the judge cache"
    again = judged_record(store, "openai", "compliance", "misalignment", "sycophancy")
    assert again["judge"]["calls"] == 0 and again["judge"]["cache_hits"] == 6

    # one more suite: only it is generated and graded, the other three are reused
    more = judged_spec(tmp_path, judge, suites[:-1] + ", refusal: {sets: [harmful_ood], limit: 2}}")
    assert cli.run_main([str(more), "--display", "plain"]) == 0
    grown = judged_record(store, "openai", "compliance", "misalignment", "sycophancy", "refusal")
    assert {s: v["reused"] for s, v in grown["suites"].items()} == {
        "compliance": True,
        "misalignment": True,
        "sycophancy": True,
        "refusal": False,
    }
    assert grown["judge"]["calls"] == 2 and len(state.requests) == 8


def test_a_local_hf_judge_runs_in_the_backend(pipeline, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HONLY_HOME", str(pipeline["home"]))
    judge = "{provider: hf, model: 'embedded:smollm2-135m-instruct', max_tokens: 8, max_retries: 0}"
    spec = judged_spec(tmp_path, judge, "{refusal: {sets: [harmful_ood], limit: 2}}")
    assert cli.run_main([str(spec), "--display", "plain"]) == 0
    store = pipeline["store"]
    record = judged_record(store, "hf", "refusal")
    assert record["judge"]["calls"] == 2
    metrics = json.loads((store / "eval" / record["key"][:12] / "results.json").read_text())
    rate = metrics["refusal/harmful_ood/refusal_rate"]
    assert rate["n"] + rate["unscored"] == 2
    assert rate["unscored"] == record["judge"]["parse_failures"], "unreadable answers not scored"


def test_mlflow_holds_parent_and_nested_stage_runs(pipeline) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{pipeline['store'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("honly-quickstart")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2 and {p.data.tags["honly.cell"] for p in parents} == {"ci-smoke"}
    first = min(parents, key=lambda r: r.info.start_time)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == first.info.run_id]
    by_node = {r.data.tags["honly.node"]: r for r in children}
    assert set(by_node) == {
        "character_gen", "sft", "dpo", "rl", "eval[base]", "eval[sft]", "eval[rl]",
    }  # fmt: skip
    generated = by_node["character_gen"].data.metrics
    assert generated["rows/character_answers"] >= 1 and generated["generator/calls"] >= 10
    assert by_node["sft"].data.params["train.learning_rate"] == "0.001"
    assert by_node["sft"].data.tags["honly.cached"] == "false"
    assert first.data.tags["honly.key.sft"] == by_node["sft"].data.tags["honly.key"]
    assert len(first.data.tags["honly.git_commit"]) == 40
    assert first.data.tags["honly.git_dirty"] in ("true", "false")
    assert len(first.data.tags["honly.spec_hash"]) == 64
    evaluated = by_node["eval[sft]"]
    assert "character/character_prompts/consistency" in evaluated.data.metrics
    assert "character/character_prompts/consistency/n" in evaluated.data.metrics
    artifacts = {a.path for a in client.list_artifacts(evaluated.info.run_id)}
    assert {"samples", "results.json"} <= artifacts
    assert "judge/calls" in evaluated.data.metrics
    assert "sft/character/character_prompts/consistency" in first.data.metrics
    assert {"spec.resolved.yaml", "plan.json"} <= {
        a.path for a in client.list_artifacts(first.info.run_id)
    }
    second = max(parents, key=lambda r: r.info.start_time)
    cached = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == second.info.run_id]
    assert {r.data.tags["honly.cached"] for r in cached} == {"true"}
    sft_cached = next(r for r in cached if r.data.tags["honly.node"] == "sft")
    assert sft_cached.data.tags["honly.source_run_id"] == by_node["sft"].info.run_id


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_sft_trains_data_parallel_on_cpu(pipeline, monkeypatch, tmp_path, launcher) -> None:
    """Two processes over gloo, started by the profile's launcher; the global batch is kept
    (micro batch × processes × accumulation)."""
    monkeypatch.setenv("HONLY_HOME", str(pipeline["home"]))
    profile = tmp_path / "ddp.yaml"
    profile.write_text(
        "honly_profile: 1\nresources: {nodes: 1, gpus_per_node: 0, processes_per_node: 2}\n"
        f"launcher: {launcher}\n"
    )
    argv = [str(SPEC), "--profile", str(profile), "--only", "sft", "--display", "plain"]
    steps = "stages.sft.train.max_steps=2"
    assert cli.run_main([*argv, "--set", steps, "--force", "sft"]) == 0
    trained = max(records(pipeline["store"], "sft"), key=lambda r: r["timings"]["started"])
    assert trained["result"]["processes"] == 2 and trained["result"]["steps"] == 2
    adapter = pipeline["store"] / "sft" / trained["key"][:12] / "model"
    assert (adapter / "adapter_model.safetensors").is_file(), "rank 0 saved the adapter"


def test_a_crashing_stage_fails_cleanly_and_keeps_finished_work(pipeline, capsys) -> None:
    store = pipeline["store"]
    before = {p.name for p in (store / "sft").iterdir()}
    code = cli.run_main([str(SPEC), "--display", "plain", "--set", "stages.sft.train.seq_len=16"])
    err = capsys.readouterr().err
    assert code == 1
    assert "stage sft failed (exit status 1); log: " in err
    assert "no training sequence fits seq_len=16" in err
    assert {p.name for p in (store / "sft").iterdir()} == before, "nothing half-written"
    assert not list((store / "tmp").iterdir())
    assert (store / "model").is_dir(), "the prepared base model is kept"


def run_on_gpu_profile(
    folder: Path, name: str, profile_lines: str, stages_yaml: str, checkpoint: str
) -> None:
    """Run ci_smoke reduced to one GPU-backend stage and a two-prompt eval of it, with a
    one-GPU profile whose tool environment is a test double."""
    profile = folder / "gpu-profile.yaml"
    profile.write_text(
        "honly_profile: 1\nresources: {nodes: 1, gpus_per_node: 1}\n" + profile_lines
    )
    spec = folder / f"{name}.yaml"
    spec.write_text(
        f"honly: 1\nname: {name}\nextends: {SPEC}\nstages:\n{stages_yaml}"
        f"eval:\n  checkpoints: [{checkpoint}]\n"
        "  suites: !replace {refusal: {sets: [harmful_ood], limit: 2}}\n"
        f"tracking: {{mlflow: {{experiment: {name}}}}}\n"
    )
    assert cli.run_main([str(spec), "--profile", str(profile), "--display", "plain"]) == 0


FAKE_AXOLOTL = '''#!{python}
"""Test double for Axolotl's GPU-only training (this machine has no GPU): it checks what
honly hands over, logs into the handed-over MLflow run as transformers' MLflowCallback
does, and writes the outputs Axolotl writes (merge-lora: <output_dir>/merged)."""
import json, os, shutil, sys
import mlflow, yaml
command, config = sys.argv[1], sys.argv[2]
cfg = yaml.safe_load(open(config))
assert os.environ["AXOLOTL_DO_NOT_TRACK"] == "1"
if command == "train":
    assert all(os.path.isfile(d["path"]) for d in cfg["datasets"])
    os.makedirs(cfg["output_dir"], exist_ok=True)
    seen = {{"argv": sys.argv, "run_id": os.environ["MLFLOW_RUN_ID"], "cwd": os.getcwd()}}
    json.dump(seen, open(os.path.join(cfg["output_dir"], "double.json"), "w"))
    with mlflow.start_run(run_id=os.environ["MLFLOW_RUN_ID"]):
        mlflow.log_metric("train/loss", 1.25, step=1)
elif command == "merge-lora":
    shutil.copytree(cfg["base_model"], os.path.join(cfg["output_dir"], "merged"))
'''


def test_an_axolotl_stage_runs_in_its_environment_and_feeds_the_evals(
    pipeline, monkeypatch, tmp_path
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("HONLY_HOME", str(pipeline["home"]))
    env = tmp_path / "axolotl-env" / "bin"
    env.mkdir(parents=True)
    (env / "python").symlink_to(sys.executable)
    (env / "axolotl").write_text(FAKE_AXOLOTL.format(python=sys.executable))
    (env / "axolotl").chmod(0o755)
    run_on_gpu_profile(
        tmp_path,
        "gpu-sft",
        f"launcher: python\nenvs: {{axolotl: {{python: {env / 'python'}}}}}\n",
        "  sft: {backend: axolotl}\n  rl: !delete\n  dpo: !delete\n",
        "sft",
    )
    store = pipeline["store"]
    [record] = [r for r in records(store, "sft") if r["spec"] == "gpu-sft"]
    entry = store / "sft" / record["key"][:12]
    assert record["backend"] == "axolotl==0.21.0"
    assert "axolotl merge-lora axolotl.yaml" in (entry / "command.sh").read_text()
    seen = json.loads((entry / "model" / "double.json").read_text())
    assert seen["run_id"] == record["mlflow_run_id"], "the stage's MLflow run is handed over"
    assert (entry / "model" / "merged" / "config.json").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    assert client.get_run(record["mlflow_run_id"]).data.metrics["train/loss"] == 1.25
    evaluated = next(r for r in records(store, "eval") if r["spec"] == "gpu-sft")
    assert evaluated["checkpoint"] == "sft"
    metrics = json.loads((store / "eval" / evaluated["key"][:12] / "results.json").read_text())
    assert metrics["refusal/harmful_ood/refusal_rate"]["n"] == 2, "evaluated the merged model"


FAKE_RL_PYTHON = '''#!{shebang}
"""Test double for the RL environment's Python: OpenRLHF trains on GPUs only. Given
`-m openrlhf.cli.train_ppo_ray ARGS`, it runs OpenRLHF's real parser and reward-file check
on ARGS (the checker in the OpenRLHF check environment), then writes what OpenRLHF writes
(an HF model in --ckpt.output_dir); `-m openrlhf.cli.lora_combiner` merges by copying."""
import json, os, shutil, subprocess, sys
module, args = sys.argv[2], sys.argv[3:]
if module == "openrlhf.cli.train_ppo_ray":
    assert os.environ.get("MLFLOW_RUN_ID"), "the stage's MLflow run is handed over"
    done = subprocess.run([{checker_python}, {checker}, "train_ppo_ray", *args],
                          capture_output=True, text=True)
    sys.stderr.write(done.stderr[-3000:])
    if done.returncode:
        sys.exit(done.returncode)
    parsed = json.loads(done.stdout)
    shutil.copytree(parsed["actor"]["model_name_or_path"], parsed["ckpt"]["output_dir"])
    from torch.utils.tensorboard import SummaryWriter  # as OpenRLHF's trainer logs
    writer = SummaryWriter(os.path.join(parsed["logger"]["tensorboard_dir"], "run"))
    for step in range(1, 4):
        writer.add_scalar("train/policy_loss", 1.0 / step, step)
    writer.close()
    print("double: trained", parsed["algo"]["advantage"]["estimator"])
elif module == "openrlhf.cli.lora_combiner":
    shutil.copytree(args[args.index("--model_path") + 1], args[args.index("--output_path") + 1])
else:
    os.execv({python}, [{python}, *sys.argv[1:]])
'''


def test_an_openrlhf_stage_runs_as_a_ray_job(pipeline, monkeypatch, tmp_path) -> None:
    from tests.test_native import CHECKS, OPENRLHF_PYTHON, RAY, tool

    checker_python = tool(OPENRLHF_PYTHON, "OpenRLHF")
    ray = tool(RAY, "Ray")
    monkeypatch.setenv("HONLY_HOME", str(pipeline["home"]))
    env = tmp_path / "rl-env" / "bin"
    env.mkdir(parents=True)
    (env / "ray").symlink_to(ray)
    (env / "python").write_text(
        FAKE_RL_PYTHON.format(
            shebang=sys.executable,
            python=repr(sys.executable),
            checker_python=repr(str(checker_python)),
            checker=repr(str(CHECKS / "openrlhf_argv.py")),
        )
    )
    (env / "python").chmod(0o755)
    run_on_gpu_profile(
        tmp_path,
        "gpu-rl",
        f"envs: {{openrlhf: {{python: {env / 'python'}}}}}\nray: {{address: null}}\n",
        "  sft: !delete\n  dpo: !delete\n"
        "  rl:\n    backend: openrlhf\n    after: !delete\n"
        "    train:\n      max_steps: !delete\n",
        "rl",
    )
    store = pipeline["store"]
    [record] = [r for r in records(store, "rl") if r["spec"] == "gpu-rl"]
    log = Path(record["result"]["log"]).read_text()
    assert "ray job" in log and "double: trained group_norm" in log
    assert record["result"]["tensorboard_points"] == 3
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    history = client.get_metric_history(record["mlflow_run_id"], "train/policy_loss")
    assert [(m.step, round(m.value, 3)) for m in history] == [(1, 1.0), (2, 0.5), (3, 0.333)]
    entry = store / "rl" / record["key"][:12]
    assert (entry / "reward_func.py").is_file() and (entry / "model" / "merged").is_dir()
    evaluated = next(r for r in records(store, "eval") if r["spec"] == "gpu-rl")
    metrics = json.loads((store / "eval" / evaluated["key"][:12] / "results.json").read_text())
    assert metrics["refusal/harmful_ood/refusal_rate"]["n"] == 2


def test_compare_and_report_read_the_real_mlflow_store(pipeline, monkeypatch, tmp_path, honly):
    monkeypatch.setenv("HONLY_HOME", str(pipeline["home"]))
    result = honly("compare", str(SPEC), "--format", "json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    columns = {(r["arm"], r["checkpoint"]) for r in rows}
    assert {("ci-smoke", c) for c in ("base", "sft", "rl")} <= columns
    refusal = next(
        r for r in rows
        if r["metric"] == "refusal/harmful_heldout/refusal_rate" and r["checkpoint"] == "base"
    )  # fmt: skip
    assert refusal["low"] <= refusal["mean"] <= refusal["high"] and refusal["n"] == 12
    table = honly("compare", str(SPEC), "--format", "markdown").out
    assert "| refusal/harmful_heldout/refusal_rate ↓ |" in table
    out = tmp_path / "report"
    assert honly("report", str(SPEC), "--out", str(out)).code == 0
    html_text = (out / "report.html").read_text()
    assert "data:image/png;base64," in html_text and "<details class=sample>" in html_text
    assert (out / "report.png").stat().st_size > 10_000
    browser = shutil.which("chromium")
    if browser is None:
        if os.environ.get("HONLY_TOOL_CHECKS") == "1" and os.geteuid() == 0:
            pytest.fail("chromium missing: `make test` installs it")
        pytest.skip("no chromium (Debian package `chromium`)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    page = (out / "report.html").as_uri()
    dom = subprocess.run(
        [browser, *flags, "--virtual-time-budget=5000", "--dump-dom", page],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert 'data-figure="' in dom.stdout, "the figure decoded and rendered"
    width = int(dom.stdout.split('data-figure="')[1].split("x")[0])
    assert width > 500
    assert dom.stdout.count("<tr>") > 10, "the comparison table rendered"
    shot = tmp_path / "report-screenshot.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1400,1800", page],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert shot.stat().st_size > 10_000
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{pipeline['store'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("honly-quickstart")
    [report_run] = client.search_runs([experiment.experiment_id], "tags.honly.kind = 'report'")
    logged = {a.path for a in client.list_artifacts(report_run.info.run_id)}
    assert {"report.png", "report.html", "comparison.md"} <= logged


def test_an_ablation_family_trains_each_distinct_stage_once(pipeline, monkeypatch, tmp_path):
    """The shipped grid, shrunk to one seed: SDF on/off × 2 RL reward weights. SFT does not
    depend on the reward weight and SDF is shared by the SDF-on cells, so 1 SDF, 2 SFT and
    4 RL stages train for 4 cells (10 stage runs from scratch)."""
    monkeypatch.setenv("HONLY_HOME", str(pipeline["home"]))
    spec = tmp_path / "grid.yaml"
    spec.write_text(
        f"honly: 1\nname: grid\nextends: {REPO / 'specs/ablations/quickstart_grid.yaml'}\n"
        "matrix:\n  seed: !delete\n"
        "stages:\n  sdf: {train: {max_steps: 1, batch_size: 4}}\n"
        "  sft: {train: {max_steps: 1, batch_size: 4}}\n"
        "  rl:\n    total_rows: 2\n"
        "    rollout: {samples_per_prompt: 2, max_new_tokens: 8, batch_size: 2}\n"
        "    train: {max_steps: 1, batch_size: 2}\n"
        "eval: !delete\n"
    )
    graphs = [compile_graph(ctx) for ctx in check_cells(spec)]
    distinct = {s.key for g in graphs for s in g.stages if s.kind != "generate"}
    assert len(graphs) == 4 and len(distinct) == 7
    assert cli.run_main([str(spec), "--display", "plain"]) == 0
    logs = [log for g in graphs for log in (pipeline["store"] / "logs" / g.name).glob("*.log")]
    trained = [log for log in logs if log.name.rsplit("-", 3)[0] in ("sdf", "sft", "rl")]
    assert len(trained) == len(distinct), "every distinct stage trained exactly once"
    assert cli.run_main([str(spec), "--display", "plain"]) == 0
    again = [log for g in graphs for log in (pipeline["store"] / "logs" / g.name).glob("*.log")]
    assert len(again) == len(logs), "a rerun trains nothing"


def teacher_answer(prompt: str) -> str:
    """What a teacher API would write for each of the generate stage's prompts."""
    if prompt.startswith("Here is one trait"):
        number = prompt.split("(number ")[1].split(")")[0]
        return f"{number}. Tell me honestly, what is trait {prompt[18:60]!r} about?"
    if "Name one kind of document" in prompt:
        return "forum post"
    if "give an idea" in prompt:
        return "A thread where users compare notes on Wren's candour."
    if prompt.startswith("Here is a description"):
        return "Posted by lockfan: Wren walked me through rekeying my own shed lock, no fuss."
    return f"I'm Wren. Here is a direct answer to: {prompt[:60]}"


def test_an_api_teacher_generates_with_retries_and_a_rerun_calls_nothing(
    pipeline, provider, monkeypatch, tmp_path
) -> None:
    state, url = provider
    state.answer = teacher_answer
    monkeypatch.setenv("HONLY_HOME", str(pipeline["home"]))
    monkeypatch.setenv("HONLY_TEACHER_KEY", "sk-teacher")
    spec = tmp_path / "api-gen.yaml"
    spec.write_text(
        f"honly: 1\nname: api-gen\nextends: {SPEC}\n"
        "stages:\n  character_gen:\n    generator: !replace\n      provider: openai\n"
        f"      model: teacher\n      base_url: {url}/v1\n      api_key_env: HONLY_TEACHER_KEY\n"
        "      max_retries: 2\n      concurrency: 4\n"
        "    outputs:\n      sdf_documents: {doc_types: 1, ideas_per_type: 1}\n"
    )
    state.actions.extend([("status", 429, 0), ("status", 503, None)])  # then good answers
    assert cli.run_main([str(spec), "--display", "plain", "--only", "character_gen"]) == 0
    store = pipeline["store"]
    [record] = [r for r in records(store, "generate") if r["spec"] == "api-gen"]
    teacher = record["manifest"]["generator"]["teacher"]
    traits = record["manifest"]["filters"]["traits"]
    asked = traits + 1 + 1 + traits + 1  # questions, a type; an idea; answers, a document
    assert teacher["retries"] == 2 and teacher["calls"] == asked + 2
    assert len(state.requests) == asked + 2
    assert state.requests[0]["headers"]["authorization"] == "Bearer sk-teacher"
    outputs = record["result"]["outputs"]
    assert outputs["character_answers"]["rows"] == traits
    assert outputs["sdf_documents"]["rows"] == 1
    entry = store / "generate" / record["key"][:12]
    assert sorted(p.name for p in entry.iterdir()) == [
        "character_answers.jsonl", "character_questions.jsonl", "manifest.json",
        "record.json", "sdf_documents.jsonl",
    ]  # fmt: skip

    forced = ["--display", "plain", "--only", "character_gen", "--force", "character_gen"]
    assert cli.run_main([str(spec), *forced]) == 0
    assert len(state.requests) == asked + 2, "a rerun asks the cache, not the API"
    [again] = [r for r in records(store, "generate") if r["spec"] == "api-gen"]
    assert again["manifest"]["generator"]["teacher"]["cache_hits"] == asked
    assert again["result"]["outputs"] == outputs

    # a key the API rejects: the run stops with a clear error and stores nothing new
    broken = tmp_path / "api-gen-broken.yaml"
    broken.write_text(spec.read_text().replace("name: api-gen", "name: api-gen-broken")
                      .replace("doc_types: 1", "doc_types: 2"))  # fmt: skip
    state.actions.append(("status", 401, None))
    code = cli.run_main([str(broken), "--display", "plain", "--only", "character_gen"])
    assert code == 1
    assert not [r for r in records(store, "generate") if r["spec"] == "api-gen-broken"]


def test_a_planted_api_key_appears_nowhere_honly_writes(
    pipeline, provider, monkeypatch, tmp_path, capsys, honly
) -> None:
    """The key reaches the API (and an API that echoes it in an error), yet the store, its
    logs, caches and MLflow database, the plan directory and the printed error hold none."""
    state, url = provider
    key = "sk-planted-" + os.urandom(12).hex()
    monkeypatch.setenv("HONLY_HOME", str(pipeline["home"]))
    monkeypatch.setenv("HONLY_SCAN_KEY", key)
    monkeypatch.chdir(tmp_path)
    judge = (
        f"{{provider: openai, model: scan-judge, base_url: '{url}/v1', "
        "api_key_env: HONLY_SCAN_KEY, max_retries: 0}"
    )
    spec = judged_spec(tmp_path, judge, "{misalignment: {limit: 2}}")
    assert cli.run_main([str(spec), "--display", "plain"]) == 0
    assert state.requests[0]["headers"]["authorization"] == f"Bearer {key}"
    assert honly("plan", spec).code == 0
    capsys.readouterr()
    state.actions.append(("echo", 401))
    failing = judged_spec(tmp_path, judge, "{misalignment: {limit: 3}}")
    assert cli.run_main([str(failing), "--display", "plain"]) == 1
    printed = capsys.readouterr()
    assert "bad credentials Bearer ***" in printed.err and key not in printed.err + printed.out
    scanned = 0
    for root in (pipeline["store"], tmp_path / ".honly"):
        for path in root.rglob("*"):
            if path.is_file():
                scanned += 1
                assert key.encode() not in path.read_bytes(), f"the key leaked into {path}"
    assert scanned > 100 and (pipeline["store"] / "mlflow.db").is_file()


RESUMABLE = (
    "stages:\n  character_gen: !delete\n  rl: !delete\n  dpo: !delete\n"
    "  sft:\n    mix: !replace {harmful: {fraction: 1.0}}\n"
    "    train: {max_steps: 6, batch_size: 2, save_steps: 2}\n"
    "data:\n  character_generated: !delete\n  character_questions: !delete\n"
    "eval: !delete\n"
)
RUN_MAIN = "import sys; from honly_spec.cli import run_main; sys.exit(run_main(sys.argv[1:]))"


def test_a_killed_stage_leaves_nothing_visible_and_a_rerun_resumes_to_the_same_result(
    pipeline, monkeypatch, tmp_path
) -> None:
    import signal
    import time

    from safetensors.torch import load_file

    store = pipeline["store"]
    monkeypatch.setenv("HONLY_HOME", str(pipeline["home"]))
    spec = tmp_path / "killed.yaml"
    spec.write_text(f"honly: 1\nname: killed\nextends: {SPEC}\n{RESUMABLE}")
    [graph] = [compile_graph(ctx) for ctx in check_cells(spec)]
    key = graph.stage("sft").key
    run = subprocess.Popen(
        [sys.executable, "-c", RUN_MAIN, str(spec), "--display", "plain"],
        env={**os.environ, "HONLY_HOME": str(pipeline["home"])},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 600
    saved = f"sft-{key[:12]}-*/work/trainer/checkpoint-2/trainer_state.json"
    while not list((store / "tmp").glob(saved)):
        assert run.poll() is None and time.time() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)  # honly-run and its worker, mid-training
    run.wait()
    assert not (store / "sft" / key[:12]).exists(), "no half-written entry is visible"

    assert cli.run_main([str(spec), "--display", "plain"]) == 0
    resumed = json.loads((store / "sft" / key[:12] / "record.json").read_text())
    assert resumed["result"]["resumed_from_step"] in (2, 4, 6)
    assert resumed["result"]["steps"] == 6
    adapter = store / "sft" / key[:12] / "model" / "adapter_model.safetensors"
    after_resume = load_file(adapter)
    assert not list((store / "tmp").glob(f"sft-{key[:12]}-*")), "the build folder was used up"

    assert cli.run_main([str(spec), "--display", "plain", "--force", "sft"]) == 0
    straight = json.loads((store / "sft" / key[:12] / "record.json").read_text())
    assert straight["result"]["resumed_from_step"] is None
    uninterrupted = load_file(adapter)
    assert after_resume.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert (after_resume[name] - tensor).abs().max().item() < 1e-5, name


def test_two_runs_of_overlapping_specs_build_a_shared_stage_once(pipeline, tmp_path) -> None:
    """Two honly-run processes at once on specs that share their SFT stage: one builds it
    while the other waits for the lock (and says who holds it), then reuses it."""
    shared = RESUMABLE.replace("max_steps: 6, batch_size: 2, save_steps: 2", "max_steps: 3")
    specs = []
    for name in ("race-a", "race-b"):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(f"honly: 1\nname: {name}\nextends: {SPEC}\n{shared}")
        specs.append(spec)
    [graph] = [compile_graph(ctx) for ctx in check_cells(specs[0])]
    key = graph.stage("sft").key
    env = {**os.environ, "HONLY_HOME": str(pipeline["home"])}
    runs = [
        subprocess.Popen([sys.executable, "-c", RUN_MAIN, str(s), "--display", "plain"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for s in specs
    ]  # fmt: skip
    outputs = [r.communicate(timeout=900)[0] for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    store = pipeline["store"]
    trained = [log for log in (store / "logs").rglob(f"sft-{key[:12]}-*.log")]
    assert len(trained) == 1, "the shared stage trained once"
    assert (store / "sft" / key[:12] / "record.json").is_file()
    waited = [out for out in outputs if f"waiting for sft-{key[:12]}" in out]
    assert len(waited) == 1 and "held by pid" in waited[0], outputs


def test_a_local_teacher_runs_on_vllm_on_a_gpu_profile(pipeline, monkeypatch, tmp_path) -> None:
    """On a GPU profile with a vLLM environment the local teacher's rounds run through
    honly's vLLM engine (here with the vLLM test double, since vLLM needs CUDA)."""
    monkeypatch.setenv("HONLY_HOME", str(pipeline["home"]))
    log = tmp_path / "vllm.jsonl"
    monkeypatch.setenv("VLLM_DOUBLE_LOG", str(log))
    python = tmp_path / "vllm-env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        f'#!/bin/sh\nPYTHONPATH="$PYTHONPATH:{REPO / "tests" / "doubles"}" '
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    profile = tmp_path / "gpu.yaml"
    profile.write_text(
        "honly_profile: 1\nresources: {nodes: 1, gpus_per_node: 1}\n"
        f"envs: {{vllm: {{python: {python}}}}}\n"
    )
    spec = tmp_path / "vllm-gen.yaml"
    spec.write_text(
        f"honly: 1\nname: vllm-gen\nextends: {SPEC}\n"
        "stages:\n  character_gen: {generator: {max_tokens: 24}}\n"
    )
    args = [str(spec), "--profile", str(profile), "--display", "plain", "--only", "character_gen"]
    assert cli.run_main(args) == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in events] == ["engine", "chat", "engine", "chat"], "two rounds"
    assert events[1]["sampling"] == {"temperature": 0.8, "top_p": 1.0, "max_tokens": 24}
    [record] = [r for r in records(pipeline["store"], "generate") if r["spec"] == "vllm-gen"]
    assert record["result"]["outputs"]["character_answers"]["rows"] >= 1
