"""Eval generation with vLLM 0.33 (GPU profiles): the same requests and output as the local
worker's `generate` task, run by `LLM.chat` over every conversation of a checkpoint; and the
`capability` suite's lm-eval tasks on lm-eval's own vLLM model (job `task: lm_eval`).

    python -m honly_spec.adapters.vllm_generate job.json

Runs in the profile's vLLM environment. Every conversation is generated turn by turn: round
k sends the k-th reply of every conversation that has one, after the model's own earlier
replies and the follow-up user turns. A LoRA checkpoint is served as a `LoRARequest` with
`max_lora_rank` raised to the adapter's rank (vLLM's default of 16 refuses larger
adapters); `max_tokens` is always explicit (vLLM's default is 16). The compile step is
pure and importable without vLLM.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from honly_spec.adapters import conversations

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank_limit(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that fits an adapter of `rank`."""
    fitting = [r for r in LORA_RANKS if r >= rank]
    if not fitting:
        raise ValueError(f"vLLM serves LoRA ranks up to {LORA_RANKS[-1]}, not {rank}")
    return fitting[0]


def compile_vllm_generate(
    model: str,
    adapters: list[str],
    generation: dict[str, Any],
    prompts: str,
    output: str,
    tensor_parallel: int = 1,
    gpu_memory_utilization: float = 0.9,
) -> dict[str, Any]:
    """The job of one checkpoint's eval generation. vLLM applies at most one adapter per
    request: a checkpoint with a chain of adapters must be merged first."""
    if len(adapters) > 1:
        raise ValueError(
            "vLLM serves one LoRA adapter per request; this checkpoint stacks "
            f"{len(adapters)} (train the earlier stages with a GPU backend, which merges)"
        )
    return {
        "model": model,
        "lora": adapters[0] if adapters else None,
        # the seed goes to the engine, not to each request: a per-request seed would make
        # repeated samples of one conversation identical
        "seed": generation["seed"],
        "sampling": {
            "temperature": generation["temperature"],
            "top_p": generation["top_p"],
            "max_tokens": generation["max_new_tokens"],
        },
        "tensor_parallel_size": tensor_parallel,
        "gpu_memory_utilization": gpu_memory_utilization,
        "prompts": prompts,
        "output": output,
    }


def compile_vllm_lm_eval(
    lm_eval_job: dict[str, Any],
    adapters: list[str],
    tensor_parallel: int = 1,
    gpu_memory_utilization: float = 0.9,
) -> dict[str, Any]:
    """The local worker's lm-eval job (tasks, limit, seeds, output) for lm-eval's vLLM
    model; the checkpoint's adapter is served as vLLM's LoRA, as for generation."""
    if len(adapters) > 1:
        raise ValueError(f"vLLM serves one LoRA adapter per request, not {len(adapters)}")
    keep = ("tasks", "task_dir", "builtin_tasks", "limit", "num_fewshot", "seed", "output")
    return {
        "task": "lm_eval",
        **{k: lm_eval_job[k] for k in keep},
        "model": lm_eval_job["model"]["path"],
        "lora": adapters[0] if adapters else None,
        "tensor_parallel_size": tensor_parallel,
        "gpu_memory_utilization": gpu_memory_utilization,
    }


def engine_args(job: dict[str, Any]) -> dict[str, Any]:
    """vLLM engine arguments shared by generation and lm-eval: the seed goes to the engine,
    and a LoRA adapter raises `max_lora_rank` to fit its rank."""
    args: dict[str, Any] = {
        "tensor_parallel_size": job["tensor_parallel_size"],
        "gpu_memory_utilization": job["gpu_memory_utilization"],
        "seed": job["seed"],
    }
    if job["lora"]:
        config = json.loads((Path(job["lora"]) / "adapter_config.json").read_text())
        args.update(enable_lora=True, max_lora_rank=lora_rank_limit(config["r"]), max_loras=1)
    return args


def run_lm_eval(job: dict[str, Any]) -> dict[str, Any]:
    """lm-eval tasks with lm-eval's vLLM model (`lora_local_path` for the adapter)."""
    from lm_eval.models.vllm_causallms import VLLM

    from honly_spec.evals.capability import run_lm_eval as evaluate

    model = VLLM(
        pretrained=job["model"], lora_local_path=job["lora"], batch_size="auto", **engine_args(job)
    )
    return evaluate(model, job)


def run(job: dict[str, Any]) -> dict[str, Any]:
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    lora = LoRARequest("checkpoint", 1, job["lora"]) if job["lora"] else None
    llm = LLM(model=job["model"], **engine_args(job))
    sampling = SamplingParams(**job["sampling"])
    with open(job["prompts"], encoding="utf-8") as handle:
        requests = [json.loads(line) for line in handle if line.strip()]
    replies: list[list[str]] = [[] for _ in requests]
    for turn in range(conversations.rounds(requests)):
        asked = conversations.active(requests, turn)
        batch = [conversations.so_far(requests[i], replies[i]) for i in asked]
        outputs = llm.chat(batch, sampling, use_tqdm=False, lora_request=lora)
        for i, output in zip(asked, outputs, strict=True):
            replies[i].append(output.outputs[0].text.strip())
    with open(job["output"], "w", encoding="utf-8") as handle:
        for request, turns in zip(requests, replies, strict=True):
            handle.write(json.dumps({"id": request["id"], "responses": turns}) + "\n")
    return {"conversations": len(requests), "replies": sum(map(len, replies))}


def main(argv: list[str]) -> int:
    job_file = Path(argv[0]).resolve()
    job = json.loads(job_file.read_text(encoding="utf-8"))
    start = time.time()
    result = run_lm_eval(job) if job.get("task") == "lm_eval" else run(job)
    result["seconds"] = round(time.time() - start, 3)
    (job_file.parent / "result.json").write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
