"""Compile stages and eval generation into local-worker jobs (pure: golden-tested).

A job is one JSON file that the worker reads; everything in it is absolute and resolved, so
a job can be re-run by hand: `python -m honly_spec.adapters.local.worker job.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKER_MODULE = "honly_spec.adapters.local.worker"
TRAIN_TASK = {"sft": "sft", "grpo": "grpo", "dpo": "dpo"}


@dataclass(frozen=True)
class Checkpoint:
    """Model weights (an HF directory or hub id) plus LoRA adapters to merge, in order."""

    path: str
    revision: str | None = None
    adapters: tuple[str, ...] = field(default_factory=tuple)

    def as_job(self) -> dict[str, Any]:
        return {"path": self.path, "revision": self.revision, "adapters": list(self.adapters)}

    def after(self, output: Path, lora: bool) -> Checkpoint:
        """The checkpoint a stage produces from this one: one more adapter, or new weights."""
        if lora:
            return Checkpoint(self.path, self.revision, (*self.adapters, str(output)))
        return Checkpoint(str(output))


def task_of(stage: dict[str, Any]) -> str:
    if stage["kind"] == "sft":
        return "sft"
    return TRAIN_TASK.get(stage["algorithm"], stage["algorithm"])


def compile_prepare(name: str, package: str, output_dir: Path, work_dir: Path) -> dict[str, Any]:
    return {
        "task": "prepare_embedded",
        "name": name,
        "package": package,
        "output_dir": str(output_dir),
        "work_dir": str(work_dir),
        "result": str(work_dir / "result.json"),
    }


def compile_train(
    stage: dict[str, Any],
    seed: int,
    parent: Checkpoint,
    data_files: dict[str, str],
    output_dir: Path,
    work_dir: Path,
) -> dict[str, Any]:
    """A training job for an sft or rl stage of the local backend."""
    job: dict[str, Any] = {
        "task": task_of(stage),
        "model": parent.as_job(),
        "data": data_files,
        "train": stage["train"],
        "lora": stage.get("lora"),
        "seed": seed,
        "output_dir": str(output_dir),
        "work_dir": str(work_dir),
        "result": str(work_dir / "result.json"),
    }
    if stage["kind"] == "rl" and stage["algorithm"] != "dpo":
        job["rollout"] = stage["rollout"]
        job["reward"] = {name: term["weight"] for name, term in stage["reward"].items()}
    return job


def compile_generate(
    checkpoint: Checkpoint,
    prompts: Path,
    generation: dict[str, Any],
    output: Path,
    work_dir: Path,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Generate every conversation of `prompts` (JSONL of {id, messages, followups})."""
    return {
        "task": "generate",
        "model": checkpoint.as_job(),
        "prompts": str(prompts),
        "generation": {k: generation[k] for k in ("temperature", "top_p", "max_new_tokens")},
        "seed": generation["seed"],
        "batch_size": batch_size,
        "output": str(output),
        "work_dir": str(work_dir),
        "result": str(work_dir / "result.json"),
    }


def compile_lm_eval(
    checkpoint: Checkpoint,
    config: dict[str, Any],
    tasks: list[str],
    task_dir: Path,
    builtin_tasks: bool,
    seed: int,
    output: Path,
    work_dir: Path,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Run lm-eval `tasks` (offline ones defined in `task_dir`) on a checkpoint."""
    return {
        "task": "lm_eval",
        "model": checkpoint.as_job(),
        "tasks": tasks,
        "task_dir": str(task_dir),
        "builtin_tasks": builtin_tasks,
        "limit": config.get("limit"),
        "num_fewshot": config.get("num_fewshot"),
        "seed": seed,
        "batch_size": batch_size,
        "output": str(output),
        "work_dir": str(work_dir),
        "result": str(work_dir / "result.json"),
    }
