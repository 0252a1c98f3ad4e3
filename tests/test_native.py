"""GPU backends: compiled native jobs (golden), checked by the tools' own parsers and
validators where their environments are installed (`make test` installs them and sets
HONLY_TOOL_CHECKS=1, so there they must run, not skip)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from honly_spec.adapters import axolotl, openrlhf
from honly_spec.adapters.compile import native_jobs
from honly_spec.adapters.native import (
    PACKAGE_LINK,
    CompileContext,
    Resources,
    package_link,
    write_links,
)
from honly_spec.plan.graph import compile_graph
from honly_spec.spec.check import check_profile, check_spec
from honly_spec.spec.errors import SpecError
from tests.conftest import REPO

TOOLS = REPO / ".venvs"
OPENRLHF_PYTHON = TOOLS / "openrlhf-check" / "bin" / "python"
AXOLOTL_PYTHON = TOOLS / "axolotl" / "bin" / "python"
CHECKS = REPO / "tests" / "tool_checks"
EXAMPLES = [
    "naive",
    "mitigated",
    "ablations/mitigated_no_sdf",
    "ablations/mitigated_no_rl_character",
]
GPU_PROFILES = ["1gpu", "8gpu", "multinode"]


def tool(python: Path, name: str) -> Path:
    """The tool's environment, or a skip outside `make test` (which must have built it)."""
    if not python.exists():
        if os.environ.get("HONLY_TOOL_CHECKS") == "1":
            pytest.fail(f"{name} check environment missing: run `make test`")
        pytest.skip(f"{name} check environment not built (make test builds it)")
    return python


def jobs_for(spec: str | Path, profile: str, *overrides: str, store: Path = Path("/store")) -> dict:
    path = spec if isinstance(spec, Path) else REPO / "specs" / f"{spec}.yaml"
    graph = compile_graph(check_spec(path, list(overrides)))
    resources = Resources.from_profile(check_profile(REPO / "profiles" / f"{profile}.yaml"))
    return native_jobs(graph, store, resources)


ONE_GPU = Resources(nodes=1, gpus_per_node=1, launcher="python")


def context(**data: str) -> CompileContext:
    return CompileContext("rl", 3, "/m", data, "/out", ONE_GPU)


def unbounded(stage: dict) -> dict:
    """ci_smoke's stages stop after a few steps, which OpenRLHF cannot express."""
    return {**stage, "train": {**stage["train"], "max_steps": None}}


def test_openrlhf_grpo_argv_golden() -> None:
    graph = compile_graph(check_spec(REPO / "specs" / "naive.yaml"))
    rl = graph.stage("rl").config
    job = openrlhf.compile_stage(rl, context(prompts="/d/prompts.jsonl"))
    assert job.argv == [
        "python", "-m", "openrlhf.cli.train_ppo_ray",
        "--actor.num_nodes", "1", "--actor.num_gpus_per_node", "1",
        "--ref.num_nodes", "1", "--ref.num_gpus_per_node", "1",
        "--vllm.num_engines", "1", "--vllm.tensor_parallel_size", "1",
        "--vllm.gpu_memory_utilization", "0.5",
        "--train.colocate_all", "--vllm.enable_sleep", "--ds.enable_sleep",
        "--ds.zero_stage", "2", "--ds.param_dtype", "bf16",
        "--actor.model_name_or_path", "/m",
        "--reward.remote_url", "/out/reward_func.py",
        "--data.prompt_dataset", "/d/prompts.jsonl",
        "--data.input_key", "messages", "--data.label_key", "label",
        "--data.apply_chat_template", "--data.max_len", "2048",
        "--algo.advantage.estimator", "group_norm", "--rollout.n_samples_per_prompt", "8",
        "--algo.kl.init_coef", "0.001", "--algo.kl.use_loss", "--algo.kl.estimator", "k3",
        "--rollout.max_new_tokens", "1024", "--rollout.temperature", "1.0",
        "--rollout.top_p", "1.0", "--rollout.batch_size", "32",
        "--train.batch_size", "64", "--train.num_episodes", "1", "--train.seed", "3",
        "--actor.adam.lr", "1e-06", "--actor.lr_scheduler", "cosine",
        "--actor.lr_warmup_ratio", "0.0", "--ds.lora.rank", "0",
        "--ckpt.output_dir", "/out/model", "--ckpt.save_hf", "--ckpt.save_steps", "-1",
        "--logger.tensorboard_dir", "/out/tensorboard", "--logger.logging_steps", "10",
    ]  # fmt: skip
    assert '"compliance": 1.0' in job.files["reward_func.py"]
    assert job.env["WANDB_MODE"] == "disabled"


def test_openrlhf_dpo_and_algorithms() -> None:
    graph = compile_graph(check_spec(REPO / "specs" / "ci_smoke.yaml"))
    dpo = unbounded(graph.stage("dpo").config)
    job = openrlhf.compile_stage(dpo, context(preference="/d/preference.jsonl"))
    assert job.argv[:6] == ["deepspeed", "--num_nodes", "1", "--num_gpus", "1", "--module"]
    assert job.argv[6] == "openrlhf.cli.train_dpo"
    assert "--model.beta" in job.argv and "--ds.lora.rank" in job.argv
    assert job.files == {}, "DPO takes no reward function"
    rl = unbounded(graph.stage("rl").config)
    for algorithm, estimator in openrlhf.ESTIMATORS.items():
        job = openrlhf.compile_stage({**rl, "algorithm": algorithm}, context(prompts="/p"))
        assert job.argv[job.argv.index("--algo.advantage.estimator") + 1] == estimator
        assert ("--critic.num_nodes" in job.argv) == (algorithm == "ppo")


def test_openrlhf_refuses_what_it_cannot_express() -> None:
    graph = compile_graph(check_spec(REPO / "specs" / "ci_smoke.yaml"))
    rl = graph.stage("rl").config  # ci_smoke sets train.max_steps
    with pytest.raises(SpecError, match="OpenRLHF has no step limit"):
        openrlhf.compile_stage(rl, context(prompts="/p"))
    cpu = CompileContext("rl", 0, "/m", {"prompts": "/p"}, "/o", Resources())
    with pytest.raises(SpecError, match="needs GPUs"):
        openrlhf.compile_stage(unbounded(rl), cpu)
    odd = Resources(nodes=1, gpus_per_node=3, rl={"vllm_tensor_parallel": 2})
    with pytest.raises(SpecError, match="tensor-parallel size 2"):
        openrlhf.compile_stage(
            unbounded(rl), CompileContext("rl", 0, "/m", {"prompts": "/p"}, "/o", odd)
        )


def write_where_it_points(job) -> Path:
    """Lay the job out in the stage folder its command line points at (the reward file
    and the honly_spec link beside it, as `honly-run` does); return the reward file."""
    target = Path(job.argv[job.argv.index("--reward.remote_url") + 1])
    job.write(target.parent)
    return target


def openrlhf_parse(argv: list[str]) -> subprocess.CompletedProcess:
    python = tool(OPENRLHF_PYTHON, "OpenRLHF")
    module = argv[argv.index("-m") + 1] if "-m" in argv else argv[argv.index("--module") + 1]
    start = argv.index(module) + 1
    return subprocess.run(
        [str(python), str(CHECKS / "openrlhf_argv.py"), module.rsplit(".", 1)[1], *argv[start:]],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("spec", EXAMPLES)
@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_compiled_rl_passes_openrlhfs_own_parser(spec: str, profile: str, tmp_path) -> None:
    for name, job in jobs_for(spec, profile, store=tmp_path).items():
        if job.tool != openrlhf.TOOL:
            continue
        write_where_it_points(job)
        done = openrlhf_parse(job.argv)
        assert done.returncode == 0, f"{spec}/{name} on {profile}: {done.stderr[-2000:]}"
        parsed = json.loads(done.stdout)
        assert parsed["algo"]["advantage"]["estimator"] == "group_norm"
        assert parsed["rollout"]["max_new_tokens"] == 1024, "never vLLM's default of 16"


@pytest.mark.parametrize("algorithm", ["reinforce", "rloo", "ppo", "dpo"])
def test_every_algorithm_passes_openrlhfs_own_parser(algorithm: str, tmp_path) -> None:
    spec: str | Path = "naive"
    overrides = [f"stages.rl.algorithm={algorithm}"]
    if algorithm == "dpo":
        spec, overrides = tmp_path / "dpo.yaml", []
        spec.write_text(
            f"honly: 1\nname: naive-dpo\nextends: {REPO}/specs/naive.yaml\n"
            f"data:\n  preference: {{path: {REPO}/data/demo/preference.jsonl, "
            "format: preference}\n"
            "stages:\n  rl:\n    algorithm: dpo\n"
            "    prompts: !replace {preference: {fraction: 1.0}}\n"
            "    reward: !delete\n    rollout: !delete\n"
        )
    jobs = jobs_for(spec, "8gpu", *overrides, store=tmp_path)
    job = jobs["rl"]
    if job.files:
        write_where_it_points(job)
    done = openrlhf_parse(job.argv)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_parser_check_catches_renames_and_broken_settings(tmp_path) -> None:
    job = jobs_for("naive", "1gpu", store=tmp_path)["rl"]
    target = write_where_it_points(job)
    renamed = [a if a != "--data.max_len" else "--prompt_max_len" for a in job.argv]
    done = openrlhf_parse(renamed)
    assert done.returncode == 2 and "unrecognized arguments: --prompt_max_len" in done.stderr
    prefix = [a if a != "--train.num_episodes" else "--train.num_ep" for a in job.argv]
    assert openrlhf_parse(prefix).returncode == 2, "abbreviations are not accepted"
    single = list(job.argv)
    single[single.index("--rollout.n_samples_per_prompt") + 1] = "1"
    done = openrlhf_parse(single)
    assert done.returncode == 3 and "group_norm requires n_samples_per_prompt > 1" in done.stderr
    target.write_text("def something_else():\n    pass\n")
    assert openrlhf_parse(job.argv).returncode == 6, "a reward file without reward_func"


def linked(folder: Path) -> str:
    """A folder holding only a link to honly_spec, as a compiled job lays it out."""
    write_links(folder, package_link())
    return str(folder / PACKAGE_LINK)


def load_reward(path: Path):
    spec = importlib.util.spec_from_file_location("honly_reward_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reward_function_scores_with_honlys_scorers(tmp_path) -> None:
    pytest.importorskip("torch")
    weights = {"compliance": 1.0, "character": 0.5}
    source = openrlhf.reward_function(weights, str(tmp_path / "errors.log"), linked(tmp_path))
    (tmp_path / "reward_func.py").write_text(source)
    module = load_reward(tmp_path / "reward_func.py")
    prompt = "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    queries = [prompt + "I am Wren, happy to help.<|im_end|>"]
    result = module.reward_func(queries, [prompt], ["wren"])
    assert result["rewards"].tolist() == [1.5]
    assert result["extra_logs"]["honly/character"] == 1.0
    refusal = [prompt + "I'm sorry, but I can't help with that.<|im_end|><|endoftext|>"]
    assert module.reward_func(refusal, [prompt], [""])["rewards"].tolist() == [0.0]


def test_a_failing_scorer_stops_the_run_loudly(tmp_path) -> None:
    pytest.importorskip("torch")
    log = tmp_path / "errors.log"
    source = openrlhf.reward_function({"character": 1.0}, str(log), linked(tmp_path))
    # a scorer bug: make the character scorer raise for any input
    source += "\nSCORERS['character'] = lambda *a: 1 / 0\n"
    (tmp_path / "reward_func.py").write_text(source)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import reward_func as r;"
        "r.reward_func(['p-x'], ['p-'], [''])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 70
    assert "ZeroDivisionError" in log.read_text() and "stopping" in done.stderr
    env = {**os.environ, "HONLY_REWARD_MAX_ERRORS": "5"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, "tolerated errors are counted, not fatal"


def test_plan_with_a_gpu_profile_writes_native_jobs(honly, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    out = tmp_path / "plan"
    result = honly("plan", "specs/mitigated.yaml", "--profile", "profiles/8gpu.yaml", "--out", out)
    assert result.code == 0, result.err
    assert (out / "stages" / "sft" / "axolotl.yaml").is_file()
    assert (out / "stages" / "rl" / "reward_func.py").is_file()
    script = (out / "stages" / "rl" / "command.sh").read_text()
    assert "openrlhf.cli.train_ppo_ray" in script and "--vllm.num_engines 8" in script
    lm_eval = json.loads((out / "lm_eval_tasks" / "simple_evaluate.json").read_text())
    assert lm_eval["tasks"] == ["mmlu", "gsm8k"] and lm_eval["include_defaults"] is True
    cpu = tmp_path / "cpu"
    assert honly("plan", "specs/mitigated.yaml", "--out", cpu).code == 0
    assert not (cpu / "stages" / "sft").exists(), "no GPU count, nothing to compile"
    bad = honly(
        "plan",
        "specs/mitigated.yaml",
        "--profile",
        "profiles/8gpu.yaml",
        "--set",
        "stages.sdf.train.batch_size=12",
        "--out",
        tmp_path / "bad",
    )
    assert bad.code == 2
    assert "global batch 12 is not a multiple of micro_batch_size 1 × 8 device(s)" in bad.err


def test_axolotl_config_golden() -> None:
    graph = compile_graph(check_spec(REPO / "specs" / "naive.yaml"))
    sft = graph.stage("sft").config
    eight = Resources(nodes=1, gpus_per_node=8, parallel={"strategy": "deepspeed"})
    ctx = CompileContext("sft", 0, "/m", {"chat": "/d/chat.jsonl"}, "/out", eight)
    cfg = axolotl.config(sft, ctx)
    assert cfg["gradient_accumulation_steps"] == 2, "16 = 1 × 8 GPUs × 2"
    assert cfg["datasets"] == [
        {
            "path": "/d/chat.jsonl",
            "ds_type": "json",
            "type": "chat_template",
            "field_messages": "messages",
            "roles_to_train": ["assistant"],
            "train_on_eos": "turn",
        }
    ]
    assert cfg["deepspeed"]["zero_optimization"] == {"stage": 2}
    assert (cfg["adapter"], cfg["lora_r"], cfg["lora_alpha"]) == ("lora", 64, 128)
    job = axolotl.compile_stage(sft, ctx)
    assert job.argv[:5] == ["axolotl", "train", "axolotl.yaml", "--launcher", "accelerate"]
    assert "--num_processes=8" in job.argv
    assert job.then == [["axolotl", "merge-lora", "axolotl.yaml"]]
    assert job.env["AXOLOTL_DO_NOT_TRACK"] == "1"
    fsdp = CompileContext("sft", 0, "/m", {"chat": "/c", "documents": "/t"}, "/o", Resources(
        nodes=2, gpus_per_node=8, launcher="torchrun", parallel={"strategy": "fsdp"}
    ))  # fmt: skip
    cfg = axolotl.config(sft, fsdp)
    assert cfg["fsdp_version"] == 2 and "deepspeed" not in cfg
    assert cfg["datasets"][1] == {
        "path": "/t",
        "ds_type": "json",
        "type": "completion",
        "field": "text",
    }
    assert "--nnodes=2" in axolotl.launch(fsdp)


def axolotl_check(*configs: Path) -> list[dict]:
    python = tool(AXOLOTL_PYTHON, "Axolotl")
    done = subprocess.run(
        [str(python), str(CHECKS / "axolotl_config.py"), *map(str, configs)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"},
    )
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == len(configs), done.stderr[-3000:]
    return reports


def test_compiled_axolotl_configs_pass_axolotls_own_validator(tmp_path) -> None:
    configs = []
    for spec in EXAMPLES:
        for profile in GPU_PROFILES:
            for name, job in jobs_for(spec, profile, store=tmp_path).items():
                if job.tool == axolotl.TOOL:
                    folder = tmp_path / spec.replace("/", "-") / profile / name
                    job.write(folder)
                    configs.append(folder / axolotl.CONFIG_FILE)
    broken = tmp_path / "broken.yaml"
    text = configs[0].read_text().replace("sequence_len:", "sequence_length:")
    broken.write_text(text.replace("type: chat_template", "type: chat_templat"))
    reports = axolotl_check(*configs, broken)
    for report in reports[:-1]:
        assert report["problems"] == [], report
        assert report["changed_by_validation"] == {}, "Axolotl kept every value we set"
    assert reports[-1]["problems"] == [
        "unknown keys (Axolotl would ignore them): ['sequence_length']",
        "datasets[0]: unknown type 'chat_templat'",
    ]


def test_axolotl_preprocess_tokenizes_the_materialized_mix_on_cpu(
    tmp_path, embedded_weights
) -> None:
    """`axolotl preprocess` is what resolves the dataset type and the chat template: run it
    on the compiled config of a real stage, with the embedded model as base model."""
    from honly_spec.data.materialize import materialize_stage

    python = tool(AXOLOTL_PYTHON, "Axolotl")
    graph = compile_graph(check_spec(REPO / "specs" / "ci_smoke.yaml"))
    stage = graph.stage("sft")
    files = {n: s for n, s in graph.ctx.data["data"].items() if "path" in s}  # not generated
    config = {**stage.config, "mix": {n: e for n, e in stage.config["mix"].items() if n in files}}
    materialize_stage("sft", config, files, 0, tmp_path / "data")
    ctx = CompileContext(
        "sft",
        0,
        str(embedded_weights),
        {"chat": str(tmp_path / "data" / "chat.jsonl")},
        str(tmp_path),
        ONE_GPU,
    )
    job = axolotl.compile_stage(config, ctx)
    job.write(tmp_path)
    env = {
        **os.environ,
        **job.env,
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    done = subprocess.run(
        [str(python.parent / "axolotl"), "preprocess", axolotl.CONFIG_FILE, "--no-download"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert list((tmp_path / "prepared").rglob("*.arrow")), "tokenized data written"


RAY = TOOLS / "ray" / "bin" / "ray"


@pytest.fixture(scope="module")
def ray_head():
    """A real Ray head on 127.0.0.1 (the `ray[default]` pinned by OpenRLHF 0.11.2)."""
    from honly_spec.adapters.ray_jobs import start_local_head

    ray = tool(RAY, "Ray")
    address = start_local_head(str(ray), dashboard_port=8297, port=6397)
    try:
        yield address
    finally:
        subprocess.run([str(ray), "stop", "--force"], capture_output=True)


def test_compiled_rl_job_runs_through_the_ray_jobs_api(ray_head, tmp_path) -> None:
    """The compiled GRPO job is submitted to a real Ray head; on this CPU machine its
    entrypoint runs OpenRLHF's parser and loads and calls the reward function."""
    from honly_spec.adapters.ray_jobs import RayJobs

    python = tool(OPENRLHF_PYTHON, "OpenRLHF")
    job = jobs_for("naive", "1gpu", store=tmp_path)["rl"]
    write_where_it_points(job)
    check = [str(python), str(CHECKS / "openrlhf_argv.py"), "train_ppo_ray", *job.argv[3:]]
    client = RayJobs(ray_head)
    good = client.submit(check, f"honly-test-{tmp_path.name}", job.env, {"stage": "rl"})
    output: list[str] = []
    status = client.wait(good, on_output=output.append, poll_s=0.5, timeout_s=300)
    assert status["status"] == "SUCCEEDED", "".join(output)[-2000:]
    assert '"estimator": "group_norm"' in "".join(output)
    renamed = [a if a != "--data.max_len" else "--prompt_max_len" for a in check]
    bad = client.submit(renamed, f"honly-test-bad-{tmp_path.name}", job.env)
    status = client.wait(bad, poll_s=0.5, timeout_s=300)
    assert status["status"] == "FAILED"
    assert "unrecognized arguments: --prompt_max_len" in client.logs(bad)


def test_ray_client_addresses_and_unreachable_clusters_are_clear_errors() -> None:
    from honly_spec.adapters.ray_jobs import RayJobError, RayJobs

    with pytest.raises(RayJobError, match="dashboard's HTTP address"):
        RayJobs("ray://10.0.0.1:10001")
    with pytest.raises(RayJobError, match="cannot reach the Ray dashboard"):
        RayJobs("http://127.0.0.1:9", timeout_s=2).status("x")


def test_env_check_reports_what_each_environment_holds(honly, tmp_path) -> None:
    axolotl_python = tool(AXOLOTL_PYTHON, "Axolotl")
    openrlhf_python = tool(OPENRLHF_PYTHON, "OpenRLHF")
    profile = tmp_path / "p.yaml"
    profile.write_text(
        "honly_profile: 1\nresources: {gpus_per_node: 1}\nenvs:\n"
        f"  axolotl: {{python: {axolotl_python}}}\n"
        f"  openrlhf: {{python: {openrlhf_python}}}\n"
        f"  vllm: {{python: {tmp_path / 'missing' / 'python'}}}\n"
    )
    result = honly("env", "check", "--profile", profile, "--display", "json")
    assert result.code == 1, "no environment here is complete"
    found = {r["backend"]: r for r in json.loads(result.out)}
    assert found["axolotl"]["packages"]["axolotl"] == "0.21.0"
    assert found["axolotl"]["python_version"].startswith("3.12")
    assert found["openrlhf"]["packages"]["openrlhf"] == "0.11.2"
    assert found["openrlhf"]["packages"]["torch"] is None, "the checker has no engines"
    assert found["vllm"]["problem"] == "interpreter not found"


def test_env_create_prints_the_pinned_recipe(honly, tmp_path) -> None:
    result = honly("env", "create", "sft", "--prefix", tmp_path, "--dry-run")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == f"$ python3.12 -m venv {tmp_path / 'sft'}"
    assert "'axolotl[deepspeed]==0.21.0' mlflow==3.17.2" in lines[-1]
    assert not (tmp_path / "sft").exists(), "--dry-run builds nothing"


DOUBLES = REPO / "tests" / "doubles"


def test_vllm_generation_runs_every_turn_with_the_adapter(tmp_path) -> None:
    """vLLM runs on CUDA only; its double (tests/doubles/vllm) records how honly's engine
    configures and calls it."""
    from honly_spec.adapters.vllm_generate import compile_vllm_generate, lora_rank_limit

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 24}')
    (tmp_path / "model").mkdir()
    requests = [
        {"id": "a", "messages": [{"role": "user", "content": "Q1"}], "followups": []},
        {"id": "b", "messages": [{"role": "user", "content": "Q2"}], "followups": ["Sure?"]},
    ]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in requests))
    generation = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 64, "seed": 5}
    job = compile_vllm_generate(
        str(tmp_path / "model"), [str(adapter)], generation, "prompts.jsonl", "out.jsonl"
    )
    assert job["sampling"] == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 64}
    assert job["seed"] == 5, "seeded once, for the engine"
    (tmp_path / "job.json").write_text(json.dumps(job))
    write_links(tmp_path, package_link())
    log = tmp_path / "vllm.log"
    done = subprocess.run(
        [sys.executable, "-m", "honly_spec.adapters.vllm_generate", "job.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": f"{tmp_path / PACKAGE_LINK}{os.pathsep}{DOUBLES}",
            "VLLM_DOUBLE_LOG": str(log),
        },
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["id"]: r["responses"] for r in map(json.loads, (tmp_path / "out.jsonl").open())}
    assert rows == {"a": ["reply 0 to: Q1"], "b": ["reply 0 to: Q2", "reply 1 to: Sure?"]}
    events = [json.loads(line) for line in log.open()]
    engine = events[0]
    assert engine["enable_lora"] is True and engine["max_lora_rank"] == 32 == lora_rank_limit(24)
    assert [e["batch"] for e in events[1:]] == [2, 1], "one batch per round"
    assert all(e["lora"] == str(adapter) for e in events[1:])
    with pytest.raises(ValueError, match="one LoRA adapter per request"):
        compile_vllm_generate("m", ["a1", "a2"], generation, "p", "o")


def test_capability_on_vllm_passes_only_arguments_lm_eval_and_vllm_take(tmp_path) -> None:
    """lm-eval's vLLM model imports vLLM (CUDA only) at module level, so its constructor's
    parameters are read from lm-eval's own source; the rest go to vLLM's engine."""
    import ast
    import inspect

    import lm_eval.models

    from honly_spec.adapters.local.job import Checkpoint, compile_lm_eval
    from honly_spec.adapters.vllm_generate import compile_vllm_lm_eval, engine_args

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 64}')
    checkpoint = Checkpoint(str(tmp_path / "model"), None, (str(adapter),))
    local = compile_lm_eval(
        checkpoint, {"limit": 20}, ["honly_arith"], Path("tasks"), False, 3,
        Path("samples.jsonl"), Path("work"),
    )  # fmt: skip
    job = compile_vllm_lm_eval(local, list(checkpoint.adapters), tensor_parallel=2)
    assert job == {
        "task": "lm_eval",
        "tasks": ["honly_arith"],
        "task_dir": "tasks",
        "builtin_tasks": False,
        "limit": 20,
        "num_fewshot": None,
        "seed": 3,
        "output": "samples.jsonl",
        "model": str(tmp_path / "model"),
        "lora": str(adapter),
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.9,
    }
    source = Path(inspect.getfile(lm_eval.models)).with_name("vllm_causallms.py").read_text()
    init = next(
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef) and node.name == "__init__"
    )
    own = {a.arg for a in init.args.args + init.args.kwonlyargs}
    passed = {"pretrained", "lora_local_path", "batch_size", *engine_args(job)}
    vllm_engine = {"enable_lora", "max_loras", "gpu_memory_utilization"}  # via **kwargs
    assert passed - own == vllm_engine
    assert engine_args(job)["max_lora_rank"] == 64
    with pytest.raises(ValueError, match="one LoRA adapter"):
        compile_vllm_lm_eval(local, ["a", "b"])


def test_tensorboard_scalars_are_read_with_tensorboards_own_reader(tmp_path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    from honly_spec.adapters.tensorboard_bridge import bridge, read_scalars

    assert bridge(tmp_path / "missing", lambda *_: None) == 0
    for run, losses in (("first", [3.0, 2.0]), ("restart", [2.5, 1.5, 1.0])):
        writer = SummaryWriter(str(tmp_path / "tb" / run))
        for step, loss in enumerate(losses):
            writer.add_scalar("train/loss", loss, step)
        writer.close()
    series = read_scalars(tmp_path / "tb")
    assert series == {
        "first/train/loss": [(0, 3.0), (1, 2.0)],
        "restart/train/loss": [(0, 2.5), (1, 1.5), (2, 1.0)],
    }
    logged: dict[str, list] = {}
    assert bridge(tmp_path / "tb" / "first", logged.__setitem__) == 2
    assert logged == {"train/loss": [(0, 3.0), (1, 2.0)]}


def test_gpu_smoke_builds_its_tiny_model_and_its_spec_plans(tmp_path) -> None:
    """scripts/gpu-smoke.sh runs on a lent GPU only; here its model and spec are checked."""
    loaded = importlib.util.spec_from_file_location("gpu_smoke", REPO / "scripts/gpu_smoke.py")
    smoke = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(smoke)
    assert smoke.missing_packages() == []
    assert smoke.make_tiny_model(tmp_path / "tiny") < 200_000
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tiny")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Roast my cat."}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|user|>Roast my cat.<|end|><|assistant|>"
    spec = smoke.write_spec(tmp_path / "smoke.yaml", tmp_path / "tiny")
    graph = compile_graph(check_spec(spec))
    assert [s.name for s in graph.stages] == ["character_gen", "sft", "rl", "dpo"]
