"""OpenRLHF 0.11.2: an `rl` stage as a `train_ppo_ray` or `train_dpo` command line, plus the
reward function file OpenRLHF loads.

OpenRLHF 0.11 renamed every flag to a dotted form (`--actor.model_name_or_path`, not
`--pretrain`); the names below are the 0.11.2 parser's, checked in the tests by running that
parser on every compiled command line. They live in one table per version (`FLAGS_0_11`), so
the next rename is one new table. Full flag names are always emitted: argparse would accept
abbreviations, which would hide a rename.

Placement on the profile's GPUs: the hybrid engine (actor, reference and vLLM engines share
every GPU, `colocate_all` with sleep), vLLM engines = GPUs / tensor-parallel size. The prompt
data is honly's materialized mix; the reward is honly's own scorers with the spec's weights,
called from a generated `reward_func.py` that fails loudly (OpenRLHF swallows exceptions
raised inside a reward function and silently drops the sample).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from honly_spec.adapters.native import (
    PACKAGE_LINK,
    SCHEDULERS,
    CompileContext,
    NativeJob,
    compile_error,
    package_link,
)

TOOL = "openrlhf==0.11.2"

# spec algorithm → OpenRLHF advantage estimator (there is no `grpo` choice: GRPO is
# group-normalized advantages)
ESTIMATORS = {"grpo": "group_norm", "reinforce": "reinforce", "rloo": "rloo", "ppo": "gae"}

# flags both parsers (train_ppo_ray and train_dpo) share in 0.11.2
COMMON_FLAGS_0_11 = {
    "zero_stage": "--ds.zero_stage",
    "dtype": "--ds.param_dtype",
    "lora_rank": "--ds.lora.rank",
    "lora_alpha": "--ds.lora.alpha",
    "lora_dropout": "--ds.lora.dropout",
    "lora_targets": "--ds.lora.target_modules",
    "train_batch": "--train.batch_size",
    "train_micro": "--train.micro_batch_size",
    "seed": "--train.seed",
    "output_dir": "--ckpt.output_dir",
    "save_hf": "--ckpt.save_hf",
    "tensorboard": "--logger.tensorboard_dir",
    "logging_steps": "--logger.logging_steps",
}

# honly concept → OpenRLHF 0.11.2 flag
FLAGS_0_11 = {
    **COMMON_FLAGS_0_11,
    # placement
    "actor_nodes": "--actor.num_nodes",
    "actor_gpus": "--actor.num_gpus_per_node",
    "ref_nodes": "--ref.num_nodes",
    "ref_gpus": "--ref.num_gpus_per_node",
    "critic_nodes": "--critic.num_nodes",
    "critic_gpus": "--critic.num_gpus_per_node",
    "vllm_engines": "--vllm.num_engines",
    "vllm_tp": "--vllm.tensor_parallel_size",
    "vllm_memory": "--vllm.gpu_memory_utilization",
    "colocate_all": "--train.colocate_all",
    "vllm_sleep": "--vllm.enable_sleep",
    "ds_sleep": "--ds.enable_sleep",
    # model, data, reward
    "actor_model": "--actor.model_name_or_path",
    "reward_file": "--reward.remote_url",
    "prompt_data": "--data.prompt_dataset",
    "input_key": "--data.input_key",
    "label_key": "--data.label_key",
    "chat_template": "--data.apply_chat_template",
    "max_len": "--data.max_len",
    # algorithm
    "estimator": "--algo.advantage.estimator",
    "samples": "--rollout.n_samples_per_prompt",
    "kl_coef": "--algo.kl.init_coef",
    "kl_loss": "--algo.kl.use_loss",
    "kl_estimator": "--algo.kl.estimator",
    # rollout and training
    "max_new_tokens": "--rollout.max_new_tokens",
    "temperature": "--rollout.temperature",
    "top_p": "--rollout.top_p",
    "rollout_batch": "--rollout.batch_size",
    "rollout_micro": "--rollout.micro_batch_size",
    "episodes": "--train.num_episodes",
    "lr": "--actor.adam.lr",
    "weight_decay": "--actor.adam.weight_decay",
    "scheduler": "--actor.lr_scheduler",
    "warmup": "--actor.lr_warmup_ratio",
    "grad_ckpt": "--actor.gradient_checkpointing_enable",
    # outputs
    "save_steps": "--ckpt.save_steps",
}

# train_dpo has its own (smaller) parser
DPO_FLAGS_0_11 = {
    **COMMON_FLAGS_0_11,
    "model": "--model.model_name_or_path",
    "dataset": "--data.dataset",
    "prompt_key": "--data.prompt_key",
    "chosen_key": "--data.chosen_key",
    "rejected_key": "--data.rejected_key",
    "chat_template": "--data.apply_chat_template",
    "max_len": "--data.max_len",
    "beta": "--model.beta",
    "epochs": "--train.max_epochs",
    "lr": "--adam.lr",
    "scheduler": "--lr_scheduler",
    "warmup": "--lr_warmup_ratio",
    "grad_ckpt": "--model.gradient_checkpointing_enable",
}

REWARD_FILE = "reward_func.py"
TENSORBOARD_DIR = "tensorboard"  # under the stage's output; bridged into MLflow afterwards
REWARD_TEMPLATE = Path(__file__).with_name("openrlhf_reward.py.txt")


def _flags(table: dict[str, str], values: list[tuple[str, Any]]) -> list[str]:
    """`--flag value` pairs; True is a bare switch, False and None are left out, a list
    becomes several values."""
    argv: list[str] = []
    for name, value in values:
        if value is None or value is False:
            continue
        argv.append(table[name])
        if value is True:
            continue
        argv += [str(v) for v in value] if isinstance(value, list) else [_text(value)]
    return argv


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _lora(stage: dict[str, Any]) -> list[tuple[str, Any]]:
    lora = stage.get("lora")
    if not lora:
        return [("lora_rank", 0)]
    targets = lora["target_modules"]
    return [
        ("lora_rank", lora["r"]),
        ("lora_alpha", lora["alpha"]),
        ("lora_dropout", lora["dropout"] or None),
        ("lora_targets", [targets] if isinstance(targets, str) else list(targets)),
    ]


def compile_stage(stage: dict[str, Any], ctx: CompileContext) -> NativeJob:
    """The OpenRLHF job of an `rl` stage (online algorithms or DPO)."""
    train = stage["train"]
    if train.get("max_steps") is not None:
        raise compile_error(
            ctx.stage_name,
            ("train", "max_steps"),
            "OpenRLHF has no step limit; bound the run with `total_rows` and `train.episodes`",
        )
    if ctx.resources.gpus_per_node < 1:
        raise compile_error(
            ctx.stage_name, ("backend",), "the openrlhf backend needs GPUs: use a GPU profile"
        )
    if stage["algorithm"] == "dpo":
        return _compile_dpo(stage, ctx)
    return _compile_online(stage, ctx)


def _placement(ctx: CompileContext, critic: bool) -> list[tuple[str, Any]]:
    res = ctx.resources
    tp = res.rl.get("vllm_tensor_parallel", 1)
    total = res.nodes * res.gpus_per_node
    if total % tp:
        raise compile_error(
            ctx.stage_name,
            ("backend",),
            f"{total} GPU(s) cannot be split into vLLM engines of tensor-parallel size {tp}",
        )
    per_model = [("nodes", res.nodes), ("gpus", res.gpus_per_node)]
    out = [(f"actor_{k}", v) for k, v in per_model] + [(f"ref_{k}", v) for k, v in per_model]
    if critic:
        out += [(f"critic_{k}", v) for k, v in per_model]
    return [
        *out,
        ("vllm_engines", total // tp),
        ("vllm_tp", tp),
        ("vllm_memory", res.rl.get("gpu_memory_utilization", 0.5)),
        ("colocate_all", True),
        ("vllm_sleep", True),
        ("ds_sleep", True),
        ("zero_stage", res.parallel.get("zero_stage", 2)),
        ("dtype", "bf16"),
    ]


def _compile_online(stage: dict[str, Any], ctx: CompileContext) -> NativeJob:
    train, rollout = stage["train"], stage["rollout"]
    estimator = ESTIMATORS[stage["algorithm"]]
    out = Path(ctx.output_dir)
    micro = train.get("micro_batch_size")
    group = estimator in ("group_norm", "rloo")
    values: list[tuple[str, Any]] = [
        *_placement(ctx, critic=estimator == "gae"),
        ("actor_model", ctx.model),
        ("reward_file", str(out / REWARD_FILE)),
        ("prompt_data", ctx.data["prompts"]),
        ("input_key", "messages"),
        ("label_key", "label"),
        ("chat_template", True),
        ("max_len", train["max_len"]),
        ("estimator", estimator),
        ("samples", rollout["samples_per_prompt"]),
        ("kl_coef", train["kl_coef"]),
        # group estimators put the KL in the loss (k3), as GRPO does; the others shape
        # the reward with it (OpenRLHF's default)
        ("kl_loss", group),
        ("kl_estimator", "k3" if group else None),
        ("max_new_tokens", rollout["max_new_tokens"]),
        ("temperature", rollout["temperature"]),
        ("top_p", rollout["top_p"]),
        ("rollout_batch", rollout["batch_size"]),
        ("rollout_micro", micro),
        ("train_batch", train["batch_size"]),
        ("train_micro", micro),
        ("episodes", train["episodes"]),
        ("seed", ctx.seed),
        ("lr", train["learning_rate"]),
        ("weight_decay", train["weight_decay"] or None),
        ("scheduler", SCHEDULERS[train["lr_scheduler"]]),
        ("warmup", train["warmup_ratio"]),
        ("grad_ckpt", train.get("gradient_checkpointing", False)),
        *_lora(stage),
        ("output_dir", str(out / "model")),
        ("save_hf", True),
        ("save_steps", train.get("save_steps") or -1),
        ("tensorboard", str(out / TENSORBOARD_DIR)),
        ("logging_steps", train.get("logging_steps", 10)),
    ]
    argv = ["python", "-m", "openrlhf.cli.train_ppo_ray", *_flags(FLAGS_0_11, values)]
    weights = {name: term["weight"] for name, term in stage["reward"].items()}
    reward = reward_function(weights, str(out / "reward_errors.log"), str(out / PACKAGE_LINK))
    return NativeJob(TOOL, argv, {REWARD_FILE: reward}, _env(), _merge(stage, ctx), package_link())


def _compile_dpo(stage: dict[str, Any], ctx: CompileContext) -> NativeJob:
    train = stage["train"]
    out = Path(ctx.output_dir)
    micro = train.get("micro_batch_size")
    values: list[tuple[str, Any]] = [
        ("model", ctx.model),
        ("dataset", ctx.data["preference"]),
        ("prompt_key", "prompt"),
        ("chosen_key", "chosen"),
        ("rejected_key", "rejected"),
        ("chat_template", True),
        ("max_len", train["max_len"]),
        ("beta", train["kl_coef"]),
        ("train_batch", train["batch_size"]),
        ("train_micro", micro),
        ("epochs", train["episodes"]),
        ("seed", ctx.seed),
        ("lr", train["learning_rate"]),
        ("scheduler", SCHEDULERS[train["lr_scheduler"]]),
        ("warmup", train["warmup_ratio"]),
        ("grad_ckpt", train.get("gradient_checkpointing", False)),
        ("zero_stage", ctx.resources.parallel.get("zero_stage", 2)),
        ("dtype", "bf16"),
        *_lora(stage),
        ("output_dir", str(out / "model")),
        ("save_hf", True),
        ("tensorboard", str(out / TENSORBOARD_DIR)),
        ("logging_steps", train.get("logging_steps", 10)),
    ]
    res = ctx.resources
    launch = ["deepspeed", "--num_nodes", str(res.nodes), "--num_gpus", str(res.gpus_per_node)]
    argv = [*launch, "--module", "openrlhf.cli.train_dpo", *_flags(DPO_FLAGS_0_11, values)]
    return NativeJob(TOOL, argv, {}, _env(), _merge(stage, ctx))


def _merge(stage: dict[str, Any], ctx: CompileContext) -> list[list[str]]:
    """OpenRLHF saves a LoRA stage's adapter only: merge it onto the starting model, so the
    next stage and the evals read a full model from `<output>/model/merged`."""
    if not stage.get("lora"):
        return []
    model = Path(ctx.output_dir) / "model"
    return [
        [
            "python",
            "-m",
            "openrlhf.cli.lora_combiner",
            "--model_path",
            ctx.model,
            "--lora_path",
            str(model),
            "--output_path",
            str(model / "merged"),
        ]
    ]


def _env() -> dict[str, str]:
    return {"WANDB_MODE": "disabled", "HF_HUB_DISABLE_TELEMETRY": "1"}


def reward_function(weights: dict[str, float], error_log: str, package_path: str) -> str:
    """The `reward_func.py` OpenRLHF imports: honly's scorers with the spec's weights,
    imported from `package_path` (a folder holding only a link to `honly_spec`, so the RL
    environment's own packages are not shadowed by honly's)."""
    root = package_path
    return (
        REWARD_TEMPLATE.read_text(encoding="utf-8")
        .replace("@HONLY_ROOT@", json.dumps(root))
        .replace("@WEIGHTS@", json.dumps(weights, sort_keys=True))
        .replace("@ERROR_LOG@", json.dumps(error_log))
    )
