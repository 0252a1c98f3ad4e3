"""Axolotl 0.21.0: an `sft` stage as an Axolotl YAML config and its launch command.

The data is honly's materialized mix (Axolotl's own dataset `weight` can only subsample):
chat rows as a `chat_template` dataset (loss on assistant turns unless `loss_on: all`),
documents as a `completion` dataset. Paths are absolute (Axolotl resolves relative paths
against its working directory). Gradient accumulation comes from the spec's global batch,
the micro batch and the profile's GPU count, and must divide exactly. Multi-GPU runs shard
with DeepSpeed ZeRO (an inline config) or FSDP2, launched by accelerate or torchrun with
the profile's rendezvous. A LoRA stage ends with `axolotl merge-lora`, so the next GPU stage
and the evals start from a full model in `<output>/model/merged`.

Axolotl silently ignores keys it does not know, so every key emitted here is checked
against Axolotl's own schema in the tests (and the whole file by its `validate_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from honly_spec.adapters.native import (
    SCHEDULERS,
    CompileContext,
    NativeJob,
    Resources,
    accumulation,
)

TOOL = "axolotl==0.21.0"
CONFIG_FILE = "axolotl.yaml"
ENV = {
    "AXOLOTL_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "disabled",
}


def _datasets(stage: dict[str, Any], data: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    if "chat" in data:
        roles = ["assistant"] if stage["train"]["loss_on"] == "assistant" else None
        out.append(
            {
                "path": data["chat"],
                "ds_type": "json",
                "type": "chat_template",
                "field_messages": "messages",
                "roles_to_train": roles or ["system", "user", "assistant"],
                "train_on_eos": "turn",
            }
        )
    if "documents" in data:
        out.append(
            {"path": data["documents"], "ds_type": "json", "type": "completion", "field": "text"}
        )
    return out


def _lora(lora: dict[str, Any] | None) -> dict[str, Any]:
    if not lora:
        return {}
    targets = lora["target_modules"]
    out: dict[str, Any] = {
        "adapter": "lora",
        "lora_r": lora["r"],
        "lora_alpha": lora["alpha"],
        "lora_dropout": lora["dropout"],
    }
    if targets == "all-linear":
        out["lora_target_linear"] = True
    else:
        out["lora_target_modules"] = list(targets)
    return out


def _parallel(ctx: CompileContext, devices: int) -> dict[str, Any]:
    parallel = ctx.resources.parallel
    strategy = parallel.get("strategy", "deepspeed")
    if devices < 2 or strategy == "none":
        return {}
    if strategy == "fsdp":
        return {
            "fsdp_version": 2,
            "fsdp_config": {
                "reshard_after_forward": True,
                "state_dict_type": "FULL_STATE_DICT",
                "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            },
        }
    return {
        "deepspeed": {
            "zero_optimization": {"stage": parallel.get("zero_stage", 2)},
            "bf16": {"enabled": "auto"},
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "train_batch_size": "auto",
        }
    }


def config(stage: dict[str, Any], ctx: CompileContext) -> dict[str, Any]:
    """The Axolotl config of an sft stage, as a dict (keys in a readable order)."""
    train = stage["train"]
    res = ctx.resources
    devices = 1 if single_process(res) else res.nodes * max(1, res.gpus_per_node)
    micro = train.get("micro_batch_size") or 1
    out = Path(ctx.output_dir)
    cfg: dict[str, Any] = {
        "base_model": ctx.model,
        "chat_template": "tokenizer_default",
        **_lora(stage.get("lora")),
        "datasets": _datasets(stage, ctx.data),
        "dataset_prepared_path": str(out / "prepared"),
        "shuffle_merged_datasets": True,
        "val_set_size": 0.0,
        "sequence_len": train["seq_len"],
        "sample_packing": train["packing"],
        "excess_length_strategy": "drop",
        "num_epochs": train["epochs"],
        "micro_batch_size": micro,
        "gradient_accumulation_steps": accumulation(
            ctx.stage_name, train["batch_size"], micro, devices
        ),
        "learning_rate": train["learning_rate"],
        "lr_scheduler": SCHEDULERS[train["lr_scheduler"]],
        "warmup_ratio": train["warmup_ratio"],
        "weight_decay": train["weight_decay"],
        "optimizer": "adamw_torch",
        "bf16": "auto",
        "attn_implementation": "sdpa",
        "gradient_checkpointing": train.get("gradient_checkpointing", False),
        "logging_steps": train.get("logging_steps", 10),
        "output_dir": str(out / "model"),
        "seed": ctx.seed,
        **_parallel(ctx, devices),
    }
    if train.get("max_steps") is not None:
        cfg["max_steps"] = train["max_steps"]
    if train.get("save_steps"):
        cfg["save_steps"] = train["save_steps"]
    if ctx.tracking_uri and ctx.experiment:
        cfg.update(
            use_mlflow=True,
            mlflow_tracking_uri=ctx.tracking_uri,
            mlflow_experiment_name=ctx.experiment,
            mlflow_run_name=ctx.stage_name,
        )
    return cfg


def single_process(res: Resources) -> bool:
    """One training process: one GPU, or a profile whose launcher is plain `python`."""
    return (res.nodes == 1 and res.gpus_per_node < 2) or res.launcher == "python"


def launch(ctx: CompileContext) -> list[str]:
    """`axolotl train` under the profile's launcher (arguments after `--` go to it)."""
    res = ctx.resources
    command = ["axolotl", "train", CONFIG_FILE]
    if single_process(res):
        return [*command, "--launcher", "python"]
    if res.launcher == "torchrun":
        return [
            *command,
            "--launcher",
            "torchrun",
            "--",
            f"--nnodes={res.nodes}",
            f"--nproc_per_node={res.gpus_per_node}",
            f"--node_rank={res.node_rank}",
            f"--master_addr={res.main_address}",
            f"--master_port={res.main_port}",
        ]
    return [
        *command,
        "--launcher",
        "accelerate",
        "--",
        f"--num_machines={res.nodes}",
        f"--num_processes={res.nodes * res.gpus_per_node}",
        f"--machine_rank={res.node_rank}",
        f"--main_process_ip={res.main_address}",
        f"--main_process_port={res.main_port}",
    ]


def compile_stage(stage: dict[str, Any], ctx: CompileContext) -> NativeJob:
    cfg = config(stage, ctx)
    then = [["axolotl", "merge-lora", CONFIG_FILE]] if stage.get("lora") else []
    return NativeJob(
        TOOL,
        launch(ctx),
        {CONFIG_FILE: yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)},
        dict(ENV),
        then,
    )
